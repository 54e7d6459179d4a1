// The first paint of the candles as plain SVG, drawn as soon as /v1/bars answers, while the 4.8 MB chart
// library (Plotly) is still being parsed on a cold browser (1.5-2.5 s at a load of 6-12 on 2 cores; the
// long pole of the first candle). It is replaced by the interactive Plotly chart once that is ready; if
// the library cannot load, it stays, with the error under it. Every value is data (numbers and
// attributes set with setAttribute), never HTML.
const SVG = "http://www.w3.org/2000/svg";

function node(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) n.setAttribute(name, String(value));
  return n;
}

/** An SVG of the candles in [range[0], range[1]) (ms), each placed in the middle of its interval. */
export function quickCandles(rows, stepMs, range, width = 1200, height = 560) {
  const svg = node("svg", { id: "chart-quick", viewBox: `0 0 ${width} ${height}`, width: "100%", height, role: "img" });
  svg.dataset.candles = String(rows.length);
  if (!rows.length) return svg;
  const [pad, top, bottom] = [60, 30, 40];
  const lo = Math.min(...rows.map((r) => +r.low));
  const hi = Math.max(...rows.map((r) => +r.high));
  const span = range[1] - range[0];
  const x = (ms) => pad + ((ms - range[0]) / span) * (width - pad - 20);
  const y = (price) => top + (hi === lo ? 0.5 : (hi - price) / (hi - lo)) * (height - top - bottom);
  const bodyWidth = Math.max(1, ((width - pad - 20) * stepMs) / span * 0.7);
  for (const r of rows) {
    const [open, high, low, close] = [+r.open, +r.high, +r.low, +r.close];
    const mid = x(Date.parse(r.open_time) + stepMs / 2);
    const color = close >= open ? "#26a69a" : "#ef5350";
    const group = node("g", { class: "candle" });
    group.dataset.openTime = r.open_time;
    for (const [name, value] of [["open", r.open], ["high", r.high], ["low", r.low], ["close", r.close]]) group.dataset[name] = value;
    group.append(node("line", { x1: mid, x2: mid, y1: y(high), y2: y(low), stroke: color }));
    const yTop = y(Math.max(open, close));
    group.append(node("rect", { class: "candle-body", x: mid - bodyWidth / 2, y: yTop, width: bodyWidth, height: Math.max(1, y(Math.min(open, close)) - yTop), fill: color }));
    svg.append(group);
  }
  return svg;
}
