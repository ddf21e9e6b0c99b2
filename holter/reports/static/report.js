/* holter report: charts (uPlot), sortable tables, table filter. No network, no innerHTML:
   every data string reaches the page through textContent or the canvas. */
(function () {
  "use strict";
  var COLORS = ["#0969da", "#cf222e", "#9a6700", "#1a7f37", "#8250df", "#bc4c00", "#57606a"];
  var TIME = { s: 1, ms: 1e-3, us: 1e-6, "µs": 1e-6, ns: 1e-9 };

  function sig(v) { return Number(v.toPrecision(3)).toString(); }
  function fmt(v, unit) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    if (unit in TIME) {
      var s = v * TIME[unit], a = Math.abs(s);
      if (a >= 1 || a === 0) return sig(s) + " s";
      if (a >= 1e-3) return sig(s * 1e3) + " ms";
      if (a >= 1e-6) return sig(s * 1e6) + " µs";
      return sig(s * 1e9) + " ns";
    }
    if (unit === "By") {
      var units = [["GiB", 1073741824], ["MiB", 1048576], ["KiB", 1024]];
      for (var i = 0; i < units.length; i++) {
        if (Math.abs(v) >= units[i][1]) return sig(v / units[i][1]) + " " + units[i][0];
      }
      return Math.round(v) + " B";
    }
    if (unit === "%") return sig(v) + "%";
    var m = Math.abs(v);
    var t = m >= 1e9 ? sig(v / 1e9) + "G" : m >= 1e6 ? sig(v / 1e6) + "M" :
      m >= 1e4 ? sig(v / 1e3) + "k" : sig(v);
    return unit && unit !== "1" && unit !== "/s" ? t + " " + unit : t;
  }

  function marksPlugin(marks) {
    return { hooks: { drawClear: [function (u) {
      var ctx = u.ctx;
      ctx.save();
      for (var i = 0; i < marks.length; i++) {
        var mk = marks[i];
        var x0 = u.valToPos(mk.start, "x", true), x1 = u.valToPos(mk.end, "x", true);
        var left = Math.max(Math.min(x0, x1), u.bbox.left);
        var right = Math.min(Math.max(x0, x1), u.bbox.left + u.bbox.width);
        if (right < u.bbox.left || left > u.bbox.left + u.bbox.width) continue;
        ctx.fillStyle = mk.kind === "alert" ? "rgba(207,34,46,0.13)" : "rgba(212,167,44,0.22)";
        ctx.fillRect(left, u.bbox.top, Math.max(right - left, 3), u.bbox.height);
      }
      ctx.restore();
    }] } };
  }

  var plots = [];
  function width(el) { return Math.max(Math.floor(el.clientWidth || 300), 260); }

  function drawCharts(data) {
    var nodes = document.querySelectorAll("[data-chart]");
    for (var n = 0; n < nodes.length; n++) {
      var el = nodes[n], chart = data.charts[Number(el.getAttribute("data-chart"))];
      if (!chart || typeof uPlot === "undefined") continue;
      try {
        var unit = chart.unit;
        var series = [{}];
        var rows = [chart.times];
        for (var i = 0; i < chart.lines.length; i++) {
          series.push({ label: chart.lines[i].label, stroke: COLORS[i % COLORS.length],
            width: 1.5, points: { show: chart.times.length < 40 },
            value: (function (u) { return function (self, v) { return fmt(v, u); }; })(unit) });
          rows.push(chart.lines[i].values);
        }
        var host = el.querySelector(".plot");
        var opts = {
          width: width(host), height: 220, series: series,
          tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
          scales: { x: { time: true } },
          axes: [{}, { size: 64, values: (function (u) {
            return function (self, ticks) { return ticks.map(function (v) { return fmt(v, u); }); };
          })(unit) }],
          plugins: [marksPlugin(chart.marks)]
        };
        plots.push([new uPlot(opts, rows, host), host]);
      } catch (err) {
        window.chartErrors = (window.chartErrors || 0) + 1;
      }
    }
  }

  function sortTable(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.classList.contains("n");
    var dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
    if (!numeric && !th.hasAttribute("aria-sort")) dir = "ascending";
    var heads = th.parentNode.children;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir);
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var cell = row.cells[index];
      if (!cell) return numeric ? -Infinity : "";
      if (numeric) {
        var v = parseFloat(cell.getAttribute("data-v"));
        return isNaN(v) ? -Infinity : v;
      }
      return cell.textContent.toLowerCase();
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), c = x < y ? -1 : x > y ? 1 : 0;
      return dir === "ascending" ? c : -c;
    });
    for (var r = 0; r < rows.length; r++) body.appendChild(rows[r]);
  }

  function wireTables() {
    var heads = document.querySelectorAll("table.sortable th");
    for (var i = 0; i < heads.length; i++) {
      heads[i].classList.add("sortable");
      heads[i].setAttribute("tabindex", "0");
      heads[i].addEventListener("click", function (e) { sortTable(e.currentTarget); });
      heads[i].addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(e.currentTarget); }
      });
    }
    var filters = document.querySelectorAll("input[data-filter]");
    for (var f = 0; f < filters.length; f++) {
      filters[f].addEventListener("input", function (e) {
        var q = e.currentTarget.value.toLowerCase();
        var table = document.getElementById(e.currentTarget.getAttribute("data-filter"));
        var rows = table.tBodies[0].rows;
        for (var r = 0; r < rows.length; r++) {
          rows[r].hidden = q !== "" && rows[r].textContent.toLowerCase().indexOf(q) < 0;
        }
      });
    }
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      for (var i = 0; i < plots.length; i++) {
        plots[i][0].setSize({ width: width(plots[i][1]), height: 220 });
      }
    }, 150);
  });

  function start() {
    var data = { charts: [] };
    var blob = document.getElementById("report-data");
    if (blob) data = JSON.parse(blob.textContent);
    wireTables();
    drawCharts(data);
    window.chartReady = true;
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
