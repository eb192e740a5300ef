// The "as of" control a run page and a model page share: a slider over the stream's log
// positions and a time picker, both leading to the same page with ?as_of=<position or time>.
import { el, time } from "./dom.js";

// answer: { events: [[position, recorded_at], ...], as_of: null | { position, time } };
// at(params): the page's address with those params; noun: "run", "model".
export function timeControl(answer, at, noun) {
  const events = answer.events;
  const first = events.length ? events[0][0] : 0;
  const last = events.length ? events[events.length - 1][0] : 0;
  const current = answer.as_of ? answer.as_of.position : last;
  const label = el("output", { id: "as-of-label" });
  const describe = (position) => {
    const found = [...events].reverse().find(([p]) => p <= position);
    label.textContent = `position ${position}${found ? ` · ${time(found[1])}` : ""}`;
  };
  const slider = el("input", { type: "range", id: "as-of-slider", min: first, max: last, value: current, step: 1,
    "aria-label": "As of log position", oninput: (e) => describe(Number(e.target.value)) });
  const list = el("datalist", { id: "as-of-stops" }, events.map(([p]) => el("option", { value: p })));
  slider.setAttribute("list", "as-of-stops");
  describe(current);
  const when = el("input", { type: "datetime-local", step: 1, id: "as-of-time", "aria-label": "As of time" });
  const goTo = (value) => window.location.assign(at({ as_of: value }));
  return el("section", { class: `panel time-control${answer.as_of ? " set" : ""}`, id: "time-control" },
    el("h2", {}, "Time travel"),
    answer.as_of
      ? el("p", { class: "as-of-banner", id: "as-of-banner" }, `Showing this ${noun} as it was at log position ${answer.as_of.position}`,
        answer.as_of.time ? ` (${time(Date.parse(answer.as_of.time))})` : "", ". ",
        el("a", { href: at({}), id: "as-of-clear" }, "Back to now"))
      : el("p", { class: "muted" }, `${events.length} events, positions ${first} to ${last}. Move the slider or pick a time to see the ${noun} as it was then.`),
    el("div", { class: "toolbar" }, slider, list, label,
      el("button", { type: "button", id: "as-of-apply", onclick: () => goTo(slider.value) }, "Show as of position"),
      when, el("button", { type: "button", id: "as-of-time-apply", onclick: () => when.value && goTo(new Date(when.value).toISOString()) }, "Show as of time")));
}
