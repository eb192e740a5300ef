// The registered models: latest version, aliases, tags, description, last update; filter, sort, pages.
import { fill, api, badge, el, href, modelHref, setTitle, time } from "../dom.js";

const ORDERS = [
  ["name ASC", "Name A → Z"], ["name DESC", "Name Z → A"],
  ["last_updated_timestamp DESC", "Last updated, newest first"], ["last_updated_timestamp ASC", "Last updated, oldest first"],
  ["creation_timestamp DESC", "Created, newest first"], ["creation_timestamp ASC", "Created, oldest first"],
];

function state() {
  const p = new URLSearchParams(window.location.search);
  return { filter: p.get("filter") || "", order: p.get("order") || "", page: Number(p.get("page") || 0), size: Number(p.get("size") || 50) };
}

function go(changes) {
  const next = { ...state(), ...changes };
  if (next.page === 0) next.page = "";
  if (next.size === 50) next.size = "";
  window.location.assign(href("/models", next));
}

export async function modelsPage(main) {
  const s = state();
  setTitle("Models");
  const answer = await api("/models", s);
  const form = el("form", { class: "filter", id: "model-filter-form", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    go({ filter: data.get("filter"), order: data.get("order"), page: 0 });
  } },
  el("input", { type: "search", name: "filter", value: s.filter, class: "mono", id: "model-filter",
    placeholder: "name LIKE '%churn%' and tags.team = 'vision'", "aria-label": "Filter models" }),
  el("select", { name: "order", "aria-label": "Sort models" },
    ORDERS.map(([value, label]) => el("option", { value, selected: value === (s.order || "name ASC") }, label))),
  el("button", { type: "submit" }, "Search"),
  s.filter ? el("a", { href: "/models" }, "Clear") : null);
  const body = [el("h1", {}, "Models"), form];
  if (answer.search_error) {
    body.push(el("div", { class: "error filter-error", role: "alert", id: "model-filter-error" },
      el("strong", {}, "The search was refused:"), el("pre", {}, answer.search_error)));
    fill(main, ...body);
    return;
  }
  const toolbar = el("div", { class: "toolbar" },
    el("span", { class: "muted", id: "model-count" }, `${answer.total} registered model${answer.total === 1 ? "" : "s"}`),
    el("span", { class: "spacer" }),
    el("button", { type: "button", id: "prev", disabled: s.page === 0, onclick: () => go({ page: s.page - 1 }) }, "‹ Prev"),
    el("span", { id: "page-number" }, `Page ${s.page + 1}`),
    el("button", { type: "button", id: "next", disabled: !answer.has_next, onclick: () => go({ page: s.page + 1 }) }, "Next ›"),
    el("select", { "aria-label": "Models per page", onchange: (e) => go({ size: Number(e.target.value), page: 0 }) },
      [25, 50, 100, 250, 500].map((n) => el("option", { value: n, selected: n === s.size }, `${n} / page`))));
  const rows = answer.models.map((m) => el("tr", { "data-model": m.name },
    el("td", { class: "name" }, el("a", { href: modelHref(m.name) }, m.name)),
    el("td", { class: "num" }, m.latest_version === null ? el("span", { class: "muted" }, "none")
      : el("a", { href: modelHref(m.name, { version: m.latest_version }) }, `v${m.latest_version}`)),
    el("td", {}, aliasList(m.aliases, m.name)),
    el("td", {}, tagList(m.tags)),
    el("td", { class: "description" }, m.description),
    el("td", { class: "when" }, time(m.last_updated_timestamp))));
  body.push(toolbar, answer.models.length
    ? el("div", { class: "scroll" }, el("table", { class: "grid", id: "models" },
      el("thead", {}, el("tr", {}, ["Name", "Latest version", "Aliases", "Tags", "Description", "Last updated"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)))
    : el("p", { class: "muted", id: "no-models" }, s.filter ? "No registered model matches." : "No registered models."));
  fill(main, ...body);
}

// "champion → v3" chips, each version linking to its row on the model page.
export function aliasList(aliases, name) {
  const names = Object.keys(aliases || {}).sort();
  if (!names.length) return el("span", { class: "muted" }, "—");
  return el("span", { class: "chips" }, names.map((a) => el("span", { class: "chip alias", "data-alias": a },
    `@${a} → `, el("a", { href: modelHref(name, { version: aliases[a] }) }, `v${aliases[a]}`))));
}

export function tagList(tags) {
  const keys = Object.keys(tags || {}).sort();
  if (!keys.length) return el("span", { class: "muted" }, "—");
  return el("span", { class: "chips" }, keys.map((k) => el("span", { class: "chip", "data-tag": k }, `${k}: ${tags[k]}`)));
}
