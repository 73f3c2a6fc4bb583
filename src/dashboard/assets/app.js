// wxpush dashboard: the page's <main> is fetched again every 2 s (the server renders it) and
// swapped in, unless the operator is typing in a form of it. Forms that ask for it confirm
// first. No other script, no outside asset.
(function () {
  "use strict";
  var EVERY = 2000;
  function busy(main) {
    var a = document.activeElement;
    return a && main.contains(a) && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }
  function stamp(trouble) {
    var s = document.getElementById("refreshed");
    if (!s) { return; }
    s.textContent = trouble ? "not updated: " + trouble + " (trying again)" : "updated " + new Date().toLocaleTimeString();
    s.className = trouble ? "error" : "";
  }
  function refresh() {
    var main = document.getElementById("live");
    if (!main || document.hidden || busy(main)) { return; }
    fetch(window.location.pathname + window.location.search, {
      headers: { "X-Dashboard-Partial": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (r) {
      if (!r.ok) { stamp("HTTP " + r.status); return null; }
      return r.text();
    }).then(function (html) {
      if (html !== null && !busy(main)) { main.innerHTML = html; stamp(); }
    }).catch(function () { stamp("the dashboard does not answer"); });
  }
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f && f.getAttribute("data-confirm") && !window.confirm(f.getAttribute("data-confirm"))) {
      e.preventDefault();
    }
  });
  stamp(null);
  window.setInterval(refresh, EVERY);
})();
