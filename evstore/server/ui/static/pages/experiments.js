import { fill, api, clear, el, experimentHref, href, setTitle, table, time, badge } from "../dom.js";

export async function experimentsPage(main) {
  const params = new URLSearchParams(window.location.search);
  const q = params.get("q") || "";
  const view = params.get("view") || "active";
  setTitle("Experiments");
  const found = await api("/experiments", { q, view });
  const search = el("form", { class: "toolbar", method: "get", action: "/experiments" },
    el("input", { type: "search", name: "q", value: q, placeholder: "Search experiments by name",
      "aria-label": "Search experiments" }),
    viewSelect(view),
    el("button", { type: "submit" }, "Search"));
  const rows = found.experiments.map((e) => el("tr", { class: e.lifecycle_stage },
    el("td", {}, el("a", { href: experimentHref(e.experiment_id) }, e.name),
      e.lifecycle_stage === "deleted" ? badge("deleted") : null),
    el("td", { class: "mono" }, e.experiment_id),
    el("td", { class: "num" }, e.runs),
    el("td", {}, time(e.creation_time)),
    el("td", {}, time(e.last_update_time))));
  fill(main, 
    el("h1", {}, "Experiments"), search,
    rows.length ? table(["Name", "ID", "Runs", "Created", "Last update"], rows, { class: "grid", id: "experiments" })
      : el("p", { class: "muted" }, q ? `No experiment name contains "${q}".` : "No experiments."),
  );
}

export function viewSelect(view) {
  return el("select", { name: "view", "aria-label": "Lifecycle" },
    ["active", "deleted", "all"].map((v) => el("option", { value: v, selected: v === view }, v)));
}
