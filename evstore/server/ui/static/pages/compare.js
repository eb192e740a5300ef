// Runs side by side: one chart per metric with every run overlaid, params with differences marked.
import { fill, api, badge, clear, el, number, runHref, setTitle, table } from "../dom.js";
import { ChartSettings, chartCard, color, startInView } from "../chart.js";

export async function comparePage(main) {
  const ids = (new URLSearchParams(window.location.search).get("runs") || "").split(",").filter(Boolean);
  const answer = await api("/compare", { runs: ids.join(",") });
  const runs = answer.runs;
  setTitle(`Compare ${runs.length} runs`);
  const differing = new Set(answer.differing);
  const onlyDiff = el("input", { type: "checkbox", id: "only-differences" });
  const paramRows = answer.param_keys.map((k) => el("tr", { class: differing.has(k) ? "differs" : null, "data-key": k },
    el("th", {}, differing.has(k) ? el("span", { class: "diff-mark", title: "values differ" }, "≠ ") : null, k),
    runs.map((r) => el("td", {}, k in r.params ? r.params[k] : el("span", { class: "muted" }, "—")))));
  onlyDiff.addEventListener("change", () => paramRows.forEach((r) => { r.hidden = onlyDiff.checked && !r.classList.contains("differs"); }));
  const head = runs.map((r, i) => el("a", { href: runHref(r.run_id), class: "swatch", "data-color": i }, r.run_name));
  head.forEach((a, i) => { a.style.borderColor = color(i); });
  const grid = el("div", { class: "charts", id: "charts" });
  const settings = new ChartSettings(() => grid.querySelectorAll("figure.chart").forEach((c) => { if (c.dataset.drawn) c.redraw(); }));
  const labelled = runs.map((r) => ({ run_id: r.run_id, label: r.run_name }));
  const cards = answer.metric_keys.map((key) => chartCard(key, labelled, settings, { height: 260 }));
  grid.append(...cards);
  const params = el("div", { class: "scroll" });
  const metrics = el("div", { class: "scroll" });
  fill(main, 
    el("h1", {}, `Comparing ${runs.length} runs`),
    el("section", { class: "panel" }, el("h2", {}, "Runs"), el("div", { class: "swatches" }, head)),
    el("section", { class: "panel" }, el("h2", {}, "Params ", el("span", { class: "muted" }, `(${differing.size} of ${answer.param_keys.length} differ)`)),
      el("label", {}, onlyDiff, " Only params that differ"), params),
    el("section", { class: "panel" }, el("h2", {}, "Latest metrics"), metrics),
    el("section", { class: "panel" }, el("h2", {}, `Charts (${answer.metric_keys.length})`), settings.controls(), grid),
    runs.some((r) => r.lifecycle_stage === "deleted") ? el("p", {}, badge("deleted"), " Some of these runs are deleted.") : null,
  );
  // The charts' series are asked for first: the tables of many runs take a while to lay
  // out, and the server answers meanwhile.
  startInView(cards);
  params.append(table(["Param", ...runs.map((r) => r.run_name)], paramRows, { class: "grid compare", id: "compare-params" }));
  metrics.append(table(["Metric", ...runs.map((r) => r.run_name)], answer.metric_keys.map((k) => el("tr", {}, el("th", {}, k),
    runs.map((r) => el("td", { class: "num" }, k in r.metrics ? number(r.metrics[k]) : "—")))), { class: "grid compare", id: "compare-metrics" }));
}
