// One run: info, params, latest metrics, tags, family, artifacts and charts, "as of" any point.
import { fill,
  api, badge, clear, duration, el, experimentHref, href, modelHref, number, panel, runHref, setTitle, table, time,
} from "../dom.js";
import { ChartSettings, chartCard } from "../chart.js";
import { timeControl } from "../timecontrol.js";

export async function runPage(main, runId) {
  const asOf = new URLSearchParams(window.location.search).get("as_of") || "";
  const answer = await api(`/runs/${encodeURIComponent(runId)}`, { as_of: asOf });
  const run = answer.run;
  setTitle(run.run_name, answer.as_of ? `as of ${answer.as_of.position}` : null);
  const mark = answer.as_of ? el("span", { class: "as-of-mark" }, ` as of position ${answer.as_of.position}`) : null;
  const titled = (title) => [title, mark ? mark.cloneNode(true) : null];
  fill(main, 
    el("p", { class: "crumbs" }, el("a", { href: "/experiments" }, "Experiments"), " / ",
      el("a", { href: experimentHref(answer.experiment.experiment_id) }, answer.experiment.name), " / ", run.run_name),
    el("h1", {}, run.run_name, " ", badge(run.status), run.lifecycle_stage === "deleted" ? badge("deleted") : null),
    el("div", { class: "toolbar" },
      el("a", { class: "button", href: `/runs/${encodeURIComponent(runId)}/history`, id: "history-link" }, "Audit trail"),
      answer.parent ? el("a", { class: "button", href: `/compare?runs=${encodeURIComponent(answer.parent.run_id)},${encodeURIComponent(runId)}` }, "Compare with parent") : null),
    timeControl(answer, (params) => runHref(runId, params), "run"),
    el("div", { class: "columns" },
      el("div", {}, overview(answer, titled), family(answer, titled)),
      el("div", {}, keyValues("Params", answer.params, titled, "params"), metricsPanel(answer, titled),
        keyValues("Tags", answer.tags, titled, "tags"))),
    modelsPanel(runId, asOf, titled),
    artifactsPanel(runId, asOf, titled),
    chartsPanel(runId, answer, asOf, titled),
  );
}

function overview(answer, titled) {
  const run = answer.run;
  const rows = [
    ["Run ID", el("span", { class: "mono" }, run.run_id)],
    ["Experiment", el("a", { href: experimentHref(answer.experiment.experiment_id) }, answer.experiment.name)],
    ["Status", badge(run.status)],
    ["Lifecycle", run.lifecycle_stage],
    ["User", run.user_id],
    ["Started", time(run.start_time)],
    ["Ended", time(run.end_time)],
    ["Duration", duration(run.start_time, run.end_time)],
    ["Artifacts", el("span", { class: "mono" }, run.artifact_uri)],
  ];
  return panel(titled("Overview"), el("table", { class: "kv", id: "overview" },
    el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))));
}

function family(answer, titled) {
  const parts = [];
  if (answer.parent) {
    parts.push(el("p", { id: "parent" }, "Parent: ", el("a", { href: runHref(answer.parent.run_id) }, answer.parent.run_name || answer.parent.run_id)));
  }
  parts.push(answer.children.length
    ? el("ul", { id: "children" }, answer.children.map((c) => el("li", {}, el("a", { href: runHref(c.run_id) }, c.run_name || c.run_id), " ", badge(c.status),
      c.lifecycle_stage === "deleted" ? badge("deleted") : null)))
    : el("p", { class: "muted" }, "No child runs."));
  return panel(titled("Parent and children"), parts);
}

function keyValues(title, values, titled, id) {
  const keys = Object.keys(values).sort();
  if (!keys.length) return panel(titled(title), el("p", { class: "muted" }, `No ${title.toLowerCase()}.`));
  const rows = keys.map((k) => el("tr", { "data-key": k }, el("th", {}, k), el("td", {}, values[k])));
  const body = el("tbody", {}, rows);
  const search = keys.length > 15 ? el("input", { type: "search", placeholder: `Filter ${title.toLowerCase()}`, "aria-label": `Filter ${title.toLowerCase()}`,
    oninput: (e) => rows.forEach((r) => { r.hidden = !r.dataset.key.toLowerCase().includes(e.target.value.toLowerCase()); }) }) : null;
  return panel(titled(title), search, el("div", { class: "scroll short" }, el("table", { class: "kv", id }, body)));
}

function metricsPanel(answer, titled) {
  const metrics = [...answer.metrics].sort((a, b) => (a.key < b.key ? -1 : 1));
  if (!metrics.length) return panel(titled("Metrics"), el("p", { class: "muted" }, "No metrics."));
  return panel(titled("Metrics"), el("div", { class: "scroll short" }, table(["Key", "Latest", "Step", "Time"],
    metrics.map((m) => el("tr", { "data-key": m.key }, el("th", {}, m.key), el("td", { class: "num" }, number(m.value)),
      el("td", { class: "num" }, m.step), el("td", {}, time(m.timestamp)))), { class: "grid", id: "metrics" })));
}

// The datasets the run used, the logged models it used and produced, the registered
// versions made from it: fetched beside the page, as the artifacts are.
function modelsPanel(runId, asOf, titled) {
  const into = el("div", { id: "run-models" }, el("p", { class: "muted" }, "Loading…"));
  // withStep: the run's own outputs (their step); else models it used (their source run).
  const logged = (models, versions, id, withStep) => table(
    ["Logged model", "ID", "Status", withStep ? "Step" : "Source run", "Registered as"],
    models.map((m) => el("tr", { "data-model": m.model_id }, el("td", {}, m.name, m.lifecycle_stage === "deleted" ? badge("deleted") : null),
      el("td", { class: "mono" }, m.model_id), el("td", {}, badge(m.status)),
      withStep ? el("td", { class: "num" }, m.step === null ? "" : m.step)
        : el("td", {}, m.source_run_id ? el("a", { href: runHref(m.source_run_id) }, m.source_run_id) : ""),
      el("td", {}, versions.filter((v) => v.model_id === m.model_id).map((v) =>
        el("a", { class: "chip", href: modelHref(v.name, { version: v.version }) }, `${v.name} v${v.version}`))))),
    { class: "grid", id });
  api(`/runs/${encodeURIComponent(runId)}/models`, { as_of: asOf }).then((found) => {
    if (!found.datasets.length && !found.produced.length && !found.used.length && !found.versions.some((v) => v.from_run)) {
      fill(into, el("p", { class: "muted" }, "No dataset inputs, logged models or registered versions."));
      return;
    }
    const parts = [];
    parts.push(el("h3", {}, "Dataset inputs"), found.datasets.length
      ? table(["Dataset", "Digest", "Context", "Source"], found.datasets.map((d) => el("tr", { "data-dataset": d.name },
        el("td", {}, d.name), el("td", { class: "mono" }, d.digest), el("td", {}, d.context || ""),
        el("td", {}, el("span", { class: "muted" }, `${d.source_type} `), el("span", { class: "mono" }, d.source)))), { class: "grid", id: "run-datasets" })
      : el("p", { class: "muted" }, "No dataset inputs."));
    parts.push(el("h3", {}, "Models logged"), found.produced.length ? logged(found.produced, found.versions, "run-logged-models", true)
      : el("p", { class: "muted" }, "No logged models."));
    if (found.used.length) parts.push(el("h3", {}, "Model inputs"), logged(found.used, found.versions, "run-model-inputs", false));
    const made = found.versions.filter((v) => v.from_run);
    parts.push(el("h3", {}, "Registered versions"), made.length
      ? el("ul", { id: "run-versions" }, made.map((v) => el("li", {},
        el("a", { href: modelHref(v.name, { version: v.version }) }, `${v.name} v${v.version}`),
        v.model_id ? el("span", { class: "muted" }, ` from ${v.model_id}`) : null)))
      : el("p", { class: "muted" }, "No registered versions come from this run."));
    fill(into, ...parts);
  }).catch((error) => fill(into, el("p", { class: "error" }, error.message)));
  return panel(titled("Datasets and models"), into);
}

function artifactsPanel(runId, asOf, titled) {
  const tree = el("ul", { class: "tree", id: "artifact-tree" });
  const view = el("div", { class: "preview", id: "artifact-preview" }, el("p", { class: "muted" }, "Choose a file to preview it."));
  const fileHref = (path, as) => href(`/ui/api/runs/${encodeURIComponent(runId)}/artifact`, { path, as, as_of: asOf });
  const list = async (path, into) => {
    const found = await api(`/runs/${encodeURIComponent(runId)}/artifacts`, { path, as_of: asOf });
    if (!found.files.length && !path) {
      into.append(el("li", { class: "muted" }, "No artifacts."));
      view.hidden = true;
    }
    for (const f of found.files) {
      const name = f.path.split("/").pop();
      if (f.is_dir) {
        const sub = el("ul", { hidden: true });
        let loaded = false;
        into.append(el("li", {}, el("button", { type: "button", class: "link dir", "data-path": f.path, onclick: async () => {
          sub.hidden = !sub.hidden;
          if (!loaded) { loaded = true; await list(f.path, sub); }
        } }, `▸ ${name}/`), sub));
      } else {
        into.append(el("li", {}, el("button", { type: "button", class: "link file", "data-path": f.path, onclick: () => preview(f.path) }, name),
          el("span", { class: "muted" }, ` ${size(f.size)}`)));
      }
    }
  };
  const preview = async (path) => {
    clear(view).append(el("p", { class: "muted" }, "Loading…"));
    const p = await api(`/runs/${encodeURIComponent(runId)}/artifact`, { path, as: "preview", as_of: asOf });
    const head = el("div", { class: "toolbar" }, el("strong", { class: "mono" }, p.path), el("span", { class: "muted" }, size(p.size)),
      el("a", { class: "button", id: "artifact-download", href: fileHref(path, "download"), download: path.split("/").pop() }, "Download"));
    let shown;
    if (p.kind === "image") shown = el("img", { src: fileHref(path, "image"), alt: path, class: "artifact-image" });
    else if (p.kind === "table") {
      shown = el("div", { class: "scroll" }, table(p.columns, p.rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))), { class: "grid", id: "artifact-table" }),
        p.total_rows > p.rows.length ? el("p", { class: "muted" }, `First ${p.rows.length} of ${p.total_rows} rows.`) : null);
    } else if (p.kind === "binary") shown = el("p", { class: "muted" }, "No preview for this kind of file.");
    else shown = el("pre", { class: `artifact-text ${p.kind}`, id: "artifact-text" }, p.text);
    clear(view).append(head, shown, p.cut ? el("p", { class: "muted" }, "Preview cut at 1 MiB: download the whole file.") : null);
  };
  list("", tree).catch((error) => tree.append(el("li", { class: "error" }, error.message)));
  return panel(titled("Artifacts"), el("div", { class: "artifacts" }, tree, view));
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function chartsPanel(runId, answer, asOf, titled) {
  const keys = answer.metrics.map((m) => m.key).sort();
  const grid = el("div", { class: "charts", id: "charts" });
  const settings = new ChartSettings(() => grid.querySelectorAll("figure.chart").forEach((c) => {
    if (c.dataset.drawn) c.redraw();
  }));
  const runs = [{ run_id: runId, label: answer.run.run_name }];
  const cards = keys.map((key) => chartCard(key, runs, settings, { asOf }));
  grid.append(...cards);
  const search = keys.length > 12 ? el("input", { type: "search", placeholder: "Filter charts", "aria-label": "Filter charts", id: "chart-filter",
    oninput: (e) => cards.forEach((c) => { c.hidden = !c.dataset.key.toLowerCase().includes(e.target.value.toLowerCase()); }) }) : null;
  return panel(titled(`Charts (${keys.length})`), keys.length ? [settings.controls(), search, grid] : el("p", { class: "muted" }, "No metrics to chart."));
}
