// Parked commands: case commands the platform would not take after every retry (or whose
// stored body no longer reads), with the last error, and the retry of all of them.

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
        c.kind, c.state, c.attempts, h("span.small.warn", {}, c.last_error), when(c.created_ms),
      ], { dataset: { command: c.command_id } }));
    }
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  const requeue = async () => {
    const answer = await api("POST", `/api/v1/outbox/requeue?reason=${encodeURIComponent(t("outbox.requeue"))}`);
    say(messages, `${t("outbox.requeued")}: ${answer.requeued}`);
    await load(null);
  };
  const headers = ["seq", t("outbox.command"), t("alerts.incident"), t("kind"), t("state"),
    t("outbox.attempts"), t("outbox.lastError"), t("outbox.created")];
  root.append(
    title(t("outbox.title"), choice, writeButton(t("outbox.requeue"), requeue, messages, { className: "requeue" })),
    messages, counts,
    h("table.list.outbox", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body), more,
  );
  load(null).catch((error) => say(messages, error.message, "error"));
}
