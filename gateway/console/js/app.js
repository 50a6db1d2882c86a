// The console's shell: sign-in, the navigation, the language switch and the hash router.
// Each page is a module with render(root, route) that may return a cleanup function (to
// stop its timers and stream listeners when the operator moves on).

import { api, can, currentSession, setSession, whenSignedOut, ApiError } from "./api.js";
import { fill, h } from "./dom.js";
import { t, lang, setLang, onLang } from "./i18n.js";
import { openStream, closeStream, onStatus } from "./stream.js";
import * as map from "./views/map.js";
import * as devices from "./views/devices.js";
import * as alerts from "./views/alerts.js";
import * as incidents from "./views/incidents.js";
import * as thresholds from "./views/thresholds.js";
import * as silences from "./views/silences.js";
import * as deadLetters from "./views/dead_letters.js";
import * as outbox from "./views/outbox.js";
import * as cameras from "./views/cameras.js";
import * as audit from "./views/audit.js";
import * as duplicates from "./views/duplicates.js";
import * as config from "./views/config.js";

// [route, label, module, the least role that sees it in the navigation]
const PAGES = [
  ["map", "nav.map", map],
  ["devices", "nav.devices", devices],
  ["alerts", "nav.alerts", alerts],
  ["incidents", "nav.incidents", incidents],
  ["duplicates", "nav.duplicates", duplicates],
  ["thresholds", "nav.thresholds", thresholds],
  ["silences", "nav.silences", silences],
  ["dead-letters", "nav.deadLetters", deadLetters],
  ["outbox", "nav.outbox", outbox],
  ["cameras", "nav.cameras", cameras],
  ["audit", "nav.audit", audit],
  ["config", "nav.config", config, "admin"],
];

const app = document.getElementById("app");
let cleanup = null;
let streamStatus = "closed";

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const [name, ...rest] = path.split("/");
  return {
    name: name || "map",
    arg: rest.length ? decodeURIComponent(rest.join("/")) : null,
    query: new URLSearchParams(query || ""),
  };
}

function stopPage() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
}

function render() {
  stopPage();
  document.title = t("title");
  if (!currentSession().user) {
    showSignIn();
    return;
  }
  const current = route();
  const page = PAGES.find(([name]) => name === current.name) || PAGES[0];
  const view = h("main.view", { id: "view", dataset: { page: page[0] } });
  fill(app, header(page[0]), view);
  cleanup = page[2].render(view, current);
}

function header(active) {
  const who = currentSession();
  const streamDot = h("span.stream-dot", { title: "SSE", dataset: { status: streamStatus } });
  return h("header.top", {},
    h("div.brand", {}, h("span.logo", {}, "城"), h("h1", {}, t("title"))),
    h("nav", {}, PAGES.filter(([, , , role]) => !role || can(role)).map(([name, label]) =>
      h(`a${name === active ? ".active" : ""}`, { href: `#/${name}`, dataset: { nav: name } }, t(label)))),
    h("div.who", {},
      streamDot,
      h("span.user", { dataset: { role: who.role } }, `${who.user} · ${t(`role.${who.role}`)}`),
      h("button.lang", { type: "button", onclick: () => setLang(lang() === "zh" ? "en" : "zh") },
        lang() === "zh" ? "EN" : "中文"),
      h("button.signout", { type: "button", onclick: signOut }, t("signout")),
    ),
  );
}

async function signOut() {
  try {
    await api("DELETE", "/api/v1/session");
  } finally {
    setSession(null);
    closeStream();
    location.hash = "#/map";
    render();
  }
}

function showSignIn() {
  stopPage();
  closeStream();
  const user = h("input", { name: "username", autocomplete: "username", required: true, maxlength: 64 });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: 256 });
  const message = h("p.signin-error", { role: "alert" });
  const form = h("form.signin", {},
    h("h1", {}, t("title")),
    h("h2", {}, t("signin.title")),
    h("label.field", {}, h("span", {}, t("signin.user")), user),
    h("label.field", {}, h("span", {}, t("signin.password")), password),
    h("button", { type: "submit" }, t("signin.submit")),
    message,
    h("button.lang.link", { type: "button", onclick: () => setLang(lang() === "zh" ? "en" : "zh") },
      lang() === "zh" ? "English" : "中文"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    try {
      setSession(await api("POST", "/api/v1/session", { username: user.value, password: password.value }));
      openStream();
      render();
    } catch (error) {
      const limited = error instanceof ApiError && error.status === 429;
      message.textContent = limited ? t("signin.limited") : t("signin.bad");
    }
  });
  fill(app, h("div.signin-page", {}, form));
  user.focus();
}

async function boot() {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  whenSignedOut(showSignIn);
  onStatus((status) => {
    streamStatus = status;
    const dot = document.querySelector(".stream-dot");
    if (dot) dot.dataset.status = status;
  });
  window.addEventListener("hashchange", render);
  onLang(render);
  try {
    setSession(await api("GET", "/api/v1/session"));
    openStream();
  } catch {
    setSession(null);
  }
  render();
}

boot();
