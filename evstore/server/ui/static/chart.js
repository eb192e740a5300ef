// Metric charts on uPlot: drawn when scrolled into view, downsampled by the server,
// asked again at full resolution for a zoomed range.
import { api, el, number } from "./dom.js";

const MAX_LEGEND = 12;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

export function color(i) {
  return i < COLORS.length ? COLORS[i] : `hsl(${(i * 137.5) % 360} 65% 45%)`;
}

// The controls every chart on a page follows: x axis, log scale, smoothing.
export class ChartSettings {
  constructor(onChange) {
    this.x = "step";
    this.log = false;
    this.smoothing = 0;
    this.onChange = onChange;
  }

  controls() {
    const x = el("select", { id: "chart-x", "aria-label": "X axis", onchange: (e) => { this.x = e.target.value; this.onChange(); } },
      [["step", "Step"], ["time", "Time"], ["relative", "Relative time"]].map(([v, label]) => el("option", { value: v }, label)));
    const log = el("input", { type: "checkbox", id: "chart-log", onchange: (e) => { this.log = e.target.checked; this.onChange(); } });
    const smooth = el("input", { type: "range", id: "chart-smoothing", min: 0, max: 0.99, step: 0.01, value: 0,
      onchange: (e) => { this.smoothing = Number(e.target.value); this.onChange(); } });
    return el("div", { class: "toolbar chart-controls" },
      el("label", {}, "X axis ", x), el("label", {}, log, " Log scale"), el("label", {}, "Smoothing ", smooth));
  }
}

// Exponential moving average with bias correction (as TensorBoard smooths); gaps stay gaps.
export function smooth(ys, weight) {
  if (!weight) return ys;
  let last = 0;
  let count = 0;
  return ys.map((y) => {
    if (y === null || !Number.isFinite(y)) return y;
    last = last * weight + (1 - weight) * y;
    count += 1;
    return last / (1 - weight ** count);
  });
}

// "x: run = value" for the run whose line passes nearest the cursor.
function nearest(u, runs) {
  const idx = u.cursor.idx;
  if (idx === null || idx === undefined || u.cursor.top < 0) return "";
  const y = u.posToVal(u.cursor.top, "y");
  let best = -1;
  for (let i = 1; i < u.data.length; i++) {
    const v = u.data[i][idx];
    if (v !== null && v !== undefined && (best < 0 || Math.abs(v - y) < Math.abs(u.data[best][idx] - y))) best = i;
  }
  return best < 0 ? "" : `${number(u.data[0][idx])}: ${runs[best - 1].label} = ${number(u.data[best][idx])}`;
}

// Whether every table has the same x values (runs logged at the same steps): no join needed.
function sameX(tables) {
  const xs = tables[0][0];
  return tables.every(([x]) => x.length === xs.length && x.every((v, i) => v === xs[i]));
}

const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) {
      entry.target.start();
    }
  }
}, { rootMargin: "200px" }) : null;

// Start the cards in view (or nearly) now rather than at the next intersection check, so
// that their series are fetched while the rest of the page is being built.
export function startInView(cards) {
  const limit = window.innerHeight + 200;
  for (const card of cards) {
    if (card.getBoundingClientRect().top < limit) card.start();
  }
}

// A card that draws the chart of one metric of some runs when it comes into view.
export function chartCard(key, runs, settings, options) {
  const plot = el("div", { class: "plot" });
  const status = el("p", { class: "muted chart-status" }, "");
  // Past a dozen runs a legend row per run would outgrow the chart: one readout line
  // names the run nearest the cursor instead.
  const many = runs.length > MAX_LEGEND;
  const readout = many ? el("p", { class: "readout mono" }, " ") : null;
  const card = el("figure", { class: "chart", "data-key": key }, el("figcaption", {}, key, options.badge || null), plot, readout, status);
  let chart = null;
  let range = null;
  let token = 0;
  const load = async () => {
    const mine = ++token;
    const width = Math.max(200, plot.clientWidth || 400);
    const params = { runs: runs.map((r) => r.run_id).join(","), key, x: settings.x,
      points: Math.min(4 * width, 20000), as_of: options.asOf || "" };
    if (range) {
      const scale = settings.x === "time" ? 1000 : settings.x === "relative" ? 1000 : 1;
      params.min = Math.floor(range[0] * scale);
      params.max = Math.ceil(range[1] * scale);
    }
    const answer = await api("/series", params);
    if (mine !== token) return;
    draw(answer);
  };
  const draw = (answer) => {
    const scale = settings.x === "step" ? 1 : 1000;
    const tables = answer.series.map((s) => [s.x.map((v) => v / scale),
      smooth(s.y, settings.smoothing).map((y) => (settings.log && !(y > 0) ? null : y))]);
    const data = tables.length === 1 ? tables[0] : sameX(tables) ? [tables[0][0], ...tables.map((t) => t[1])] : window.uPlot.join(tables);
    const shown = answer.series.reduce((n, s) => n + s.x.length, 0);
    const total = answer.series.reduce((n, s) => n + s.total, 0);
    status.textContent = shown < total ? `${shown.toLocaleString()} of ${total.toLocaleString()} points (min and max of each pixel kept; zoom for full detail)` : `${total.toLocaleString()} points`;
    card.dataset.points = String(shown);
    card.dataset.total = String(total);
    if (chart && !range) {
      chart.destroy();
      chart = null;
    }
    if (chart) {
      chart.setData(data, false);
      return;
    }
    const sparse = answer.series.every((s) => s.x.length <= 60);
    const opts = {
      width: Math.max(200, plot.clientWidth || 400),
      height: options.height || 220,
      scales: { x: { time: settings.x === "time" }, y: settings.log ? { distr: 3 } : {} },
      axes: [{ label: settings.x === "step" ? "step" : settings.x === "time" ? "" : "seconds since start" }, {}],
      legend: { show: !many, live: true },
      // Many runs: no hover dot per run (the readout names the nearest), hairlines.
      cursor: { drag: { x: true, y: false }, points: { show: !many } },
      series: [{ label: settings.x }, ...runs.map((r, i) => ({
        label: r.label, stroke: color(i), width: many ? 1 : 1.5, spanGaps: false, points: { show: sparse },
        value: (u, v) => (v === null || v === undefined ? "—" : number(v)),
      }))],
      hooks: {
        setCursor: many ? [(u) => { readout.textContent = nearest(u, runs) || " "; }] : [],
        setSelect: [(u) => {
          if (u.select.width < 2) return;
          range = [u.posToVal(u.select.left, "x"), u.posToVal(u.select.left + u.select.width, "x")];
          load();
        }],
      },
    };
    chart = new window.uPlot(opts, data, plot);
    chart.over.addEventListener("dblclick", () => { range = null; load(); });
    card.dataset.drawn = "true";
  };
  card.drawChart = () => {
    load().catch((error) => { status.textContent = error.message; card.dataset.drawn = "error"; });
  };
  let started = false;
  card.start = () => {
    if (started) return;
    started = true;
    if (observer) observer.unobserve(card);
    card.drawChart();
  };
  card.redraw = () => {
    range = null;
    if (chart) { chart.destroy(); chart = null; }
    card.drawChart();
  };
  if (observer) observer.observe(card);
  else setTimeout(card.start, 0);
  return card;
}
