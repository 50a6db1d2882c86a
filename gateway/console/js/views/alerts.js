// Live alerts: the newest stored alerts, then each new one as the stream brings it, with
// the silence, inhibition rule or health confirmation that held it shown beside it.

import { get } from "../api.js";
import { clear, fill, h, when, values, compactJson } from "../dom.js";
import { t, tv } from "../i18n.js";
import { onAlert, onStatus } from "../stream.js";
import { row, priorityBadge, alertStateBadge, title, select, pager, emptyRow } from "../ui.js";

const SHOWN = 300;

export function render(root, route) {
  const held = route.query.get("held") || "any";
  const status = h("span.stream-status");
  const choice = select([["any", t("all")], ["held", t("alerts.held")], ["filed", t("alerts.filed")]], held);
  choice.addEventListener("change", () => {
    location.hash = choice.value === "any" ? "#/alerts" : `#/alerts?held=${choice.value}`;
  });
  const body = h("tbody");
  const list = h("div.alerts");
  const more = h("div");
  root.append(title(t("alerts.title"), status, choice), list, more);
  const seen = new Set();
  let older = null;

  const headers = [t("time"), t("alerts.source"), t("alerts.rule"), t("state"), t("alerts.class"),
    t("alerts.priority"), t("alerts.summary"), t("alerts.heldBy"), t("alerts.incident")];
  fill(list, h("table.list.alert-table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body));

  const add = (alert, atTop) => {
    if (seen.has(alert.id)) return;
    body.querySelector("td.empty")?.parentElement.remove();
    if (held === "held" && !alert.held_by) return;
    if (held === "filed" && alert.held_by) return;
    seen.add(alert.id);
    const tr = alertRow(alert);
    if (atTop) {
      tr.classList.add("fresh");
      body.prepend(tr);
      while (body.children.length > SHOWN) body.lastChild.remove();
    } else {
      body.append(tr);
    }
  };
  const loadOlder = async (cursor) => {
    const page = await get("/api/v1/console/alerts", { held, limit: 100, cursor });
    for (const alert of page.alerts) add(alert, false);
    if (!cursor && !page.alerts.length) emptyRow(body, headers.length);
    older = page.next_cursor;
    fill(more, pager(older, (c) => loadOlder(c).catch(() => {})));
  };
  loadOlder(null).catch((error) => list.append(h("p.error", {}, error.message)));
  const stopRows = onAlert((alert) => {
    if (alert.gap) {
      clear(body);
      seen.clear();
      loadOlder(null).catch(() => {});
      return;
    }
    add(alert, true);
  });
  const stopStatus = onStatus((state) => {
    status.dataset.status = state;
    status.textContent = state === "live" ? `● ${t("alerts.live")}` : `○ ${t("alerts.reconnecting")}`;
  });
  return () => {
    stopRows();
    stopStatus();
  };
}

function alertRow(a) {
  return row([
    when(a.ts),
    h("a", { href: `#/devices/${a.source_id}` }, a.zone || a.source_id),
    a.rule_id,
    alertStateBadge(a.state),
    a.class_code,
    priorityBadge(a.priority),
    h("span", {}, a.summary, a.values && Object.keys(a.values).length ? h("div.small", {}, values(a.values)) : null),
    a.held_by ? holderText(a) : h("span.filed", {}, t("alerts.filed")),
    a.incident_id ? h("a", { href: `#/incidents/${a.incident_id}` }, a.incident_id) : "",
  ], { dataset: { alert: a.id, key: a.key, held: a.held_by || "" } });
}

// What held an alert, in words: the silence (its matchers, who and why, until when), the
// inhibition rule, or the health confirmation.
export function holderText(a) {
  const holder = a.holder;
  if (holder && holder.type === "silence") {
    const silence = holder.silence;
    return h("div.holder.silence", { dataset: { silence: silence.id } },
      h("a", { href: `#/silences?id=${silence.id}` }, `${t("alerts.silence")} #${silence.id}`),
      h("div.small", {}, Object.entries(silence.matchers).map(([k, v]) => `${k}=${v}`).join(", ")),
      h("div.small", {}, `${silence.author}: ${silence.reason}`),
      h("div.small", {}, `${t("alerts.until")} ${when(silence.ends_ms)} (${tv("silences.status", silence.status)})`));
  }
  if (holder && holder.type === "inhibition") {
    const rule = holder.rule;
    return h("div.holder.inhibition", {},
      `${t("alerts.inhibition")} ${rule ? rule.name : a.held_by}`,
      rule ? h("div.small", {}, `${compactJson(rule.source_match)} → ${compactJson(rule.target_match)} (${rule.action})`) : null);
  }
  if (holder && holder.type === "confirm") {
    return h("div.holder.confirm", {}, t("alerts.confirm"), h("div.small", {}, `${holder.confirm_s} s`));
  }
  return h("div.holder", {}, a.held_by);
}
