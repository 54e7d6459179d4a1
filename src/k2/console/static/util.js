// DOM and formatting helpers. Untrusted text (symbols, reasons, SQL results) only ever goes through
// textContent or attribute values set with setAttribute; never through innerHTML.

/** el("td", {class: "x", dataset: {open: "1"}}, "text", child) -> element; strings become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A table head: one row of column names. */
export function thead(columns) {
  return el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c))));
}

/** A table from column names and rows (arrays or objects); every cell written as text. */
export function table(columns, rows, attrs = {}) {
  const head = thead(columns);
  const body = el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c, i) => {
    const value = Array.isArray(row) ? row[i] : row[c];
    return el("td", {}, value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value));
  }))));
  return el("table", attrs, head, body);
}

export function isoUtc(date) {
  return new Date(date).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function shortTime(value) {
  if (!value) return "";
  return String(value).replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function ago(value) {
  if (!value) return "never";
  const seconds = (Date.now() - new Date(value).getTime()) / 1000;
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

export function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  return String(n);
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}
