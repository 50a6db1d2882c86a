// The map: unit grids, devices coloured by state, cameras with their zones and the open
// incidents, drawn as SVG from the gateway's own data (no tiles: the console works with
// no internet). Everything on it leads to its page. Redrawn every few seconds and at
// once when the live stream brings an alert.

import { get } from "../api.js";
import { fill, h, s, when } from "../dom.js";
import { t, tv } from "../i18n.js";
import { onAlert } from "../stream.js";
import { stateBadge, priorityBadge, title } from "../ui.js";

const WIDTH = 1000;
const PAD = 48;
const REFRESH_MS = 5000;
const STATE_COLOURS = { normal: "#2e9d5b", alerting: "#d7263d", suspect: "#e09f1f", offline: "#7d8597" };
const PRIORITY_COLOURS = { critical: "#b80c2f", urgent: "#e4572e", normal: "#f2a541", low: "#6c757d" };

export function render(root) {
  const board = h("div.map-board");
  const side = h("aside.map-side");
  root.append(title(t("nav.map")), h("div.map-layout", {}, board, side));
  let pending = null;
  let shown = null;
  const load = async () => {
    const layers = await get("/api/v1/console/map");
    const text = JSON.stringify(layers);
    if (text === shown) return; // nothing moved: keep the drawing (and what is hovered)
    shown = text;
    fill(board, drawMap(layers), legend());
    fill(side, ...sidePanel(layers));
  };
  load().catch((error) => board.append(h("p.error", {}, error.message)));
  const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
  const stop = onAlert(() => {
    clearTimeout(pending);
    pending = setTimeout(() => load().catch(() => {}), 300);
  });
  return () => {
    clearInterval(timer);
    clearTimeout(pending);
    stop();
  };
}

function projection(layers) {
  const lats = [];
  const lons = [];
  for (const d of layers.devices) {
    lats.push(d.lat);
    lons.push(d.lon);
  }
  for (const g of layers.grids) {
    lats.push(g.south, g.north);
    lons.push(g.west, g.east);
  }
  for (const c of layers.cameras) {
    for (const z of c.zones) {
      lats.push(z.lat);
      lons.push(z.lon);
    }
  }
  for (const i of layers.incidents) {
    lats.push(i.location.lat);
    lons.push(i.location.lon);
  }
  if (!lats.length) return null;
  const south = Math.min(...lats);
  const north = Math.max(...lats);
  const west = Math.min(...lons);
  const east = Math.max(...lons);
  const shrink = Math.cos(((south + north) / 2) * (Math.PI / 180));
  const spanX = Math.max((east - west) * shrink, 1e-6);
  const spanY = Math.max(north - south, 1e-6);
  const k = (WIDTH - 2 * PAD) / spanX;
  const height = Math.min(760, Math.max(420, spanY * k + 2 * PAD));
  const kk = Math.min(k, (height - 2 * PAD) / spanY);
  const offX = (WIDTH - spanX * kk) / 2;
  const offY = (height - spanY * kk) / 2;
  return {
    height,
    x: (lon) => offX + (lon - west) * shrink * kk,
    y: (lat) => offY + (north - lat) * kk,
    metresPerPx: 111320 / kk,
  };
}

function go(hash) {
  return () => {
    location.hash = hash;
  };
}

function drawMap(layers) {
  const p = projection(layers);
  if (!p) return h("p.empty", {}, t("none"));
  const svg = s("svg.map", { viewBox: `0 0 ${WIDTH} ${p.height}`, role: "img", "aria-label": t("nav.map") });
  svg.append(s("rect", { x: 0, y: 0, width: WIDTH, height: p.height, class: "map-bg" }));
  for (const g of layers.grids) {
    const x = p.x(g.west);
    const y = p.y(g.north);
    svg.append(s("g.grid-cell", { dataset: { grid: g.code }, onclick: go(`#/devices?grid=${g.code}`) },
      s("title", {}, `${t("grid")} ${g.code}`),
      s("rect", { x, y, width: p.x(g.east) - x, height: p.y(g.south) - y }),
      s("text", { x: x + 2, y: p.y(g.south) + 11 }, g.code.slice(-6)),
    ));
  }
  for (const camera of layers.cameras) {
    for (const zone of camera.zones) {
      const x = p.x(zone.lon);
      const y = p.y(zone.lat);
      svg.append(s("g.camera", { dataset: { camera: camera.id, status: camera.status }, onclick: go("#/cameras") },
        s("title", {}, `${camera.id}/${zone.id} ${zone.type} · ${camera.status}`),
        s("path", { d: `M${x},${y} l16,-9 v18 z`, class: "camera-cone" }),
        s("rect", { x: x - 7, y: y - 5, width: 12, height: 10, rx: 2 }),
        s("text", { x: x + 18, y: y + 4 }, `${camera.id}/${zone.id}`),
      ));
    }
  }
  for (const incident of layers.incidents) {
    const x = p.x(incident.location.lon);
    const y = p.y(incident.location.lat);
    const colour = PRIORITY_COLOURS[incident.priority] || "#b80c2f";
    svg.append(s("g.incident", { dataset: { incident: incident.id }, onclick: go(`#/incidents/${incident.id}`) },
      s("title", {}, `${incident.id} · ${incident.class_code} · ${tv("priority", incident.priority)}` +
        (incident.case_id ? ` · 案件 ${incident.case_id}` : "")),
      s("circle", { cx: x, cy: y, r: 17, stroke: colour, class: "incident-ring" }),
      s("path", { d: `M${x + 12},${y - 26} l9,15 h-18 z`, fill: colour }),
      s("text", { x: x + 12, y: y - 14, "text-anchor": "middle", class: "incident-mark" }, "!"),
    ));
  }
  for (const device of layers.devices) {
    const x = p.x(device.lon);
    const y = p.y(device.lat);
    const muted = device.muted.length ? ` · ${t("alerts.held")}: ${device.muted.join(", ")}` : "";
    svg.append(s("g.device", { dataset: { device: device.id, state: device.state, muted: device.muted.length > 0 },
      onclick: go(`#/devices/${device.id}`) },
      s("title", {}, `${device.id} · ${tv("kind", device.kind)} · ${tv("state", device.state)}${muted}\n${device.address}`),
      s("circle", { cx: x, cy: y, r: 7, fill: STATE_COLOURS[device.state] || "#444" }),
      s("text", { x: x + 10, y: y + 4 }, device.muted.length ? `${device.id} (${t("alerts.held")})` : device.id),
    ));
  }
  svg.append(scaleBar(p));
  return svg;
}

function scaleBar(p) {
  const choices = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
  const metres = choices.find((m) => m / p.metresPerPx >= 80) || choices[choices.length - 1];
  const width = metres / p.metresPerPx;
  const y = p.height - 18;
  return s("g.scale", {},
    s("line", { x1: 20, x2: 20 + width, y1: y, y2: y }),
    s("line", { x1: 20, x2: 20, y1: y - 5, y2: y + 5 }),
    s("line", { x1: 20 + width, x2: 20 + width, y1: y - 5, y2: y + 5 }),
    s("text", { x: 20 + width / 2, y: y - 8, "text-anchor": "middle" }, metres >= 1000 ? `${metres / 1000} km` : `${metres} m`),
    s("text", { x: WIDTH - 24, y: 30, "text-anchor": "middle", class: "north" }, "N ↑"),
  );
}

function legend() {
  const items = Object.entries(STATE_COLOURS).map(([state, colour]) =>
    h("li", {}, h("span.swatch", { dataset: { colour } }, swatch(colour)), tv("state", state)));
  items.push(h("li", {}, swatch("#b80c2f", true), t("map.incident")));
  items.push(h("li", {}, swatch("#0f3d5e", false, true), t("map.camera")));
  return h("div.legend", {}, h("strong", {}, t("map.legend")), h("ul", {}, items), h("p.note", {}, t("map.gridNote")));
}

function swatch(colour, ring = false, square = false) {
  const svg = s("svg", { width: 16, height: 16, viewBox: "0 0 16 16" });
  if (square) svg.append(s("rect", { x: 3, y: 4, width: 10, height: 8, rx: 2, fill: colour }));
  else if (ring) svg.append(s("circle", { cx: 8, cy: 8, r: 6, fill: "none", stroke: colour, "stroke-width": 2 }));
  else svg.append(s("circle", { cx: 8, cy: 8, r: 6, fill: colour }));
  return svg;
}

function sidePanel(layers) {
  const counts = {};
  for (const d of layers.devices) counts[d.state] = (counts[d.state] || 0) + 1;
  const states = h("div.state-counts", {}, ["alerting", "suspect", "offline", "normal"].map((state) =>
    h("a.state-count", { href: `#/devices?state=${state}` }, stateBadge(state), h("b", {}, counts[state] || 0))));
  const incidents = layers.incidents.map((i) =>
    h("li", {},
      h("a", { href: `#/incidents/${i.id}`, dataset: { incident: i.id } }, i.id),
      " ", priorityBadge(i.priority), " ", i.class_code,
      h("div.small", {}, i.location.address || ""),
      h("div.small", {}, when(i.opened_ts), i.case_id ? ` · 案件 ${i.case_id}` : "")));
  return [
    states,
    h("h3", {}, `${t("map.openIncidents")} (${layers.incidents.length})`),
    h("ul.incident-list", {}, incidents.length ? incidents : h("li.empty", {}, t("none"))),
  ];
}
