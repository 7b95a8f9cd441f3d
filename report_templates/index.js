// The runs index: filter the table, overlay one loss across the ticked runs (overlay.js).
// User strings only ever reach the page through textContent and setAttribute.
(function () {
  "use strict";
  var MAX_LINES = 40;
  var runs = JSON.parse(document.getElementById("runs-data").textContent);
  var rows = Array.prototype.slice.call(document.querySelectorAll("tbody tr"));
  var filters = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var lossSelect = document.getElementById("loss");
  var logScale = document.getElementById("log-scale");
  var overlay = document.getElementById("overlay");
  var legend = document.getElementById("legend");

  function applyFilters() {
    var shown = 0;
    rows.forEach(function (row) {
      var visible = filters.every(function (f) {
        return !f.value || row.dataset[f.dataset.filter] === f.value;
      });
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    document.getElementById("shown").textContent = shown + " of " + rows.length + " runs";
    draw();
  }

  function draw() {
    var loss = lossSelect.value, log = logScale.checked;
    var chosen = rows.filter(function (row) {
      return !row.hidden && row.querySelector("input").checked;
    }).slice(0, MAX_LINES);
    var lines = chosen.map(function (row) {
      var run = runs[Number(row.dataset.index)];
      return { run: run.run, points: run.curves[loss] || [] };
    });
    lossreportOverlay.draw(overlay, legend, lines, loss, log,
      loss ? "No ticked run among those shown has " + loss + "." : "No losses yet.");
  }

  filters.forEach(function (f) { f.addEventListener("change", applyFilters); });
  lossSelect.addEventListener("change", draw);
  logScale.addEventListener("change", draw);
  document.querySelector("tbody").addEventListener("change", draw);
  document.getElementById("select-shown").addEventListener("click", function () {
    rows.forEach(function (row) { if (!row.hidden) { row.querySelector("input").checked = true; } });
    draw();
  });
  document.getElementById("select-none").addEventListener("click", function () {
    rows.forEach(function (row) { row.querySelector("input").checked = false; });
    draw();
  });
  applyFilters();
})();
