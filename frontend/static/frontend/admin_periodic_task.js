// The periodic task admin form (django-celery-beat): show the chosen crontab in words under the
// field. Replaces the package's inline script, which the Content-Security-Policy blocks.

const readable = JSON.parse(document.getElementById("readable-crontabs")?.textContent || "{}");
const help = document.querySelector(".field-crontab .help");
const select = document.getElementById("id_crontab");
const original = help ? help.textContent.trim() : "";

for (const row of document.querySelectorAll(".field-crontab_translation")) row.style.display = "none";

function showTranslation() {
  if (!help || !select) return;
  const words = readable[select.value];
  const parts = [document.createTextNode(original)];
  if (words) parts.push(document.createElement("br"), document.createTextNode(`Translation: ${words}`));
  help.replaceChildren(...parts);
}

select?.addEventListener("change", showTranslation);
