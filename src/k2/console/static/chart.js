// Chart: candlesticks + volume + VWAP (Plotly, served from the installed plotly wheel), zoom/pan fetching
// only the range not loaded yet, trades as buy/sell points for short ranges, time travel (as_of).
// The order book at the cursor's time sits under it (book.js, /v1/book). Time travel lists the trades table's
// snapshots and the tags that name them (a tag sets as_of=tag:NAME).
// Every value drawn comes from /v1/bars, /v1/trades, /v1/symbols, /v1/snapshots and /v1/book.
import { api } from "./api.js";
import { BookPanel } from "./book.js";
import { quickCandles } from "./quickdraw.js";
import { clear, el, isoUtc, shortTime, thead } from "./util.js";

const INTERVALS = { "1s": 1, "5s": 5, "15s": 15, "30s": 30, "1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400 };
const DEFAULT_BARS = 1440;          // a symbol-day of 1-minute bars
const TRADES_MAX_SPAN_MS = 5 * 60 * 1000;
const TRADES_LIMIT = 5000;
let plotlyLoading = null;

/** Run plotly.min.js once (4.8 MB, from the installed wheel; boot.js has started downloading it) — only the
 *  chart page needs it, and only after its first candles are drawn (parsing it blocks the page's thread). */
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  plotlyLoading = plotlyLoading || new Promise((resolve, reject) => {
    const script = el("script", { src: "vendor/plotly.min.js" });
    script.addEventListener("load", () => { performance.mark("k2-plotly-ready"); resolve(window.Plotly); });
    script.addEventListener("error", () => reject(new Error("expected the chart library at /console/vendor/plotly.min.js, found none")));
    document.head.append(script);
  });
  return plotlyLoading;
}

// Plotly takes "yyyy-mm-dd HH:MM:SS.sss" (read as UTC here); the API speaks ISO-8601 with Z.
const toPlot = (iso) => iso.slice(0, 23).replace("T", " ");
const fromPlot = (text) => new Date(String(text).replace(" ", "T") + (String(text).endsWith("Z") ? "" : "Z"));
const floorTo = (ms, step) => Math.floor(ms / step) * step;
const ceilTo = (ms, step) => Math.ceil(ms / step) * step;

class ChartView {
  constructor(page, ctx) {
    this.page = page;
    this.ctx = ctx;
    this.bars = new Map();      // open_time ISO -> bar row
    this.loaded = null;         // [startMs, endMs) fetched so far
    this.fetches = [];          // every bars request: {start, end, rows}
    this.trades = [];
    this.busy = false;
    window.k2Chart = this;
  }

  get step() { return INTERVALS[this.interval] * 1000; }

  async start() {
    const p = this.ctx.params;
    this.prefetch(p);
    const [symbols, snapshots] = await Promise.all([api("/v1/symbols"), api("/v1/snapshots", { table: "trades" })]);
    this.symbols = symbols.data;
    this.snapshots = snapshots.data;
    const first = this.symbols[0] || {};
    this.exchange = p.get("exchange") || first.exchange || "";
    this.symbol = p.get("symbol") || first.symbol || "";
    this.interval = INTERVALS[p.get("interval")] ? p.get("interval") : "1m";
    this.asOf = p.get("as_of") || "";
    this.buildControls();
    const info = this.symbols.find((s) => s.exchange === this.exchange && s.symbol === this.symbol);
    let end = p.get("end") ? Date.parse(p.get("end")) : info && info.last_ts ? ceilTo(Date.parse(info.last_ts) + 1, this.step) : Date.now();
    let start = p.get("start") ? Date.parse(p.get("start")) : end - DEFAULT_BARS * this.step;
    if (!p.get("start") && info && info.first_ts) start = Math.max(start, floorTo(Date.parse(info.first_ts), this.step));
    if (!(start < end)) { start = end - DEFAULT_BARS * this.step; }
    await this.load(start, end);
  }

  /** An address naming the whole view (a shared link, a reload after panning) fetches its bars at once,
   *  alongside /v1/symbols and /v1/snapshots instead of after them. */
  prefetch(p) {
    const [start, end] = [Date.parse(p.get("start")), Date.parse(p.get("end"))];
    if (!p.get("exchange") || !p.get("symbol") || !INTERVALS[p.get("interval")] || !(start < end)) return;
    [this.exchange, this.symbol, this.interval, this.asOf] = [p.get("exchange"), p.get("symbol"), p.get("interval"), p.get("as_of") || ""];
    const promise = this.fetchBars(start, end);
    promise.catch(() => {});  // load() awaits it and reports the error
    this.pending = { start, end, promise };
  }

  buildControls() {
    const symbolOptions = this.symbols.map((s) => el("option", { value: `${s.exchange}\u0000${s.symbol}`, selected: s.exchange === this.exchange && s.symbol === this.symbol }, `${s.exchange} · ${s.symbol}`));
    const symbolSelect = el("select", { id: "symbol" }, symbolOptions);
    const intervalSelect = el("select", { id: "interval" }, Object.keys(INTERVALS).map((i) => el("option", { value: i, selected: i === this.interval }, i)));
    const newest = [...this.snapshots].reverse();
    const tagged = newest.flatMap((s) => (s.tags || []).map((name) => [name, s]));
    const asOfSelect = el("select", { id: "as-of" }, el("option", { value: "" }, "latest"),
      tagged.length ? el("optgroup", { label: "tags" }, tagged.map(([name, s]) => el("option", { value: `tag:${name}`, selected: `tag:${name}` === this.asOf },
        `tag ${name} · ${shortTime(s.committed_at)} · snapshot ${s.snapshot_id}`))) : null,
      el("optgroup", { label: "snapshots" }, newest.map((s) => el("option", { value: String(s.snapshot_id), selected: String(s.snapshot_id) === this.asOf },
        `${shortTime(s.committed_at)} · +${s.added_rows.toLocaleString()} rows · ${s.kafka_offsets || "no offsets"}${(s.tags || []).length ? ` · tags ${s.tags.join(", ")}` : ""}`))));
    const reload = () => {
      const [exchange, symbol] = symbolSelect.value.split("\u0000");
      this.ctx.setParams({ exchange, symbol, interval: intervalSelect.value, as_of: asOfSelect.value, start: null, end: null }, true);
      window.dispatchEvent(new PopStateEvent("popstate"));
    };
    symbolSelect.addEventListener("change", reload);
    intervalSelect.addEventListener("change", reload);
    asOfSelect.addEventListener("change", () => {
      this.ctx.setParams({ as_of: asOfSelect.value }, true);
      window.dispatchEvent(new PopStateEvent("popstate"));
    });
    this.status = el("p", { class: "status-line", id: "chart-status" });
    this.plot = el("div", { id: "chart" });
    this.bookPanel = new BookPanel(this);
    // The table is built when opened (1,440 rows of DOM would double the time to the first candle).
    this.tableHolder = el("details", { id: "candles-details" }, el("summary", {}, "Bars as a table"));
    this.tableHolder.addEventListener("toggle", () => { if (this.tableHolder.open && this.rows) this.renderTable(this.rows); });
    clear(this.page).append(
      el("div", { class: "controls" },
        el("label", {}, "symbol", symbolSelect), el("label", {}, "interval", intervalSelect),
        el("label", {}, "time travel (trades snapshot or tag)", asOfSelect)),
      this.status, this.plot, this.bookPanel.node, this.tableHolder);
  }

  /** The as_of for /v1/book: a trades snapshot id or tag names a trades commit, so the book is read as it
   *  was at that commit's time (snapshot ids are per table); an ISO time passes through. */
  bookAsOf() {
    if (!this.asOf) return "";
    const tag = this.asOf.startsWith("tag:") ? this.asOf.slice(4) : null;
    const snap = this.snapshots.find((s) => (tag ? (s.tags || []).includes(tag) : String(s.snapshot_id) === this.asOf));
    return snap ? snap.committed_at : this.asOf;
  }

  async fetchBars(startMs, endMs) {
    const params = { exchange: this.exchange, symbol: this.symbol, interval: this.interval, start: isoUtc(startMs), end: isoUtc(endMs), as_of: this.asOf };
    const body = await api("/v1/bars", params);
    performance.mark("k2-bars-response");
    this.fetches.push({ start: params.start, end: params.end, rows: body.data.length });
    for (const bar of body.data) this.bars.set(bar.open_time, bar);
    this.snapshotIds = body.snapshot_ids;
    return body;
  }

  async load(startMs, endMs) {
    this.loaded = [startMs, endMs];
    this.ctx.setParams({ exchange: this.exchange, symbol: this.symbol, interval: this.interval, start: isoUtc(startMs), end: isoUtc(endMs), as_of: this.asOf });
    const early = this.pending && this.pending.start === startMs && this.pending.end === endMs ? this.pending.promise : null;
    this.pending = null;
    await (early || this.fetchBars(startMs, endMs));
    if (!window.Plotly) {  // cold browser: candles now (painted before Plotly blocks the thread), interactive later
      this.quickDraw([startMs, endMs]);
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    }
    let Plotly;
    try {
      Plotly = await loadPlotly();
    } catch (error) {
      this.status.textContent = `${error.message} (the candles above are a static drawing)`;
      return;
    }
    this.Plotly = Plotly;
    await this.draw([startMs, endMs]);
    if (this.quick) { this.quick.remove(); this.quick = null; }
    performance.mark("k2-first-draw");
    if (!performance.getEntriesByName("k2-first-candle").length) performance.mark("k2-first-candle");
    this.plot.on("plotly_relayout", (event) => this.onRelayout(event));
    this.bookPanel.attach(this.plot);
    const pinned = this.ctx.params.get("book_at");
    const info = this.symbols.find((s) => s.exchange === this.exchange && s.symbol === this.symbol);
    const lastTrade = info && info.last_ts ? Date.parse(info.last_ts) : endMs;
    this.bookPanel.pinned = Boolean(pinned);
    this.bookPanel.show(pinned ? Date.parse(pinned) : Math.min(endMs, lastTrade));
  }

  /** The candles as plain SVG until the chart library is parsed (quickdraw.js). */
  quickDraw(range) {
    const rows = [...this.bars.values()].sort((p, q) => (p.open_time < q.open_time ? -1 : 1));
    this.quick = quickCandles(rows, this.step, range, this.plot.clientWidth || 1200);
    this.plot.before(this.quick);
    this.status.textContent = `${rows.length.toLocaleString()} bars · loading the interactive chart…`;
    performance.mark("k2-first-candle");
  }

  /** Zoom or pan: fetch only what lies outside the loaded range, then trades if the span is short. */
  async onRelayout(event) {
    const range = "xaxis.range[0]" in event ? [event["xaxis.range[0]"], event["xaxis.range[1]"]] : event["xaxis.range"];
    if (this.busy || !range) return;
    const a = fromPlot(range[0]).getTime();
    const b = fromPlot(range[1]).getTime();
    this.busy = true;
    try {
      const [lo, hi] = this.loaded;
      const wants = [];
      if (a < lo) wants.push([floorTo(a, this.step), lo]);
      if (b > hi) wants.push([hi, ceilTo(b, this.step)]);
      for (const [s, e] of wants) await this.fetchBars(s, e);
      this.loaded = [Math.min(lo, floorTo(a, this.step)), Math.max(hi, ceilTo(b, this.step))];
      this.ctx.setParams({ start: isoUtc(floorTo(a, 1000)), end: isoUtc(ceilTo(b, 1000)) });
      this.tradesPartial = false;
      this.trades = b - a <= TRADES_MAX_SPAN_MS ? await this.fetchTrades(a, b) : [];
      await this.draw([a, b]);
    } catch (error) {
      this.status.textContent = `${error.code || "error"}: ${error.message}`;
    } finally {
      this.busy = false;
    }
  }

  async fetchTrades(a, b) {
    const body = await api("/v1/trades", { exchange: this.exchange, symbol: this.symbol, start: isoUtc(floorTo(a, 1000)), end: isoUtc(ceilTo(b, 1000)), limit: TRADES_LIMIT, as_of: this.asOf });
    this.tradesPartial = Boolean(body.next_cursor);
    return body.data;
  }

  traces(rows) {
    // Each candle sits in the middle of its interval, so a range [start, end) shows whole candles.
    const half = this.step / 2;
    const x = rows.map((r) => toPlot(new Date(Date.parse(r.open_time) + half).toISOString()));
    let pv = 0; let v = 0;
    const vwap = rows.map((r) => { const vol = Number(r.volume); pv += (r.vwap || 0) * vol; v += vol; return v ? pv / v : null; });
    const out = [
      { type: "candlestick", name: "OHLC", x, open: rows.map((r) => +r.open), high: rows.map((r) => +r.high), low: rows.map((r) => +r.low), close: rows.map((r) => +r.close),
        increasing: { line: { color: "#26a69a" } }, decreasing: { line: { color: "#ef5350" } }, yaxis: "y" },
      { type: "bar", name: "volume", x, y: rows.map((r) => +r.volume), yaxis: "y2", marker: { color: rows.map((r) => (+r.close >= +r.open ? "#26a69a88" : "#ef535088")) } },
      { type: "scatter", mode: "lines", name: "VWAP (from range start)", x, y: vwap, line: { color: "#f5a623", width: 1.5 }, yaxis: "y" },
    ];
    for (const [side, color, symbol] of [["BUY", "#26a69a", "triangle-up"], ["SELL", "#ef5350", "triangle-down"]]) {
      const points = this.trades.filter((t) => t.side === side);
      if (points.length) {
        out.push({ type: "scatter", mode: "markers", name: `${side.toLowerCase()} trades`, x: points.map((t) => toPlot(t.exchange_ts)), y: points.map((t) => +t.price),
          marker: { color, symbol, size: 6 }, yaxis: "y", text: points.map((t) => `${t.quantity} @ ${t.price}`) });
      }
    }
    return out;
  }

  async draw(range) {
    const rows = [...this.bars.values()].sort((p, q) => (p.open_time < q.open_time ? -1 : 1));
    const layout = {
      paper_bgcolor: "#0f1419", plot_bgcolor: "#0f1419", font: { color: "#d8dee6" }, margin: { l: 60, r: 20, t: 30, b: 40 }, uirevision: "k2", showlegend: true,
      legend: { orientation: "h", y: 1.06 }, dragmode: "pan",
      title: { text: `${this.exchange} ${this.symbol} · ${this.interval}${this.asOf ? ` · as of snapshot ${this.asOf}` : ""}`, font: { size: 13 } },
      xaxis: { type: "date", rangeslider: { visible: false }, range: [toPlot(isoUtc(range[0])), toPlot(isoUtc(range[1]))], gridcolor: "#2a323c" },
      yaxis: { domain: [0.28, 1], gridcolor: "#2a323c", title: "price" }, yaxis2: { domain: [0, 0.22], gridcolor: "#2a323c", title: "volume" },
    };
    await this.Plotly.react(this.plot, this.traces(rows), layout, { responsive: true, displaylogo: false, scrollZoom: true });
    this.plot.dataset.candles = String(rows.length);
    this.status.textContent = `${rows.length.toLocaleString()} bars · ${this.trades.length.toLocaleString()} trades shown${this.tradesPartial ? ` (only the first ${TRADES_LIMIT.toLocaleString()}: zoom in for all)` : ""} · snapshot ${JSON.stringify(this.snapshotIds || {})} · bar requests ${this.fetches.length}`;
    this.rows = rows;
    if (this.tableHolder.open) this.renderTable(rows);
  }

  /** The drawn bars as text (also what tests and screen readers read): one row per candle. */
  renderTable(rows) {
    const old = this.tableHolder.querySelector("table");
    if (old) old.remove();
    const columns = ["open_time", "open", "high", "low", "close", "volume", "trade_count", "vwap"];
    const body = el("tbody", {}, rows.map((r) => el("tr", { class: "candle", dataset: { openTime: r.open_time, open: r.open, high: r.high, low: r.low, close: r.close, volume: r.volume } },
      columns.map((c) => el("td", {}, r[c] === null || r[c] === undefined ? "" : String(r[c]))))));
    this.tableHolder.append(el("table", { id: "candles" }, thead(columns), body));
  }
}

export async function render(page, ctx) {
  const view = new ChartView(page, ctx);
  await view.start();
}

export function leave() {}
