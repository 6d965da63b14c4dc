// The notification centre: the bell's unread count, the list, mark read / mark all read, and
// toasts. Every tab applies notification.read from the server, so all tabs agree. Each row and
// toast shows its level as a word and an icon; a burst of toasts is summarised (toasts.js).
import { api, el } from "./common.js";
import { ToastStack, levelTag } from "./toasts.js";

export class NotificationCentre {
  constructor() {
    this.items = new Map(); // id -> notification
    this.unread = 0;
    this.socket = null;
    this.toasts = new ToastStack({ showAll: () => this.showAll() });
    this.bell = document.getElementById("bell");
    this.panel = document.getElementById("notif-panel");
    if (!this.bell) return;
    this.bell.addEventListener("click", () => this.toggle());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.panel.hidden) {
        this.toggle(false);
        this.bell.focus();
      }
    });
    document.getElementById("mark-all").addEventListener("click", () => this.markAllRead());
  }

  // Without a socket on this page, load from the API once.
  async load() {
    const { response, body } = await api("/api/v1/notifications/?limit=20");
    if (!response.ok) return;
    body.results.reverse().forEach((n) => this.add(n));
    this.setUnread(body.unread_count);
  }

  attach(socket) {
    this.socket = socket;
    socket.addEventListener("message", ({ detail: message }) => {
      if (message.type === "snapshot") {
        message.notifications.forEach((n) => this.add(n));
        this.setUnread(message.unread_count);
      } else if (message.type === "notification.new") {
        const fresh = !this.items.has(message.notification.id);
        this.add(message.notification);
        this.setUnread(message.unread_count);
        if (fresh && message.toast !== false && !message.notification.read) this.toasts.add(message.notification);
      } else if (message.type === "notification.read") {
        this.applyRead(message);
      }
    });
  }

  add(notification) {
    this.items.set(notification.id, notification);
    this.render(notification);
    document.getElementById("notif-empty").hidden = this.items.size > 0;
  }

  render(n) {
    const list = document.getElementById("notif-list");
    let row = document.getElementById(`notif-${n.id}`);
    if (!row) {
      row = el("li", { id: `notif-${n.id}`, class: "notif" });
      const link = el("a", { href: n.link || "#", class: "notif-link" });
      const head = el("span", { class: "notif-head-line" });
      head.append(levelTag(n.level), el("strong", {}, n.title));
      link.append(head, el("span", { class: "notif-body" }, n.body || ""), el("time", { class: "muted small", datetime: n.created_at }, new Date(n.created_at).toLocaleString()));
      link.addEventListener("click", () => this.markRead([n.id]));
      const mark = el("button", { type: "button", class: "link notif-mark" }, "Mark read");
      mark.addEventListener("click", () => this.markRead([n.id]));
      row.append(link, mark);
      // Newest first.
      const after = [...list.children].find((child) => Number(child.id.slice(6)) < n.id);
      list.insertBefore(row, after || null);
    }
    row.dataset.level = n.level;
    row.classList.toggle("is-unread", !n.read);
    row.querySelector(".notif-mark").hidden = n.read;
  }

  setUnread(count) {
    this.unread = count;
    const badge = document.getElementById("unread");
    badge.textContent = count > 99 ? "99+" : String(count);
    badge.hidden = count === 0;
    this.bell.setAttribute("aria-label", `Notifications, ${count} unread`);
  }

  toggle(open = this.panel.hidden) {
    this.panel.hidden = !open;
    this.bell.setAttribute("aria-expanded", String(open));
  }

  // From a burst's summary toast: open the list and move focus into it.
  showAll() {
    this.toggle(true);
    (this.panel.querySelector("#notif-list a") || document.getElementById("mark-all")).focus();
  }

  async markRead(ids) {
    if (this.socket && this.socket.canSend) {
      this.socket.send({ type: "mark_read", ids });
      return;
    }
    const { response, body } = await api("/api/v1/notifications/read/", { method: "POST", body: { ids } });
    if (response.ok) this.applyRead(body);
  }

  async markAllRead() {
    if (this.socket && this.socket.canSend) {
      this.socket.send({ type: "mark_all_read" });
      return;
    }
    const { response, body } = await api("/api/v1/notifications/read-all/", { method: "POST", body: {} });
    if (response.ok) this.applyRead(body);
  }

  // A notification.read event, or the API's answer of the same shape: `ids` marked read, or
  // after "mark all read" `up_to` (every notification up to that id is read, one small event
  // however many); `unread_count` is exact on the server either way.
  applyRead({ ids = [], up_to: upTo = null, unread_count }) {
    const marked = new Set(ids);
    for (const n of this.items.values()) {
      if (!n.read && (marked.has(n.id) || (upTo !== null && n.id <= upTo))) {
        n.read = true;
        this.render(n);
      }
    }
    this.setUnread(unread_count);
  }
}
