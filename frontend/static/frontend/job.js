// One job: live progress, the log tail (follows until the reader scrolls up), the result
// rendered for its kind, cancel / retry / re-run with edited parameters.
import { JobStore, FINAL, api, duration, el, renderJobRow, shownState, showConnection, submitLaunch } from "./common.js";
import { NotificationCentre } from "./notifications.js";
import { RunboardSocket } from "./socket.js";

const initial = JSON.parse(document.getElementById("job-data").textContent);
const store = new JobStore();
const row = document.getElementById(`job-${initial.id}`);
const log = document.getElementById("log");
let lastSeq = 0;

function meta(job) {
  const dl = document.getElementById("job-meta");
  dl.replaceChildren();
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const items = [
    ["State", shownState(job)],
    ["Created", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Waited in queue", job.queue_wait_seconds === null ? "—" : duration(job.queue_wait_seconds)],
    ["Parameters", JSON.stringify(job.params) + ((job.truncated || []).includes("params") ? " (shortened)" : "")],
  ];
  if (job.max_attempts > 1) items.push(["Attempt", job.attempt ? `${job.attempt} of ${job.max_attempts} (retried automatically)` : `not started yet (up to ${job.max_attempts}, retried automatically)`]);
  if (job.retry_of) items.push(["Retry of", job.retry_of.slice(0, 8)]);
  for (const [term, value] of items) dl.append(el("dt", {}, term), el("dd", {}, value));
  const timeline = document.getElementById("timeline");
  timeline.replaceChildren();
  for (const step of job.timeline || []) {
    const item = el("li", { "data-state": step.state });
    item.append(el("span", { class: "badge", "data-state": step.state }, step.state), el("time", { datetime: step.at }, new Date(step.at).toLocaleTimeString()));
    timeline.append(item);
  }
  renderAttempts(job);
  renderTraceback(job);
}

// A failed job's traceback, for those who may see every user's results (the result endpoint
// gives it to them only; null for anyone else). Fetched once, when the job has failed.
let tracebackFetched = false;

async function renderTraceback(job) {
  const box = document.getElementById("traceback");
  if (!box || !job.result_url || job.state !== "failed" || tracebackFetched) return;
  tracebackFetched = true;
  const { response, body } = await api(`${job.result_url}?limit=1`);
  if (!response.ok || !body.traceback) return;
  box.querySelector("pre").textContent = body.traceback;
  box.hidden = false;
}

// The attempts that failed and were retried, each with its error (from result_url: the payload
// has only a "retrying" step for the latest ones). Fetched again when another attempt started
// or the job ended.
let shownAttempts = "";

async function renderAttempts(job) {
  const list = document.getElementById("attempts");
  const key = `${job.attempt}|${FINAL.has(job.state)}`;
  if (!list || !job.result_url || job.attempt < 2 && job.wait_code !== "retry" || key === shownAttempts) return;
  shownAttempts = key;
  const { response, body } = await api(job.result_url);
  if (!response.ok || !Array.isArray(body.attempts)) return;
  list.replaceChildren(...body.attempts.map((a) => {
    const item = el("li", { "data-attempt": String(a.attempt) });
    const wait = a.retry_in ? `, retried after ${duration(a.retry_in)}` : ", retried";
    item.append(el("strong", {}, `Attempt ${a.attempt} failed`), el("time", { datetime: a.failed_at }, ` ${new Date(a.failed_at).toLocaleTimeString()}${wait}: `), el("span", { class: "error" }, a.error));
    return item;
  }));
  list.hidden = body.attempts.length === 0;
}

// Payloads carry only a summary of the result (it can be megabytes): a small result is shown
// from it, a large one is fetched from result_url a page at a time ("Show more").
const PROFILE_PAGE = 50;
let shownResult = null;

function renderResult(job) {
  const box = document.getElementById("result");
  // Live updates repeat the same finished job: render (and fetch) once per result.
  const key = [job.state, job.result_url, job.result_bytes, (job.truncated || []).includes("error")].join("|");
  if (key === shownResult) return;
  shownResult = key;
  if (job.state === "failed" && (job.truncated || []).includes("error") && job.result_url) {
    box.replaceChildren(el("p", { class: "muted" }, "No result."), fullErrorButton(job));
    return;
  }
  if (job.state !== "succeeded" || job.result_summary === null || job.result_summary === undefined) {
    box.replaceChildren(el("p", { class: "muted" }, FINAL.has(job.state) ? "No result." : "No result yet."));
    return;
  }
  const summary = job.result_summary;
  if (job.kind === "primes" && job.result_complete) {
    box.replaceChildren(el("p", { class: "big-number" }, summary.primes.toLocaleString()), el("p", { class: "muted" }, `primes below ${summary.n.toLocaleString()} (${summary.chunks} chunks)`));
  } else if (job.kind === "csv_profile") {
    renderProfile(box, job);
  } else if (job.download_url) {
    const link = el("a", { href: job.download_url, class: "button" }, `Download ${summary.file_name || "file"}`);
    box.replaceChildren(link, el("p", { class: "muted" }, `${summary.rows ?? ""} rows`));
  } else if (job.result_complete) {
    box.replaceChildren(el("pre", { class: "json" }, JSON.stringify(summary, null, 2)));
  } else {
    const line = el("p");
    line.append(el("a", { href: job.result_url, target: "_blank", rel: "noopener" }, `Open the whole result (${size(job.result_bytes)})`));
    box.replaceChildren(el("p", { class: "muted" }, "The start of the result:"), el("pre", { class: "json" }, JSON.stringify(summary, null, 2)), line);
  }
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function fullErrorButton(job) {
  const button = el("button", { type: "button", class: "secondary", id: "full-error" }, "Show the whole error");
  button.addEventListener("click", async () => {
    button.disabled = true;
    const { response, body } = await api(job.result_url);
    const text = response.ok ? body.error : body.detail || `HTTP ${response.status}`;
    button.replaceWith(el("pre", { class: "json error" }, text));
  });
  return button;
}

const fmt = (v) => (v === null || v === undefined ? "" : typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString() : v.toPrecision(6)) : String(v));

function profileRow(c) {
  const tr = el("tr");
  tr.append(el("th", { scope: "row" }, c.name), el("td", {}, c.type), el("td", {}, fmt(c.count)), el("td", {}, fmt(c.empty)),
    el("td", {}, (c.distinct_exact ? "" : "≈") + fmt(c.distinct)), el("td", {}, fmt(c.min)), el("td", {}, fmt(c.max)),
    el("td", {}, fmt(c.mean)), el("td", {}, fmt(c.stddev)), el("td", {}, c.top.map((t) => `${t.value} (${t.count})`).join(", ")));
  return tr;
}

// The columns come from result_url, PROFILE_PAGE at a time: a profile of 1,000 wide columns is
// megabytes, and the page shows the first ones at once and the rest on demand.
function renderProfile(box, job) {
  const summary = job.result_summary;
  const table = el("table", { class: "profile" });
  const head = el("tr");
  for (const h of ["Column", "Type", "Count", "Empty", "Distinct", "Min", "Max", "Mean", "Std dev", "Top values"]) head.append(el("th", { scope: "col" }, h));
  const thead = el("thead");
  thead.append(head);
  const body = el("tbody");
  table.append(thead, body);
  const status = el("p", { class: "muted small", id: "result-status" }, "Loading the columns…");
  const more = el("button", { type: "button", class: "secondary", id: "more-columns" }, "Show more columns");
  more.hidden = true;
  const rows = typeof summary.rows === "number" ? summary.rows.toLocaleString() : "?";
  // How the file was read when it was not plain UTF-8 ("Read as cp1252 (not valid UTF-8).").
  const notes = (Array.isArray(summary.notes) ? summary.notes : []).map((note) => el("p", { class: "note", role: "note" }, String(note)));
  box.replaceChildren(el("p", {}, `${summary.file_name}: ${rows} rows, ${summary.columns} columns`), ...notes, table, status, more);
  let next = `${job.result_url}?limit=${PROFILE_PAGE}`;
  async function load() {
    more.disabled = true;
    const { response, body: page } = await api(next);
    more.disabled = false;
    if (!response.ok) {
      status.textContent = `Could not load the columns: ${page.detail || `HTTP ${response.status}`}`;
      return;
    }
    for (const column of page.result.columns) body.append(profileRow(column));
    next = page.next;
    const total = page.page ? page.page.total : body.children.length;
    const cut = summary.truncated ? " Values longer than 200 characters are cut (…)." : "";
    status.textContent = `Showing ${body.children.length} of ${total} columns.${cut}`;
    more.hidden = !next;
  }
  more.addEventListener("click", load);
  load();
}

store.addEventListener("job", ({ detail: { job, previous } }) => {
  renderJobRow(row, job, { link: false, actions: false });
  meta(job);
  renderResult(job);
  document.getElementById("cancel").hidden = FINAL.has(job.state) || job.cancel_requested;
  document.getElementById("retry").hidden = !FINAL.has(job.state);
  document.title = `${shownState(job)} · ${job.kind_title} · Runboard`;
});

function appendLines(lines) {
  const fresh = lines.filter((line) => line.seq > lastSeq);
  if (!fresh.length) return;
  lastSeq = fresh[fresh.length - 1].seq;
  // Decide from where the reader is now, not from the last scroll event (which may be late).
  const follow = atBottom();
  log.append(document.createTextNode(fresh.map((line) => line.text).join("\n") + "\n"));
  if (follow) log.scrollTop = log.scrollHeight;
  showFollow(follow);
}

const atBottom = () => log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
function showFollow(following) {
  document.getElementById("log-follow").textContent = following
    ? "Following the log. Scroll up to stop."
    : "Paused. Scroll to the bottom to follow again.";
}
log.addEventListener("scroll", () => showFollow(atBottom()));

async function act(action) {
  const errorBox = document.getElementById("action-error");
  errorBox.textContent = "";
  const { response, body } = await api(`/api/v1/jobs/${initial.id}/${action}/`, { method: "POST", body: {} });
  if (!response.ok) errorBox.textContent = body.detail || `HTTP ${response.status}`;
  else if (action === "retry") location.assign(`/jobs/${body.id}/`);
  else store.apply(body);
}
document.getElementById("cancel").addEventListener("click", () => act("cancel"));
document.getElementById("retry").addEventListener("click", () => act("retry"));

const rerun = document.getElementById("rerun");
if (rerun) {
  rerun.addEventListener("submit", async (event) => {
    event.preventDefault();
    const job = await submitLaunch(rerun, `/api/v1/jobs/${initial.id}/retry/`);
    if (job) location.assign(`/jobs/${job.id}/`);
  });
}

store.apply(initial);
const socket = new RunboardSocket();
socket.addEventListener("state", (event) => showConnection(event.detail));
// On the SSE fallback there is no "watch": poll the log over HTTP instead.
setInterval(async () => {
  if (socket.transport !== "sse") return;
  const { response, body } = await api(`/api/v1/jobs/${initial.id}/log/?after=${lastSeq}`);
  if (response.ok) appendLines(body.lines);
}, 2000);
socket.addEventListener("message", ({ detail: message }) => {
  if (message.type === "hello") window.runboard.user = message.user;
  if (message.type === "hello") socket.send({ type: "watch", job_id: initial.id });
  else if (message.type === "snapshot") message.jobs.filter((job) => job.id === initial.id).forEach((job) => store.apply(job));
  else if (message.type === "job.update" && message.job.id === initial.id) store.apply(message.job);
  else if (message.type === "job.log" && message.job_id === initial.id) appendLines(message.lines);
});
const centre = new NotificationCentre();
centre.attach(socket);
socket.start();
window.runboard = { socket, store, centre };
