// SQL: the read-only SQL of `k2 sql` through POST /v1/sql — views and columns, results grid, snapshot ids,
// query time, CSV / Parquet download, and K2's own error text.
import { sql } from "./api.js";
import { clear, el, table } from "./util.js";

const COLUMNS_SQL = "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_name IN ('trades', 'quotes', 'instruments', 'gaps') ORDER BY table_name, ordinal_position";
const EXAMPLE = "SELECT symbol, count(*) AS trades, min(exchange_ts) AS first, max(exchange_ts) AS last\nFROM trades\nGROUP BY symbol\nORDER BY trades DESC";
const GRID_ROWS = 1000;

async function views(holder) {
  try {
    const result = await sql(COLUMNS_SQL);
    const byView = new Map();
    for (const r of result.data) { if (!byView.has(r.table_name)) byView.set(r.table_name, []); byView.get(r.table_name).push(r); }
    clear(holder).append(el("h2", {}, "Views"), ...[...byView].map(([name, cols]) => el("details", { open: name === "trades" },
      el("summary", {}, name), el("ul", {}, cols.map((c) => el("li", {}, el("code", {}, c.column_name), " ", el("span", { class: "muted" }, c.data_type)))))));
  } catch (error) {
    clear(holder).append(el("p", { class: "error" }, error.message));
  }
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function render(page, ctx) {
  const viewsHolder = el("div", { class: "views", id: "views" }, "loading views…");
  const text = el("textarea", { id: "sql-text", spellcheck: "false" });
  text.value = ctx.params.get("q") || EXAMPLE;
  const asOf = el("input", { id: "sql-as-of", placeholder: "latest (or snapshot id / ISO time)", value: ctx.params.get("as_of") || "" });
  const meta = el("p", { class: "status-line", id: "sql-meta" });
  const error = el("p", { class: "error", id: "sql-error", role: "alert" });
  const grid = el("div", { class: "scroll", id: "sql-result" });
  const asOfValue = () => { const v = asOf.value.trim(); return /^\d+$/.test(v) ? Number(v) : v || undefined; };

  async function run() {
    ctx.setParams({ q: text.value, as_of: asOf.value.trim() });
    error.textContent = ""; meta.textContent = "running…"; clear(grid);
    const started = performance.now();
    try {
      const result = await sql(text.value, undefined, asOfValue());
      const columns = result.columns.map((c) => c.name);
      meta.textContent = `${result.row_count.toLocaleString()} rows · query ${(result.query_seconds * 1000).toFixed(1)} ms (round trip ${(performance.now() - started).toFixed(0)} ms) · snapshots ${JSON.stringify(result.snapshot_ids)}` +
        (result.row_count > GRID_ROWS ? ` · showing the first ${GRID_ROWS}` : "");
      grid.append(table(columns, result.data.slice(0, GRID_ROWS), { id: "sql-grid" }));
      grid.firstChild.querySelectorAll("th").forEach((th, i) => th.setAttribute("title", result.columns[i].type));
    } catch (err) {
      meta.textContent = "";
      error.textContent = `${err.code}: ${err.message}`;
    }
  }

  async function save(format) {
    error.textContent = "";
    try {
      const { blob } = await sql(text.value, undefined, asOfValue(), format);
      download(blob, `k2-query.${format}`);
    } catch (err) {
      error.textContent = `${err.code}: ${err.message}`;
    }
  }

  text.addEventListener("keydown", (event) => { if ((event.ctrlKey || event.metaKey) && event.key === "Enter") run(); });
  clear(page).append(el("div", { class: "sql-layout" }, viewsHolder, el("div", {},
    text,
    el("div", { class: "controls" }, el("button", { id: "sql-run", type: "button", onclick: run }, "Run (Ctrl+Enter)"),
      el("label", {}, "as_of", asOf),
      el("button", { type: "button", id: "sql-csv", onclick: () => save("csv") }, "Download CSV"),
      el("button", { type: "button", id: "sql-parquet", onclick: () => save("parquet") }, "Download Parquet")),
    error, meta, grid)));
  await views(viewsHolder);
  if (ctx.params.get("q")) await run();
}

export function leave() {}
