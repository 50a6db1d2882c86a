// Building the page without innerHTML: every text from the API goes in as a text node, so
// nothing an alert, a device or a dead letter says can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

// h("tag.class", {attr: value, onclick: fn}, child, ...): an element. Children may be
// strings, numbers, nodes, arrays, or null/false (skipped).
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  return build(document.createElement(tag || "div"), classes, attrs, children);
}

// The same in SVG's namespace.
export function s(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  return build(document.createElementNS(SVG_NS, tag), classes, attrs, children);
}

function build(el, classes, attrs, children) {
  if (classes.length) el.setAttribute("class", classes.join(" "));
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" && "value" in el) {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Local date and time of epoch milliseconds, as the monitoring centre reads it.
export function when(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function isoWhen(text) {
  return text ? when(Date.parse(text)) : "—";
}

// A reading's values as "fill_pct 96 · battery_pct 76".
export function values(vals) {
  return Object.entries(vals || {})
    .map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(2) : v}`)
    .join(" · ");
}

export function compactJson(value) {
  if (value === null || value === undefined || value === "") return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// A hash route with query: link("#/devices", {grid: "3501..."}).
export function link(path, query) {
  const q = new URLSearchParams(Object.entries(query || {}).filter(([, v]) => v));
  const text = q.toString();
  return text ? `${path}?${text}` : path;
}

// Replace an element's children (arrays flattened, null/false skipped).
export function fill(el, ...children) {
  return append(clear(el), children);
}
