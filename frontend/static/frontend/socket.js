// The one socket client: connects to /ws/notifications/, reconnects with capped exponential
// backoff and jitter, resumes from the last notification it saw (the server replays what was
// missed, then sends a fresh snapshot), and reports its state so the page never lies about the
// connection.
export class RunboardSocket extends EventTarget {
  constructor(path = "/ws/notifications/", { baseDelay = 500, maxDelay = 15000, pingEvery = 25000 } = {}) {
    super();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${location.host}${path}`;
    this.baseDelay = baseDelay;
    this.maxDelay = maxDelay;
    this.pingEvery = pingEvery;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.pinger = null;
    this.stopped = false;
    this.lastNotificationId = null;
    this.failures = 0; // consecutive attempts that never opened
    this.source = null; // the EventSource once we fell back to Server-Sent Events
    this.sseAfter = 3;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000);
  }

  // Only over the WebSocket; on the SSE fallback callers use the HTTP API instead (see .canSend).
  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  get canSend() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  get transport() {
    return this.source ? "sse" : "websocket";
  }

  deliver(data) {
    if (data.type === "replay.more") {
      // A long catch-up comes a page at a time: ask for the next one.
      this.lastNotificationId = Math.max(this.lastNotificationId ?? 0, data.last_notification_id);
      this.send({ type: "resume", last_notification_id: this.lastNotificationId });
      this.paging = true;
      return;
    }
    if (data.type === "error" && data.code === "rate_limited" && this.paging) {
      clearTimeout(this.pageTimer);
      this.pageTimer = setTimeout(
        () => this.send({ type: "resume", last_notification_id: this.lastNotificationId }),
        Math.ceil((data.retry_after || 1) * 1000),
      );
      return;
    }
    if (data.type === "hello") this.authRetried = false;
    if (data.type === "notification.new") {
      this.lastNotificationId = Math.max(this.lastNotificationId ?? 0, data.notification.id);
    } else if (data.type === "snapshot") {
      this.paging = false; // the snapshot ends a catch-up
      this.lastNotificationId = Math.max(this.lastNotificationId ?? 0, data.last_notification_id);
    }
    this.dispatchEvent(new CustomEvent("message", { detail: data }));
  }

  // WebSockets keep failing (a proxy that does not pass them): Server-Sent Events carry the same
  // events one way, and EventSource reconnects and resumes (Last-Event-ID) by itself.
  fallBackToSse() {
    const resume = this.lastNotificationId === null ? "" : `?last_event_id=${this.lastNotificationId}`;
    const source = new EventSource(`/events/${resume}`);
    this.source = source;
    source.addEventListener("open", () => this.setState("live"));
    source.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (data.type === "closed") {
        source.close();
        if (data.code === 4412) {
          // Privileges changed: a new stream carries what this user may now see.
          this.fallBackToSse();
          return;
        }
        this.setState(data.code === 4401 ? "unauthenticated" : "reconnecting", { retryAt: Date.now() });
        return;
      }
      this.deliver(data);
    });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) this.setState("reconnecting", { retryAt: Date.now() + 3000 });
    });
  }

  connect() {
    this.setState("connecting");
    const resume = this.lastNotificationId === null ? "" : `?last_notification_id=${this.lastNotificationId}`;
    const ws = new WebSocket(this.url + resume);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      this.failures = 0;
      this.setState("live");
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), this.pingEvery);
    });
    ws.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this.deliver(data);
    });
    let opened = false;
    ws.addEventListener("open", () => (opened = true));
    ws.addEventListener("close", (event) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (!opened && typeof EventSource !== "undefined") {
        // A socket that never opened counts towards the SSE fallback only while the server
        // answers HTTP (a proxy that refuses WebSockets). A server that is down, for a restart
        // or a deploy, refuses both: falling back then left every open page on SSE for good.
        this.serverAnswers().then((answers) => {
          if (this.stopped || this.ws !== null || this.source) return;
          if (answers && ++this.failures >= this.sseAfter) this.fallBackToSse();
          else this.scheduleReconnect();
        });
        return;
      }
      if (event.code === 4412) {
        // Privileges changed: reconnect at once, the new socket carries what we may now see.
        this.attempt = 0;
        this.connect();
        return;
      }
      if (event.code === 4401) {
        // The sign-in ended (logout, expiry, password change). One immediate retry: after a
        // password change on this very tab the session was renewed and the retry works.
        if (opened && !this.authRetried) {
          this.authRetried = true;
          this.connect();
          return;
        }
        this.setState("unauthenticated");
        return;
      }
      this.scheduleReconnect();
    });
  }

  // Whether the server answers plain HTTP now (its public liveness probe, /healthz).
  async serverAnswers() {
    try {
      const response = await fetch("/healthz", { cache: "no-store", credentials: "omit" });
      return response.ok;
    } catch {
      return false;
    }
  }

  scheduleReconnect() {
    const ceiling = Math.min(this.maxDelay, this.baseDelay * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this.setState("reconnecting", { retryAt: Date.now() + delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }
}
