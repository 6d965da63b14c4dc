// The operator's live view: subscribes over the page's one socket (live.js) and re-renders every
// update; below, the charts and failure groups over time.
import { duration, el } from "./common.js";
import { socket } from "./live.js";
import uPlot from "./vendor/uplot/uPlot.esm.js";

const set = (id, text) => { document.getElementById(id).textContent = text; };

function row(...cells) {
  const tr = el("tr");
  cells.forEach((cell) => tr.append(el("td", {}, String(cell))));
  return tr;
}

function render(ops) {
  set("ops-at", `updated ${new Date(ops.at).toLocaleTimeString()}`);
  set("ops-running", ops.jobs_by_state.running ?? 0);
  set("ops-queued", ops.jobs_by_state.queued ?? 0);
  set("ops-rate", ops.jobs_per_minute_last_hour);
  set("ops-failures", `${(ops.failure_ratio_last_hour * 100).toFixed(1)} %`);
  set("ops-stalled", ops.stalled_jobs);
  set("ops-sockets", ops.open_sockets);
  set("ops-layer", ops.channel_layer_rtt_ms === null ? "not answering" : `${ops.channel_layer_rtt_ms} ms`);
  const queues = document.getElementById("ops-queues");
  queues.replaceChildren(...Object.entries(ops.queue_depths || {}).map(([name, depth]) => row(name, depth)));
  if (ops.queue_depths === null) queues.replaceChildren(row("Redis is not answering", ""));
  const workers = document.getElementById("ops-workers");
  workers.replaceChildren(
    ...ops.workers.map((w) => row(w.name, w.current.map((c) => `${c.kind || c.task} (${c.owner || "?"}) ${c.progress ? c.progress.join("/") : ""}`).join(", ") || "idle")),
  );
  if (!ops.workers.length) workers.replaceChildren(row("No worker answers", ""));
  document.getElementById("ops-stalled-list").replaceChildren(...ops.stalled.map((s) => row(s.id.slice(0, 8), s.kind, s.owner, `${s.silent_for_s} s`)));
}

socket.addEventListener("message", ({ detail: message }) => {
  if (message.type === "hello") socket.send({ type: "ops.subscribe" });
  else if (message.type === "ops.update") render(message.ops);
});

// --- Over time (issue 16 §11, §13): charts and failure groups from GET /api/v1/ops/history/,
// polled every POLL_MS while the page is visible (never computed per ops.update). uPlot draws on
// a canvas and styles through the CSSOM only, so it runs under the page's strict CSP.

const POLL_MS = 30_000;
const CHART_HEIGHT = 200;
// Colours told apart on light and dark cards; a kind keeps its colour on every chart.
const PALETTE = ["#2f81f7", "#d1242f", "#1a7f37", "#bf8700", "#8250df", "#0e8a9e", "#cf5f00", "#7d8590", "#e85aad"];
const history = document.getElementById("ops-history");
const charts = new Map(); // figure id -> uPlot
let windowName = "hour";
let latest = null;
let request = 0;

const seconds = (value) => {
  if (value === null || value === undefined) return "–";
  if (value < 10) return `${value.toFixed(1)} s`;
  return duration(value);
};
const per = (payload) => (payload.bucket_seconds === 60 ? "per minute" : "per hour");
const clock = (unix, payload) =>
  new Date(unix * 1000).toLocaleTimeString([], payload.bucket_seconds === 60 ? { hour: "2-digit", minute: "2-digit" } : { weekday: "short", hour: "2-digit", minute: "2-digit" });

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function colourOf(name, names) {
  return PALETTE[names.indexOf(name) % PALETTE.length];
}

// A short description of a series for screen readers: its total (counts) and its peak.
function describe(name, values, payload, format, counts) {
  let peak = -1;
  values.forEach((value, i) => { if (value !== null && (peak < 0 || value > values[peak])) peak = i; });
  if (peak < 0 || (counts && values[peak] === 0)) return `${name}: none`;
  const total = counts ? `${values.reduce((sum, value) => sum + value, 0)} in all, ` : "";
  return `${name}: ${total}peak ${format(values[peak])} at ${clock(payload.buckets[peak], payload)}`;
}

function draw(id, payload, lines, { yLabel, format }) {
  const figure = document.getElementById(id);
  const plot = figure.querySelector(".chart-plot");
  charts.get(id)?.destroy();
  charts.delete(id);
  plot.replaceChildren();
  const label = figure.querySelector("figcaption").textContent.trim();
  if (!lines.length) {
    plot.append(el("p", { class: "chart-empty" }, "Nothing in this window."));
    plot.setAttribute("aria-label", `${label}: nothing in this window.`);
    return;
  }
  const text = cssVar("--text");
  const grid = cssVar("--border");
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const options = {
    width: Math.max(200, plot.clientWidth),
    height: CHART_HEIGHT,
    series: [
      { label: "time", value: (u, v) => (v === null ? "–" : clock(v, payload)) },
      ...lines.map((line) => ({
        label: line.label,
        stroke: line.colour,
        width: line.dash ? 1.5 : 2,
        dash: line.dash ? [5, 4] : undefined,
        spanGaps: false,
        // A percentile alone between empty buckets is a dot, not an invisible line.
        points: { show: format === seconds, size: 5 },
        value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
      })),
    ],
    axes: [{ ...axis }, { ...axis, label: yLabel, size: 56 }],
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  const chart = new uPlot(options, [payload.buckets, ...lines.map((line) => line.values)], plot);
  charts.set(id, chart);
  plot.setAttribute("aria-label", `${label}, ${payload.window === "hour" ? "last hour" : "last day"}. ${lines.map((line) => describe(line.label, line.values, payload, format, format !== seconds)).join("; ")}.`);
}

function renderCharts(payload) {
  const kinds = payload.kinds.map((series) => series.kind);
  const queues = payload.queues.map((series) => series.queue);
  const count = (v) => String(v);
  draw("chart-finished", payload, payload.kinds.map((s) => ({ label: s.kind, values: s.finished, colour: colourOf(s.kind, kinds) })), { yLabel: "jobs", format: count });
  draw(
    "chart-failed",
    payload,
    payload.kinds.filter((s) => s.failed_in_window).map((s) => ({ label: s.kind, values: s.failed, colour: colourOf(s.kind, kinds) })),
    { yLabel: "jobs", format: count },
  );
  draw(
    "chart-runtime",
    payload,
    payload.kinds.filter((s) => s.runtime_p50_s_in_window !== null).flatMap((s) => [
      { label: `${s.kind} p50`, values: s.runtime_p50_s, colour: colourOf(s.kind, kinds) },
      { label: `${s.kind} p95`, values: s.runtime_p95_s, colour: colourOf(s.kind, kinds), dash: true },
    ]),
    { yLabel: "seconds", format: seconds },
  );
  draw(
    "chart-wait",
    payload,
    payload.queues.flatMap((s) => [
      { label: `${s.queue} p50`, values: s.wait_p50_s, colour: colourOf(s.queue, queues) },
      { label: `${s.queue} p95`, values: s.wait_p95_s, colour: colourOf(s.queue, queues), dash: true },
    ]),
    { yLabel: "seconds", format: seconds },
  );
}

function renderTables(payload) {
  const kinds = history.querySelector("#history-kinds tbody");
  kinds.replaceChildren(
    ...payload.kinds.map((s) => row(s.kind, s.finished_in_window, s.failed_in_window, seconds(s.runtime_p50_s_in_window), seconds(s.runtime_p95_s_in_window))),
  );
  if (!payload.kinds.length) kinds.replaceChildren(row("No job finished in this window", "", "", "", ""));
  const queues = history.querySelector("#history-queues tbody");
  queues.replaceChildren(...payload.queues.map((s) => row(s.queue, s.jobs_in_window, seconds(s.wait_p50_s_in_window), seconds(s.wait_p95_s_in_window))));
  if (!payload.queues.length) queues.replaceChildren(row("No job was queued in this window", "", "", ""));
}

function renderFailures(payload) {
  const list = document.getElementById("failures-list");
  const groups = payload.failures.map((group) => {
    const item = el("li", { class: "failure-group", "data-error-class": group.error_class });
    const heading = el("h4");
    heading.append(el("span", { class: "failure-count" }, `${group.count} ${group.count === 1 ? "job" : "jobs"}`), ` failed with ${group.label}`);
    const meta = el("p", { class: "failure-meta" });
    meta.append(
      el("span", {}, `Kinds: ${group.kinds.join(", ")}`),
      el("span", {}, `latest ${new Date(group.latest_at).toLocaleString()}`),
      el("a", { href: group.jobs_url, class: "failure-jobs" }, `See the ${group.count === 1 ? "job" : "jobs"}`),
    );
    // Only a class is an exact filter: an unclassed group (failed before classes were kept) has
    // no bulk link.
    if (group.bulk_url) meta.append(el("a", { href: group.bulk_url, class: "failure-bulk" }, `Retry ${group.count === 1 ? "it" : "them"}…`));
    item.append(heading, meta);
    // What the jobs said comes only to those who may see every user's jobs.
    if (group.latest_job_id) item.append(el("p", { class: "failure-message" }, group.latest_message || "(no message)"));
    if (typeof group.traceback === "string" && group.traceback) {
      const details = el("details", { class: "failure-traceback" });
      details.append(el("summary", {}, "Latest traceback"), el("pre", { tabindex: "0" }, group.traceback));
      item.append(details);
    }
    return item;
  });
  list.replaceChildren(...groups);
  document.getElementById("failures-empty").hidden = groups.length > 0;
  const hidden = payload.failure_groups_total - payload.failures.length;
  const notes = [payload.window === "hour" ? "last hour" : "last day"];
  if (hidden > 0) notes.push(`the ${payload.failures.length} largest of ${payload.failure_groups_total} groups`);
  if (payload.failures_sampled) notes.push("unclassified failures grouped from the newest");
  document.getElementById("failures-note").textContent = `(${notes.join(", ")})`;
}

function renderHistory(payload) {
  latest = payload;
  history.querySelectorAll(".history-per").forEach((node) => { node.textContent = `(${per(payload)})`; });
  renderCharts(payload);
  renderTables(payload);
  renderFailures(payload);
  const status = document.getElementById("history-status");
  const name = payload.window === "hour" ? "Last hour, one-minute buckets" : "Last day, one-hour buckets";
  status.textContent = `${name} · ${payload.finished_total} finished, ${payload.failed_total} failed · updated ${new Date(payload.at).toLocaleTimeString()}`;
  status.dataset.sampled = String(payload.sampled);
  history.dataset.window = payload.window;
}

async function refresh() {
  const mine = ++request;
  const wanted = windowName;
  try {
    const response = await fetch(`${history.dataset.url}?window=${encodeURIComponent(wanted)}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const payload = await response.json();
    if (mine === request) renderHistory(payload);
  } catch (error) {
    if (mine === request) document.getElementById("history-status").textContent = `Could not load the history (${error.message}); trying again in 30 s.`;
  }
}

if (history) {
  history.querySelectorAll("input[name=history-window]").forEach((input) => {
    input.addEventListener("change", () => {
      if (!input.checked) return;
      windowName = input.value;
      document.getElementById("history-status").textContent = "Loading…";
      refresh();
    });
  });
  setInterval(() => { if (document.visibilityState === "visible") refresh(); }, POLL_MS);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(); });
  // Charts follow their card's width (a phone turned, a window resized).
  let width = history.clientWidth;
  new ResizeObserver(() => {
    if (history.clientWidth === width || !latest) return;
    width = history.clientWidth;
    renderCharts(latest);
  }).observe(history);
  refresh();
}
