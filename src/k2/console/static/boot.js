// Runs before the module graph (app.js and every page module) has loaded: when the address opens the chart
// page, start *downloading* the chart library at once (rel=preload: fetched, not run). On a cold browser
// parsing the 4.8 MB plotly.min.js blocks the page's only thread for 1.5-2.5 s on this machine, so chart.js
// runs it only after the first candles are drawn (quickdraw.js); the download itself overlaps everything.
(function () {
  if (new URLSearchParams(location.search).get("page") !== "chart") return;
  var link = document.createElement("link");
  link.rel = "preload";
  link.as = "script";
  link.href = "vendor/plotly.min.js";
  document.head.appendChild(link);
})();
