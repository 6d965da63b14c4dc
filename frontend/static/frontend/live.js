// The live header every signed-in page shares: one socket, the connection indicator, the bell and
// its toasts. base.html loads it through page.js; a page that also needs the socket for its own
// events (the dashboard, Operations, Diagnostics) imports it from here. A module runs once per page
// (always imported as ./live.js, never named in a template, so a hashed static name cannot load a
// second copy), so there is one socket and one bell whichever way a page gets it.
import { showConnection } from "./common.js";
import { NotificationCentre } from "./notifications.js";
import { RunboardSocket } from "./socket.js";

export const socket = new RunboardSocket();
export const centre = new NotificationCentre();
window.runboard = { socket, centre, user: null };
socket.addEventListener("state", (event) => showConnection(event.detail));
socket.addEventListener("message", ({ detail: message }) => {
  if (message.type === "hello") window.runboard.user = message.user;
});
centre.attach(socket);
socket.start();
