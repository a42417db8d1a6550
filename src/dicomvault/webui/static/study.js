// The study page: ask before deleting; a series whose thumbnail cannot be drawn (SR, PDF) shows a grey square.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("delete-study");
  if (form) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm("Delete this study? " + (form.querySelector("button").title || ""))) {
        event.preventDefault();
      }
    });
  }
  for (const img of document.querySelectorAll(".thumb img")) {
    img.addEventListener("error", () => { img.classList.add("missing"); img.removeAttribute("src"); }, { once: true });
  }
});
