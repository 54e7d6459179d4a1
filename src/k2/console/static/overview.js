// Overview: health of the parts, per-source freshness / rate / last commit, open gaps, dead letters.
// Refreshes itself every REFRESH_MS while shown. Sources: /health, /ready, /v1/symbols, /v1/snapshots,
// /v1/lag (Kafka lag per topic), /v1/gaps, /v1/dlq (admin only: a read key sees a note instead).
import { api } from "./api.js";
import { ago, clear, el, shortTime, table, thead } from "./util.js";

const REFRESH_MS = 10000;
const RATE_WINDOW_S = 300;
let timer = null;

async function settle(promise) {
  try { return { value: await promise }; } catch (error) { return { error }; }
}

async function ready() {
  const response = await fetch("/ready");
  const body = await response.json();
  return body.checks || (body.error && body.error.details && body.error.details.checks) || {};
}

function partsCard(health, checks) {
  const rows = [["api", health.value ? "ok" : "down", health.value ? "serving" : String(health.error)]];
  for (const [name, check] of Object.entries(checks.value || {})) rows.push([name, check.ok ? "ok" : "failing", check.detail]);
  if (checks.error) rows.push(["ready", "failing", checks.error.message]);
  return el("div", {}, el("h2", {}, "Parts"),
    el("table", { id: "parts" }, thead(["part", "state", "detail"]),
      el("tbody", {}, rows.map(([name, state, detail]) => el("tr", { dataset: { part: name, state } },
        el("td", {}, name), el("td", {}, el("span", { class: `badge ${state === "ok" ? "ok" : "bad"}` }, state)), el("td", {}, detail || ""))))));
}

/** Per table: last commit, rows in the last RATE_WINDOW_S, Kafka offsets of the last commit. */
function commitsCard(snapshots) {
  const rows = [];
  for (const [name, result] of Object.entries(snapshots)) {
    if (result.error) { rows.push([name, "", "", "", result.error.message]); continue; }
    const snaps = result.value.data;
    const last = snaps[snaps.length - 1];
    const since = Date.now() - RATE_WINDOW_S * 1000;
    const recent = snaps.filter((s) => new Date(s.committed_at).getTime() >= since).reduce((n, s) => n + s.added_rows, 0);
    rows.push([name, last ? `${shortTime(last.committed_at)} (${ago(last.committed_at)})` : "no commit yet",
      last ? last.total_rows.toLocaleString() : "0", `${(recent / RATE_WINDOW_S).toFixed(1)} rows/s`, last ? last.kafka_offsets || "" : ""]);
  }
  return el("div", {}, el("h2", {}, "Tables (Iceberg commits)"),
    table(["table", "last commit", "rows", `rate (last ${RATE_WINDOW_S / 60} min)`, "Kafka offsets of last commit"], rows, { id: "commits" }));
}

/** Per source (exchange, symbol): newest exchange time stored and its age (freshness). */
function sourcesCard(symbols) {
  if (symbols.error) return el("p", { class: "error" }, symbols.error.message);
  const rows = symbols.value.data.map((s) => [s.exchange, s.symbol, s.trades.toLocaleString(), s.quotes.toLocaleString(),
    shortTime(s.first_ts), shortTime(s.last_ts), ago(s.last_ts)]);
  return el("div", {}, el("h2", {}, "Sources (freshness = age of the newest stored exchange time)"),
    table(["exchange", "symbol", "trades", "quotes", "first", "last", "freshness"], rows, { id: "sources" }));
}

/** Per topic: landed offset vs the broker's high watermark (summed over partitions), last commit. */
function lagCard(lag) {
  if (lag.error) return el("div", {}, el("h2", {}, "Kafka lag"), el("p", { class: "error" }, lag.error.message));
  const body = lag.value;
  const topics = new Map();
  for (const row of body.data) {
    const t = topics.get(row.topic) || { topic: row.topic, table: row.table, landed: 0, high: 0, lag: 0, trimmed: 0, known: true, partitions: 0, last: row.last_commit, age: row.last_commit_age_s };
    t.partitions += 1;
    t.landed += row.landed_offset;
    if (row.high_watermark === null) t.known = false; else t.high += row.high_watermark;
    if (row.lag !== null) t.lag += row.lag;
    t.trimmed += row.trimmed_before_landing || 0;
    topics.set(row.topic, t);
  }
  const prefix = body.exact ? "" : "≥ ";
  const rows = [...topics.values()].map((t) => el("tr", { dataset: { topic: t.topic, lag: t.known ? String(t.lag) : "" } },
    el("td", {}, t.topic), el("td", {}, t.table || "not landed yet"), el("td", {}, String(t.partitions)), el("td", {}, t.landed.toLocaleString()),
    el("td", {}, t.known ? t.high.toLocaleString() : "?"), el("td", { class: t.known && t.lag > 0 ? "lag-behind" : "" }, t.known ? `${prefix}${t.lag.toLocaleString()}` : "unknown"),
    el("td", { class: t.trimmed > 0 ? "lag-behind" : "" }, t.trimmed ? t.trimmed.toLocaleString() : "-"),
    el("td", {}, t.last ? `${shortTime(t.last)} (${ago(t.last)})` : "never")));
  const head = thead(["topic", "table", "partitions", "landed offset", "high watermark", "lag (msgs)", "trimmed before landing", "last commit"]);
  return el("div", {}, el("h2", {}, "Kafka lag (messages in Kafka not yet in Iceberg)"),
    body.broker_error ? el("p", { class: "error", id: "lag-error" }, body.broker_error) : null,
    body.exact ? null : el("p", { class: "muted" }, "Tansu's high watermark is the start of its last batch: the lag is a lower bound."),
    el("table", { id: "lag" }, head, el("tbody", {}, rows)));
}

function gapsCard(gaps) {
  if (gaps.error) return el("p", { class: "error" }, gaps.error.message);
  const rows = gaps.value.data.map((g) => [g.exchange, g.symbol, g.data_type, `${g.first_missing_id}..${g.last_missing_id}`, g.missing_count, shortTime(g.detected_ts)]);
  return el("div", {}, el("h2", {}, `Open gaps: ${rows.length}`),
    rows.length ? table(["exchange", "symbol", "type", "missing ids", "count", "detected"], rows, { id: "open-gaps" }) : el("p", { class: "ok" }, "none"));
}

function dlqCard(dlq) {
  if (dlq.error) {
    const text = dlq.error.status === 403 ? "Dead letters need an admin key." : dlq.error.message;
    return el("div", {}, el("h2", {}, "Dead letters"), el("p", { class: "muted" }, text));
  }
  const rows = dlq.value.data.map((d) => [d.source_topic, d.reason, d.detail, shortTime(d.dead_lettered_at)]);
  return el("div", {}, el("h2", {}, `Dead letters: ${rows.length}${rows.length >= 100 ? "+" : ""}`),
    rows.length ? el("div", { class: "scroll" }, table(["source topic", "reason", "detail", "when"], rows, { id: "dead-letters" })) : el("p", { class: "ok" }, "none"));
}

async function refresh(page) {
  const [health, checks, symbols, trades, quotes, gaps, dlq, lag] = await Promise.all([
    settle(api("/health")), settle(ready()), settle(api("/v1/symbols")), settle(api("/v1/snapshots", { table: "trades" })),
    settle(api("/v1/snapshots", { table: "quotes" })), settle(api("/v1/gaps", { status: "open" })), settle(api("/v1/dlq", { limit: 100 })),
    settle(api("/v1/lag")),
  ]);
  const unauthorized = [symbols, trades].find((r) => r.error && r.error.status === 401);
  if (unauthorized) throw unauthorized.error;
  clear(page).append(
    el("p", { class: "status-line" }, `Updated ${new Date().toISOString()} · refreshes every ${REFRESH_MS / 1000} s`),
    el("div", { class: "cards" }, partsCard(health, checks), gapsCard(gaps), dlqCard(dlq)),
    commitsCard({ trades, quotes }), lagCard(lag), sourcesCard(symbols));
  page.dataset.loaded = "true";
}

export async function render(page) {
  await refresh(page);
  timer = setInterval(() => refresh(page).catch(() => {}), REFRESH_MS);
}

export function leave() { if (timer) clearInterval(timer); timer = null; }
