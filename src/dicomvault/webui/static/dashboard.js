// The storage dashboard: reload the figures every 30 s while the page is visible (the server caches them, so this
// costs it no aggregate query). Stops when the session ends (the server then answers with the login page).
"use strict";
(function () {
  const box = document.getElementById("figures");
  if (!box) return;
  const src = box.dataset.src;
  const every = Math.max(10, parseInt(box.dataset.every || "30", 10)) * 1000;
  async function reload() {
    if (document.visibilityState !== "visible") return;
    try {
      const answer = await window.dicomvault.fetch(src, { headers: { Accept: "text/html" } });
      if (!answer.ok || answer.redirected) { clearInterval(timer); return; }
      box.innerHTML = await answer.text();
    } catch (err) {
      // the server is restarting or unreachable: keep the figures shown and try again later
    }
  }
  const timer = setInterval(reload, every);
})();
