// A run's charts in a notebook output (notebook/embed.py): unpack the chart library inlined
// in the output (gzip, base64) unless the page has it already, then draw each chart into
// its element. Runs inside a function given `root` (the output's element), `specs` and
// `packed`; nothing is fetched.
function unpackLibrary(packed) {
  if (window.vegaEmbed) { return Promise.resolve(); }
  if (!window.lossreportChartLibrary) {
    var bytes = Uint8Array.from(atob(packed), function (c) { return c.charCodeAt(0); });
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    window.lossreportChartLibrary = new Response(stream).text().then(function (code) {
      var script = document.createElement("script");
      // In a function of its own: the bundle's top-level names stay out of the page's.
      script.textContent = "(function () {\n" + code + "\n})();";
      document.head.appendChild(script);
    });
  }
  return window.lossreportChartLibrary;
}

unpackLibrary(packed).then(function () {
  var drawn = Array.prototype.map.call(root.querySelectorAll("[data-chart]"), function (element) {
    var spec = specs[Number(element.dataset.chart)];
    return vegaEmbed(element, spec, { actions: false, renderer: "svg" }).then(function () {
      element.dataset.state = "drawn";
    });
  });
  return Promise.all(drawn);
}).then(function () {
  root.querySelector(".lr-error").textContent = "";
  root.dataset.state = "drawn";
}).catch(function (error) {
  root.dataset.state = "failed";
  root.querySelector(".lr-error").textContent = "Charts not drawn: " + error;
});
