// Silences: create one with its matchers, expiry and reason; extend (by a chosen time) or
// remove those in force, each with a reason; the expired stay listed as history. The
// author is who signed in: the gateway records it, the page sends none. Alerts matching a
// silence are stored, shown on the live page with the silence beside them, and file no 案件
// while it holds.

import { api, get } from "../api.js";
import { clear, fill, h, when } from "../dom.js";
import { t, tv } from "../i18n.js";
import { row, title, field, select, writeButton, messageArea, say, pager, emptyRow } from "../ui.js";

const LABELS = ["device", "kind", "grid", "class", "zone", "rule", "priority", "origin"];
const DURATIONS = [["3600", "1 h"], ["14400", "4 h"], ["86400", "24 h"], ["604800", "7 d"]];

export function render(root, route) {
  const status = route.query.get("status") || "";
  const messages = messageArea();
  const list = h("div");
  const more = h("div");
  const choice = select([["", t("all")], ...["active", "pending", "expired"].map((s) => [s, tv("silences.status", s)])], status);
  choice.addEventListener("change", () => {
    location.hash = choice.value ? `#/silences?status=${choice.value}` : "#/silences";
  });
  const body = h("tbody");
  const load = async (cursor) => {
    if (!cursor) clear(body);
    const page = await get("/api/v1/silences", { status, limit: 100, cursor });
    if (!cursor && !page.silences.length) emptyRow(body, headers.length);
    for (const silence of page.silences) body.append(silenceRow(silence, messages, () => load(null)));
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  const headers = ["#", t("silences.matchers"), t("author"), t("reason"), t("silences.starts"), t("silences.ends"), t("state"), ""];
  list.append(h("table.list.silences", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body));
  root.append(title(t("silences.title"), choice), messages, createForm(messages, () => load(null)), list, more);
  load(null).catch((error) => say(messages, error.message, "error"));
}

function createForm(messages, reload) {
  const rows = h("div.matchers");
  const addMatcher = (label = "device", value = "") => {
    const name = select(LABELS.map((l) => [l, l]), label, { name: "matcher-label" });
    const input = h("input", { name: "matcher-value", value, maxlength: 200, placeholder: "BIN-001" });
    const line = h("div.matcher", {}, name, " = ", input,
      h("button.link", { type: "button", onclick: () => line.remove() }, "✕"));
    rows.append(line);
  };
  addMatcher();
  const duration = select(DURATIONS, "3600", { name: "duration" });
  const reason = h("input", { name: "reason", size: 40, maxlength: 500 });
  const create = async () => {
    const matchers = {};
    for (const line of rows.querySelectorAll(".matcher")) {
      const value = line.querySelector("input").value.trim();
      if (value) matchers[line.querySelector("select").value] = value;
    }
    const made = await api("POST", "/api/v1/silences", {
      matchers,
      reason: reason.value.trim(),
      duration_s: Number(duration.value),
    });
    say(messages, `${t("silences.created")} #${made.id}`);
    reason.value = "";
    await reload();
  };
  return h("section.card.silence-form", {},
    h("h3", {}, t("silences.new")),
    h("div.form-row", {}, field(t("silences.matchers"), rows),
      h("button.link", { type: "button", onclick: () => addMatcher("kind") }, `+ ${t("silences.addMatcher")}`)),
    h("div.form-row", {}, field(t("silences.duration"), duration), field(t("reason"), reason),
      writeButton(t("silences.create"), create, messages, { className: "create-silence" })),
  );
}

// Extend by a chosen time or remove, each with the operator's own reason (required: it is
// what the audit log keeps as why).
function silenceRow(silence, messages, reload) {
  const live = silence.status !== "expired";
  const by = select(DURATIONS, "3600", { name: "extend-by", title: t("silences.extendBy") });
  const why = h("input", { name: "change-reason", size: 18, maxlength: 500, placeholder: t("silences.why") });
  const reason = () => {
    const text = why.value.trim();
    if (!text) {
      why.focus();
      throw new Error(t("reasonRequired"));
    }
    return text;
  };
  const extend = async () => {
    const body = { reason: reason(), ends_ms: silence.ends_ms + Number(by.value) * 1000 };
    await api("PATCH", `/api/v1/silences/${silence.id}`, body);
    say(messages, `${t("silences.extended")} #${silence.id}`);
    await reload();
  };
  const remove = async () => {
    const query = new URLSearchParams({ reason: reason() });
    await api("DELETE", `/api/v1/silences/${silence.id}?${query}`);
    say(messages, `${t("silences.removed")} #${silence.id}`);
    await reload();
  };
  return row([
    `#${silence.id}`,
    Object.entries(silence.matchers).map(([k, v]) => h("code.matcher-chip", {}, `${k}=${v}`)),
    silence.author,
    silence.reason,
    when(silence.starts_ms),
    when(silence.ends_ms),
    h(`span.badge.silence-${silence.status}`, {}, tv("silences.status", silence.status)),
    live ? h("div.silence-actions", {}, by, why,
      writeButton(t("silences.extend"), extend, messages, { className: "extend" }),
      writeButton(t("silences.remove"), remove, messages, { className: "remove" })) : "",
  ], { dataset: { silence: silence.id, status: silence.status } });
}
