// Devices: the list with live values and health, a sparkline per device from its readings
// history, and one device's page with its charts, its alerts and its incidents (案件).

import { get } from "../api.js";
import { fill, h, when, values, link } from "../dom.js";
import { t, tv } from "../i18n.js";
import { sparkline, lineChart } from "../charts.js";
import { table, row, stateBadge, priorityBadge, alertStateBadge, title, field, select, detailPage } from "../ui.js";
import { holderText } from "./alerts.js";

// The field a kind's rules watch (as gateway/backtest_charts.py METRIC); others: the first.
export const METRIC = { bin: "fill_pct", manhole_cover: "tilt_deg", water_level: "level_cm" };
const SPARK_WINDOW_MS = 3600_000;
const REFRESH_MS = 10_000;
const COLOURS = ["#2563eb", "#db2777", "#059669", "#d97706"];

export function render(root, route) {
  if (route.arg) return renderDevice(root, route.arg);
  return renderList(root, route.query);
}

function renderList(root, query) {
  const chosen = {
    kind: query.get("kind") || "",
    state: query.get("state") || "",
    grid: query.get("grid") || "",
    q: query.get("q") || "",
  };
  const kind = select([["", t("all")], ...Object.keys(METRIC).map((k) => [k, tv("kind", k)])], chosen.kind);
  const state = select([["", t("all")], ...["normal", "alerting", "suspect", "offline"].map((s) => [s, tv("state", s)])], chosen.state);
  const grid = h("input", { value: chosen.grid, placeholder: "350102…", maxlength: 15, size: 16 });
  const text = h("input", { value: chosen.q, placeholder: t("search"), maxlength: 100 });
  const apply = () => {
    location.hash = link("#/devices", { kind: kind.value, state: state.value, grid: grid.value.trim(), q: text.value.trim() });
  };
  for (const input of [kind, state]) input.addEventListener("change", apply);
  for (const input of [grid, text]) input.addEventListener("keydown", (e) => e.key === "Enter" && apply());
  const list = h("div.devices");
  root.append(
    title(t("devices.title")),
    h("div.filters", {}, field(t("kind"), kind), field(t("state"), state), field(t("grid"), grid), field(t("search"), text)),
    list,
  );
  const sparks = new Map();
  const load = async () => {
    const page = await get("/api/v1/console/devices", { ...chosen, limit: 100 });
    const rows = page.devices.map((d) => deviceRow(d, sparks));
    fill(list, 
      table([t("state"), t("device"), t("kind"), t("address"), t("values"), t("trend"), t("health"), t("lastSeen"), t("nav.incidents")], rows),
      page.next_cursor ? h("p.small", {}, `${page.count}+`) : null,
    );
  };
  load().catch((error) => list.append(h("p.error", {}, error.message)));
  const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}

function deviceRow(d, sparks) {
  const metric = METRIC[d.kind];
  const cell = h("td.spark-cell");
  const cached = sparks.get(d.id);
  if (cached && cached.ts === d.latest?.ts) cell.append(cached.svg.cloneNode(true));
  else if (d.latest) {
    loadSeries(d.id, d.latest.ts).then((readings) => {
      const field = metric || firstNumeric(readings);
      const svg = sparkline(points(readings, field), 140, 30, d.state === "alerting" ? "#d7263d" : "#2563eb");
      sparks.set(d.id, { ts: d.latest.ts, svg });
      cell.append(svg);
    }).catch(() => {});
  }
  return row([
    stateBadge(d.state),
    h("a", { href: `#/devices/${d.id}`, dataset: { device: d.id } }, d.id),
    tv("kind", d.kind),
    h("span.small", {}, d.address),
    d.latest ? values(d.latest.values) : h("span.muted", {}, t("devices.noReading")),
    cell,
    healthText(d.health, d.muted),
    d.latest ? when(d.latest.ts) : "—",
    d.open_incidents.map((i) => h("a.chip", { href: `#/incidents/${i}` }, i)),
  ], { dataset: { device: d.id, state: d.state } });
}

function healthText(health, muted = []) {
  const flags = muted.map((holder) => `${t("alerts.held")}: ${holder}`);
  if (health.offline) flags.push(tv("state", "offline"));
  if (health.suspect) flags.push(`${tv("state", "suspect")}: ${health.suspect}`);
  if (health.battery_low) flags.push(t("devices.battery"));
  return flags.length ? h("span.warn", {}, flags.join(" · ")) : h("span.ok", {}, "✓");
}

// The window before the device's newest reading: a device's clock, not ours, says when.
async function loadSeries(deviceId, latestTs, windowMs = SPARK_WINDOW_MS) {
  const answer = await get(`/api/v1/devices/${encodeURIComponent(deviceId)}/readings`, {
    since: latestTs - windowMs, until: latestTs, limit: 2000,
  });
  const folded = answer.downsampled.map((b) => ({
    ts: b.start,
    values: Object.fromEntries(Object.entries(b.fields).map(([f, v]) => [f, v.mean ?? v.true / v.count])),
  }));
  return folded.concat(answer.readings);
}

export function points(readings, field) {
  return readings
    .filter((r) => typeof r.values[field] === "number" || typeof r.values[field] === "boolean")
    .map((r) => [r.ts, Number(r.values[field])]);
}

function firstNumeric(readings) {
  for (const r of readings) {
    const found = Object.entries(r.values).find(([k, v]) => typeof v === "number" && k !== "battery_pct");
    if (found) return found[0];
  }
  return "battery_pct";
}

// The levels the device's watched field is judged against, as it runs with them (its own
// override or its kind's): drawn on its chart.
const LEVELS = {
  bin: [["fill_fire_pct", "#d7263d"], ["fill_clear_pct", "#2e9d5b"]],
  manhole_cover: [["tilt_fire_deg", "#d7263d"], ["tilt_clear_deg", "#2e9d5b"]],
  water_level: [["warning_cm", "#e09f1f"], ["alarm_cm", "#d7263d"]],
};

async function levelsOf(device) {
  const asked = (LEVELS[device.kind] || []).map(async ([param, colour]) => {
    const answer = await get(`/api/v1/thresholds/devices.${encodeURIComponent(device.id)}.${param}`);
    return { value: answer.value, label: `${param} ${answer.value}`, colour, dash: "6 3" };
  });
  return (await Promise.all(asked.map((p) => p.catch(() => null)))).filter((l) => l && typeof l.value === "number");
}

function renderDevice(root, deviceId) {
  const url = `/api/v1/console/devices/${encodeURIComponent(deviceId)}`;
  return detailPage(root, `${t("device")} ${deviceId}`, "#/devices", url, drawDevice, REFRESH_MS);
}

async function drawDevice(body, answer) {
  const d = answer.device;
  const readings = d.latest ? await loadSeries(d.id, d.latest.ts, 6 * SPARK_WINDOW_MS) : [];
  const fields = [...new Set(readings.flatMap((r) => Object.keys(r.values)))];
  const levels = await levelsOf(d);
  fill(body,
    h("div.cards", {},
      h("div.card", {}, h("div.card-label", {}, t("state")), stateBadge(d.state)),
      h("div.card", {}, h("div.card-label", {}, t("kind")), tv("kind", d.kind)),
      h("div.card", {}, h("div.card-label", {}, t("values")), d.latest ? values(d.latest.values) : t("devices.noReading")),
      h("div.card", {}, h("div.card-label", {}, t("lastSeen")), d.latest ? when(d.latest.ts) : "—"),
      h("div.card", {}, h("div.card-label", {}, t("health")), healthText(d.health, d.muted)),
      h("div.card.wide", {}, h("div.card-label", {}, t("address")), d.address, h("div.small", {},
        h("a", { href: `#/devices?grid=${d.grid}` }, `${t("grid")} ${d.grid}`), ` · ${d.lat}, ${d.lon}`)),
    ),
    h("div.charts", {}, fields.map((f, i) => h("figure", {},
      h("figcaption", {}, f),
      lineChart({
      series: [{ name: f, points: points(readings, f), colour: COLOURS[i % COLOURS.length] }],
      levels: f === METRIC[d.kind] ? levels : [],
      height: 170,
    })))),
    h("h3", {}, t("devices.alerts")),
    table([t("time"), t("alerts.rule"), t("state"), t("alerts.priority"), t("alerts.summary"), t("alerts.heldBy"), t("alerts.incident")],
      answer.alerts.alerts.map((a) => row([
        when(a.ts), a.rule_id, alertStateBadge(a.state), priorityBadge(a.priority), a.summary,
        a.held_by ? holderText(a) : h("span.small", {}, t("alerts.filed")),
        a.incident_id ? h("a", { href: `#/incidents/${a.incident_id}` }, a.incident_id) : "",
      ]))),
    h("h3", {}, t("devices.incidents")),
    table([t("alerts.incident"), t("incidents.status"), t("alerts.class"), t("alerts.priority"), t("incidents.case"), t("incidents.opened")],
      answer.incidents.map((i) => row([
        h("a", { href: `#/incidents/${i.id}` }, i.id), i.status, i.class_code, priorityBadge(i.priority),
        i.case_id || "—", when(i.opened_ts),
      ]))),
  );
}
