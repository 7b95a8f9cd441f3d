// A sweep's page: its ticked runs' curves on one chart (overlay.js); ranking changes at once.
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#ranking tbody input[type=checkbox]"));
  var rankForm = document.getElementById("rank-form");
  lossreportOverlay.drawTicked(boxes, JSON.parse(document.getElementById("runs-data").textContent), "");
  rankForm.addEventListener("change", function () { rankForm.submit(); });
})();
