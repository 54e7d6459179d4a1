// The console shell: key entry (kept in sessionStorage), navigation, URL state (?page=...&symbol=...).
import { api, forgetKey, getKey, setKey } from "./api.js";
import { clear, el } from "./util.js";
import * as overview from "./overview.js";
import * as chart from "./chart.js";
import * as quality from "./quality.js";
import * as sqlPage from "./sql.js";

const PAGES = { overview, chart, quality, sql: sqlPage };
let current = null;

export function params() { return new URLSearchParams(location.search); }

/** Replace (or push) URL parameters so a view can be shared; null/"" removes one. */
export function setParams(values, push = false) {
  const search = params();
  for (const [name, value] of Object.entries(values)) {
    if (value === null || value === undefined || value === "") search.delete(name);
    else search.set(name, String(value));
  }
  const url = `${location.pathname}?${search.toString()}`;
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function showKeyForm(message) {
  document.getElementById("key-form-section").hidden = false;
  document.getElementById("key-error").textContent = message || "";
  document.getElementById("forget-key").hidden = true;
  document.getElementById("key-state").textContent = "no key";
  clear(document.getElementById("page"));
}

async function render() {
  if (current && current.leave) current.leave();
  const name = params().get("page") || "overview";
  current = PAGES[name] || overview;
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  const page = clear(document.getElementById("page"));
  page.dataset.page = name;
  if (!getKey()) { showKeyForm(); return; }
  try {
    await current.render(page, { params: params(), setParams });
  } catch (error) {
    if (error.status === 401) { forgetKey(); showKeyForm(`Key refused: ${error.message}`); return; }
    page.append(el("p", { class: "error", role: "alert" }, `${error.code || "error"}: ${error.message}`));
  }
}

async function useKey(event) {
  event.preventDefault();
  const key = document.getElementById("key-input").value.trim();
  const errorNode = document.getElementById("key-error");
  errorNode.textContent = "checking…";
  try {
    const scope = await checkKey(key);
    setKey(key);
    document.getElementById("key-input").value = "";
    document.getElementById("key-form-section").hidden = true;
    document.getElementById("forget-key").hidden = false;
    document.getElementById("key-state").textContent = `key: ${scope} scope`;
    sessionStorage.setItem("k2.scope", scope);
    errorNode.textContent = "";
    await render();
  } catch (error) {
    errorNode.textContent = `Key refused: ${error.message}`;
  }
}

/** "read" or "admin": a read call must pass; the admin-only /v1/keys tells which scope it has. */
async function checkKey(key) {
  await api("/v1/symbols", {}, { key });
  try { await api("/v1/keys", {}, { key }); return "admin"; } catch (error) {
    if (error.status === 403) return "read";
    throw error;
  }
}

function start() {
  document.getElementById("key-form").addEventListener("submit", useKey);
  document.getElementById("forget-key").addEventListener("click", () => { forgetKey(); showKeyForm(); });
  document.getElementById("nav").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-page]");
    if (!link) return;
    event.preventDefault();
    const keep = params();
    keep.set("page", link.dataset.page);
    history.pushState(null, "", `${location.pathname}?${keep.toString()}`);
    render();
  });
  window.addEventListener("popstate", render);
  if (getKey()) {
    document.getElementById("forget-key").hidden = false;
    document.getElementById("key-state").textContent = `key: ${sessionStorage.getItem("k2.scope") || "?"} scope`;
  }
  render();
}

start();
