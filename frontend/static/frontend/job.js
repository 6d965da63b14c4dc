// One job: live progress, the log like a CI run page (every kept line with its time, follows until
// the reader scrolls up, filter, #L12 links to a line, download), the result rendered for its
// kind, cancel / retry / re-run with edited parameters.
import { JobStore, FINAL, api, clock, duration, el, renderJobRow, shownState, submitLaunch, viewerSeesAll, waitLabel } from "./common.js";
import { socket } from "./live.js";

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
  if (viewerSeesAll() && job.owner) items.splice(1, 0, ["Owner", job.owner]);
  if (job.state === "queued") items.splice(1, 0, ["Waiting", `${waitLabel(job)}${job.wait_reason ? `: ${job.wait_reason}` : ""}`]);
  // Its kind retries failed attempts: say so only while that can still happen or once it did
  // (found by review: "Attempt 1 of 3 (retried automatically)" on a job that succeeded at once).
  if (job.max_attempts > 1) {
    const retried = job.attempt > 1 ? `, ${job.attempt - 1} retried automatically` : "";
    const open = !FINAL.has(job.state) ? " (a failed attempt is retried automatically)" : "";
    items.push(["Attempt", job.attempt ? `${job.attempt} of ${job.max_attempts}${retried}${open}` : `not started yet (up to ${job.max_attempts}${open})`]);
  }
  if (job.retry_of) {
    const link = el("a", { href: `/jobs/${job.retry_of}/`, class: "job-ref" }, job.retry_of.slice(0, 8));
    items.push(["Retry of", link]);
  }
  for (const [term, value] of items) {
    const dd = el("dd");
    dd.append(value);
    dl.append(el("dt", {}, term), dd);
  }
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
  document.title = `${shownState(job)} · ${job.kind_title}${job.label ? `: ${job.label}` : ""} · Runboard`;
});

// The log: one element per kept line (its number, a link to it, its time and text), loaded whole
// from the API first, then live from the socket's job.log events (held back until the load is
// done, so lines stay in order; a line already shown is dropped by its seq).
const filter = document.getElementById("log-filter");
const logCount = document.getElementById("log-count");
let logLoaded = false;
const heldBack = [];

function lineNode(line) {
  const node = el("div", { class: "log-line", id: `L${line.seq}`, "data-seq": String(line.seq) });
  const number = el("a", { class: "log-num", href: `#L${line.seq}`, "aria-label": `Line ${line.seq}` }, String(line.seq));
  const time = line.at ? el("time", { class: "log-time", datetime: line.at, title: new Date(line.at).toLocaleString() }, clock(line.at)) : el("time", { class: "log-time" });
  node.append(number, time, el("span", { class: "log-text" }, line.text));
  return node;
}

function appendLines(lines) {
  if (!logLoaded) {
    heldBack.push(...lines);
    return;
  }
  const fresh = [];
  for (const line of lines) {
    if (line.seq <= lastSeq) continue;
    fresh.push(line);
    lastSeq = line.seq;
  }
  if (!fresh.length) return;
  // Decide from where the reader is now, not from the last scroll event (which may be late).
  const follow = atBottom();
  const nodes = fresh.map(lineNode);
  const query = filter.value.trim().toLowerCase();
  for (const node of nodes) node.hidden = !matchesFilter(node, query);
  log.append(...nodes);
  showCount();
  if (follow) log.scrollTop = log.scrollHeight;
  showFollow(follow);
}

async function loadLog() {
  let after = 0;
  const loaded = [];
  try {
    // At most the kept lines (1,000), a page of at most 256 KiB at a time.
    for (let page = 0; page < 100; page += 1) {
      const { response, body } = await api(`/api/v1/jobs/${initial.id}/log/?after=${after}`);
      if (!response.ok || !Array.isArray(body.lines) || !body.lines.length) break;
      loaded.push(...body.lines);
      after = body.lines[body.lines.length - 1].seq;
    }
  } catch {
    // Unreachable for now: the live lines (a watch's tail) still show, and SSE polls the rest.
  }
  logLoaded = true;
  appendLines(loaded.concat(heldBack.sort((a, b) => a.seq - b.seq)));
  heldBack.length = 0;
  showTarget();
}

const atBottom = () => log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
function showFollow(following) {
  document.getElementById("log-follow").textContent = following
    ? "Following the log. Scroll up to stop."
    : "Paused. Scroll to the bottom to follow again.";
}
log.addEventListener("scroll", () => showFollow(atBottom()));

// Filter: only the lines containing the text (case-insensitive), live lines included.
const matchesFilter = (node, query) => !query || node.querySelector(".log-text").textContent.toLowerCase().includes(query);

function applyFilter() {
  const query = filter.value.trim().toLowerCase();
  for (const node of log.children) node.hidden = !matchesFilter(node, query);
  showCount();
}

function showCount() {
  const total = log.children.length;
  const query = filter.value.trim();
  const shown = query ? log.querySelectorAll(".log-line:not([hidden])").length : total;
  logCount.textContent = query ? `${shown} of ${total} lines match` : `${total} ${total === 1 ? "line" : "lines"}`;
}
filter.addEventListener("input", applyFilter);
filter.closest("form").addEventListener("submit", (event) => event.preventDefault());

// A link to a line (#L12): scroll to it and highlight it, on load and whenever the hash changes.
function showTarget() {
  const match = location.hash.match(/^#L(\d+)$/);
  for (const node of log.querySelectorAll(".log-line.is-target")) {
    node.classList.remove("is-target");
    node.removeAttribute("aria-current");
  }
  const node = match && document.getElementById(`L${match[1]}`);
  if (!node || !log.contains(node)) return;
  if (node.hidden) {
    filter.value = "";
    applyFilter();
  }
  node.classList.add("is-target");
  node.setAttribute("aria-current", "true");
  node.scrollIntoView({ block: "center" });
  showFollow(atBottom());
}
window.addEventListener("hashchange", showTarget);

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
loadLog();
// The page's one socket, bell and connection indicator are the live header's (live.js), shared by
// every page; this page adds its job's events and log.
// On the SSE fallback there is no "watch": poll the log over HTTP instead.
setInterval(async () => {
  if (socket.transport !== "sse") return;
  const { response, body } = await api(`/api/v1/jobs/${initial.id}/log/?after=${lastSeq}`);
  if (response.ok && logLoaded) appendLines(body.lines);
}, 2000);
socket.addEventListener("message", ({ detail: message }) => {
  if (message.type === "hello") socket.send({ type: "watch", job_id: initial.id });
  else if (message.type === "snapshot") message.jobs.filter((job) => job.id === initial.id).forEach((job) => store.apply(job));
  else if (message.type === "job.update" && message.job.id === initial.id) store.apply(message.job);
  else if (message.type === "job.log" && message.job_id === initial.id) appendLines(message.lines);
  else if (message.type === "jobs.deleted" && message.ids.includes(initial.id)) {
    // Deleted (in bulk, or by retention) while open: say so; its actions no longer apply.
    document.getElementById("action-error").textContent = "This job was deleted.";
    // Nothing here acts on it any more (found by review: the log download, the re-run form and
    // "Following the log" stayed).
    for (const id of ["cancel", "retry", "log-download", "log-follow"]) {
      const node = document.getElementById(id);
      if (node) node.hidden = true;
    }
    document.getElementById("rerun")?.closest("details")?.setAttribute("hidden", "");
  }
});
window.runboard.store = store;
