// An experiment's runs table: filter, sort, paging, chosen columns, nesting, compare.
import { fill,
  api, badge, clear, duration, el, errorBox, href, number, quoted, runHref, setTitle, time,
} from "../dom.js";
import { viewSelect } from "./experiments.js";

const ATTRIBUTES = [
  ["Run name", "attributes.run_name"],
  ["Created", "attributes.start_time"],
  ["Duration", null],
  ["User", "attributes.user_id"],
  ["Status", "attributes.status"],
];

function state() {
  const p = new URLSearchParams(window.location.search);
  return {
    filter: p.get("filter") || "",
    order: p.get("order") || "",
    page: Number(p.get("page") || 0),
    size: Number(p.get("size") || 50),
    view: p.get("view") || "active",
    cols: p.get("cols") || "",
  };
}

function go(experimentId, changes) {
  const next = { ...state(), ...changes };
  if (next.page === 0) next.page = "";
  if (next.size === 50) next.size = "";
  window.location.assign(href(`/experiments/${encodeURIComponent(experimentId)}`, next));
}

export async function runsPage(main, experimentId) {
  const s = state();
  const selected = new Set();
  const answer = await api(`/experiments/${encodeURIComponent(experimentId)}/runs`, {
    filter: s.filter, order: s.order, page: s.page, size: s.size, view: s.view, cols: s.cols,
  });
  const failure = answer.search_error;
  const name = answer.experiment.name;
  setTitle(name);
  const compareButton = el("button", { type: "button", id: "compare", disabled: true,
    onclick: () => window.location.assign(`/compare?runs=${[...selected].map(encodeURIComponent).join(",")}`) },
    "Compare selected");
  const updateCompare = () => {
    compareButton.disabled = selected.size < 1;
    compareButton.textContent = `Compare selected (${selected.size})`;
  };
  const form = el("form", { class: "filter", id: "filter-form", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    go(experimentId, { filter: data.get("filter"), view: data.get("view"), page: 0 });
  } },
  el("input", { type: "search", name: "filter", value: s.filter, class: "mono", id: "filter",
    placeholder: "metrics.loss < 0.5 and (params.lr = '0.01' or tags.team = 'vision')",
    "aria-label": "Filter runs" }),
  viewSelect(s.view),
  el("button", { type: "submit" }, "Search"),
  s.filter ? el("a", { href: href(`/experiments/${encodeURIComponent(experimentId)}`, { view: s.view }) }, "Clear") : null);
  const body = [el("h1", {}, name, answer.experiment.lifecycle_stage === "deleted" ? badge("deleted") : null),
    el("p", { class: "crumbs" }, el("a", { href: "/experiments" }, "Experiments"), " / ", name), form];
  if (failure) {
    body.push(el("div", { class: "error filter-error", role: "alert", id: "filter-error" },
      el("strong", {}, "The search was refused:"), el("pre", {}, failure)));
    fill(main, ...body);
    return;
  }
  const columns = answer.columns;
  const chooser = columnChooser(experimentId, columns, s);
  const toolbar = el("div", { class: "toolbar" },
    el("button", { type: "button", id: "columns-button", onclick: () => chooser.toggle() }, "Columns…"),
    compareButton,
    el("span", { class: "spacer" }),
    el("button", { type: "button", id: "prev", disabled: s.page === 0, onclick: () => go(experimentId, { page: s.page - 1 }) }, "‹ Prev"),
    el("span", { id: "page-number" }, `Page ${s.page + 1}`),
    el("button", { type: "button", id: "next", disabled: !answer.has_next, onclick: () => go(experimentId, { page: s.page + 1 }) }, "Next ›"),
    el("select", { "aria-label": "Runs per page", onchange: (e) => go(experimentId, { size: Number(e.target.value), page: 0 }) },
      [25, 50, 100, 250, 500].map((n) => el("option", { value: n, selected: n === s.size }, `${n} / page`))));
  const [orderKey, orderDir] = parseOrder(s.order);
  const header = el("tr", {}, el("th", {}, ""),
    ATTRIBUTES.map(([label, key]) => sortable(label, key, orderKey, orderDir, experimentId)),
    columns.map((c) => {
      const dot = c.indexOf(".");
      return sortable(c, quoted(c.slice(0, dot), c.slice(dot + 1)), orderKey, orderDir, experimentId, c);
    }));
  const rows = nest(answer.runs).map(({ run, depth }) => runRow(run, depth, selected, updateCompare, experimentId));
  body.push(toolbar, chooser.node,
    answer.runs.length
      ? el("div", { class: "scroll" }, el("table", { class: "grid runs", id: "runs" }, el("thead", {}, header), el("tbody", {}, rows)))
      : el("p", { class: "muted", id: "no-runs" }, "No runs match."));
  fill(main, ...body);
  updateCompare();
}

function parseOrder(text) {
  const m = text.match(/^(.*?)(?:\s+(ASC|DESC))?$/i);
  return m ? [m[1], (m[2] || "ASC").toUpperCase()] : ["", ""];
}

function sortable(label, key, orderKey, orderDir, experimentId, title) {
  if (!key) return el("th", {}, label);
  const current = key === orderKey;
  const next = current && orderDir === "ASC" ? "DESC" : "ASC";
  return el("th", { class: current ? "sorted" : null, title: title || label, "data-key": key },
    el("button", { type: "button", class: "link", onclick: () => go(experimentId, { order: `${key} ${next}`, page: 0 }) },
      label, current ? (orderDir === "ASC" ? " ▲" : " ▼") : ""));
}

// Children right under their parent when both are on the page.
function nest(runs) {
  const onPage = new Map(runs.map((r) => [r.run_id, r]));
  const kids = new Map();
  for (const r of runs) {
    if (r.parent_run_id && onPage.has(r.parent_run_id) && r.parent_run_id !== r.run_id) {
      if (!kids.has(r.parent_run_id)) kids.set(r.parent_run_id, []);
      kids.get(r.parent_run_id).push(r);
    }
  }
  const out = [];
  const seen = new Set();
  const visit = (run, depth) => {
    if (seen.has(run.run_id)) return;
    seen.add(run.run_id);
    out.push({ run, depth, hasKids: kids.has(run.run_id) });
    for (const k of kids.get(run.run_id) || []) visit(k, depth + 1);
  };
  for (const r of runs) {
    if (!(r.parent_run_id && onPage.has(r.parent_run_id) && r.parent_run_id !== r.run_id)) visit(r, 0);
  }
  for (const r of runs) visit(r, 0);
  return out;
}

function runRow(run, depth, selected, updateCompare, experimentId) {
  const box = el("input", { type: "checkbox", "aria-label": `Select ${run.run_name}`, "data-run": run.run_id,
    onchange: (e) => { if (e.target.checked) selected.add(run.run_id); else selected.delete(run.run_id); updateCompare(); } });
  const nameCell = el("td", { class: "name", style: null },
    depth ? el("span", { class: `indent d${Math.min(depth, 6)}` }, "↳ ") : null,
    el("a", { href: runHref(run.run_id) }, run.run_name || run.run_id),
    run.children ? el("a", { class: "children muted", href: href(`/experiments/${encodeURIComponent(experimentId)}`,
      { filter: `tags.mlflow.parentRunId = '${run.run_id}'`, view: "all" }) }, ` ${run.children} child${run.children > 1 ? "ren" : ""}`) : null,
    run.lifecycle_stage === "deleted" ? badge("deleted") : null);
  return el("tr", { class: `${run.lifecycle_stage}${depth ? " child" : ""}`, "data-run": run.run_id, "data-depth": depth },
    el("td", {}, box), nameCell,
    el("td", { class: "when" }, time(run.start_time)),
    el("td", { class: "nowrap" }, duration(run.start_time, run.end_time)),
    el("td", {}, run.user_id),
    el("td", {}, badge(run.status)),
    run.cells.map((v) => el("td", { class: typeof v === "number" ? "num" : null }, number(v))));
}

function columnChooser(experimentId, columns, s) {
  const chosen = new Set(columns);
  let kind = "params";
  const list = el("div", { class: "keys", id: "column-keys" });
  const note = el("p", { class: "muted" });
  const search = el("input", { type: "search", placeholder: "Filter keys", id: "column-search", "aria-label": "Filter keys" });
  const load = async () => {
    const found = await api(`/experiments/${encodeURIComponent(experimentId)}/keys`, { kind, q: search.value });
    clear(list).append(...found.keys.map((key) => {
      const name = `${kind}.${key}`;
      return el("label", {}, el("input", { type: "checkbox", value: name, checked: chosen.has(name),
        onchange: (e) => { if (e.target.checked) chosen.add(name); else chosen.delete(name); } }), key);
    }));
    note.textContent = found.total > found.keys.length
      ? `Showing ${found.keys.length} of ${found.total} keys: type to narrow.` : `${found.total} keys.`;
  };
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(load, 200); });
  const tabs = el("div", { class: "tabs" }, ["params", "metrics", "tags"].map((k) =>
    el("button", { type: "button", "data-kind": k, class: k === kind ? "on" : null, onclick: (e) => {
      kind = k;
      tabs.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b === e.target));
      load();
    } }, k)));
  const node = el("div", { class: "chooser", hidden: true, id: "chooser" }, tabs, search, note, list,
    el("div", { class: "toolbar" },
      el("button", { type: "button", id: "apply-columns", onclick: () => go(experimentId, { cols: [...chosen].join(","), page: s.page }) }, "Apply"),
      el("button", { type: "button", onclick: () => go(experimentId, { cols: "" }) }, "Default columns")));
  return {
    node,
    toggle: () => {
      node.hidden = !node.hidden;
      if (!node.hidden) load();
    },
  };
}
