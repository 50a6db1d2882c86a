// Suspected duplicates (疑似重复): pairs of open incidents the incident book found alike but
// not alike enough to merge by itself, each with both incidents side by side (案件 id,
// class, place, what fired) and the score with its reasons. An operator merges one into the
// other (the other's 案件 is voided on the platform) or dismisses the pair, with a reason
// the audit log keeps; a viewer sees the same, read-only. Decided and moot pairs stay
// listed under their status.

import { api, can, get } from "../api.js";
import { clear, fill, h, when } from "../dom.js";
import { t, tv } from "../i18n.js";
import { title, writeButton, messageArea, say, pager, priorityBadge } from "../ui.js";

const STATUSES = ["open", "moot", "merged", "dismissed"];
const EVIDENCE_SHOWN = 4;

export function render(root, route) {
  const status = route.query.get("status") ?? "open";
  const messages = messageArea();
  const list = h("div.pairs");
  const more = h("div");
  const chips = h("div.chips", {},
    [...STATUSES, ""].map((s) => h(`a.chip${s === status ? ".active" : ""}`,
      { href: `#/duplicates?status=${s}`, dataset: { status: s || "all" } },
      s ? tv("duplicates.status", s) : t("all"))));
  const load = async (cursor) => {
    if (!cursor) clear(list);
    const page = await get("/api/v1/duplicates", { status, limit: 50, cursor });
    if (!cursor && !page.duplicates.length) list.append(h("p.empty.muted", {}, t("none")));
    for (const pair of page.duplicates) list.append(pairCard(pair, messages, () => load(null)));
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  root.append(title(t("duplicates.title")), h("p.small", {}, t("duplicates.about")), chips, messages, list, more);
  load(null).catch((error) => say(messages, error.message, "error"));
}

function pairCard(pair, messages, reload) {
  const card = h("section.card.dup-pair", { dataset: { pair: pair.id, status: pair.status } },
    h("div.pair-head", {},
      h(`span.badge.pair-${pair.status}`, {}, tv("duplicates.status", pair.status)),
      h("b.score", {}, `${t("duplicates.score")} ${Math.round(pair.score * 100)}%`),
      h("span.reasons", {}, pair.reasons.map((r) => h("span.chip", {}, r))),
      h("span.small", {}, when(pair.ts))),
    h("div.pair-sides", {}, side(pair.incident), side(pair.other)),
  );
  if (pair.status === "open") card.append(decide(pair, messages, reload));
  else if (pair.status === "moot") {
    card.append(h("p.small.warn", {}, pair.moot_because.map((c) =>
      `${c.incident_id}: ${c.status}${c.closed_reason ? ` (${c.closed_reason})` : ""}`).join(" · ")));
  } else {
    card.append(h("p.decision", {}, `${pair.decided_by} · ${when(pair.decided_at)} · ${t("reason")}: ${pair.reason || "—"}`));
  }
  return card;
}

function side(incident) {
  const place = incident.location || {};
  const evidence = (incident.evidence || []).slice(-EVIDENCE_SHOWN);
  return h("div.pair-side", { dataset: { incident: incident.id } },
    h("h4", {}, h("a", { href: `#/incidents/${incident.id}` }, incident.id), " ", priorityBadge(incident.priority)),
    h("dl", {},
      h("dt", {}, t("incidents.case")), h("dd.case-id", {}, incident.case_id || "—"),
      h("dt", {}, t("alerts.class")), h("dd", {}, incident.class_code || "—"),
      h("dt", {}, t("address")), h("dd", {}, place.address || "—",
        place.grid_code ? h("span.small", {}, ` · ${t("grid")} ${place.grid_code}`) : null),
      h("dt", {}, t("incidents.opened")), h("dd", {}, when(incident.opened_ts)),
      h("dt", {}, t("incidents.status")), h("dd", {}, incident.status || "—")),
    evidence.length ? h("ul.pair-evidence.small", {}, evidence.map((e) =>
      h("li", {}, h("b", {}, e.source_id), ` · ${e.summary || e.class_code}`))) : null,
  );
}

// Merge into either incident (the other is voided), or dismiss; each needs a reason.
function decide(pair, messages, reload) {
  const reason = h("input", { name: "reason", size: 36, maxlength: 500, placeholder: t("duplicates.why"),
    disabled: !can("operator") });
  const act = async (path, body, done) => {
    const why = reason.value.trim();
    if (!why) {
      say(messages, t("reasonRequired"), "error");
      reason.focus();
      return;
    }
    await api("POST", `/api/v1/duplicates/${encodeURIComponent(pair.id)}/${path}`, { ...body, reason: why });
    say(messages, done);
    await reload();
  };
  const mergeInto = (kept, voided) => writeButton(`${t("duplicates.mergeInto")} ${kept}`,
    () => act("merge", { into: kept }, `${t("duplicates.merged")} ${kept} (${voided} ${t("duplicates.voided")})`),
    messages, { className: "merge" });
  const merges = [mergeInto(pair.incident_id, pair.other_incident_id), mergeInto(pair.other_incident_id, pair.incident_id)];
  merges.forEach((button, n) => { button.dataset.into = n ? pair.other_incident_id : pair.incident_id; });
  return h("div.form-row.decide", {},
    h("label.field", {}, h("span", {}, t("reason")), reason),
    merges,
    writeButton(t("duplicates.dismiss"), () => act("dismiss", {}, t("duplicates.dismissed")), messages,
      { className: "dismiss" }),
  );
}
