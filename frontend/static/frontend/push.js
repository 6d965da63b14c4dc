// The settings page's "Browser notifications" section: turn browser push on or off for this browser.
// On: register /sw.js, subscribe with the server's VAPID key, hand the subscription to the server.
// Off: unsubscribe and tell the server to forget it. The server only pushes while no tab is open.
import { api } from "./common.js";

const section = document.getElementById("browser-push");
const button = document.getElementById("push-toggle");
const status = document.getElementById("push-status");

function show(message, { enabled = null, disabled = false } = {}) {
  status.textContent = message;
  button.disabled = disabled;
  if (enabled !== null) {
    button.textContent = enabled ? "Disable on this browser" : "Enable on this browser";
    button.dataset.enabled = enabled ? "true" : "false";
  }
}

function supported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function keyBytes(base64url) {
  const base64 = (base64url + "=".repeat((4 - (base64url.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameKey(buffer, bytes) {
  if (!buffer) return false;
  const current = new Uint8Array(buffer);
  return current.length === bytes.length && current.every((value, i) => value === bytes[i]);
}

async function serverKey() {
  const { response, body } = await api("/api/v1/push/vapid-public-key/");
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return keyBytes(body.public_key);
}

async function registration() {
  return navigator.serviceWorker.register("/sw.js", { scope: "/" });
}

// Is this browser's subscription one the server keeps for the signed-in user?
async function registeredHere(subscription) {
  if (!subscription) return false;
  const { response, body } = await api("/api/v1/push/subscriptions/");
  return response.ok && body.results.some((s) => s.endpoint === subscription.endpoint);
}

async function refresh() {
  if (!supported()) {
    show("This browser does not support push notifications.", { enabled: false, disabled: true });
    return;
  }
  if (Notification.permission === "denied") {
    show("Notifications are blocked for this site. Allow them in the browser's site settings, then reload.", {
      enabled: false,
      disabled: true,
    });
    return;
  }
  const reg = await navigator.serviceWorker.getRegistration("/");
  const subscription = reg ? await reg.pushManager.getSubscription() : null;
  if (await registeredHere(subscription)) {
    show("On: this browser is notified when a job ends while no Runboard tab is open.", { enabled: true });
  } else {
    show("Off for this browser.", { enabled: false });
  }
}

async function enable() {
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    const message =
      permission === "denied"
        ? "Notifications are blocked for this site. Allow them in the browser's site settings, then reload."
        : "Permission was not given; nothing changed.";
    show(message, { enabled: false, disabled: permission === "denied" });
    return;
  }
  const key = await serverKey();
  const reg = await registration();
  await navigator.serviceWorker.ready;
  let subscription = await reg.pushManager.getSubscription();
  if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
    // Made with a key the server no longer signs with (keys were rotated): start over.
    await subscription.unsubscribe();
    subscription = null;
  }
  subscription ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  const { response, body } = await api("/api/v1/push/subscriptions/", { method: "POST", body: subscription.toJSON() });
  if (!response.ok) {
    const fields = Object.values(body.fields || {}).flat().join(" ");
    throw new Error([body.detail, fields].filter(Boolean).join(" ") || `HTTP ${response.status}`);
  }
}

async function disable() {
  const reg = await navigator.serviceWorker.getRegistration("/");
  const subscription = reg ? await reg.pushManager.getSubscription() : null;
  if (!subscription) return;
  const { endpoint } = subscription;
  await subscription.unsubscribe();
  const { response } = await api("/api/v1/push/subscriptions/delete/", { method: "POST", body: { endpoint } });
  if (!response.ok && response.status !== 404) throw new Error(`HTTP ${response.status}`);
}

if (section) {
  button.addEventListener("click", async () => {
    const turningOn = button.dataset.enabled !== "true";
    show(turningOn ? "Turning on…" : "Turning off…", { disabled: true });
    try {
      await (turningOn ? enable() : disable());
      await refresh();
    } catch (error) {
      show(`Could not turn browser notifications ${turningOn ? "on" : "off"}: ${error.message}`, {
        enabled: !turningOn,
      });
    }
  });
  refresh().catch((error) => show(`Could not check browser notifications: ${error.message}`, { enabled: false }));
}
