// The operator's live view: subscribes over the page's one socket (live.js) and re-renders every
// update.
import { el } from "./common.js";
import { socket } from "./live.js";

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
