// Cameras: each stream's status, frame rates (read and analysed), lag and errors, its last
// analysed frame with the zones and the boxes in them drawn, and beside it what the rules
// were given for that frame (objects outside every zone are listed, not drawn: no rule
// looks at them), refreshed while the page is open.

import { get } from "../api.js";
import { fill, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { title } from "../ui.js";

const REFRESH_MS = 2000;

export function render(root) {
  const grid = h("div.camera-grid");
  root.append(title(t("cameras.title")), grid);
  const load = async () => {
    const answer = await get("/api/v1/console/cameras");
    if (!answer.cameras.length) {
      fill(grid, h("p.muted", {}, t("cameras.none")));
      return;
    }
    fill(grid, ...answer.cameras.map(cameraCard));
  };
  load().catch((error) => grid.append(h("p.error", {}, error.message)));
  const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}

function figure(name, label, value) {
  return h(`div.figure.${name}`, {}, h("span.card-label", {}, label), h("b", {}, value ?? "—"));
}

// Frames per second as the runtime measured them over its last seconds (null: no frame yet).
function rate(fps) {
  return typeof fps === "number" ? fps.toFixed(1) : null;
}

function cameraCard(camera) {
  const f = camera.figures || {};
  const frame = h("img.frame", { src: `${camera.frame_url}?t=${Date.now()}`, alt: camera.id });
  const missing = h("p.muted.no-frame", {}, t("cameras.noFrame"));
  missing.hidden = true;
  frame.addEventListener("error", () => {
    frame.hidden = true;
    missing.hidden = false;
  });
  return h("section.card.camera", { dataset: { camera: camera.id, status: camera.status } },
    h("h3", {}, camera.id, " ", h(`span.badge.camera-${camera.status}`, {}, camera.status)),
    h("div.frame-box", {}, frame, missing),
    h("div.figures", {},
      figure("fps", t("cameras.fps"), rate(camera.fps)),
      figure("analysed-fps", t("cameras.analysedFps"), rate(camera.analysed_fps)),
      figure("lag", t("cameras.lag"), typeof f.lag_ms === "number" ? `${(f.lag_ms / 1000).toFixed(1)} s` : null),
      figure("reconnects", t("cameras.reconnects"), f.reconnects),
    ),
    camera.last_error ? h("p.small.warn", {}, camera.last_error) : null,
    camera.analysed ? seen(camera.analysed) : null,
    h("ul.zones", {}, camera.zones.map((z) => h("li", {}, h("b", {}, z.id), ` ${z.type} · ${z.address} · ${t("grid")} ${z.grid}`))),
  );
}

// The last analysed frame's objects: label and track as drawn on the picture, the zone
// (or none), seconds standing, and whether a static object is hidden behind a passer-by.
function seen(analysed) {
  const items = analysed.observations.map((o) =>
    h("li", { dataset: { zone: o.zone } },
      h("b", {}, `${o.label} #${o.track_id}`),
      ` · ${o.zone || t("cameras.outside")} · ${o.stationary_s} s`,
      o.occluded ? ` · ${t("cameras.hidden")}` : null));
  const more = analysed.count - analysed.observations.length;
  return h("div.seen", {},
    h("span.card-label", {}, `${t("cameras.seen")} (${analysed.count}) · ${when(analysed.ts)}`),
    h("ul.observations", {}, items, more > 0 ? h("li.muted", {}, `+${more}`) : null));
}
