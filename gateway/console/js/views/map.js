// The map: unit grids (their outlines from the grids file, or boxes around their devices),
// devices coloured by state with their labels kept apart, cameras with their zones and the
// open incidents, drawn as SVG from the gateway's own data (no tiles: the console works with
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
    fill(board, drawMap(layers), legend(layers.grids.some((g) => g.extent === "polygon")));
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
  for (const g of layers.grids) svg.append(gridCell(g, p));
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
  const dots = layers.devices.map((device) => ({ device, x: p.x(device.lon), y: p.y(device.lat) }));
  const labels = placeLabels(dots.map(({ device, x, y }) =>
    ({ x, y, text: device.muted.length ? `${device.id} (${t("alerts.held")})` : device.id })), p.height,
  layers.grids.flatMap((g) => gridLabelBoxes(g, p)));
  dots.forEach(({ device, x, y }, n) => {
    const muted = device.muted.length ? ` · ${t("alerts.held")}: ${device.muted.join(", ")}` : "";
    const label = labels[n];
    svg.append(s("g.device", { dataset: { device: device.id, state: device.state, muted: device.muted.length > 0 },
      onclick: go(`#/devices/${device.id}`) },
      s("title", {}, `${device.id} · ${tv("kind", device.kind)} · ${tv("state", device.state)}${muted}\n${device.address}`),
      label.moved ? s("line.leader", { x1: x, y1: y, x2: label.lineX, y2: label.lineY }) : null,
      s("circle", { cx: x, cy: y, r: 7, fill: STATE_COLOURS[device.state] || "#444" }),
      s("text.device-label", { x: label.x, y: label.y, "text-anchor": label.anchor }, label.text),
    ));
  });
  svg.append(scaleBar(p));
  return svg;
}

// A unit grid: its polygons (outer rings and holes) when the grids file gives them, else
// the box around its members; its name or code at a point inside it.
function gridCell(g, p) {
  const shown = g.name ? `${g.name} ${g.code}` : g.code;
  const cell = s(`g.grid-cell.${g.extent === "polygon" ? "outlined" : "boxed"}`,
    { dataset: { grid: g.code, extent: g.extent }, onclick: go(`#/devices?grid=${g.code}`) },
    s("title", {}, `${t("grid")} ${shown} · ${g.members} ${t("map.members")}`));
  if (g.extent === "polygon") {
    const d = g.polygons.flat().map((ring) =>
      "M" + ring.map(([lon, lat]) => `${p.x(lon).toFixed(1)},${p.y(lat).toFixed(1)}`).join("L") + "Z").join("");
    const [lat, lon] = g.label;
    cell.append(s("path", { d, "fill-rule": "evenodd" }),
      s("text.grid-label", { x: p.x(lon), y: p.y(lat), "text-anchor": "middle" }, g.name || g.code.slice(-6)),
      g.name ? s("text.grid-code", { x: p.x(lon), y: p.y(lat) + 13, "text-anchor": "middle" }, g.code.slice(-6)) : null);
    return cell;
  }
  const x = p.x(g.west);
  const y = p.y(g.north);
  cell.append(s("rect", { x, y, width: p.x(g.east) - x, height: p.y(g.south) - y }),
    s("text", { x: x + 2, y: p.y(g.south) + 11 }, g.code.slice(-6)));
  return cell;
}

// Device labels placed so that none covers another or a device: each tries the spots
// around its dot, nearest first, and takes the first free one; a label moved off its dot
// gets a leader line. Greedy, in order from the top: a few hundred devices in milliseconds.
const CHAR_PX = 7;
const LABEL_PX = 13;
const SPOTS = [[10, 4, "start"], [-10, 4, "end"], [0, -11, "middle"], [0, 19, "middle"],
  [14, -12, "start"], [14, 20, "start"], [-14, -12, "end"], [-14, 20, "end"],
  [24, -26, "start"], [24, 34, "start"], [-24, -26, "end"], [-24, 34, "end"],
  [34, -40, "start"], [34, 48, "start"]];

// Where a grid's own labels are (its name and code), for device labels to keep clear of.
function gridLabelBoxes(g, p) {
  const around = (x, y, width, size) => ({ left: x - width / 2, right: x + width / 2, top: y - size, bottom: y + 3 });
  if (g.extent === "polygon") {
    const [lat, lon] = g.label;
    const x = p.x(lon);
    const y = p.y(lat);
    return [around(x, y, (g.name || g.code.slice(-6)).length * (g.name ? 12 : 7), 12), around(x, y + 13, 6 * 6, 10)];
  }
  const x = p.x(g.west) + 2;
  const y = p.y(g.south) + 11;
  return [{ left: x, right: x + 6 * 6, top: y - 10, bottom: y + 3 }];
}

function placeLabels(items, height, obstacles = []) {
  const taken = items.map(({ x, y }) => ({ left: x - 7, right: x + 7, top: y - 7, bottom: y + 7 }));
  taken.push(...obstacles);
  const order = items.map((_, n) => n).sort((a, b) => items[a].y - items[b].y || items[a].x - items[b].x);
  const placed = new Array(items.length);
  for (const n of order) {
    const { x, y, text } = items[n];
    const width = text.length * CHAR_PX;
    const boxOf = ([dx, dy, anchor]) => {
      const left = anchor === "start" ? x + dx : anchor === "end" ? x + dx - width : x + dx - width / 2;
      return { left, right: left + width, top: y + dy - LABEL_PX + 3, bottom: y + dy + 3 };
    };
    const free = (b) => b.top >= 0 && b.bottom <= height && !taken.some((o, m) => m !== n &&
      b.left < o.right && o.left < b.right && b.top < o.bottom && o.top < b.bottom);
    const spot = SPOTS.find((candidate) => free(boxOf(candidate))) || SPOTS[0];
    const box = boxOf(spot);
    taken.push(box);
    const moved = spot !== SPOTS[0] && spot !== SPOTS[1];
    placed[n] = { x: x + spot[0], y: y + spot[1], anchor: spot[2], text, moved,
      lineX: Math.min(Math.max(x, box.left), box.right), lineY: Math.min(Math.max(y, box.top), box.bottom) };
  }
  return placed;
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

function legend(outlined) {
  const items = Object.entries(STATE_COLOURS).map(([state, colour]) =>
    h("li", {}, h("span.swatch", { dataset: { colour } }, swatch(colour)), tv("state", state)));
  items.push(h("li", {}, swatch("#b80c2f", true), t("map.incident")));
  items.push(h("li", {}, swatch("#0f3d5e", false, true), t("map.camera")));
  return h("div.legend", {}, h("strong", {}, t("map.legend")), h("ul", {}, items), h("p.note", {}, t(outlined ? "map.gridNote" : "map.gridBoxes")));
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
