// eventbus console: auto-refresh of the overview, "select all", and batch progress.
// No inline scripts (the Content-Security-Policy forbids them); no framework.
"use strict";

function refreshLoop(box) {
  const every = Number(box.dataset.every || "5") * 1000;
  setInterval(async () => {
    try {
      const response = await fetch(box.dataset.refresh, { credentials: "same-origin" });
      if (response.ok) box.innerHTML = await response.text();
    } catch (e) { /* the next tick tries again */ }
  }, every);
}

function selectAll(toggle) {
  toggle.addEventListener("change", () => {
    for (const box of document.querySelectorAll('#letters input[name="id"]')) box.checked = toggle.checked;
  });
}

function batches(job) {
  const form = document.getElementById("step-form");
  if (!form) return;
  const run = document.getElementById("run");
  const pause = document.getElementById("pause");
  const bar = document.getElementById("bar");
  const status = document.getElementById("status");
  const verb = job.querySelector("h1").textContent.startsWith("Replay") ? "replayed" : "purged";
  let paused = false;
  pause.addEventListener("click", () => { paused = true; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    paused = false;
    run.hidden = true;
    pause.hidden = false;
    for (;;) {
      let state;
      try {
        const response = await fetch(job.dataset.step, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Accept": "application/json", "X-CSRF-Token": job.dataset.csrf },
        });
        state = await response.json();
        if (!response.ok) { status.textContent = state.error || "refused"; break; }
      } catch (e) { status.textContent = "connection lost: press Resume to go on"; break; }
      bar.value = state.progress;
      const gone = state.gone ? `, ${state.gone} already gone` : "";
      status.textContent = (state.finished ? `Done: ${state.done} ${verb}` : `${state.done} ${verb} so far`) +
        `${gone}; ${state.scanned} looked at.`;
      if (state.finished) { form.hidden = true; return; }
      if (paused) { status.textContent += " Paused."; break; }
    }
    run.textContent = "Resume";
    run.hidden = false;
    pause.hidden = true;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const streams = document.getElementById("streams");
  if (streams) refreshLoop(streams);
  const toggle = document.getElementById("select-all");
  if (toggle) selectAll(toggle);
  const job = document.getElementById("job");
  if (job) batches(job);
});
