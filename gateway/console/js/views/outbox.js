// Parked commands: case commands the platform would not take after every retry (or whose
// stored body no longer reads), with the last error, and the retry of all of them. One
// parked command may be retried alone; one whose send had no clear answer ("unclear": the
// platform may have filed it, and cannot be asked) is settled by what an operator sees on
// the platform: found there (its case id), or not filed (sent again). Each needs a reason,
// which the audit log keeps.

import { api, get } from "../api.js";
import { clear, fill, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { row, title, select, writeButton, messageArea, say, pager, emptyRow } from "../ui.js";

const STATES = ["parked", "pending", "delivered", "refiled", "refused_closed"];

export function render(root, route) {
  const state = route.query.get("state") || "parked";
  const messages = messageArea();
  const counts = h("div.chips");
  const choice = select(STATES.map((s) => [s, s]), state);
  choice.addEventListener("change", () => {
    location.hash = `#/outbox?state=${choice.value}`;
  });
  const reason = h("input", { name: "reason", size: 40, maxlength: 500, placeholder: t("outbox.why") });
  const body = h("tbody");
  const more = h("div");
  const load = async (cursor) => {
    if (!cursor) clear(body);
    const stats = await get("/api/v1/stats");
    fill(counts, Object.entries(stats.outbox).map(([name, n]) => h("span.chip", { dataset: { state: name } }, `${name} ${n}`)));
    const page = await get("/api/v1/outbox", { state, limit: 100, cursor });
    if (!cursor && !page.commands.length) emptyRow(body, headers.length);
    for (const c of page.commands) {
      body.append(row([
        c.seq, h("code", {}, c.command_id), h("a", { href: `#/incidents/${c.incident_id}` }, c.incident_id),
        c.kind, c.state, c.attempts, h("span.small.warn", {}, c.last_error), when(c.created_ms), actions(c),
      ], { dataset: { command: c.command_id, state: c.state } }));
    }
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  const requeue = async () => {
    const answer = await api("POST", `/api/v1/outbox/requeue?reason=${encodeURIComponent(t("outbox.requeue"))}`);
    say(messages, `${t("outbox.requeued")}: ${answer.requeued}`);
    await load(null);
  };
  // One command's write, with the typed reason; refused here when there is none.
  const act = async (c, path, fields) => {
    const why = reason.value.trim();
    if (!why) {
      say(messages, t("reasonRequired"), "error");
      reason.focus();
      return;
    }
    await api("POST", `/api/v1/outbox/${c.seq}/${path}`, { ...fields, reason: why });
    say(messages, `${t(path === "requeue" ? "outbox.requeued" : "outbox.resolved")}: ${c.command_id}`);
    await load(null);
  };
  const actions = (c) => {
    if (c.state !== "parked") return "";
    const cells = [writeButton(t("outbox.retryOne"), () => act(c, "requeue", {}), messages, { className: "requeue-one" })];
    if (c.maybe_filed) {
      const caseId = h("input", { name: "case_id", size: 18, maxlength: 64, placeholder: t("outbox.caseId") });
      const found = () => {
        const id = caseId.value.trim();
        if (!id) {
          say(messages, t("outbox.caseRequired"), "error");
          caseId.focus();
          return null;
        }
        return act(c, "resolve", { case_id: id });
      };
      cells.push(
        h("span.badge.unclear", { title: t("outbox.unclearHint") }, t("outbox.unclear")), caseId,
        writeButton(t("outbox.found"), found, messages, { className: "found" }),
        writeButton(t("outbox.notFiled"), () => act(c, "resolve", { not_filed: true }), messages, { className: "not-filed" }),
      );
    }
    return h("span.actions", {}, cells);
  };
  const headers = ["seq", t("outbox.command"), t("alerts.incident"), t("kind"), t("state"),
    t("outbox.attempts"), t("outbox.lastError"), t("outbox.created"), t("outbox.actions")];
  root.append(
    title(t("outbox.title"), choice, writeButton(t("outbox.requeue"), requeue, messages, { className: "requeue" })),
    h("label.field", {}, h("span", {}, t("reason")), reason),
    messages, counts,
    h("table.list.outbox", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body), more,
  );
  load(null).catch((error) => say(messages, error.message, "error"));
}
