// Widgets every page uses: tables, badges, the write button that a viewer cannot press,
// messages, and the handling of a write the API refuses.

import { ApiError, can, get } from "./api.js";
import { fill, h } from "./dom.js";
import { t, tv } from "./i18n.js";

export function table(headers, rows, { className = "" } = {}) {
  return h(`table.${className || "list"}`, {},
    h("thead", {}, h("tr", {}, headers.map((head) => h("th", {}, head)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td.empty", { colspan: headers.length }, t("none")))),
  );
}

export function row(cells, attrs) {
  return h("tr", attrs || {}, cells.map((cell) => (cell instanceof HTMLTableCellElement ? cell : h("td", {}, cell))));
}

export function stateBadge(state) {
  return h(`span.badge.state-${state}`, { dataset: { state } }, tv("state", state));
}

export function priorityBadge(priority) {
  return priority ? h(`span.badge.priority-${priority}`, {}, tv("priority", priority)) : "";
}

export function alertStateBadge(state) {
  return h(`span.badge.alert-${state}`, {}, tv("alert", state));
}

export function title(text, ...extra) {
  return h("div.page-head", {}, h("h2", {}, text), ...extra);
}

// A button for a write: disabled for a role below ``role``, with the reason on hover. Its
// action's refusal by the API (403: the role, or a CSRF token that no longer matches) is
// shown in ``messages``, as is any other error.
export function writeButton(label, action, messages, { role = "operator", className = "" } = {}) {
  const allowed = can(role);
  const button = h(`button.write${className ? "." + className : ""}`, {
    type: "button",
    disabled: !allowed,
    title: allowed ? null : `${t("write.needs")} (${role})`,
    dataset: { write: role },
  }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      showError(messages, error);
    } finally {
      button.disabled = !can(role);
    }
  });
  return button;
}

export function showError(messages, error) {
  if (error instanceof ApiError && error.status === 403) {
    const role = error.requiredRole || "operator";
    say(messages, `${t("write.refused")} ${role}: ${error.message}`, "refused");
  } else {
    say(messages, `${t("write.failed")}: ${error.message}`, "error");
  }
}

export function say(messages, text, kind = "ok") {
  fill(messages, h(`div.message.${kind}`, { role: "status" }, text));
}

export function messageArea() {
  return h("div.messages", { "aria-live": "polite" });
}

export function pager(nextCursor, load) {
  if (!nextCursor) return null;
  return h("button.pager", { type: "button", onclick: () => load(nextCursor) }, t("more"));
}

export function field(label, input) {
  return h("label.field", {}, h("span", {}, label), input);
}

export function select(options, value, attrs = {}) {
  return h("select", attrs, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

// A page about one thing: its heading with a way back, and a body drawn by ``draw(body,
// answer)`` from ``url``, again every ``refreshMs`` while it is open. Returns the cleanup.
export function detailPage(root, heading, back, url, draw, refreshMs) {
  const body = h("div.detail");
  root.append(title(heading, h("a.back", { href: back }, "←")), body);
  const load = async () => draw(body, await get(url));
  load().catch((error) => body.append(h("p.error", {}, error.message)));
  const timer = setInterval(() => load().catch(() => {}), refreshMs);
  return () => clearInterval(timer);
}

// The row a list shows when its first page is empty.
export function emptyRow(body, columns) {
  body.append(h("tr", {}, h("td.empty", { colspan: columns }, t("none"))));
}
