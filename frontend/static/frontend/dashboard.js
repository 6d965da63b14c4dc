// The dashboard: launch forms and the live job list, on the page's one socket (live.js, which
// also keeps the connection indicator, the bell and toasts).
import { JobStore, api, el, renderJobRow, submitLaunch } from "./common.js";
import { socket } from "./live.js";
import { toast } from "./toasts.js";

const store = new JobStore();

// History: the filters apply to the live list at once, and "Load more" pages through older jobs
// from the API with the same filters.
const filters = document.getElementById("filters");
let nextPage = null;

function currentFilters() {
  const data = new FormData(filters);
  return {
    state: data.get("state"),
    kind: data.get("kind"),
    q: (data.get("q") || "").trim().toLowerCase(),
    errorClass: data.get("error_class") || "",
  };
}

function matches(job, f = currentFilters()) {
  if (f.state && job.state !== f.state) return false;
  if (f.kind && job.kind !== f.kind) return false;
  if (f.errorClass && job.error_class !== f.errorClass) return false;
  if (!f.q) return true;
  // The same fields as the API's ?q= (jobs.selectors.job_list_for_user), and the title.
  return [job.kind, job.kind_title, job.label, job.progress.message, job.error, job.error_class].some((text) => (text || "").toLowerCase().includes(f.q));
}

function applyFilters() {
  const f = currentFilters();
  let shown = 0;
  for (const row of document.querySelectorAll("#jobs li.job")) {
    const visible = matches(store.jobs.get(row.dataset.id), f);
    row.hidden = !visible;
    shown += visible ? 1 : 0;
  }
  const empty = document.getElementById("jobs-empty");
  empty.hidden = shown > 0;
  empty.textContent = store.jobs.size ? "No job matches these filters." : "No jobs yet. Launch one and watch it run here.";
}

async function loadPage(url) {
  const { response, body } = await api(url);
  if (!response.ok) return;
  body.results.forEach((job) => store.apply(job));
  nextPage = body.next;
  document.getElementById("more").hidden = !nextPage;
  applyFilters();
}

function reload() {
  const f = currentFilters();
  const query = new URLSearchParams({ limit: "50" });
  if (f.state) query.set("state", f.state);
  if (f.kind) query.set("kind", f.kind);
  if (f.q) query.set("q", f.q);
  if (f.errorClass) query.set("error_class", f.errorClass);
  showClassFilter();
  applyFilters();
  loadPage(`/api/v1/jobs/?${query}`);
}

// The filters live in the address too (?state=failed&kind=csv_profile&q=sales.csv): a link can
// open the list filtered (the Operations page's failure groups do), and a reload keeps them.
const FILTERED = ["state", "kind", "q", "error_class"];

function showClassFilter() {
  const value = filters.elements.namedItem("error_class").value;
  const note = document.getElementById("filter-class");
  note.hidden = !value;
  note.querySelector("code").textContent = value;
}

document.getElementById("filter-class-clear").addEventListener("click", () => {
  filters.elements.namedItem("error_class").value = "";
  filtersToAddress();
  reload();
});

function filtersFromAddress() {
  const query = new URLSearchParams(window.location.search);
  for (const name of FILTERED) {
    const field = filters.elements.namedItem(name);
    const value = query.get(name);
    if (!field || value === null) continue;
    // A select takes only one of its options; anything else leaves it on "any".
    if (field.tagName === "SELECT" && ![...field.options].some((option) => option.value === value)) continue;
    field.value = value.slice(0, 100);
  }
}

function filtersToAddress() {
  const data = new FormData(filters);
  const query = new URLSearchParams();
  for (const name of FILTERED) {
    const value = String(data.get(name) || "").trim();
    if (value) query.set(name, value);
  }
  const search = query.toString();
  history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
}

let typing = null;
filters.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    filtersToAddress();
    reload();
  }, 250);
});
filters.addEventListener("submit", (event) => event.preventDefault());
document.getElementById("more").addEventListener("click", () => nextPage && loadPage(nextPage));

store.addEventListener("job", ({ detail: { job } }) => {
  const list = document.getElementById("jobs");
  let row = document.getElementById(`job-${job.id}`);
  if (!row) {
    row = el("li", { id: `job-${job.id}`, class: "job" });
    row.dataset.id = job.id;
    renderJobRow(row, job);
    // Newest first: insert according to creation time.
    const after = [...list.children].find((child) => store.jobs.get(child.dataset.id)?.created_at < job.created_at);
    list.insertBefore(row, after || null);
  } else {
    renderJobRow(row, job);
  }
  row.hidden = !matches(job);
  if (!row.hidden) document.getElementById("jobs-empty").hidden = true;
});
// Toasts come from notifications (persisted, with the user's toast preference), not from here.

document.getElementById("jobs").addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  const row = event.target.closest("li.job");
  if (!button || !row) return;
  const action = button.classList.contains("job-cancel") ? "cancel" : button.classList.contains("job-retry") ? "retry" : null;
  if (!action) return;
  button.disabled = true;
  const { response, body } = await api(`/api/v1/jobs/${row.dataset.id}/${action}/`, { method: "POST", body: {} });
  button.disabled = false;
  if (response.ok) store.apply(body);
  else toast(`Could not ${action}`, body.detail || `HTTP ${response.status}`, "failed");
});

for (const form of document.querySelectorAll("form.launch")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const job = await submitLaunch(form);
    if (job) store.apply(job);
  });
}

window.runboard.store = store;
socket.addEventListener("message", ({ detail: message }) => {
  if (message.type === "snapshot") message.jobs.forEach((job) => store.apply(job));
  else if (message.type === "job.update") store.apply(message.job);
  else if (message.type === "jobs.deleted") store.remove(message.ids);
});
store.addEventListener("removed", ({ detail: { id } }) => {
  document.getElementById(`job-${id}`)?.remove();
  applyFilters();
});
filtersFromAddress();
reload();
