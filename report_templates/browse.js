// The served runs index: each change of the query form asks the server for the page again
// and swaps in its results (the page works without this, as a plain form); the overlay draws
// the ticked runs of the page shown (overlay.js). User strings reach the page only as the
// server escaped them, or through textContent.
(function () {
  "use strict";
  var form = document.getElementById("query");
  var pending = null, typing = null;

  function params() {
    var query = new URLSearchParams();
    new FormData(form).forEach(function (value, name) { if (value !== "") { query.append(name, value); } });
    return query;
  }

  function load(url, push) {
    var results = document.getElementById("results");
    var started = performance.now();
    if (pending) { pending.abort(); }
    pending = new AbortController();
    results.dataset.state = "loading";
    fetch(url, { signal: pending.signal, headers: { "Accept": "text/html" } })
      .then(function (response) {
        return response.text().then(function (text) { return { ok: response.ok, text: text }; });
      })
      .then(function (answer) {
        var fresh = new DOMParser().parseFromString(answer.text, "text/html").getElementById("results");
        if (!answer.ok || !fresh) {
          results.dataset.state = "failed";
          results.querySelector("#shown").textContent = answer.ok ? "no answer" : answer.text.trim();
          return;
        }
        results.replaceWith(document.adoptNode(fresh));
        if (push) { history.pushState(null, "", url); } else { history.replaceState(null, "", url); }
        bind();
        fresh.dataset.answeredMs = String(Math.round(performance.now() - started));
        fresh.dataset.state = "ready";
      })
      .catch(function (error) {
        if (error.name !== "AbortError") { results.dataset.state = "failed"; }
      });
  }

  function query() { load("/?" + params().toString(), false); }

  function bind() {
    var results = document.getElementById("results");
    ["previous", "next"].forEach(function (id) {
      var link = document.getElementById(id);
      link.addEventListener("click", function (event) {
        event.preventDefault();
        if (link.getAttribute("aria-disabled") !== "true") { load(link.href, true); }
      });
    });
    var data = document.getElementById("runs-data");
    if (!data) { return; }
    var boxes = Array.prototype.slice.call(results.querySelectorAll("tbody input[type=checkbox]"));
    lossreportOverlay.drawTicked(boxes, JSON.parse(data.textContent), " on this page");
  }

  form.addEventListener("change", function (event) {
    if (event.target.type !== "search" && event.target.type !== "text") { query(); }
  });
  form.addEventListener("input", function (event) {
    if (event.target.type === "search" || event.target.type === "text") {
      clearTimeout(typing);
      typing = setTimeout(query, 250);
    }
  });
  form.addEventListener("submit", function (event) { event.preventDefault(); query(); });
  window.addEventListener("popstate", function () { location.reload(); });  // the form too
  bind();
})();
