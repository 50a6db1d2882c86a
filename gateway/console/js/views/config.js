// The config the gateway runs with, for admins: every section as the models read it
// (defaults filled in), every secret shown as *** by the gateway itself. Read-only: a new
// config takes a restart, and rule parameters change on the Thresholds page.

import { get } from "../api.js";
import { fill, h } from "../dom.js";
import { t } from "../i18n.js";
import { title } from "../ui.js";

export function render(root) {
  const body = h("div.config");
  root.append(title(t("config.title")), h("p.small", {}, t("config.about")), body);
  get("/api/v1/config").then((answer) => {
    const entries = Object.entries(answer.config);
    const plain = entries.filter(([, value]) => !isNested(value));
    const sections = entries.filter(([, value]) => isNested(value));
    fill(body,
      h("p", {}, `${t("config.thresholdsVersion")}: `,
        h("a", { href: "#/thresholds" }, String(answer.thresholds_version ?? "—"))),
      h("nav.config-index", {}, sections.map(([name]) => h("a.chip", { href: "#/config", dataset: { jump: name },
        onclick: (event) => {
          event.preventDefault();
          body.querySelector(`section[data-section="${name}"]`)?.scrollIntoView();
        } }, name))),
      h("div.config-columns", {},
        h("section.card.config-section", { dataset: { section: "" } }, tree(Object.fromEntries(plain))),
        sections.map(([name, value]) => h("section.card.config-section", { dataset: { section: name } },
          h("h3", {}, name), tree(value)))),
    );
  }).catch((error) => body.append(h("p.error", {}, error.message)));
}

function isNested(value) {
  return value !== null && typeof value === "object" && !isFlatList(value);
}

// A list of plain values (weekdays, labels) is shown on one line.
function isFlatList(value) {
  return Array.isArray(value) && value.every((item) => item === null || typeof item !== "object");
}

// Nested settings as nested lists: keys in bold, scalars as code, *** marked as redacted.
function tree(value) {
  if (value === null || typeof value !== "object") return scalar(value);
  if (isFlatList(value)) return h("code", {}, JSON.stringify(value));
  const entries = Array.isArray(value) ? value.map((v, n) => [n, v]) : Object.entries(value);
  if (!entries.length) return h("code", {}, Array.isArray(value) ? "[]" : "{}");
  return h("ul.config-tree", {}, entries.map(([key, item]) =>
    h("li", { dataset: { key } }, h("b", {}, String(key)), ": ",
      tree(item))));
}

function scalar(value) {
  if (value === "***") return h("code.redacted", { title: t("config.redacted") }, "***");
  return h("code", {}, value === null ? "null" : typeof value === "string" ? value : JSON.stringify(value));
}
