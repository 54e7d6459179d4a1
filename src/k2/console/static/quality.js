// Quality: a calendar per symbol, one row per UTC day and one cell per hour, showing rows landed
// (trades + quotes), gaps (open / backfilled / lost) and dead letters. Click a cell for its gaps and
// dead letters with their reasons. Data: POST /v1/sql (counts per hour), /v1/gaps, /v1/dlq (admin).
import { api, sql } from "./api.js";
import { clear, compact, el, shortTime, table, thead } from "./util.js";

const HOUR = 3600 * 1000;
const MAX_DAYS = 31;
const COUNTS_SQL = `SELECT 'trades' AS table_name, CAST(floor(epoch(exchange_ts) / 3600) AS BIGINT) AS hour, count(*) AS row_count
FROM trades WHERE exchange = ? AND symbol = ? GROUP BY ALL
UNION ALL
SELECT 'quotes', CAST(floor(epoch(exchange_ts) / 3600) AS BIGINT), count(*) FROM quotes WHERE exchange = ? AND symbol = ? GROUP BY ALL`;
const RANK = { "gap-open": 3, "gap-lost": 2, "gap-backfilled": 1 };

const hourOf = (value) => Math.floor(Date.parse(value) / HOUR);
const dayText = (hour) => new Date(hour * HOUR).toISOString().slice(0, 10);

function cellsFrom(counts, gaps, letters) {
  const cells = new Map();   // hour index -> {rows, gaps: [], letters: []}
  const cell = (hour) => { if (!cells.has(hour)) cells.set(hour, { rows: 0, trades: 0, quotes: 0, gaps: [], letters: [] }); return cells.get(hour); };
  for (const r of counts) { const c = cell(r.hour); c.rows += r.row_count; c[r.table_name] += r.row_count; }
  for (const g of gaps) {
    const first = g.start_ts || g.end_ts || g.detected_ts;
    const last = g.end_ts || g.start_ts || g.detected_ts;
    for (let h = hourOf(first); h <= Math.min(hourOf(last), hourOf(first) + 24 * MAX_DAYS); h++) cell(h).gaps.push(g);
  }
  for (const d of letters) {
    const when = d.source_timestamp > 0 ? new Date(d.source_timestamp).toISOString() : d.dead_lettered_at;
    if (when) cell(hourOf(when)).letters.push(d);
  }
  return cells;
}

/** Dead letters whose source time falls outside the days shown (e.g. a replay of old data: produced now). */
function outside(cells, firstDay, lastDay) {
  let n = 0;
  for (const [hour, c] of cells) if (Math.floor(hour / 24) < firstDay || Math.floor(hour / 24) > lastDay) n += c.letters.length;
  return n ? ` · ${n} dead letter(s) from outside these days` : "";
}

function stateOf(c) {
  if (!c) return "empty";
  let state = c.rows ? "ok" : "empty";
  for (const g of c.gaps) if ((RANK[`gap-${g.status}`] || 0) > (RANK[state] || 0)) state = `gap-${g.status}`;
  return state;
}

export async function render(page, ctx) {
  const p = ctx.params;
  const symbols = (await api("/v1/symbols")).data;
  const first = symbols[0] || {};
  const exchange = p.get("exchange") || first.exchange || "";
  const symbol = p.get("symbol") || first.symbol || "";
  const info = symbols.find((s) => s.exchange === exchange && s.symbol === symbol);
  const select = el("select", { id: "symbol" }, symbols.map((s) => el("option", { value: `${s.exchange}\u0000${s.symbol}`, selected: s === info }, `${s.exchange} · ${s.symbol}`)));
  select.addEventListener("change", () => {
    const [ex, sym] = select.value.split("\u0000");
    ctx.setParams({ exchange: ex, symbol: sym, cell: null }, true);
    window.dispatchEvent(new PopStateEvent("popstate"));
  });
  const details = el("div", { id: "cell-details" });
  clear(page).append(el("div", { class: "controls" }, el("label", {}, "symbol", select)),
    el("p", { class: "legend muted" }, el("span", {}, "■ rows landed (trades+quotes)"), el("span", {}, "red: open gap"), el("span", {}, "yellow: backfilled gap"),
      el("span", {}, "purple: lost"), el("span", {}, "orange frame: dead letters")));
  if (!info) { page.append(el("p", { class: "muted" }, "No data stored yet.")); return; }
  ctx.setParams({ exchange, symbol });

  const [counts, gaps, letters] = await Promise.all([
    sql(COUNTS_SQL, [exchange, symbol, exchange, symbol]),
    api("/v1/gaps", { exchange, symbol }),
    api("/v1/dlq", { limit: 1000 }).then((r) => ({ data: r.data })).catch((error) => ({ data: [], error })),
  ]);
  const letterRows = letters.data.filter((d) => !exchange || !d.source_topic || d.source_topic.includes(exchange));
  const cells = cellsFrom(counts.data, gaps.data, letterRows);
  const lastHour = hourOf(info.last_ts || new Date().toISOString());
  const firstDay = Math.max(Math.floor(hourOf(info.first_ts || info.last_ts) / 24), Math.floor(lastHour / 24) - MAX_DAYS + 1);
  const lastDay = Math.floor(lastHour / 24);
  const rows = [];
  for (let day = firstDay; day <= lastDay; day++) {
    const hours = Array.from({ length: 24 }, (_, h) => day * 24 + h);
    const dayCells = hours.map((h) => cells.get(h));
    const total = dayCells.reduce((n, c) => n + (c ? c.rows : 0), 0);
    const problems = dayCells.flatMap((c) => (c ? c.gaps.filter((g) => g.status !== "backfilled") : []));
    const dead = dayCells.reduce((n, c) => n + (c ? c.letters.length : 0), 0);
    const verdict = problems.length ? `incomplete: ${new Set(problems.map((g) => g.gap_key)).size} gap(s)` : dead ? `${dead} dead letter(s)` : total ? "complete" : "no data";
    rows.push(el("tr", { dataset: { day: dayText(day * 24), verdict: verdict.split(":")[0] } },
      el("th", {}, dayText(day * 24)),
      hours.map((h) => {
        const c = cells.get(h);
        const state = stateOf(c);
        const td = el("td", { class: `cell ${state}${c && c.letters.length ? " dlq" : ""}`, title: `${dayText(h)} ${String(h % 24).padStart(2, "0")}:00 UTC`,
          dataset: { hour: new Date(h * HOUR).toISOString(), rows: String(c ? c.rows : 0), state, gaps: String(c ? c.gaps.length : 0), deadLetters: String(c ? c.letters.length : 0) } },
        c && c.rows ? compact(c.rows) : "");
        td.addEventListener("click", () => showCell(details, td, h, c, ctx));
        return td;
      }),
      el("td", { class: "verdict" }, verdict), el("td", {}, total.toLocaleString())));
  }
  page.append(
    el("table", { class: "calendar", id: "calendar" },
      thead(["day (UTC)", ...Array.from({ length: 24 }, (_, h) => String(h).padStart(2, "0")), "day", "rows"]),
      el("tbody", {}, rows)),
    el("p", { class: "status-line", id: "quality-status" }, `snapshots read: ${JSON.stringify({ ...counts.snapshot_ids, ...gaps.snapshot_ids })}`,
      outside(cells, firstDay, lastDay),
      letters.error ? ` · dead letters: ${letters.error.status === 403 ? "need an admin key" : letters.error.message}` : ""),
    details);
  page.dataset.loaded = "true";
  const chosen = p.get("cell") && page.querySelector(`td.cell[data-hour="${CSS.escape(p.get("cell"))}"]`);
  if (chosen) chosen.click();
}

function showCell(details, td, hour, c, ctx) {
  for (const other of document.querySelectorAll("td.cell.selected")) other.classList.remove("selected");
  td.classList.add("selected");
  ctx.setParams({ cell: td.dataset.hour });
  const when = new Date(hour * HOUR).toISOString();
  clear(details).append(el("h2", {}, `${shortTime(when)} – ${String((hour % 24) + 1).padStart(2, "0")}:00 UTC: ${(c ? c.rows : 0).toLocaleString()} rows (trades ${c ? c.trades : 0}, quotes ${c ? c.quotes : 0})`));
  const gaps = c ? c.gaps : [];
  details.append(el("h2", {}, `Gaps: ${gaps.length}`));
  if (gaps.length) {
    details.append(table(["status", "type", "first missing id", "last missing id", "missing", "before", "after", "detected", "source", "detail", "gap key"],
      gaps.map((g) => [g.status, g.data_type, g.first_missing_id, g.last_missing_id, g.missing_count, shortTime(g.start_ts), shortTime(g.end_ts), shortTime(g.detected_ts), g.source, g.detail, g.gap_key]),
      { id: "cell-gaps" }));
  }
  const letters = c ? c.letters : [];
  details.append(el("h2", {}, `Dead letters: ${letters.length}`));
  if (letters.length) {
    details.append(table(["reason", "detail", "source topic", "partition", "offset", "dead-lettered at"],
      letters.map((d) => [d.reason, d.detail, d.source_topic, d.source_partition, d.source_offset, shortTime(d.dead_lettered_at)]), { id: "cell-dead-letters" }),
    replayControl(letters));
  }
}

/** Admin keys: replay the cell's dead letters (POST /v1/dlq/replay, one call per DLQ topic). */
function replayControl(letters) {
  if (sessionStorage.getItem("k2.scope") !== "admin") {
    return el("p", { class: "muted" }, "Replaying dead letters needs an admin key (or run k2 dlq replay).");
  }
  const result = el("span", { id: "replay-result", class: "status-line" });
  const button = el("button", { type: "button", id: "replay-dead-letters" }, `Replay these ${letters.length} dead letter(s) to their source topics`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    const byTopic = new Map();
    for (const d of letters) {
      if (!byTopic.has(d.dlq_topic)) byTopic.set(d.dlq_topic, []);
      byTopic.get(d.dlq_topic).push({ partition: d.dlq_partition, offset: d.dlq_offset });
    }
    const done = [];
    try {
      for (const [topic, positions] of byTopic) {
        const answer = await api("/v1/dlq/replay", {}, { method: "POST", body: { topic, positions } });
        // Replay moves only letters that now pass the landing's checks; the others stay, with their reasons.
        const to = answer.source_topics.length ? ` to ${answer.source_topics.join(", ")}` : "";
        const reasons = Object.entries(answer.reasons).map(([reason, n]) => `${reason}: ${n}`).join(", ");
        const left = answer.still_invalid ? `, ${answer.still_invalid} still invalid (${reasons})` : "";
        done.push(`${answer.replayed}${to}${left}`);
      }
      result.textContent = `replayed ${done.join("; ")}`;
    } catch (error) {
      result.textContent = `${done.length ? `replayed ${done.join("; ")}; then ` : ""}${error.code}: ${error.message}`;
      result.classList.add("error");
    } finally {
      button.disabled = false;
    }
  });
  return el("p", {}, button, " ", result);
}

export function leave() {}
