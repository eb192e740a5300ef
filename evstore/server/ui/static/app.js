// The router: one shell, one page module per address.
import { errorBox, fill, modelHref } from "./dom.js";
import { experimentsPage } from "./pages/experiments.js";
import { runsPage } from "./pages/runs.js";
import { runPage } from "./pages/run.js";
import { historyPage } from "./pages/history.js";
import { comparePage } from "./pages/compare.js";
import { storePage } from "./pages/store.js";
import { modelsPage } from "./pages/models.js";
import { modelPage } from "./pages/model.js";

const ROUTES = [
  [/^\/experiments\/?$/, experimentsPage],
  [/^\/experiments\/([^/]+)\/?$/, runsPage],
  [/^\/runs\/([^/]+)\/history\/?$/, historyPage],
  [/^\/runs\/([^/]+)\/?$/, runPage],
  [/^\/compare\/?$/, comparePage],
  [/^\/store\/?$/, storePage],
  [/^\/models\/?$/, modelsPage],
  [/^\/models\/(.+?)\/?$/, modelPage],
];

// MLflow's links put the page in the hash: /#/experiments/1/runs/<id>, /#/compare-runs?runs=[...],
// /#/models/<name>/versions/<n>.
export function fromMlflowHash(hash) {
  const raw = hash.replace(/^#/, "");
  // a model's name may hold a slash, encoded: its segments are decoded one by one
  let m = raw.match(/^\/models\/([^/?]+)(?:\/versions\/([^/?]+))?/);
  if (m) return modelHref(decodeURIComponent(m[1]), { version: m[2] && decodeURIComponent(m[2]) });
  if (/^\/models\/?$/.test(raw)) return "/models";
  const path = decodeURIComponent(raw);
  m = path.match(/^\/experiments\/([^/?]+)\/runs\/([^/?]+)/);
  if (m) return `/runs/${encodeURIComponent(m[2])}`;
  m = path.match(/^\/experiments\/([^/?]+)/);
  if (m) return `/experiments/${encodeURIComponent(m[1])}`;
  m = path.match(/^\/compare-runs\?(.*)$/);
  if (m) {
    try {
      const runs = JSON.parse(new URLSearchParams(m[1]).get("runs") || "[]");
      return `/compare?runs=${runs.map(encodeURIComponent).join(",")}`;
    } catch (e) {
      return "/experiments";
    }
  }
  return "/experiments";
}

async function start() {
  const main = document.getElementById("main");
  const path = window.location.pathname;
  if (path === "/") {
    window.location.replace(fromMlflowHash(window.location.hash));
    return;
  }
  for (const [pattern, page] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    document.querySelectorAll("header nav a").forEach((a) => {
      if (path.startsWith(a.getAttribute("href"))) a.classList.add("here");
    });
    try {
      await page(main, ...match.slice(1).map(decodeURIComponent));
    } catch (error) {
      fill(main, errorBox(error));
    }
    main.dataset.ready = "true";
    return;
  }
  fill(main, errorBox(new Error(`No page at ${path}`)));
  main.dataset.ready = "true";
}

start();
