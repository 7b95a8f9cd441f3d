// One loss of several runs on one chart: the runs index, the served index and a sweep's page.
// User strings only ever reach the page through textContent and setAttribute.
var lossreportOverlay = (function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
                 "#8C564B", "#7F7F7F", "#BCBD22"];
  var W = 960, H = 340, LEFT = 70, RIGHT = 16, TOP = 12, BOTTOM = 34;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function ticks(lo, hi, log) {
    if (log) {  // 1, 2, 5 of each decade; a narrow range falls back to even ticks
      var out = [];
      for (var e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
        [1, 2, 5].forEach(function (m) { out.push(m * Math.pow(10, e)); });
      }
      out = out.filter(function (t) { return t >= lo && t <= hi; });
      if (out.length >= 3) { return out; }
    }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 4 || 1)));
    [1, 2, 5, 10].some(function (m) { if ((hi - lo) / (step * m) <= 6) { step *= m; return true; } return false; });
    var first = Math.ceil(lo / step) * step, result = [];
    for (var t = first; t <= hi + step * 1e-9; t += step) { result.push(t); }
    return result;
  }

  function label(value) {
    var a = Math.abs(value);
    return (a !== 0 && (a >= 1e5 || a < 1e-3)) ? value.toExponential(0) : String(+value.toPrecision(4));
  }

  // lines: [{run: name, points: [[step, value], ...]}]; draws into `overlay`, names into `legend`.
  function draw(overlay, legend, lines, loss, log, emptyText) {
    lines = lines.map(function (line) {
      return { run: line.run, points: line.points.filter(function (p) { return !log || p[1] > 0; }) };
    }).filter(function (line) { return line.points.length; });
    overlay.textContent = "";
    legend.textContent = "";
    if (!lines.length) {
      var empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = emptyText;
      overlay.appendChild(empty);
      return;
    }
    var xs = [], ys = [];
    lines.forEach(function (line) {
      line.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); });
    });
    var x0 = Math.min(0, Math.min.apply(null, xs)), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y0 = log ? y0 / 2 : y0 - 1; y1 = log ? y1 * 2 : y1 + 1; }
    var fy = log ? Math.log10 : function (v) { return v; };
    function px(x) { return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT); }
    function py(y) { return TOP + (fy(y1) - fy(y)) / (fy(y1) - fy(y0)) * (H - TOP - BOTTOM); }
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    el("title", {}, svg).textContent = loss + " across " + lines.length + " runs";
    ticks(y0, y1, log).forEach(function (t) {
      el("line", { "class": "grid", x1: LEFT, x2: W - RIGHT, y1: py(t), y2: py(t) }, svg);
      el("text", { x: LEFT - 6, y: py(t) + 4, "text-anchor": "end" }, svg).textContent = label(t);
    });
    ticks(x0, x1, false).forEach(function (t) {
      el("line", { "class": "grid", x1: px(t), x2: px(t), y1: TOP, y2: H - BOTTOM }, svg);
      el("text", { x: px(t), y: H - BOTTOM + 16, "text-anchor": "middle" }, svg).textContent = label(t);
    });
    el("line", { "class": "axis", x1: LEFT, x2: W - RIGHT, y1: H - BOTTOM, y2: H - BOTTOM }, svg);
    el("line", { "class": "axis", x1: LEFT, x2: LEFT, y1: TOP, y2: H - BOTTOM }, svg);
    el("text", { x: (LEFT + W - RIGHT) / 2, y: H - 4, "text-anchor": "middle" }, svg).textContent = "step";
    el("text", {
      x: 14, y: (TOP + H - BOTTOM) / 2, "text-anchor": "middle",
      transform: "rotate(-90 14 " + (TOP + H - BOTTOM) / 2 + ")"
    }, svg).textContent = loss + (log ? " (log scale)" : "");
    lines.forEach(function (line, i) {
      var colour = PALETTE[i % PALETTE.length];
      var path = el("polyline", {
        points: line.points.map(function (p) { return px(p[0]).toFixed(1) + "," + py(p[1]).toFixed(1); }).join(" "),
        fill: "none", stroke: colour, "stroke-width": 1.6
      }, svg);
      el("title", {}, path).textContent = line.run;
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(line.run));
      legend.appendChild(item);
    });
    overlay.appendChild(svg);
  }

  // The ticked boxes' runs (each box's data-index into `runs`, [{run, curves}]) drawn into
  // #overlay and #legend, again at each tick, loss or scale change; #select-shown and
  // #select-none tick all or none where the page has them.
  function drawTicked(boxes, runs, where) {
    var MAX_LINES = 40;
    var lossSelect = document.getElementById("loss"), logScale = document.getElementById("log-scale");
    function redraw() {
      var loss = lossSelect.value;
      var lines = boxes.filter(function (box) { return box.checked; }).slice(0, MAX_LINES).map(function (box) {
        var run = runs[Number(box.dataset.index)];
        return { run: run.run, points: run.curves[loss] || [] };
      });
      draw(document.getElementById("overlay"), document.getElementById("legend"), lines, loss,
        logScale.checked, loss ? "No ticked run" + where + " has " + loss + "." : "No losses yet.");
    }
    lossSelect.addEventListener("change", redraw);
    logScale.addEventListener("change", redraw);
    boxes.forEach(function (box) { box.addEventListener("change", redraw); });
    [["select-shown", true], ["select-none", false]].forEach(function (button) {
      var element = document.getElementById(button[0]);
      if (!element) { return; }
      element.addEventListener("click", function () {
        boxes.forEach(function (box) { box.checked = button[1]; });
        redraw();
      });
    });
    redraw();
  }

  return { draw: draw, drawTicked: drawTicked };
})();
