// The settings page's "Browser notifications" section: turn browser push on or off for this browser.
// On: register /sw.js, subscribe with the server's VAPID key, hand the subscription to the server.
// Off: unsubscribe and tell the server to forget it. The server only pushes while no tab is open.
// Every step says what it is doing, none waits for ever, and when push cannot work the status says
// why (no Push API, permission denied, no VAPID key on the server, no push service) and the button
// offers to try again.
import { api } from "./common.js";
import { levelTag } from "./toasts.js";

const section = document.getElementById("browser-push");
const button = document.getElementById("push-toggle");
const status = document.getElementById("push-status");
const STEP_MS = 10000; // a browser step that takes longer is not going to answer
const PROMPT_MS = 120000; // the permission prompt waits for a person

// A failure whose message is meant for the person as it stands.
class PushProblem extends Error {}

const BLOCKED =
  "Notifications are blocked for this site (permission denied). Allow them in the browser's site settings, then try again.";
const NO_KEY =
  "This server has no VAPID key configured, so it cannot send browser push. An administrator sets " +
  "RUNBOARD_VAPID_PUBLIC_KEY and RUNBOARD_VAPID_PRIVATE_KEY (or runs manage.py generate_vapid_keys); then try again.";

function show(message, { enabled = null, busy = false, problem = false } = {}) {
  status.replaceChildren(...(problem ? [levelTag("error"), " "] : []), message);
  status.dataset.problem = problem ? "true" : "false";
  status.setAttribute("role", problem ? "alert" : "status");
  button.disabled = busy;
  if (enabled !== null) {
    button.dataset.enabled = enabled ? "true" : "false";
    button.textContent = enabled ? "Disable on this browser" : problem ? "Try again" : "Enable on this browser";
  }
}

// A failed "off" leaves push on: its button still offers to turn it off.
function problem(message, { on = false } = {}) {
  show(message, { enabled: on, problem: true });
}

// What this browser lacks for push, or null.
function missing() {
  if (!("serviceWorker" in navigator)) return "service worker support (navigator.serviceWorker)";
  if (!("PushManager" in window)) return "Push API (PushManager)";
  if (!("Notification" in window)) return "Notification API";
  return null;
}

function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new PushProblem(`${what} did not answer in ${ms / 1000} s.`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
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
  if (response.status === 503) throw new PushProblem(NO_KEY);
  if (!response.ok) throw new PushProblem(`The server did not give its push key: ${body.detail || `HTTP ${response.status}`}.`);
  return keyBytes(body.public_key);
}

// Is this browser's subscription one the server keeps for the signed-in user?
async function registeredHere(subscription) {
  if (!subscription) return false;
  const { response, body } = await api("/api/v1/push/subscriptions/");
  return response.ok && body.results.some((s) => s.endpoint === subscription.endpoint);
}

async function refresh() {
  const lacking = missing();
  if (lacking) throw new PushProblem(`This browser cannot receive push notifications: it has no ${lacking}.`);
  if (Notification.permission === "denied") throw new PushProblem(BLOCKED);
  await serverKey();
  const reg = await navigator.serviceWorker.getRegistration("/");
  const subscription = reg ? await reg.pushManager.getSubscription() : null;
  if (await registeredHere(subscription)) {
    show("On: this browser is notified when a job ends while no Runboard tab is open.", { enabled: true });
  } else {
    show("Off for this browser.", { enabled: false });
  }
}

async function enable() {
  const lacking = missing();
  if (lacking) throw new PushProblem(`This browser cannot receive push notifications: it has no ${lacking}.`);
  show("Turning on: checking the server's push key…", { busy: true });
  const key = await serverKey();
  show("Turning on: asking this browser for permission…", { busy: true });
  const permission = await within(Notification.requestPermission(), PROMPT_MS, "The permission prompt");
  if (permission === "denied") throw new PushProblem(BLOCKED);
  if (permission !== "granted") throw new PushProblem("Permission was not given (the prompt was dismissed); nothing changed. Try again to be asked again.");
  show("Turning on: starting the service worker…", { busy: true });
  const reg = await within(navigator.serviceWorker.register("/sw.js", { scope: "/" }), STEP_MS, "The service worker");
  await within(navigator.serviceWorker.ready, STEP_MS, "The service worker");
  show("Turning on: subscribing with this browser's push service…", { busy: true });
  let subscription = await reg.pushManager.getSubscription();
  if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
    // Made with a key the server no longer signs with (keys were rotated): start over.
    await subscription.unsubscribe();
    subscription = null;
  }
  try {
    subscription ??= await within(reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }), STEP_MS, "The browser's push service");
  } catch (error) {
    if (error instanceof PushProblem) throw error;
    throw new PushProblem(
      `This browser could not subscribe with its push service (${error.message}). Private windows and ` +
        "browsers without a push service cannot receive push notifications.",
    );
  }
  show("Turning on: saving this browser on the server…", { busy: true });
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

function failed(doing, { on = false } = {}) {
  return (error) => problem(error instanceof PushProblem ? error.message : `Could not ${doing}: ${error.message}`, { on });
}

if (section) {
  button.addEventListener("click", async () => {
    const turningOn = button.dataset.enabled !== "true";
    show(turningOn ? "Turning on…" : "Turning off…", { busy: true });
    try {
      await (turningOn ? enable() : disable());
      await refresh();
    } catch (error) {
      failed(`turn browser notifications ${turningOn ? "on" : "off"}`, { on: !turningOn })(error);
    }
  });
  refresh().catch(failed("check browser notifications"));
}
