// Thresholds: the values in force per kind, device and camera zone, with their history, and
// the edit form. A change is applied only after its backtest has run over the chosen
// window: the form shows the cases (案件) it would add and remove, by class, and the
// readings of the devices concerned against the current and the proposed level.

import { api, get } from "../api.js";
import { fill, h, when, compactJson } from "../dom.js";
import { t, tv } from "../i18n.js";
import { lineChart, barChart } from "../charts.js";
import { table, row, title, field, select, writeButton, messageArea, say, priorityBadge } from "../ui.js";
import { METRIC, points } from "./devices.js";

// The first-stage level a kind's cases are filed at (as gateway/backtest_charts.py).
const LEVEL = { bin: "fill_fire_pct", manhole_cover: "tilt_fire_deg", water_level: "warning_cm" };
const WINDOWS = [["3600000", "1 h"], ["21600000", "6 h"], ["86400000", "24 h"], ["604800000", "7 d"]];
const POLL_MS = 400;
const MAX_WAIT_MS = 120_000;
const MAX_SERIES = 3;
const RUN_COLOURS = { current: "#2563eb", proposed: "#ea580c" };

export function render(root) {
  const messages = messageArea();
  const form = h("section.card.edit-form");
  const preview = h("section.preview");
  const tables = h("section");
  const history = h("section");
  root.append(title(t("thresholds.title")), messages, form, preview, tables, history);
  const state = { doc: null, previewed: null, devices: null };

  const reload = async () => {
    state.doc = await get("/api/v1/thresholds");
    const versions = await get("/api/v1/thresholds/history", { limit: 20 });
    if (!state.devices) {
      const list = await get("/api/v1/console/devices", { limit: 500 });
      state.devices = Object.fromEntries(list.devices.map((d) => [d.id, d.kind]));
    }
    drawTables(tables, state.doc, (path, value) => editor.fill(path, value));
    drawHistory(history, versions.versions);
    editor.version(state.doc);
  };
  const editor = editForm(form, preview, messages, state, reload);
  reload().catch((error) => say(messages, error.message, "error"));
}

// Every scalar setting as [path, value]; objects (schedules, per-field maps) as JSON.
function flatten(prefix, value, out) {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && !("windows" in value)) {
    for (const [key, inner] of Object.entries(value)) flatten(prefix ? `${prefix}.${key}` : key, inner, out);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

function editable(value) {
  return value === null || ["number", "string", "boolean"].includes(typeof value);
}

function drawTables(root, doc, onEdit) {
  const settings = doc.settings;
  const kinds = [];
  for (const [kind, params] of Object.entries(settings.kinds)) {
    if (kind !== "health") {
      kinds.push(paramCard(tv("kind", kind), `kinds.${kind}`, params, onEdit));
      continue;
    }
    const common = {};
    for (const [key, value] of Object.entries(params)) {
      if (key in settings.kinds && value && typeof value === "object") {
        kinds.push(paramCard(`${t("health")} · ${tv("kind", key)}`, `kinds.health.${key}`, value, onEdit));
      } else {
        common[key] = value;
      }
    }
    kinds.push(paramCard(t("health"), "kinds.health", common, onEdit));
  }
  const devices = Object.entries(settings.devices).map(([id, params]) => paramCard(id, `devices.${id}`, params, onEdit));
  const zones = Object.entries(settings.zones).map(([zone, params]) => paramCard(zone, `zones.${zone}`, params, onEdit));
  fill(root,
    h("h3", {}, t("thresholds.kinds")), h("div.param-cards", {}, kinds),
    h("h3", {}, t("thresholds.devices")), h("div.param-cards", {}, devices.length ? devices : h("p.muted", {}, t("none"))),
    h("h3", {}, t("thresholds.zones")), h("div.param-cards", {}, zones.length ? zones : h("p.muted", {}, t("none"))),
  );
}

// A value as a table cell shows it: schedules in words, null as null.
function shown(value) {
  if (value && typeof value === "object" && "windows" in value) {
    const days = value.days.length === 7 ? "" : ` (${value.days.join(",")})`;
    return (value.windows.length ? value.windows.map(compactJson).join(", ") : t("thresholds.always")) + days;
  }
  return compactJson(value) === "" ? "null" : compactJson(value);
}

function paramCard(label, prefix, params, onEdit) {
  const rows = flatten(prefix, params, []).map(([path, value]) => h("tr", { dataset: { path } },
    h("td", {}, h("code", { title: path }, path.slice(prefix.length + 1))),
    h("td.value", { dataset: { path } }, shown(value)),
    h("td", {}, editable(value)
      ? h("button.edit-link", { type: "button", dataset: { edit: path }, onclick: () => onEdit(path, value) }, t("thresholds.edit"))
      : ""),
  ));
  return h("section.card.param-card", {}, h("h4", {}, label, " ", h("code.small", {}, prefix)),
    h("table.params", {}, h("tbody", {}, rows)));
}

function drawHistory(root, versions) {
  fill(root, 
    h("h3", {}, t("thresholds.history")),
    table([t("thresholds.version"), t("time"), t("author"), t("reason"), t("thresholds.diff")],
      versions.map((v) => row([
        `v${v.version}`, when(v.created_ms), v.author, v.reason,
        h("ul.diff", {}, v.diff.map((d) => h("li", {}, h("code", {}, d.path), ` ${compactJson(d.old) || "null"} → ${compactJson(d.new) || "null"}`))),
      ], { dataset: { version: v.version } }))),
  );
}

function parseValue(text) {
  const trimmed = text.trim();
  if (trimmed === "null") return null;
  if (trimmed === "true" || trimmed === "false") return trimmed === "true";
  if (trimmed !== "" && Number.isFinite(Number(trimmed))) return Number(trimmed);
  return trimmed;
}

function editForm(form, preview, messages, state, reload) {
  const path = h("input", { name: "path", list: "threshold-paths", size: 40, maxlength: 200, placeholder: "kinds.bin.fill_fire_pct" });
  const current = h("span.current-value", {}, "—");
  const value = h("input", { name: "value", size: 10, maxlength: 100 });
  const reason = h("input", { name: "reason", size: 40, maxlength: 500 });
  const windowChoice = select(WINDOWS, "86400000", { name: "window" });
  const versionLabel = h("span.small");
  const changes = () => ({ [path.value.trim()]: parseValue(value.value) });
  const fingerprint = () => JSON.stringify([changes(), windowChoice.value]);

  const runPreview = async () => {
    if (!path.value.trim() || value.value.trim() === "") throw new Error(t("thresholds.path"));
    state.previewed = null;
    applyButton.disabled = true;
    const until = Date.now();
    const since = until - Number(windowChoice.value);
    const asked = fingerprint();
    fill(preview, h("p.running", {}, t("thresholds.running")));
    const job = await api("POST", "/api/v1/backtests", {
      since_ms: since, until_ms: until, changes: changes(), reason: `preview: ${reason.value.trim()}`.slice(0, 500),
    });
    const report = await waitFor(job.id);
    drawPreview(preview, report, state, path.value.trim(), since, until);
    state.previewed = asked;
    applyButton.disabled = false;
    say(messages, `${t("thresholds.currentRun")} ${report.current.cases} → ${t("thresholds.proposedRun")} ${report.proposed.cases}`);
  };
  const apply = async () => {
    if (state.previewed !== fingerprint()) {
      say(messages, t("thresholds.needPreview"), "error");
      return;
    }
    const answer = await api("PUT", "/api/v1/thresholds", {
      changes: changes(),
      reason: reason.value.trim(),
      expected_version: state.doc.version,
    });
    state.previewed = null;
    say(messages, `${t("thresholds.applied")} ${answer.version}`);
    await reload();
  };
  const previewButton = writeButton(t("thresholds.preview"), runPreview, messages, { className: "preview" });
  const applyButton = writeButton(t("thresholds.apply"), apply, messages, { className: "apply" });
  applyButton.disabled = true;
  for (const input of [path, value, windowChoice]) {
    input.addEventListener("input", () => {
      applyButton.disabled = state.previewed !== fingerprint();
    });
  }
  const paths = h("datalist", { id: "threshold-paths" });
  form.append(
    h("h3", {}, t("thresholds.edit"), " ", versionLabel),
    h("div.form-row", {},
      field(t("thresholds.path"), path), field(t("thresholds.current"), current),
      field(t("thresholds.new"), value), field(t("thresholds.window"), windowChoice)),
    h("div.form-row", {}, field(t("reason"), reason)),
    h("div.form-row", {}, previewButton, applyButton),
    paths,
  );
  return {
    fill(p, v) {
      path.value = p;
      current.textContent = compactJson(v) === "" ? "null" : compactJson(v);
      value.value = "";
      applyButton.disabled = true;
      value.focus();
    },
    version(doc) {
      versionLabel.textContent = `${t("thresholds.version")} v${doc.version} · ${doc.author} · ${when(doc.created_ms)}`;
      fill(paths, ...flatten("kinds", doc.settings.kinds, []).concat(flatten("devices", doc.settings.devices, []))
        .filter(([, v]) => editable(v)).map(([p]) => h("option", { value: p })));
    },
  };
}

async function waitFor(jobId) {
  const deadline = Date.now() + MAX_WAIT_MS;
  while (Date.now() < deadline) {
    const job = await get(`/api/v1/backtests/${jobId}`);
    if (job.status === "done") return job.report;
    if (job.status === "failed") throw new Error(job.error);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error("backtest: no answer in time");
}

function deviceOf(alertKey) {
  return alertKey.split("/")[0];
}

function drawPreview(root, report, state, path, since, until) {
  const classes = [...new Set([...Object.keys(report.current.by_class), ...Object.keys(report.proposed.by_class)])].sort();
  const caseRows = (cases, sign) => cases.map((c) => row([
    h("span.sign", {}, sign), c.alert_key, c.class, priorityBadge(c.priority), c.grid, when(c.opened_ms),
  ], { dataset: { change: sign === "+" ? "added" : "removed", key: c.alert_key } }));
  const concerned = [...new Set([
    ...report.removed.map((c) => deviceOf(c.alert_key)),
    ...report.added.map((c) => deviceOf(c.alert_key)),
    ...(path.startsWith("devices.") ? [path.split(".")[1]] : []),
  ])].filter((d) => state.devices[d]).slice(0, MAX_SERIES);
  const charts = h("div.charts");
  fill(root, 
    h("div.cards", {},
      h("div.card", {}, h("div.card-label", {}, `${t("thresholds.cases")} · ${t("thresholds.currentRun")}`), h("b.count-current", {}, report.current.cases)),
      h("div.card", {}, h("div.card-label", {}, `${t("thresholds.cases")} · ${t("thresholds.proposedRun")}`), h("b.count-proposed", {}, report.proposed.cases)),
      h("div.card", {}, h("div.card-label", {}, t("thresholds.added")), h("b.count-added", {}, `+${report.added.length}`)),
      h("div.card", {}, h("div.card-label", {}, t("thresholds.removed")), h("b.count-removed", {}, `−${report.removed.length}`)),
      h("div.card.wide", {}, h("div.card-label", {}, t("thresholds.diff")),
        report.changes.map((c) => h("div", {}, h("code", {}, c.path), ` ${compactJson(c.old) || "null"} → ${compactJson(c.new) || "null"}`))),
    ),
    h("div.preview-charts", {},
      h("figure", {}, h("figcaption", {}, t("thresholds.byClass")),
        barChart(classes.map((code) => ({
          label: code,
          bars: [
            { name: "current", value: report.current.by_class[code] || 0, colour: RUN_COLOURS.current },
            { name: "proposed", value: report.proposed.by_class[code] || 0, colour: RUN_COLOURS.proposed },
          ],
        }))),
        h("div.small", {}, h("span.key-current", {}, `■ ${t("thresholds.currentRun")}`), "  ",
          h("span.key-proposed", {}, `■ ${t("thresholds.proposedRun")}`))),
      charts,
    ),
    h("h4", {}, `${t("thresholds.added")} / ${t("thresholds.removed")}`),
    table(["", t("alerts.source"), t("alerts.class"), t("alerts.priority"), t("grid"), t("incidents.opened")],
      [...caseRows(report.added, "+"), ...caseRows(report.removed, "−")], { className: "list.case-changes" }),
  );
  for (const deviceId of concerned) {
    seriesChart(deviceId, state, report, path, since, until).then((chart) => charts.append(chart)).catch(() => {});
  }
}

// One device's watched field over the window, its current and proposed level, and where
// each run opened a case.
async function seriesChart(deviceId, state, report, path, since, until) {
  const kind = state.devices[deviceId];
  const metric = METRIC[kind];
  const answer = await get(`/api/v1/devices/${encodeURIComponent(deviceId)}/readings`, { since, until, limit: 5000 });
  const param = LEVEL[kind];
  const settings = state.doc.settings;
  const currentLevel = settings.devices[deviceId]?.[param] ?? settings.kinds[kind]?.[param];
  // The proposed level: the device's own change, or its kind's when it has no override.
  const own = report.changes.find((c) => c.path === `devices.${deviceId}.${param}`);
  const ofKind = report.changes.find((c) => c.path === `kinds.${kind}.${param}`);
  const overridden = settings.devices[deviceId]?.[param] !== undefined;
  const proposed = own || (overridden ? null : ofKind);
  const levels = [{ value: currentLevel, label: `${param} ${currentLevel}`, colour: RUN_COLOURS.current, dash: "6 3" }];
  if (proposed) {
    levels.push({ value: proposed.new, label: `→ ${proposed.new}`, colour: RUN_COLOURS.proposed, dash: "2 2" });
  }
  const mine = (cases) => cases.filter((c) => deviceOf(c.alert_key) === deviceId);
  const markers = [
    ...mine(report.removed).map((c) => ({ x: c.opened_ms, label: `− ${c.class}`, colour: RUN_COLOURS.current })),
    ...mine(report.added).map((c) => ({ x: c.opened_ms, label: `+ ${c.class}`, colour: RUN_COLOURS.proposed })),
  ];
  return h("figure", { dataset: { series: deviceId } },
    h("figcaption", {}, `${t("thresholds.series")} · ${deviceId} (${tv("kind", kind)}) · ${metric}`),
    lineChart({ series: [{ name: metric, points: points(answer.readings, metric), colour: "#334155" }], levels, markers, height: 200 }));
}
