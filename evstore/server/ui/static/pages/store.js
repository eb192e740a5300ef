// The store's health: verify, the head, the read models, unknown events, redactions.
import { fill, api, clear, el, panel, setTitle, table } from "../dom.js";

export async function storePage(main) {
  setTitle("Store");
  const s = await api("/store");
  const v = s.verify;
  const kv = (rows, id) => el("table", { class: "kv", id }, el("tbody", {}, rows.map(([k, val]) => el("tr", {}, el("th", {}, k), el("td", {}, val)))));
  const counted = (entries, empty, id) => (entries.length
    ? table(["Event type", "Count"], entries.map(([k, n]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, n))), { class: "grid", id })
    : el("p", { class: "muted", id }, empty));
  fill(main, 
    el("h1", {}, "Store: ", s.info.store),
    panel("Verify", el("p", { class: v.ok ? "ok" : "error", id: "verify" }, v.ok
      ? `✓ The hash chain holds: ${v.events} events, every hash recomputed and every event decoded.`
      : `✗ Verification failed at position ${v.first_bad_position}: ${v.reason}`)),
    panel("Head", kv([["Position", el("span", { id: "head-position" }, s.info.head_position)],
      ["Hash", el("span", { class: "mono", id: "head-hash" }, s.info.head_hash)],
      ["Events", s.info.events], ["Storage format", s.info.storage_format || ""], ["evstore", s.info.evstore_version]], "head")),
    panel("Read models", s.read_models.length
      ? table(["Read model", "Checkpoint", "Behind the head"], s.read_models.map((m) => el("tr", { class: m.behind ? "behind" : null },
        el("td", {}, m.name), el("td", { class: "num" }, m.checkpoint), el("td", { class: "num" }, m.behind))), { class: "grid", id: "read-models" })
      : el("p", { class: "muted" }, "No read model was built yet."),
    el("p", { class: "muted" }, "A model a few events behind catches up on the next read; one far behind after an upgrade wants `evstore rebuild`.")),
    panel("Unknown events", counted(Object.entries(s.unknown), "None: this evstore can read every event in the log.", "unknown")),
    panel("Redactions", counted(Object.entries(s.redactions), "None recorded.", "redactions")),
    panel("Events by type", counted(Object.entries(s.events_by_type), "The log is empty.", "by-type")),
  );
}
