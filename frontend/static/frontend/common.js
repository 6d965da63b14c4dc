// Shared by the pages: the job store (applies only newer versions), rendering a job row,
// launching from a generated form and the connection indicator (toasts: toasts.js).
// Every piece of user-supplied text is set with textContent, never parsed as HTML.
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// null: unknown, shown as a "working" bar, which only a running job may show. A job that ended
// freezes where it stopped, and only a success reads 100%: a failed or cancelled job's last
// progress may count work read ahead (a CSV's bytes past the line that failed).
export function percent(job) {
  if (job.state === "succeeded") return 100;
  if (job.state === "queued") return 0;
  const { current, total } = job.progress;
  const ended = FINAL.has(job.state);
  if (!total) return ended ? 0 : null;
  const pct = Math.max(0, Math.min(100, Math.floor((current / total) * 100)));
  return ended ? Math.min(pct, 99) : pct;
}

// A rate per second with SI prefixes, "12.9 MB/s" for bytes, "614 M numbers/s", "3.2 rows/s": the
// twin of jobs/units.py's format_rate (the command line's), same rules.
const PREFIXES = ["", "k", "M", "G", "T", "P", "E"];
const figure = (value, scaled) => (value < 1 && !scaled ? value.toFixed(2) : value < 99.95 ? value.toFixed(1) : value.toFixed(0));

export function formatRate(rate, unit = "items") {
  let value = Number.isFinite(rate) && rate > 0 ? rate : 0;
  let index = 0;
  // Judged on the figure as shown, so 999.7 reads "1.0 k", never "1000".
  while (value > 0 && index < PREFIXES.length - 1 && Number(figure(value, index > 0)) >= 1000) {
    value /= 1000;
    index += 1;
  }
  const number = value > 0 ? figure(value, index > 0) : "0";
  const prefix = PREFIXES[index];
  if (unit === "bytes") return `${number} ${prefix}B/s`;
  return prefix ? `${number} ${prefix} ${unit}/s` : `${number} ${unit}/s`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function shownState(job) {
  if (job.state === "running" && job.cancel_requested) return "cancelling";
  // Queued again after a failed attempt, until its backoff is over.
  if (job.state === "queued" && job.wait_code === "retry") return "retrying";
  return job.state;
}

// Apply a job only if it is newer than what is shown: events may arrive out of order
// (a snapshot racing a push), and versions only grow.
export class JobStore extends EventTarget {
  constructor() {
    super();
    this.jobs = new Map();
  }
  apply(job) {
    const known = this.jobs.get(job.id);
    if (known && known.version >= job.version) return false;
    this.jobs.set(job.id, job);
    this.dispatchEvent(new CustomEvent("job", { detail: { job, previous: known } }));
    return true;
  }
  // Jobs that no longer exist (a jobs.deleted event: deleted in bulk, or by retention).
  remove(ids) {
    for (const id of ids) {
      if (this.jobs.delete(id)) this.dispatchEvent(new CustomEvent("removed", { detail: { id } }));
    }
  }
}

export function api(path, { method = "GET", body } = {}) {
  const headers = { "X-CSRFToken": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) })
    .then(async (response) => ({ response, body: await response.json().catch(() => ({})) }));
}

// Whether this page's viewer sees every user's jobs: from the socket's hello once it came, else
// from the page itself (its <meta name="runboard-view-all-jobs">), so a row rendered before the
// socket says hello (a job page's first paint, the dashboard's first page) names its owner too.
export function viewerSeesAll() {
  const hello = window.runboard?.user;
  if (hello) return Boolean(hello.powers?.includes("view_all_jobs"));
  return document.querySelector('meta[name="runboard-view-all-jobs"]')?.content === "true";
}

// "10:02:03" today, else the date too; the full time is in the title.
export function clock(iso) {
  const at = new Date(iso);
  const today = at.toDateString() === new Date().toDateString();
  return today ? at.toLocaleTimeString() : at.toLocaleString();
}

function timeNode(cls, label, iso) {
  const node = el("span", { class: cls });
  const at = el("time", { datetime: iso, title: new Date(iso).toLocaleString() }, clock(iso));
  node.append(`${label} `, at);
  return node;
}

const seconds = (from, to) => Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000);

// Created and started times and how long it ran (or has run, or has waited so far).
function renderTimes(box, job) {
  const parts = [timeNode("job-created", "Created", job.created_at)];
  if (job.started_at) parts.push(timeNode("job-started", "started", job.started_at));
  let took = "";
  if (job.started_at && job.finished_at) took = `ran ${duration(seconds(job.started_at, job.finished_at))}`;
  else if (job.started_at && job.state === "running") took = `running for ${duration(seconds(job.started_at, new Date().toISOString()))}`;
  else if (job.state === "queued") took = `waiting for ${duration(seconds(job.created_at, new Date().toISOString()))}`;
  else if (job.finished_at) took = "never started";
  if (took) parts.push(el("span", { class: "job-duration" }, took));
  box.replaceChildren(...parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
}

// Short names for why a queued job waits (the payload's wait_code); the sentence is wait_reason.
const WAITS = {
  in_line: (job) => (job.queue_position ? `#${job.queue_position} in line` : "in line"),
  user_limit: () => "your running limit",
  kind_limit: () => "this kind's limit",
  behind_own: () => "behind your other jobs",
  global_limit: (job) => (job.queue_position ? `all workers busy, #${job.queue_position}` : "all workers busy"),
  paused: () => "paused by an operator",
  retry: () => "backing off before a retry",
  waiting_for_queue: () => "the queue is unreachable",
};

export function waitLabel(job) {
  if (job.state !== "queued") return "";
  const code = job.waiting_for_queue ? "waiting_for_queue" : job.wait_code;
  if (code && WAITS[code]) return WAITS[code](job);
  return code ? code.replaceAll("_", " ") : "not admitted yet";
}

// Every attempt of a job in its one row: "attempt 2 of 3" and each attempt's outcome
// (#1 failed → #2 running). A lost worker's re-queue may go past the kind's retries: no "of".
function renderAttempts(box, job) {
  const backingOff = job.state === "queued" && job.wait_code === "retry";
  const several = job.attempt > 1 || (job.max_attempts > 1 && backingOff);
  box.hidden = !several;
  if (!several) return box.replaceChildren();
  const of = job.max_attempts >= job.attempt ? ` of ${job.max_attempts}` : "";
  const chain = el("ol", { class: "attempt-chain", "aria-label": "Attempts" });
  const failed = backingOff ? job.attempt : job.attempt - 1;
  for (let n = 1; n <= failed; n += 1) chain.append(el("li", { "data-outcome": "failed" }, `#${n} failed`));
  const last = backingOff ? job.attempt + 1 : job.attempt;
  const outcome = backingOff ? "waiting" : shownState(job);
  chain.append(el("li", { "data-outcome": outcome }, `#${last} ${outcome}`));
  box.replaceChildren(el("span", { class: "job-attempt" }, `attempt ${job.attempt}${of}`), chain);
}

const jobLink = (id) => el("a", { href: `/jobs/${id}/`, class: "job-ref" }, id.slice(0, 8));

// Manual retries and re-runs chain through retry_of: "Retry of <earlier>" links back, and the
// earlier job's row, when it is on the page too, says "Retried as <newer>" (whichever renders first).
function renderChain(row, job) {
  row.dataset.retryOf = job.retry_of || "";
  const newer = document.querySelector(`li.job[data-retry-of="${job.id}"]`);
  if (newer) row.dataset.retriedAs = newer.id.replace(/^job-/, "");
  const parts = [];
  if (job.retry_of) parts.push(el("span", { class: "job-retry-of" }, "Retry of "), jobLink(job.retry_of));
  if (row.dataset.retriedAs) {
    if (parts.length) parts.push(" · ");
    parts.push(el("span", { class: "job-retried-as" }, "Retried as "), jobLink(row.dataset.retriedAs));
  }
  const box = row.querySelector(".job-chain");
  box.replaceChildren(...parts);
  box.hidden = parts.length === 0;
  const earlier = job.retry_of && document.getElementById(`job-${job.retry_of}`);
  if (earlier && earlier.firstChild && earlier.dataset.retriedAs !== job.id) {
    earlier.dataset.retriedAs = job.id;
    renderChain(earlier, { id: job.retry_of, retry_of: earlier.dataset.retryOf || null });
  }
}

export function renderJobRow(row, job, { link = true, actions = true } = {}) {
  if (!row.firstChild) {
    const head = el("div", { class: "job-head" });
    const title = link ? el("a", { class: "job-title", href: `/jobs/${job.id}/` }) : el("strong", { class: "job-title" });
    head.append(title, el("span", { class: "job-label", hidden: "" }), el("span", { class: "job-id muted" }), el("span", { class: "job-owner", hidden: "" }), el("span", { class: "job-attempts", hidden: "" }), el("span", { class: "badge" }));
    const bar = el("progress", { class: "bar", max: "100" });
    const line = el("div", { class: "job-line" });
    line.append(el("span", { class: "job-message" }), el("span", { class: "job-rate" }), el("span", { class: "job-percent" }));
    const wait = el("p", { class: "job-wait", hidden: "" });
    const times = el("p", { class: "job-times muted" });
    const chain = el("p", { class: "job-chain", hidden: "" });
    const foot = el("div", { class: "job-foot" });
    foot.append(el("a", { class: "job-download", hidden: "" }, "Download"));
    if (actions) {
      foot.append(el("button", { class: "link job-cancel", type: "button" }, "Cancel"));
      foot.append(el("button", { class: "link job-retry", type: "button" }, "Retry"));
    }
    row.append(head, bar, line, wait, times, chain, el("p", { class: "job-error error" }), foot);
  }
  const state = shownState(job);
  row.dataset.state = job.state;
  row.dataset.version = String(job.version);
  row.querySelector(".job-title").textContent = job.kind_title;
  // What tells this job from others of its kind: "sales.csv (12.4 MB)" (its kind's label).
  const label = row.querySelector(".job-label");
  label.hidden = !job.label;
  label.textContent = job.label || "";
  row.querySelector(".job-id").textContent = job.id.slice(0, 8);
  // Staff see every user's jobs: whose each one is, always.
  const owner = row.querySelector(".job-owner");
  owner.hidden = !(viewerSeesAll() && job.owner);
  owner.textContent = owner.hidden ? "" : job.owner;
  owner.title = owner.hidden ? "" : `Owner: ${job.owner}`;
  renderAttempts(row.querySelector(".job-attempts"), job);
  const badge = row.querySelector(".badge");
  badge.textContent = state;
  badge.dataset.state = state;
  const bar = row.querySelector("progress");
  const pct = percent(job);
  bar.setAttribute("aria-label", `${job.kind_title}${job.label ? ` (${job.label})` : ""} progress`);
  if (pct === null) bar.removeAttribute("value");
  else bar.value = pct;
  // An ended job with nothing to measure against (an empty file) shows an empty bar, no figure.
  const measured = pct !== null && (job.state === "succeeded" || job.state === "queued" || Boolean(job.progress.total));
  row.querySelector(".job-percent").textContent = measured ? `${pct}%` : "";
  const waiting = job.state === "queued" ? "Waiting for a worker…" : "";
  // Only ever queued: the job queue could not be reached, and the job is sent when it is back.
  const queueDown = job.waiting_for_queue ? "Waiting for the queue…" : "";
  // Why a queued job waits and where it stands (admission control): "2 of your jobs are
  // running, limit 2.", "3rd in line for a worker.", "Paused: …".
  const reason = job.state === "queued" && job.wait_reason ? job.wait_reason : "";
  row.querySelector(".job-message").textContent = queueDown || reason || job.progress.message || waiting;
  row.dataset.wait = job.state === "queued" && job.wait_code ? job.wait_code : "";
  const wait = row.querySelector(".job-wait");
  wait.hidden = job.state !== "queued";
  wait.textContent = wait.hidden ? "" : `Waiting: ${waitLabel(job)}`;
  wait.title = wait.hidden ? "" : reason || queueDown || waiting;
  renderTimes(row.querySelector(".job-times"), job);
  renderChain(row, job);
  const rate = job.state === "running" && job.rate ? formatRate(job.rate, job.unit || "items") : "";
  const eta = job.state === "running" && job.eta_seconds !== null && job.eta_seconds !== undefined ? ` · ${duration(job.eta_seconds)} left` : "";
  row.querySelector(".job-rate").textContent = rate + eta;
  trackSilence(row, job);
  trackRetry(row, job);
  // Backing off after a failed attempt: the reason quotes the error already.
  row.querySelector(".job-error").textContent = job.wait_code === "retry" && job.state === "queued" ? "" : job.error || "";
  const download = row.querySelector(".job-download");
  if (job.download_url) {
    download.href = job.download_url;
    download.hidden = false;
  } else download.hidden = true;
  const cancel = row.querySelector(".job-cancel");
  if (cancel) cancel.hidden = FINAL.has(job.state) || job.cancel_requested;
  const retry = row.querySelector(".job-retry");
  if (retry) retry.hidden = !FINAL.has(job.state);
}

// A running job's silence (seconds since its worker last showed life) as of when its payload
// arrived, aged here: a frozen or vanished worker pushes nothing, so no payload would ever say it
// stalled. Past the payload's stall_after the row says "no progress for N s" instead of a rate
// and an ETA, until a newer payload arrives.
const receivedAt = new WeakMap();
let silenceTimer = null;

function trackSilence(row, job) {
  if (!receivedAt.has(job)) receivedAt.set(job, Date.now());
  if (job.state !== "running" || job.silent_for === null || job.silent_for === undefined || !job.stall_after) {
    delete row.dataset.silentSince;
    delete row.dataset.stalled;
    return;
  }
  row.dataset.silentSince = String(receivedAt.get(job) - job.silent_for * 1000);
  row.dataset.stallAfter = String(job.stall_after);
  delete row.dataset.stalled;
  showSilence(row, Date.now());
  if (silenceTimer === null) {
    silenceTimer = setInterval(() => {
      const now = Date.now();
      for (const node of document.querySelectorAll("[data-silent-since]")) showSilence(node, now);
    }, 1000);
  }
}

function showSilence(row, now) {
  const silent = (now - Number(row.dataset.silentSince)) / 1000;
  if (silent <= Number(row.dataset.stallAfter)) return;
  row.dataset.stalled = "";
  row.querySelector(".job-rate").textContent = `no progress for ${duration(silent)}`;
}

// A job backing off after a failed attempt: "Attempt 1 of 3 failed: … — retrying in 30 s." counts
// down to its retry_at (then "retrying now"), until a newer payload arrives.
let retryTimer = null;

function trackRetry(row, job) {
  if (job.state !== "queued" || job.wait_code !== "retry" || !job.retry_at || !job.wait_reason) {
    delete row.dataset.retryAt;
    return;
  }
  row.dataset.retryAt = String(Date.parse(job.retry_at));
  row.dataset.retryReason = job.wait_reason.replace(/ — retrying in [^—]*$/, "");
  showRetry(row, Date.now());
  if (retryTimer === null) {
    retryTimer = setInterval(() => {
      const now = Date.now();
      for (const node of document.querySelectorAll("[data-retry-at]")) showRetry(node, now);
    }, 1000);
  }
}

function showRetry(row, now) {
  const left = Math.ceil((Number(row.dataset.retryAt) - now) / 1000);
  const when = left > 0 ? `retrying in ${duration(left)}` : "retrying now";
  row.querySelector(".job-message").textContent = `${row.dataset.retryReason} — ${when}.`;
}

let countdown = null;
export function showConnection({ state, retryAt }) {
  const node = document.getElementById("connection");
  if (!node) return;
  node.dataset.state = state;
  clearInterval(countdown);
  if (state === "live") node.textContent = window.runboard?.socket?.transport === "sse" ? "Live (SSE)" : "Live";
  else if (state === "connecting") node.textContent = "Connecting…";
  else if (state === "unauthenticated") node.textContent = "Signed out: reload to log in";
  else if (state === "reconnecting") {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      node.textContent = `Reconnecting in ${seconds} s…`;
    };
    tick();
    countdown = setInterval(tick, 500);
  }
}

export function readParams(form) {
  const params = {};
  for (const input of form.querySelectorAll("input[name], select[name]")) {
    const type = input.dataset.jsonType;
    if (type === "upload") continue;
    if (type === "boolean") params[input.name] = input.checked;
    else if (input.value.trim() === "") continue; // left empty: let the server apply its default
    else if (type === "integer" || type === "number") {
      const value = Number(input.value);
      params[input.name] = Number.isNaN(value) ? input.value : value;
    } else params[input.name] = input.value;
  }
  return params;
}

export function showErrors(form, fields = {}, detail = "") {
  for (const slot of form.querySelectorAll("[data-error-for]")) {
    const key = slot.dataset.errorFor;
    const messages = key === "__all__" ? [detail, ...(fields.kind || []), ...(fields.params || [])] : fields[key] || [];
    slot.textContent = messages.filter(Boolean).join(" ");
    const input = form.querySelector(`[name="${key.replace(/^params\./, "")}"]`);
    if (input && key !== "__all__") input.setAttribute("aria-invalid", messages.length ? "true" : "false");
  }
}

// POST a launch (JSON, or multipart with an upload progress bar); resolves to {status, body}.
function send(url, form, params) {
  const file = form.querySelector("input[type=file]")?.files?.[0];
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url);
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  const bar = form.querySelector(".upload-progress");
  let payload;
  if (file) {
    payload = new FormData();
    payload.append("kind", form.dataset.kind);
    payload.append("params", JSON.stringify(params));
    payload.append("file", file);
    if (bar) {
      bar.hidden = false;
      bar.value = 0;
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
      });
    }
  } else {
    xhr.setRequestHeader("Content-Type", "application/json");
    payload = JSON.stringify(url.endsWith("/retry/") ? { params } : { kind: form.dataset.kind, params });
  }
  return new Promise((resolve, reject) => {
    xhr.addEventListener("load", () => {
      if (bar) bar.hidden = true;
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch {}
      resolve({ status: xhr.status, body, retryAfter: xhr.getResponseHeader("Retry-After") });
    });
    xhr.addEventListener("error", () => reject(new Error("network error")));
    xhr.send(payload);
  });
}

export async function submitLaunch(form, url = "/api/v1/jobs/") {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  showErrors(form);
  try {
    const { status, body, retryAfter } = await send(url, form, readParams(form));
    if (status === 201) return body;
    const detail = status === 429 ? `${body.detail || "Too many launches."} (retry after ${retryAfter} s)` : body.detail;
    showErrors(form, body.fields || {}, detail || `Launch failed (HTTP ${status}).`);
  } catch (error) {
    showErrors(form, {}, `Could not reach the server: ${error.message}`);
  } finally {
    button.disabled = false;
  }
  return null;
}
