// Small SVG charts drawn from our own data: a sparkline per device, a line chart with
// threshold levels and case markers for the backtest preview, and grouped bars.

import { s, when } from "./dom.js";

function extent(numbers, pad) {
  let lo = Math.min(...numbers);
  let hi = Math.max(...numbers);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const margin = (hi - lo) * (pad || 0);
  return [lo - margin, hi + margin];
}

function scale([d0, d1], [r0, r1]) {
  return (v) => r0 + ((v - d0) / (d1 - d0 || 1)) * (r1 - r0);
}

function path(points, x, y) {
  return points.map(([px, py], i) => `${i ? "L" : "M"}${x(px).toFixed(1)},${y(py).toFixed(1)}`)
    .join("");
}

// points: [[ts, value], ...] oldest first.
export function sparkline(points, width = 140, height = 30, colour = "#2563eb") {
  const svg = s("svg.spark", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (points.length < 2) {
    svg.append(s("line", { x1: 0, y1: height / 2, x2: width, y2: height / 2, class: "spark-empty" }));
    return svg;
  }
  const x = scale(extent(points.map((p) => p[0])), [2, width - 2]);
  const y = scale(extent(points.map((p) => p[1]), 0.1), [height - 2, 2]);
  svg.append(s("path", { d: path(points, x, y), fill: "none", stroke: colour, "stroke-width": 1.5 }));
  const [lx, ly] = points[points.length - 1];
  svg.append(s("circle", { cx: x(lx), cy: y(ly), r: 2.2, fill: colour }));
  return svg;
}

// series: [{name, points, colour}], levels: [{value, label, colour, dash}],
// markers: [{x, label, colour}]
export function lineChart({ series, levels = [], markers = [], width = 720, height = 220, unit = "" }) {
  const pad = { left: 48, right: 110, top: 12, bottom: 28 };
  const svg = s("svg.chart", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const xs = series.flatMap((se) => se.points.map((p) => p[0])).concat(markers.map((m) => m.x));
  const ys = series.flatMap((se) => se.points.map((p) => p[1]))
    .concat(levels.map((l) => l.value).filter((v) => typeof v === "number"));
  if (!xs.length || !ys.length) return svg;
  const x = scale(extent(xs), [pad.left, width - pad.right]);
  const yDomain = extent(ys, 0.08);
  const y = scale(yDomain, [height - pad.bottom, pad.top]);
  for (const tick of ticks(yDomain, 4)) {
    svg.append(
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: "grid-line" }),
      s("text", { x: pad.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis" }, `${+tick.toFixed(2)}${unit}`),
    );
  }
  const [x0, x1] = extent(xs);
  svg.append(
    s("text", { x: pad.left, y: height - 8, class: "axis" }, when(x0).slice(5, 16)),
    s("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "axis" }, when(x1).slice(5, 16)),
  );
  for (const level of levels) {
    if (typeof level.value !== "number") continue;
    svg.append(
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(level.value), y2: y(level.value),
        stroke: level.colour, "stroke-width": 1.5, "stroke-dasharray": level.dash || "" }),
      s("text", { x: width - pad.right + 6, y: y(level.value) + 4, fill: level.colour, class: "level-label" },
        level.label),
    );
  }
  for (const se of series) {
    if (se.points.length) {
      svg.append(s("path", { d: path(se.points, x, y), fill: "none", stroke: se.colour, "stroke-width": 1.6 }));
    }
  }
  markers.forEach((marker, i) => {
    const mx = x(marker.x);
    svg.append(
      s("line", { x1: mx, x2: mx, y1: pad.top, y2: height - pad.bottom, stroke: marker.colour, "stroke-width": 2 }),
      s("text", { x: mx + 3, y: pad.top + 10 + (i % 3) * 11, fill: marker.colour, class: "marker-label" }, marker.label),
    );
  });
  return svg;
}

function ticks([lo, hi], count) {
  const step = (hi - lo) / count;
  return Array.from({ length: count + 1 }, (_, i) => lo + i * step);
}

// groups: [{label, bars: [{name, value, colour}]}]
export function barChart(groups, { width = 420, height = 180 } = {}) {
  const pad = { left: 30, right: 10, top: 14, bottom: 34 };
  const svg = s("svg.chart", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const top = Math.max(1, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const groupWidth = (width - pad.left - pad.right) / Math.max(1, groups.length);
  const y = scale([0, top], [height - pad.bottom, pad.top]);
  svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: "axis-line" }));
  groups.forEach((group, gi) => {
    const barWidth = (groupWidth * 0.7) / Math.max(1, group.bars.length);
    const gx = pad.left + gi * groupWidth + groupWidth * 0.15;
    group.bars.forEach((bar, bi) => {
      const bx = gx + bi * barWidth;
      svg.append(
        s("rect", { x: bx, y: y(bar.value), width: barWidth - 2, height: y(0) - y(bar.value), fill: bar.colour }),
        s("text", { x: bx + barWidth / 2 - 1, y: y(bar.value) - 3, "text-anchor": "middle", class: "axis" }, bar.value),
      );
    });
    svg.append(s("text", { x: gx + groupWidth * 0.35, y: height - pad.bottom + 16, "text-anchor": "middle", class: "axis" }, group.label));
  });
  return svg;
}
