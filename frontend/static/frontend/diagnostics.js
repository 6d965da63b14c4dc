// Which transports work from this browser, and the WebSocket round-trip time. The socket row and
// the round trip are read from the page's own socket (live.js, the one the header reports on), so
// the page never contradicts its header; Server-Sent Events are probed with a stream of their own.
// The round trip is `ping` and `pong` on that socket (bound to the sign-in like any socket).
import { socket } from "./live.js";

const show = (id, text) => { document.getElementById(id).textContent = text; };
const SAMPLES = 20;
let measuring = null; // the measurement under way: {samples, sentAt, timer}
let measureWhenOpen = true;

function onSse() {
  return "not working from this browser: the page fell back to Server-Sent Events";
}

function showSocketState({ state }) {
  if (state === "live" && socket.transport === "sse") {
    show("diag-socket", onSse());
    if (measureWhenOpen) measure();
  } else if (state === "connecting") show("diag-socket", socket.transport === "sse" ? onSse() : "connecting…");
  else if (state === "reconnecting") show("diag-socket", "lost: reconnecting…");
  else if (state === "unauthenticated") show("diag-socket", "closed: signed out");
  if (state !== "live" && measuring) stopMeasuring("the socket dropped while measuring");
}

function stopMeasuring(text) {
  clearTimeout(measuring.timer);
  measuring = null;
  show("diag-rtt", text);
}

function ping() {
  measuring.sentAt = performance.now();
  clearTimeout(measuring.timer);
  measuring.timer = setTimeout(() => stopMeasuring("no answer in 5 s"), 5000);
  socket.send({ type: "ping" });
}

function measure() {
  if (measuring) return;
  if (socket.transport === "sse") {
    measureWhenOpen = false;
    show("diag-rtt", "not measurable: WebSockets do not work from this browser");
    return;
  }
  if (!socket.canSend) {
    measureWhenOpen = true;
    show("diag-rtt", "waiting for the socket…");
    return;
  }
  show("diag-rtt", "measuring…");
  measuring = { samples: [], sentAt: 0, timer: null };
  ping();
}

socket.addEventListener("state", (event) => showSocketState(event.detail));
socket.addEventListener("message", ({ detail: message }) => {
  if (message.type === "hello") {
    show("diag-socket", socket.transport === "sse" ? `${onSse()} (signed in as ${message.user.username})` : `connected (protocol ${message.protocol}, as ${message.user.username})`);
    if (measureWhenOpen) {
      measureWhenOpen = false;
      measure();
    }
  } else if (message.type === "pong" && measuring) {
    const { samples } = measuring;
    samples.push(performance.now() - measuring.sentAt);
    if (samples.length < SAMPLES) return ping();
    samples.sort((a, b) => a - b);
    stopMeasuring(`median ${samples[SAMPLES / 2].toFixed(1)} ms, worst ${samples[SAMPLES - 1].toFixed(1)} ms`);
  }
});
showSocketState({ state: socket.state });

function checkSse() {
  const source = new EventSource("/events/");
  const timer = setTimeout(() => { show("diag-sse", "no answer in 5 s"); source.close(); }, 5000);
  source.onmessage = () => { clearTimeout(timer); show("diag-sse", "working"); source.close(); };
  source.onerror = () => { clearTimeout(timer); show("diag-sse", "failed"); source.close(); };
}

document.getElementById("diag-again").addEventListener("click", measure);
checkSse();
