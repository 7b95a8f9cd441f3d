// A sweep's page: its ticked runs' curves on one chart (overlay.js); ranking changes at once.
(function () {
  "use strict";
  var MAX_LINES = 40;
  var runs = JSON.parse(document.getElementById("runs-data").textContent);
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#ranking tbody input[type=checkbox]"));
  var lossSelect = document.getElementById("loss"), logScale = document.getElementById("log-scale");
  var rankForm = document.getElementById("rank-form");

  function draw() {
    var loss = lossSelect.value;
    var lines = boxes.filter(function (box) { return box.checked; }).slice(0, MAX_LINES).map(function (box) {
      var run = runs[Number(box.dataset.index)];
      return { run: run.run, points: run.curves[loss] || [] };
    });
    lossreportOverlay.draw(document.getElementById("overlay"), document.getElementById("legend"), lines,
      loss, logScale.checked, loss ? "No ticked run has " + loss + "." : "No losses yet.");
  }

  lossSelect.addEventListener("change", draw);
  logScale.addEventListener("change", draw);
  boxes.forEach(function (box) { box.addEventListener("change", draw); });
  document.getElementById("select-none").addEventListener("click", function () {
    boxes.forEach(function (box) { box.checked = false; });
    draw();
  });
  rankForm.addEventListener("change", function () { rankForm.submit(); });
  draw();
})();
