// Pagestream's UI script: the only script the pages load (the CSP allows no other).
// - the add-source form shows the credentials of the chosen deployment;
// - a source's page follows its run: it asks for the run's panel every second and swaps it in,
//   until the run is finished (no reload).
"use strict";

function showCredentials(form) {
  const chosen = form.querySelector('input[name="auth.kind"]:checked');
  const kind = chosen ? chosen.value : "cloud";
  for (const set of form.querySelectorAll("fieldset[data-kind]")) {
    const shown = set.dataset.kind === kind;
    set.hidden = !shown;
    set.disabled = !shown;
  }
}

function followRun(live) {
  const url = live.dataset.progressUrl;
  let failures = 0;
  async function poll() {
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const type = response.headers.get("content-type") || "";
      if (!response.ok || !type.startsWith("application/json")) {
        throw new Error("progress answered " + response.status);
      }
      const update = await response.json();
      // Server-rendered and escaped by the api.
      live.innerHTML = update.html;
      failures = 0;
      if (update.finished) {
        live.dataset.finished = "true";
        return;
      }
    } catch (error) {
      failures += 1;
      if (failures > 30) {
        return;
      }
    }
    window.setTimeout(poll, 1000);
  }
  if (live.querySelector('#run[data-finished="true"]') === null) {
    window.setTimeout(poll, 500);
  } else {
    live.dataset.finished = "true";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("source-form");
  if (form) {
    for (const radio of form.querySelectorAll('input[name="auth.kind"]')) {
      radio.addEventListener("change", () => showCredentials(form));
    }
    showCredentials(form);
  }
  const live = document.getElementById("live");
  if (live && live.dataset.progressUrl) {
    followRun(live);
  }
});
