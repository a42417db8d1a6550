// Share link result page: copy the link (shown once) to the clipboard.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("copy-share");
  if (!button) return;
  const input = document.getElementById(button.dataset.target);
  const state = document.getElementById("copy-state");
  button.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      state.textContent = "Copied.";
    } catch (err) {
      // no clipboard permission (plain HTTP on another host): the text is selected, Ctrl+C works
      state.textContent = "Press Ctrl+C to copy the selected link.";
    }
  });
});
