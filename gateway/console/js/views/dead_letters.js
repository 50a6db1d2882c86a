// Dead letters: refused messages counted by reason since the store was made, and the kept
// ones (newest first) with their payload as received.

import { get } from "../api.js";
import { fill, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { row, title, pager, emptyRow } from "../ui.js";

export function render(root, route) {
  const reason = route.query.get("reason") || "";
  const chips = h("div.chips");
  const body = h("tbody");
  const more = h("div");
  const headers = [t("time"), t("reason"), t("device"), t("deadLetters.topic"), t("detail"), t("payload")];
  root.append(title(t("deadLetters.title")), chips,
    h("table.list.dead-letters", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body), more);
  get("/api/v1/stats").then((stats) => {
    const counts = Object.entries(stats.rejected || {}).sort((a, b) => b[1] - a[1]);
    fill(chips, 
      h(`a.chip${reason ? "" : ".active"}`, { href: "#/dead-letters" }, `${t("all")} ${counts.reduce((n, [, c]) => n + c, 0)}`),
      counts.map(([name, count]) => h(`a.chip${name === reason ? ".active" : ""}`,
        { href: `#/dead-letters?reason=${encodeURIComponent(name)}`, dataset: { reason: name } }, `${name} ${count}`)),
    );
  }).catch(() => {});
  const load = async (cursor) => {
    const page = await get("/api/v1/dead-letters", { reason, limit: 100, cursor });
    if (!cursor && !page.dead_letters.length) emptyRow(body, headers.length);
    for (const d of page.dead_letters) {
      body.append(row([
        when(d.received_ms), h("span.badge.reason", {}, d.reason), d.device_id, h("code", {}, d.topic), d.detail,
        h("details", {}, h("summary", {}, `${d.payload.length} B`), h("pre.payload", {}, d.payload)),
      ], { dataset: { reason: d.reason } }));
    }
    fill(more, pager(page.next_cursor, (c) => load(c).catch(() => {})));
  };
  load(null).catch((error) => root.append(h("p.error", {}, error.message)));
}
