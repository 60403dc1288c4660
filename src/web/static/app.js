// compute-server: the little JavaScript the pages use (served from /static, so the
// Content-Security-Policy needs no inline script).
"use strict";

// Server detail: follow the server's status live (server-sent events from the watch).
const live = document.querySelector("[data-events]");
if (live && window.EventSource) {
  const source = new EventSource(live.dataset.events);
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data);
    for (const [field, value] of Object.entries(status)) {
      for (const element of document.querySelectorAll(`[data-field="${field}"]`)) {
        element.textContent = value;
        if (field === "phase") {
          element.className = "phase phase-" + String(value).toLowerCase();
        }
      }
    }
    for (const element of document.querySelectorAll("[data-when-running]")) {
      element.hidden = element.dataset.whenRunning !== String(status.running);
    }
    // The stop warning (with Keep running) and the quiet "Stops by itself at" line: shown
    // while their text is not empty.
    for (const element of document.querySelectorAll("[data-shown-by]")) {
      element.hidden = !status[element.dataset.shownBy];
    }
  });
  // The stream ends with the session's token and the browser asks again; when the session
  // has ended that answer is no stream: reload, which leads to the sign-in.
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      window.location.reload();
    }
  });
  source.addEventListener("deleted", () => {
    source.close();
    window.location.assign("/");
  });
}

// Ask before deleting.
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
}
