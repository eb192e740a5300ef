// One registered model: overview, aliases, tags, versions and its history; "as of" any point.
import { fill, api, badge, el, modelHref, panel, runHref, setTitle, table, time } from "../dom.js";
import { timeControl } from "../timecontrol.js";
import { trailTable } from "./history.js";
import { aliasList } from "./models.js";

export async function modelPage(main, name) {
  const params = new URLSearchParams(window.location.search);
  const asOf = params.get("as_of") || "";
  const focus = params.get("version") || "";
  const answer = await api(`/models/${encodeURIComponent(name)}`, { as_of: asOf });
  setTitle(name, answer.as_of ? `as of ${answer.as_of.position}` : null);
  const mark = answer.as_of ? el("span", { class: "as-of-mark" }, ` as of position ${answer.as_of.position}`) : null;
  const titled = (title) => [title, mark ? mark.cloneNode(true) : null];
  const model = answer.model;
  const body = [
    el("p", { class: "crumbs" }, el("a", { href: "/models" }, "Models"), " / ", name),
    el("h1", {}, name, model ? null : badge(answer.current_name ? "renamed" : "deleted")),
    timeControl(answer, (p) => modelHref(name, p), "model"),
  ];
  if (model) {
    body.push(el("div", { class: "columns" },
      el("div", {}, overview(model, titled), asOfAnswer(answer, model)),
      el("div", {}, panel(titled("Aliases"), aliasTable(model, name)), keyValues("Tags", model.tags, titled, "model-tags"))),
    versionsPanel(model, name, focus, titled));
  } else {
    body.push(el("div", { class: "panel", id: "model-absent" }, el("p", {}, answer.absent),
      answer.current_name ? el("p", {}, "It is now ", el("a", { href: modelHref(answer.current_name) }, answer.current_name), ".") : null));
  }
  body.push(historyPanel(answer, name));
  fill(main, ...body);
  const row = focus && main.querySelector(`#versions tr[data-version="${CSS.escape(focus)}"]`);
  if (row) row.scrollIntoView({ block: "center" });
}

function overview(model, titled) {
  const rows = [
    ["Name", model.name],
    ["Description", model.description || el("span", { class: "muted" }, "none")],
    ["Latest version", model.latest_version === null ? "none" : `v${model.latest_version}`],
    ["Created", time(model.creation_timestamp)],
    ["Last updated", time(model.last_updated_timestamp)],
  ];
  return panel(titled("Overview"), el("table", { class: "kv", id: "model-overview" },
    el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))));
}

// As of a point, the question the page answers first: where each alias pointed then.
function asOfAnswer(answer, model) {
  if (!answer.as_of) return null;
  const aliases = Object.keys(model.aliases).sort();
  const when = answer.as_of.time ? time(Date.parse(answer.as_of.time)) : `position ${answer.as_of.position}`;
  return panel("Then", el("ul", { id: "as-of-aliases" }, aliases.length
    ? aliases.map((a) => el("li", { "data-alias": a }, `@${a} pointed to version ${model.aliases[a]} on ${when}.`))
    : el("li", { class: "muted" }, `No alias was set on ${when}.`)));
}

function aliasTable(model, name) {
  const aliases = Object.keys(model.aliases).sort();
  if (!aliases.length) return el("p", { class: "muted", id: "aliases" }, "No aliases.");
  return el("table", { class: "kv", id: "aliases" }, el("tbody", {}, aliases.map((a) => el("tr", { "data-alias": a },
    el("th", {}, `@${a}`), el("td", {}, el("a", { href: modelHref(name, { version: model.aliases[a] }) }, `version ${model.aliases[a]}`))))));
}

function keyValues(title, values, titled, id) {
  const keys = Object.keys(values || {}).sort();
  if (!keys.length) return panel(titled(title), el("p", { class: "muted" }, `No ${title.toLowerCase()}.`));
  return panel(titled(title), el("div", { class: "scroll short" }, el("table", { class: "kv", id },
    el("tbody", {}, keys.map((k) => el("tr", { "data-key": k }, el("th", {}, k), el("td", {}, values[k])))))));
}

function versionsPanel(model, name, focus, titled) {
  if (!model.versions.length) return panel(titled("Versions"), el("p", { class: "muted" }, "No versions."));
  const rows = model.versions.map((v) => el("tr", { "data-version": v.version, class: v.version === focus ? "focus" : null },
    el("td", { class: "num" }, `v${v.version}`),
    el("td", {}, v.aliases.map((a) => el("span", { class: "chip alias" }, `@${a}`))),
    el("td", {}, source(v)),
    el("td", {}, badge(v.status)),
    el("td", {}, v.stage === "None" ? el("span", { class: "muted" }, "None") : badge(v.stage)),
    el("td", {}, Object.keys(v.tags).sort().map((k) => el("span", { class: "chip" }, `${k}: ${v.tags[k]}`))),
    el("td", { class: "description" }, v.description),
    el("td", {}, v.created_by || el("span", { class: "muted" }, "not recorded"),
      v.user_id && v.user_id !== v.created_by ? el("div", { class: "muted" }, `claimed user ${v.user_id}`) : null),
    el("td", { class: "when" }, time(v.creation_timestamp))));
  return panel(titled(`Versions (${model.versions.length})`), el("div", { class: "scroll" },
    table(["Version", "Aliases", "Source", "Status", "Stage", "Tags", "Description", "Created by", "Created"], rows, { class: "grid", id: "versions" })));
}

function source(v) {
  const parts = [];
  if (v.model_id) {
    parts.push(el("div", { class: "logged-model" }, "logged model ", el("strong", {}, v.model_name || ""), " ",
      el("span", { class: "mono muted" }, v.model_id)));
  }
  if (v.run_id) {
    parts.push(el("div", {}, "run ", el("a", { href: runHref(v.run_id), class: "run-link" }, v.run_name || v.run_id)));
  }
  if (!parts.length) parts.push(el("span", { class: "mono" }, v.source));
  return parts;
}

function historyPanel(answer, name) {
  const kindOf = (e) => {
    const what = e.changes.length ? e.changes[0].what : "";
    if (what.startsWith("alias ")) return "aliases";
    if (what.startsWith("version ")) return "versions";
    if (what.startsWith("tag ")) return "tags";
    return "model";
  };
  const events = answer.history.map((e) => ({ ...e, kind: kindOf(e) }));
  const trail = trailTable(events, (position) => modelHref(name, { as_of: position }), "model", "model-history");
  if (answer.as_of) {  // what happened after the point shown is greyed
    trail.querySelectorAll("tbody tr").forEach((r) => r.classList.toggle("later", Number(r.dataset.position) > answer.as_of.position));
  }
  const count = el("span", { id: "history-count" }, `${events.length} shown`);
  const select = el("select", { id: "model-history-kind", "aria-label": "Kind of change", onchange: (e) => {
    const rows = trail.querySelectorAll("tbody tr");
    rows.forEach((r) => { r.hidden = Boolean(e.target.value) && r.dataset.kind !== e.target.value; });
    count.textContent = `${[...rows].filter((r) => !r.hidden).length} shown`;
  } }, el("option", { value: "" }, "every change"), ["aliases", "versions", "tags", "model"].map((k) => el("option", { value: k }, k)));
  return el("section", { class: "panel", id: "model-history-panel" }, el("h2", {}, "History"),
    el("p", { class: "muted" }, `Every change to this model, its versions and its aliases: ${events.length} events, oldest first.` +
      " A position links to the model as it was right after that event."),
    el("div", { class: "toolbar" }, el("label", {}, "Show ", select), count),
    el("div", { class: "scroll" }, trail));
}
