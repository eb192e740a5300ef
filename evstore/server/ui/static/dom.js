// The one way pages make elements: strings always become text nodes, never markup.

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error_code;
  }
}

// GET a JSON answer of the UI's API; params with null or "" values are left out.
export async function api(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
    else if (value !== null && value !== undefined && value !== "") query.set(key, value);
  }
  const text = query.toString();
  const response = await fetch(`/ui/api${path}${text ? "?" + text : ""}`, {
    credentials: "same-origin",
    headers: { accept: "application/json" },
  });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function href(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(key, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export const runHref = (id, params) => href(`/runs/${encodeURIComponent(id)}`, params);
export const experimentHref = (id) => `/experiments/${encodeURIComponent(id)}`;
export const modelHref = (name, params) => href(`/models/${encodeURIComponent(name)}`, params);

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

// Epoch ms as local time, "2026-12-03 08:15:02".
export function time(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function duration(start, end) {
  if (!start || !end) return "";
  let s = Math.max(0, Math.round((end - start) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  s %= 60;
  if (m < 60) return `${m}m ${s}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function number(value) {
  if (typeof value !== "number") return value === null || value === undefined ? "" : String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-4 || abs >= 1e7) ? value.toExponential(4) : String(+value.toPrecision(6));
}

export function errorBox(error) {
  return el("div", { class: "error", role: "alert" }, el("pre", {}, error.message || String(error)));
}

export function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

export function badge(text, kind) {
  return el("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text);
}

export function panel(title, ...body) {
  return el("section", { class: "panel" }, el("h2", {}, title), body);
}

export function setTitle(...parts) {
  document.title = [...parts.filter(Boolean), "evstore"].join(" · ");
}

// A key as MLflow's grammar quotes it: params.`my key`.
export function quoted(kind, key) {
  return /^[A-Za-z_][A-Za-z0-9_.]*$/.test(key) ? `${kind}.${key}` : `${kind}.\`${key}\``;
}

// Replace a node's children.
export function fill(node, ...children) {
  return append(clear(node), children);
}
