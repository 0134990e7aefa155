// Refreshes every element with a data-live URL from that URL (an HTML fragment of the
// same origin, rendered and escaped by the server) every few seconds. No inline script.
"use strict";
(function () {
  var PERIOD_MS = 4000;
  function refresh(el) {
    var url = el.getAttribute("data-live");
    if (!url || document.hidden) { return; }
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(
          el.tagName === "TBODY" ? "<table><tbody>" + html + "</tbody></table>" : html,
          "text/html");
        var src = el.tagName === "TBODY" ? doc.querySelector("tbody") : doc.body;
        if (src) { el.replaceChildren.apply(el, Array.prototype.slice.call(src.childNodes)); }
        el.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next round tries again */ });
  }
  function start() {
    var els = document.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(els, function (el) {
      setInterval(function () { refresh(el); }, PERIOD_MS);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
