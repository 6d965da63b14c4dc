// Toasts. Each one names its level in a word and an icon, not by colour alone; a burst of
// notification toasts (more than BURST, each within BURST_WINDOW_MS of the last) folds into one summary toast,
// "5 jobs finished", that points to the notifications list instead of stacking over the page.
// User-supplied text is set with textContent only.
import { el } from "./common.js";

export const LEVELS = { error: "Error", warning: "Warning", success: "Success", info: "Info" };
const PLURALS = { error: "errors", warning: "warnings", success: "successes", info: "info" };
// Job states, as some callers still say them.
const ALIASES = { succeeded: "success", failed: "error", cancelled: "warning" };
const LIFETIME_MS = 8000;
export const BURST = 3;
export const BURST_WINDOW_MS = 2000;

export function levelOf(level) {
  const name = ALIASES[level] || level;
  return Object.hasOwn(LEVELS, name) ? name : "info";
}

// The level as a word with an icon before it (the icon is drawn by live.css).
export function levelTag(level) {
  const name = levelOf(level);
  const tag = el("span", { class: "level-tag", "data-level": name });
  tag.append(el("span", { class: "level-icon", "aria-hidden": "true" }), el("span", { class: "level-word" }, LEVELS[name]));
  return tag;
}

function box(level) {
  const node = el("div", { class: "toast", "data-level": levelOf(level), role: "status" });
  const close = el("button", { class: "link toast-close", type: "button", "aria-label": "Dismiss" }, "×");
  close.addEventListener("click", () => node.remove());
  node.append(close);
  return node;
}

function fill(node, { title, body, level, link }) {
  node.dataset.level = levelOf(level);
  const head = el("div", { class: "toast-head" });
  head.append(levelTag(level), link ? el("a", { href: link, class: "toast-title" }, title) : el("strong", { class: "toast-title" }, title));
  node.replaceChildren(node.querySelector(".toast-close"), head);
  if (body) node.append(el("div", { class: "toast-body" }, body));
}

function place(node) {
  document.getElementById("toasts")?.append(node);
  clearTimeout(node.expiry);
  node.expiry = setTimeout(() => node.remove(), LIFETIME_MS);
  return node;
}

// One toast, never grouped (an action's own error, say).
export function toast(title, body, level, link) {
  const node = box(level);
  fill(node, { title, body, level, link });
  return place(node);
}

function worst(items) {
  return Object.keys(LEVELS).find((name) => items.some((n) => levelOf(n.level) === name));
}

function summaryTitle(items) {
  const count = items.length;
  const levels = new Set(items.map((n) => levelOf(n.level)));
  if (levels.size === 1 && items.every((n) => n.job_id)) {
    const words = { success: "jobs finished", error: "jobs failed", warning: "job warnings", info: "job notifications" };
    return `${count} ${words[[...levels][0]]}`;
  }
  return `${count} new notifications`;
}

function breakdown(items) {
  const counts = Object.keys(LEVELS)
    .map((name) => [name, items.filter((n) => levelOf(n.level) === name).length])
    .filter(([, count]) => count > 0);
  if (counts.length < 2) return "";
  return counts.map(([name, count]) => `${count} ${count === 1 ? LEVELS[name].toLowerCase() : PLURALS[name]}`).join(" · ");
}

// The notification centre's toasts: one per notification, or one summary for a burst.
export class ToastStack {
  constructor({ showAll }) {
    this.showAll = showAll; // opens the notifications list
    this.recent = []; // [{at, node, notification}] single toasts of the current burst
    this.summary = null; // {node, items, at} while a burst's summary is open
  }

  add(notification, now = Date.now()) {
    if (this.summary && this.summary.node.isConnected && now - this.summary.at <= BURST_WINDOW_MS) {
      this.summary.items.push(notification);
      this.summary.at = now;
      this.renderSummary();
      return;
    }
    // A burst: toasts that each came within BURST_WINDOW_MS of the one before, still on screen.
    const last = this.recent.at(-1);
    if (last && now - last.at > BURST_WINDOW_MS) this.recent = [];
    this.recent = this.recent.filter((entry) => entry.node.isConnected);
    if (this.recent.length >= BURST) {
      const items = [...this.recent.map((entry) => entry.notification), notification];
      this.recent.forEach((entry) => entry.node.remove());
      this.recent = [];
      this.summary = { node: box(notification.level), items, at: now };
      this.summary.node.classList.add("toast-summary");
      this.renderSummary();
      return;
    }
    const node = toast(notification.title, notification.body, notification.level, notification.link);
    this.recent.push({ at: now, node, notification });
  }

  renderSummary() {
    const { node, items } = this.summary;
    fill(node, { title: summaryTitle(items), body: breakdown(items), level: worst(items) });
    const show = el("button", { type: "button", class: "link toast-action" }, "Show them in the notifications list");
    show.addEventListener("click", () => {
      node.remove();
      this.showAll();
    });
    node.append(show);
    place(node);
  }
}
