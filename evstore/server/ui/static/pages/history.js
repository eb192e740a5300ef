// A run's audit trail: every event, who and when, where from, and what it changed.
import { fill, api, el, href, runHref, setTitle, table, time } from "../dom.js";

export async function historyPage(main, runId) {
  const kind = new URLSearchParams(window.location.search).get("kind") || "";
  const answer = await api(`/runs/${encodeURIComponent(runId)}/history`);
  setTitle("Audit trail", answer.run_name);
  const kinds = [...new Set(answer.events.map((e) => e.kind))].sort();
  const select = el("select", { id: "kind", "aria-label": "Kind of change", onchange: (e) =>
    window.location.assign(href(`/runs/${encodeURIComponent(runId)}/history`, { kind: e.target.value })) },
  el("option", { value: "" }, "every kind"), kinds.map((k) => el("option", { value: k, selected: k === kind }, k)));
  const shown = answer.events.filter((e) => !kind || e.kind === kind);
  fill(main, 
    el("p", { class: "crumbs" }, el("a", { href: runHref(runId) }, answer.run_name), " / audit trail"),
    el("h1", {}, "Audit trail: ", answer.run_name),
    el("p", { class: "muted" }, `${answer.events.length} events, oldest first. A position links to the run as it was right after that event.`),
    el("div", { class: "toolbar" }, el("label", {}, "Show ", select), el("span", { id: "history-count" }, `${shown.length} shown`)),
    trailTable(shown, (position) => runHref(runId, { as_of: position }), "run", "history"),
  );
}

// Audit rows (position, when, who, where from, event, before → after), each position
// linking to what the thing looked like right after it (at(position)).
export function trailTable(events, at, noun, id) {
  const rows = events.map((e) => el("tr", { "data-kind": e.kind, "data-position": e.position },
    el("td", { class: "num" }, el("a", { href: at(e.position), title: `See the ${noun} as it was after this event` }, e.position)),
    el("td", {}, time(e.recorded_at),
      e.occurred_at !== e.recorded_at ? el("div", { class: "muted" }, `happened ${time(e.occurred_at)}`) : null),
    el("td", {}, e.principal || e.user || el("span", { class: "muted" }, "not recorded")),
    el("td", {}, e.source ? el("span", { class: "imported" }, "imported from ", el("span", { class: "mono" }, e.source),
      e.imported_at ? ` on ${time(e.imported_at)}` : "") : el("span", { class: "muted" }, "logged here")),
    el("td", {}, e.type),
    el("td", {}, el("ul", { class: "changes" }, e.changes.map((c) => el("li", {},
      el("span", { class: "what" }, c.what), c.before === null && c.after === null ? null : [": ",
        el("span", { class: "before" }, c.before === null ? "∅" : c.before), " → ",
        el("span", { class: "after" }, c.after === null ? "∅ (deleted)" : c.after)])),
    e.more ? el("li", { class: "muted" }, `… and ${e.more} more`) : null))));
  return table(["Position", "When", "Who", "Where from", "Event", "What changed (before → after)"], rows, { class: "grid", id });
}
