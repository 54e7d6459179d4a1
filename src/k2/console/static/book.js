// Order book under the chart: the book at the cursor's time from /v1/book, as a depth chart (cumulative
// size per side, Plotly) and a top-N ladder. Hovering the chart moves the book (debounced); a click pins it
// (URL state: book_at). Prices and sizes stay exact decimal strings in the ladder; only the depth chart
// turns them into numbers. Every value is written as text (el(): textContent), never as HTML.
import { api } from "./api.js";
import { clear, el, isoUtc, shortTime, thead } from "./util.js";

export const BOOK_DEPTH = 20;
const HOVER_DELAY_MS = 250;

export class BookPanel {
  constructor(chart) {
    this.chart = chart;              // the ChartView: exchange, symbol, asOf, Plotly, ctx
    this.timer = null;
    this.seq = 0;                    // answers of older requests are dropped
    this.requests = [];              // every book request: {at} (tests and the benchmark read it)
    this.status = el("p", { class: "status-line", id: "book-status" }, "order book: hover or click the chart");
    this.depth = el("div", { id: "depth" });
    this.ladder = el("div", { id: "book-ladder-holder" });
    this.node = el("section", { id: "book" }, el("h2", {}, "Order book"), this.status,
      el("div", { class: "book-layout" }, this.depth, this.ladder));
  }

  /** Follow the chart's cursor (hover, debounced) and pin on click. */
  attach(plot) {
    plot.on("plotly_hover", (event) => {
      const at = this.timeOf(event);
      if (at === null || this.pinned) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.show(at), HOVER_DELAY_MS);
    });
    plot.on("plotly_click", (event) => {
      const at = this.timeOf(event);
      if (at === null) return;
      this.pinned = true;
      clearTimeout(this.timer);
      this.chart.ctx.setParams({ book_at: isoUtc(at) });
      this.show(at);
    });
  }

  timeOf(event) {
    const point = event && event.points && event.points[0];
    if (!point) return null;
    const text = String(point.x);
    const ms = Date.parse(text.includes("T") ? text : `${text.replace(" ", "T")}Z`);
    return Number.isFinite(ms) ? ms : null;
  }

  async show(atMs) {
    const seq = ++this.seq;
    const c = this.chart;
    const at = new Date(atMs).toISOString();
    this.requests.push({ at });
    this.status.textContent = `order book at ${shortTime(at)} …`;
    try {
      const book = await api("/v1/book", { symbol: c.symbol, exchange: c.exchange, at, depth: BOOK_DEPTH, as_of: c.bookAsOf() });
      if (seq !== this.seq) return;
      this.render(book, at);
    } catch (error) {
      if (seq !== this.seq) return;
      clear(this.ladder);
      clear(this.depth);
      this.node.dataset.state = "error";
      this.status.textContent = `order book at ${shortTime(at)}: ${error.code || "error"}: ${error.message}`;
    }
  }

  render(book, at) {
    this.book = book;
    this.node.dataset.state = "shown";
    this.node.dataset.at = at;
    this.node.dataset.lastUpdateId = String(book.last_update_id);
    this.status.textContent = `order book at ${shortTime(at)} · last event ${shortTime(book.exchange_ts)} · update id ${book.last_update_id} · top ${BOOK_DEPTH} levels · snapshot ${book.snapshot_id}`;
    this.renderLadder(book);
    this.renderDepth(book);
  }

  renderLadder(book) {
    const rows = [];
    const n = Math.max(book.bids.length, book.asks.length);
    for (let i = 0; i < n; i += 1) {
      const bid = book.bids[i] || {};
      const ask = book.asks[i] || {};
      rows.push(el("tr", { class: "level", dataset: { level: String(i + 1), bid: bid.price || "", bidSize: bid.size || "", ask: ask.price || "", askSize: ask.size || "" } },
        el("td", {}, String(i + 1)), el("td", { class: "bid-size" }, bid.size || ""), el("td", { class: "bid" }, bid.price || ""),
        el("td", { class: "ask" }, ask.price || ""), el("td", { class: "ask-size" }, ask.size || "")));
    }
    const head = thead(["level", "bid size", "bid", "ask", "ask size"]);
    clear(this.ladder).append(el("table", { id: "book-ladder" }, head, el("tbody", {}, rows)));
  }

  renderDepth(book) {
    const cumulative = (levels) => { let total = 0; return levels.map((l) => { total += Number(l.size); return total; }); };
    const traces = [
      { type: "scatter", mode: "lines", name: "bids", line: { shape: "hv", color: "#26a69a" }, fill: "tozeroy",
        x: book.bids.map((l) => Number(l.price)), y: cumulative(book.bids) },
      { type: "scatter", mode: "lines", name: "asks", line: { shape: "hv", color: "#ef5350" }, fill: "tozeroy",
        x: book.asks.map((l) => Number(l.price)), y: cumulative(book.asks) },
    ];
    const layout = {
      paper_bgcolor: "#0f1419", plot_bgcolor: "#0f1419", font: { color: "#d8dee6" }, margin: { l: 60, r: 20, t: 10, b: 40 },
      xaxis: { title: "price", gridcolor: "#2a323c" }, yaxis: { title: "cumulative size", gridcolor: "#2a323c" }, showlegend: true,
      legend: { orientation: "h", y: 1.1 },
    };
    return this.chart.Plotly.react(this.depth, traces, layout, { responsive: true, displaylogo: false });
  }
}
