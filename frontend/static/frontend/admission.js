// The Operations page's admission section: per-queue depth and oldest wait, paused kinds, the
// audit trail, and (with the "pause, resume and drain" power) the controls. Polls the API.
import { api, duration, el } from "./common.js";
import { toast } from "./toasts.js";

const section = document.getElementById("admission");
const mayControl = section.dataset.mayControl === "true";

async function control(action, target, name) {
  const { response, body } = await api("/api/v1/ops/queues/control/", { method: "POST", body: { action, target, name } });
  if (!response.ok) toast("Not done", body.detail || `HTTP ${response.status}`, "error");
  else render(body);
}

function stateOf(queue) {
  if (queue.drained) return "drained";
  if (queue.draining) return "draining";
  return queue.paused ? "paused" : "admitting";
}

function render(info) {
  document.getElementById("admission-queues").replaceChildren(...info.queues.map((queue) => {
    const actions = el("td");
    if (mayControl) {
      for (const action of queue.paused ? ["resume"] : ["pause", "drain"]) {
        const button = el("button", { type: "button", "data-action": action }, `${action[0].toUpperCase()}${action.slice(1)}`);
        button.addEventListener("click", () => control(action, "queue", queue.queue));
        actions.append(button);
      }
    }
    const tr = el("tr", { "data-queue": queue.queue });
    const wait = queue.oldest_wait_seconds === null ? "—" : duration(queue.oldest_wait_seconds);
    for (const cell of [queue.queue, queue.waiting, queue.in_line, queue.running, wait, stateOf(queue)]) tr.append(el("td", {}, String(cell)));
    tr.append(actions);
    return tr;
  }));
  document.getElementById("admission-paused-kinds").textContent = info.paused_kinds.join(", ") || "none";
  document.getElementById("admission-audit").replaceChildren(
    ...info.audit.map((row) => el("li", {}, `${new Date(row.at).toLocaleString()}: ${row.user} ${row.action} ${row.target} ${row.name}`)),
  );
}

async function refresh() {
  const { response, body } = await api("/api/v1/ops/queues/");
  if (response.ok) render(body);
}

const kindForm = document.getElementById("admission-kind");
if (kindForm) {
  kindForm.addEventListener("submit", (event) => {
    event.preventDefault();
    control(event.submitter.value, "kind", new FormData(kindForm).get("name"));
  });
}
refresh();
setInterval(refresh, 5000);
