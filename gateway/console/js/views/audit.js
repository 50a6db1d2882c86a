// The audit log: every write (who, what, before and after, when, why), newest first,
// filtered by actor, action and target. Read-only here as in the store.

import { get } from "../api.js";
import { fill, h, isoWhen, compactJson, link } from "../dom.js";
import { t } from "../i18n.js";
import { row, title, field, pager, emptyRow } from "../ui.js";

export function render(root, route) {
  const chosen = {
    actor: route.query.get("actor") || "",
    action: route.query.get("action") || "",
    target: route.query.get("target") || "",
  };
  const inputs = Object.fromEntries(Object.entries(chosen).map(([k, v]) => [k, h("input", { name: k, value: v, maxlength: 200 })]));
  const apply = () => {
    location.hash = link("#/audit", Object.fromEntries(Object.entries(inputs).map(([k, input]) => [k, input.value.trim()])));
  };
  for (const input of Object.values(inputs)) input.addEventListener("keydown", (e) => e.key === "Enter" && apply());
  const body = h("tbody");
  const more = h("div");
  const headers = [t("time"), t("audit.actor"), t("audit.role"), t("audit.action"), t("audit.target"),
    t("audit.before"), t("audit.after"), t("reason")];
  root.append(
    title(t("audit.title")),
    h("div.filters", {}, field(t("audit.actor"), inputs.actor), field(t("audit.action"), inputs.action),
      field(t("audit.target"), inputs.target), h("button", { type: "button", onclick: apply }, t("audit.filter"))),
    h("table.list.audit", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body), more,
  );
  const load = async (cursor) => {
    const page = await get("/api/v1/audit", { ...chosen, limit: 100, cursor });
    if (!cursor && !page.entries.length) emptyRow(body, headers.length);
    for (const e of page.entries) {
      body.append(row([
        isoWhen(e.ts), e.actor, e.role, h("code", {}, e.action), e.target,
        h("code.json", {}, compactJson(e.before)), h("code.json", {}, compactJson(e.after)), e.reason,
      ], { dataset: { action: e.action, actor: e.actor } }));
    }
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  load(null).catch((error) => root.append(h("p.error", {}, error.message)));
}
