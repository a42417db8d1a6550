// DicomVault pages: helpers shared by the page scripts (no framework, same origin only).
"use strict";
window.dicomvault = {
  /** The session's anti-CSRF token, from the page's <meta name="csrf-token">. */
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  },
  /** fetch() with the session cookie and the anti-CSRF header a changing request needs. */
  fetch(url, options = {}) {
    const headers = new Headers(options.headers || {});
    headers.set("X-CSRF-Token", this.csrf());
    return fetch(url, { ...options, headers, credentials: "same-origin" });
  },
};
