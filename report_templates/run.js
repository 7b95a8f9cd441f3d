// A run's zoomable charts: Vega-Lite (vega-embed, served from the package) draws each loss;
// this asks the server for the range in view at full resolution after each zoom or pan,
// smooths (TensorBoard's debiased exponential moving average) and switches to a log scale.
// User strings reach the page only through textContent; Vega runs its expressions through
// its interpreter (ast: true), so the page's policy needs no eval.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("charts-data").textContent);
  var smoothing = document.getElementById("smoothing");
  var smoothingShown = document.getElementById("smoothing-value");
  var logScale = document.getElementById("log-scale");
  var AXIS_ROOM = 70;  // pixels beside the plot for the value axis, before Vega measures it
  var MARGIN = 0.5;  // fetched beyond each side of the view, as a share of its width, for panning
  var charts = [];

  function format(value) { return Number(value).toLocaleString("en-US", { maximumFractionDigits: 0 }); }

  // TensorBoard's debiased EMA. Non-finite values are skipped: the server leaves them out of
  // the points (and counts them), so every value here is finite.
  function smooth(points, weight) {
    var last = 0, count = 0;
    return points.map(function (point) {
      last = last * weight + (1 - weight) * point[1];
      count += 1;
      return weight === 0 ? point[1] : last / (1 - Math.pow(weight, count));
    });
  }

  function rows(chart) {
    var smoothed = smooth(chart.points, Number(smoothing.value));
    var log = logScale.checked;
    return chart.points.map(function (point, i) {
      return { step: point[0], value: point[1], smoothed: smoothed[i] };
    }).filter(function (row) { return !log || (row.value > 0 && row.smoothed > 0); });
  }

  function show(chart) {
    chart.view.data("points", rows(chart)).runAsync();
  }

  function describe(chart, answer) {
    var text = "fetched steps " + format(answer.start) + " to " + format(answer.end) + ": " +
      format(answer.steps_in_range) + " logged, " +
      (answer.exact ? "every one shown" : "each pixel column's lowest and highest shown");
    if (answer.nonfinite) { text += "; " + format(answer.nonfinite) + " without a finite value"; }
    chart.range.textContent = text;
  }

  // The plot's width in pixels: Vega's once drawn (it fits the axes into the element).
  function plotWidth(chart) {
    return chart.view ? chart.view.width() : Math.max(300, chart.element.clientWidth - AXIS_ROOM);
  }

  function load(chart, domain) {
    // One pixel column of the plot per column of the answer; the margins have theirs too.
    var columns = plotWidth(chart);
    var query = new URLSearchParams({ run: data.run, loss: chart.loss });
    if (domain) {
      var span = domain[1] - domain[0];
      query.set("start", String(domain[0] - MARGIN * span));
      query.set("end", String(domain[1] + MARGIN * span));
      columns *= 1 + 2 * MARGIN;
    }
    query.set("width", String(Math.min(data.max_width, Math.round(columns))));
    if (chart.pending) { chart.pending.abort(); }
    chart.pending = new AbortController();
    chart.section.dataset.state = "loading";
    return fetch("/.api/series?" + query.toString(), { signal: chart.pending.signal })
      .then(function (response) {
        if (response.ok) { return response.json(); }
        return response.text().then(function (message) { throw new Error(message.trim()); });
      })
      .then(function (answer) {
        chart.points = answer.points;
        describe(chart, answer);
        if (chart.view) {  // else embed() draws them, and says when it is ready
          show(chart);
          chart.section.dataset.state = "ready";
        }
      })
      .catch(function (error) {
        if (error.name !== "AbortError") {
          chart.section.dataset.state = "failed";
          chart.range.textContent = "could not fetch this range: " + error.message;
        }
      });
  }

  function readout(chart, selected) {
    var step = selected && selected.step;
    if (Array.isArray(step)) { step = step[0]; }
    if (step === undefined || step === null) { return; }
    var found = chart.points.find(function (point) { return point[0] === step; });
    // The value as logged: the shortest decimal that reads back as the same float64.
    if (found) { chart.readout.textContent = "step " + format(found[0]) + ": " + String(found[1]); }
  }

  function embed(chart) {
    var spec = JSON.parse(JSON.stringify(logScale.checked ? data.log_spec : data.spec));
    if (chart.domain) {  // keep the zoom across a change of scale
      (spec.params || []).forEach(function (param) {
        if (param.name === "zoom") { param.value = { x: chart.domain }; }
      });
    }
    spec.width = chart.element.clientWidth;
    spec.data = { name: "points", values: rows(chart) };  // drawn with data from the start
    if (chart.view) { chart.view.finalize(); }
    return vegaEmbed(chart.element, spec, { ast: true, actions: false, renderer: "svg" })
      .then(function (result) {
        chart.view = result.view;
        result.view.addSignalListener("zoom", function (name, value) {
          chart.domain = value && value.step ? value.step.slice() : null;
          clearTimeout(chart.timer);
          chart.timer = setTimeout(function () { load(chart, chart.domain); }, 120);
        });
        result.view.addSignalListener("hover", function (name, value) { readout(chart, value); });
        chart.section.dataset.state = "ready";
      });
  }

  document.querySelectorAll("section.chart").forEach(function (section) {
    var loss = section.dataset.loss;
    var chart = {
      loss: loss, section: section, element: section.querySelector(".vega"),
      readout: section.querySelector("[data-readout]"), range: section.querySelector("[data-range]"),
      points: [], domain: null, view: null, pending: null, timer: null
    };
    charts.push(chart);
    load(chart, null).then(function () { return embed(chart); });
  });

  smoothing.addEventListener("input", function () {
    smoothingShown.textContent = Number(smoothing.value).toFixed(3);
    charts.forEach(function (chart) { if (chart.view) { show(chart); } });
  });
  logScale.addEventListener("change", function () { charts.forEach(embed); });
})();
