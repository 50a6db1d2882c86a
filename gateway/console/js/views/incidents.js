// Incidents and their 案件: the list, and one incident's timeline (alerts, merges 并案,
// escalations, commands and the platform's answers, 立案, the case's statuses on the
// platform, 核查 checks), its evidence pictures (annotated and "before"), and the case
// status the platform sent back (its latest, the platform's time of it, and whether the
// gateway learnt it by polling or by a webhook).

import { get, evidenceUrl } from "../api.js";
import { fill, h, when } from "../dom.js";
import { t, tv } from "../i18n.js";
import { table, row, priorityBadge, alertStateBadge, title, select, pager, detailPage, emptyRow } from "../ui.js";
import { holderText } from "./alerts.js";

const REFRESH_MS = 5000;

export function render(root, route) {
  if (route.arg) return renderIncident(root, route.arg);
  return renderList(root, route.query.get("status") || "open");
}

function renderList(root, status) {
  const choice = select([["open", t("incidents.open")], ["closed", t("incidents.closed")], ["", t("all")]], status);
  choice.addEventListener("change", () => {
    location.hash = `#/incidents?status=${choice.value}`;
  });
  const list = h("div");
  const more = h("div");
  root.append(title(t("incidents.title"), choice), list, more);
  const body = h("tbody");
  const headers = [t("alerts.incident"), t("incidents.status"), t("alerts.class"), t("alerts.priority"),
    t("address"), t("grid"), t("incidents.opened"), t("incidents.case"), t("incidents.platformStatus"),
    t("incidents.keys")];
  list.append(h("table.list", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body));
  const load = async (cursor) => {
    const page = await get("/api/v1/incidents", { status, limit: 100, cursor });
    if (!cursor && !page.incidents.length) emptyRow(body, headers.length);
    for (const i of page.incidents) {
      body.append(row([
        h("a", { href: `#/incidents/${i.id}`, dataset: { incident: i.id } }, i.id),
        i.status, i.class_code, priorityBadge(i.priority), i.location.address, i.location.grid_code,
        when(i.opened_ts), i.case_id || "—", i.platform_status ? i.platform_status.status : "—",
        i.alert_keys.length,
      ]));
    }
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  load(null).catch((error) => list.append(h("p.error", {}, error.message)));
}

function renderIncident(root, incidentId) {
  const url = `/api/v1/console/incidents/${encodeURIComponent(incidentId)}`;
  return detailPage(root, `${t("alerts.incident")} ${incidentId}`, "#/incidents", url, drawIncident, REFRESH_MS);
}

function drawIncident(body, answer) {
  const i = answer.incident;
  fill(body,
    h("div.cards", {},
      h("div.card", {}, h("div.card-label", {}, t("incidents.status")), h("b", { dataset: { status: i.status } }, i.status)),
      h("div.card", {}, h("div.card-label", {}, t("incidents.case")), i.case_id || "—"),
      h("div.card", {}, h("div.card-label", {}, t("alerts.class")), i.class_code),
      h("div.card", {}, h("div.card-label", {}, t("alerts.priority")), priorityBadge(i.priority)),
      h("div.card", {}, h("div.card-label", {}, t("incidents.opened")), when(i.opened_ts)),
      h("div.card.wide", {}, h("div.card-label", {}, t("address")), i.location.address,
        h("div.small", {}, `${t("grid")} ${i.location.grid_code}`)),
    ),
    caseStatus(i),
    h("h3", {}, t("incidents.timeline")),
    h("p.small", {}, t("incidents.timeBases")),
    timeline(answer.events),
    answer.truncated ? h("p.small", {}, "…") : null,
    h("h3", {}, t("incidents.evidence")),
    evidence(answer.evidence),
  );
}

function caseStatus(i) {
  const checks = i.closure_checks || [];
  const latest = i.platform_status;
  return h("div.case-status", {},
    h("h3", {}, t("incidents.caseStatus")),
    h("p.platform-status", { dataset: { status: latest ? latest.status : "" } },
      `${t("incidents.platformStatus")}: `, h("b", {}, latest ? latest.status : "—"),
      latest ? learnt(latest) : ""),
    h("p", {}, `${t("incidents.status")}: `, h("b", {}, i.status),
      i.closed_reason ? ` · ${t("incidents.closedReason")}: ${i.closed_reason}` : "",
      i.flag ? ` · ${t("incidents.flag")}: ${i.flag}` : ""),
    checks.length ? table([t("time"), t("incidents.status"), t("alerts.summary")],
      checks.map((c) => row([when(c.at_ms), c.status, (c.summaries || []).join("; ")]))) : null,
  );
}

function timeline(events) {
  return h("ol.timeline", {}, events.map((e) => h(`li.event.event-${e.type}`, { dataset: { type: e.type } },
    h("span.event-time", {}, e.at_ms === null ? "—" : when(e.at_ms)),
    h("span.event-type", {}, t(`event.${e.type}`)),
    h("span.event-body", {}, eventBody(e)),
  )));
}

function eventBody(e) {
  switch (e.type) {
    case "alert":
    case "merge": {
      const a = e.alert;
      return [alertStateBadge(a.state), " ", a.key, " · ", a.summary, " ", priorityBadge(a.priority),
        a.held_by ? holderText(a) : null];
    }
    case "command":
    case "escalation":
      return [`${e.kind} ${e.command_id}`, " ", priorityBadge(e.priority), ` · ${e.alert_key}`];
    case "platform":
      return [`${e.command_id}: ${e.state}`, e.attempts ? ` · ${e.attempts}×` : "",
        e.last_error ? h("div.small.warn", {}, e.last_error) : null];
    case "case_filed":
      return [`案件 ${e.case_id}`];
    case "closure_check":
      return [`${e.status}: ${(e.summaries || []).join("; ")}`];
    case "platform_status":
      return [h("b", {}, e.status), learnt(e)];
    default:
      return [JSON.stringify(e)];
  }
}

// A platform status: the platform's time of the change (as it wrote it, when it is not a
// time) and how the gateway learnt it (poll or webhook).
function learnt(kept) {
  const at = Date.parse(kept.updated_at);
  const changed = Number.isFinite(at) ? when(at) : kept.updated_at;
  return h("span.learnt", {}, ` · ${t("incidents.updatedAt")} ${changed} · `,
    h("span.via", { dataset: { source: kept.source } }, tv("incidents.via", kept.source)));
}

function evidence(pictures) {
  if (!pictures.length) return h("p.muted", {}, t("none"));
  return h("div.evidence", {}, pictures.map((p) => h("figure.evidence-pair", {},
    h("figcaption", {}, `${when(p.ts)} · ${p.key}`),
    h("div.pair", {},
      p.annotated ? h("div", {}, h("img", { src: evidenceUrl(p.annotated), alt: p.annotated, loading: "lazy" }),
        h("div.small", {}, t("incidents.annotated"))) : null,
      p.before ? h("div", {}, h("img", { src: evidenceUrl(p.before), alt: p.before, loading: "lazy" }),
        h("div.small", {}, t("incidents.before"))) : null),
  )));
}


