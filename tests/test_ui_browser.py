"""The UI in a real browser: Debian's Chromium driven by Playwright, against a real server.

One browser per module; each test opens its own page, and fails on any console error,
page error or dialog (an ``alert`` would mean a hostile name ran as script). Outside CI
the module skips with one reason when no Chromium is installed; under CI=true a missing
browser is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from servers import ServerProcess
from ui_seed import HOSTILE, HOSTILE_MODEL, seed_in_child

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
TOKEN = "browser-token"
WAIT_MS = 15_000

if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but no Chromium at /usr/bin/chromium: .ci/run installs it", pytrace=False)
    pytest.skip("no Chromium found (apt-get install chromium) for the browser tests", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return seed_in_child(tmp_path_factory.mktemp("ui-browser"))


@pytest.fixture(scope="module")
def server(seeded: dict[str, Any]) -> Iterator[ServerProcess]:
    process = ServerProcess(seeded["directory"])
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Watched:
    """A page whose console errors, page errors and dialogs are collected."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.set_default_timeout(WAIT_MS)

    def open(self, path: str) -> Any:
        self.page.goto(self.base + path)
        self.page.wait_for_selector("main[data-ready]")
        return self.page


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    watched = Watched(context.new_page(), server.url)
    yield watched
    context.close()
    assert watched.problems == [], "\n".join(watched.problems)


def row_names(page: Any) -> list[str]:
    return page.locator("#runs tbody tr td.name > a:first-of-type").all_inner_texts()


# --- experiments and the runs table ----------------------------------------------------------


def test_experiments_are_listed_and_searchable(page: Watched) -> None:
    p = page.open("/experiments")
    assert {"vision", "many", "Default"} <= set(p.locator("#experiments tbody td a").all_inner_texts())
    p.fill("input[name=q]", "man")
    p.click("form.toolbar button[type=submit]")
    p.wait_for_url(re.compile(r"q=man"))
    p.wait_for_selector("main[data-ready]")
    assert p.locator("#experiments tbody td a").all_inner_texts() == ["many"]


def test_nested_runs_sit_under_their_parent_and_deleted_ones_have_their_view(
    page: Watched, seeded: dict[str, Any]
) -> None:
    p = page.open(f"/experiments/{seeded['experiment_id']}")
    names = row_names(p)
    assert "abandoned" not in names
    at = names.index("sweep")
    assert sorted(names[at + 1 : at + 4]) == ["lr=0.01", "lr=0.03", "lr=0.1"]
    depths = p.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.depth)")
    assert depths[at + 1 : at + 4] == ["1", "1", "1"] and depths[at] == "0"
    p.select_option("select[name=view]", "deleted")
    p.click("#filter-form button[type=submit]")
    p.wait_for_url(re.compile(r"view=deleted"))
    p.wait_for_selector("#runs")
    assert row_names(p) == ["abandoned"]


def test_filter_with_or_and_parentheses_and_a_bad_filter_points_at_the_mistake(
    page: Watched, seeded: dict[str, Any]
) -> None:
    p = page.open(f"/experiments/{seeded['experiment_id']}")
    p.fill("#filter", "(params.lr = '0.1' or params.lr = '0.01') and params.optimizer = 'adam'")
    p.press("#filter", "Enter")
    p.wait_for_url(re.compile(r"filter="))
    p.wait_for_selector("#runs")
    assert sorted(row_names(p)) == ["lr=0.01", "lr=0.1"]
    p.fill("#filter", "metrics.loss < (")
    p.press("#filter", "Enter")
    error = p.wait_for_selector("#filter-error")
    lines = error.inner_text().splitlines()
    assert "metrics.loss < (" in lines[-2] and lines[-1].strip() == "^"
    assert lines[-1].index("^") == lines[-2].index("(")


def test_sort_by_a_param_column_and_page_through(page: Watched, seeded: dict[str, Any]) -> None:
    experiment = _experiment_id(page, "many")
    p = page.open(f"/experiments/{experiment}?size=25&cols=params.seed,metrics.score")
    p.click("th[data-key='params.seed'] button")
    p.wait_for_url(re.compile(r"order=params.seed"))
    p.wait_for_selector("#runs")
    first = _column(p, 1)
    assert first == sorted(first) and len(first) == 25
    p.click("th[data-key='params.seed'] button")
    p.wait_for_url(re.compile(r"DESC"))
    p.wait_for_selector("#runs")
    descending = _column(p, 1)
    assert descending == sorted(first + descending, reverse=True)[:25]
    p.click("#next")
    p.wait_for_url(re.compile(r"page=1"))
    p.wait_for_selector("#runs")
    assert p.inner_text("#page-number") == "Page 2" and set(_column(p, 1)).isdisjoint(descending)


def test_choose_columns_from_the_keys(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/experiments/{seeded['experiment_id']}")
    p.click("#columns-button")
    p.click("#chooser button[data-kind=tags]")
    p.fill("#column-search", "tea")
    p.wait_for_selector("#column-keys input[value='tags.team']")
    p.check("#column-keys input[value='tags.team']")
    p.click("#apply-columns")
    p.wait_for_url(re.compile(r"cols="))
    p.wait_for_selector("#runs")
    assert p.locator("th[data-key='tags.team']").count() == 1
    sweep = p.locator("#runs tbody tr", has=p.locator("td.name a", has_text="sweep")).first
    assert "vision" in sweep.inner_text()


def test_select_runs_and_compare_them(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/experiments/{seeded['experiment_id']}")
    for run_id in seeded["children"][:2]:
        p.check(f"input[type=checkbox][data-run='{run_id}']")
    assert p.inner_text("#compare") == "Compare selected (2)"
    p.click("#compare")
    p.wait_for_url(re.compile(r"/compare\?runs="))
    p.wait_for_selector("main[data-ready]")
    assert p.locator("#compare-params tr.differs th").all_inner_texts() == ["≠ lr"]
    for key in ("accuracy", "loss"):
        chart = p.locator(f"figure.chart[data-key='{key}']")
        chart.scroll_into_view_if_needed()
        p.wait_for_selector(f"figure.chart[data-key='{key}'][data-drawn=true]")
        assert chart.locator(".u-legend .u-series").count() == 3  # x and two runs


def test_compare_of_many_runs_names_the_run_under_the_cursor(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/compare?runs={','.join(seeded['many'])}")
    chart = p.locator("figure.chart[data-key='score']")
    chart.scroll_into_view_if_needed()
    p.wait_for_selector("figure.chart[data-key='score'][data-drawn=true]")
    assert chart.locator(".u-legend").is_hidden()  # 60 legend rows would outgrow the chart
    box = chart.locator(".u-over").bounding_box()
    p.mouse.move(box["x"] + 3, box["y"] + 3)
    p.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    readout = chart.locator(".readout")
    p.wait_for_function("el => el.textContent.includes('trial-')", arg=readout.element_handle())
    assert re.fullmatch(r"0: trial-\d\d = [0-9.]+", readout.inner_text())


# --- one run --------------------------------------------------------------------------------


def test_run_charts_draw_switch_axes_and_show_hover_values(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/runs/{seeded['children'][0]}")
    chart = p.wait_for_selector("figure.chart[data-key='loss'][data-drawn=true]")
    assert chart.get_attribute("data-points") == "300"
    over = p.locator("figure.chart[data-key='loss'] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    p.mouse.move(box["x"] + 5, box["y"] + 5)
    p.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    legend = p.locator("figure.chart[data-key='loss'] .u-legend .u-series").nth(1).locator(".u-value")
    p.wait_for_function("el => el.textContent !== '—'", arg=legend.element_handle())
    assert re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", legend.inner_text())
    for control, value in (("#chart-x", "time"), ("#chart-x", "relative")):
        p.select_option(control, value)
        p.wait_for_selector("figure.chart[data-key='loss'][data-drawn=true] .u-over")
    p.check("#chart-log")
    p.wait_for_selector("figure.chart[data-key='loss'][data-drawn=true] .u-over")
    p.fill("#chart-smoothing", "0.9")
    p.dispatch_event("#chart-smoothing", "change")
    p.wait_for_selector("figure.chart[data-key='loss'][data-drawn=true] canvas")


def test_the_time_control_shows_the_run_as_it_was(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/runs/{seeded['edited']}")
    assert p.inner_text("h1").startswith("renamed")
    p.locator("#as-of-slider").evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", seeded["edited_position"]
    )
    assert p.inner_text("#as-of-label").startswith(f"position {seeded['edited_position']}")
    p.click("#as-of-apply")
    p.wait_for_url(re.compile(rf"as_of={seeded['edited_position']}"))
    p.wait_for_selector("#as-of-banner")
    assert p.inner_text("h1").startswith("first-name")
    assert p.inner_text("#tags tr[data-key=stage] td") == "draft"
    panels = p.locator("section.panel:not(.time-control)")
    assert panels.count() >= 6 and panels.locator(".as-of-mark").count() == panels.count()
    p.wait_for_selector("figure.chart[data-key='loss'][data-drawn=true]")
    assert p.get_attribute("figure.chart[data-key='loss']", "data-total") == "1"
    p.click("#as-of-clear")
    p.wait_for_selector("main[data-ready]")
    assert p.inner_text("h1").startswith("renamed") and p.locator(".as-of-mark").count() == 0


def test_artifacts_preview_and_download(page: Watched, seeded: dict[str, Any], tmp_path: Path) -> None:
    p = page.open(f"/runs/{seeded['edited']}")
    p.click("#artifact-tree button.file[data-path='notes.txt']")
    assert p.wait_for_selector("#artifact-text").inner_text() == "first line\nsecond line\n"
    p.click("#artifact-tree button.file[data-path='predictions.csv']")
    p.wait_for_selector("#artifact-table")
    assert p.locator("#artifact-table tbody tr").count() == 2
    p.click("#artifact-tree button.file[data-path='summary.json']")
    p.wait_for_selector("#artifact-text.json")
    assert '"best": 0.91' in p.inner_text("#artifact-text")
    p.click("#artifact-tree button.file[data-path='plot.png']")
    image = p.wait_for_selector("img.artifact-image")
    p.wait_for_function("img => img.complete && img.naturalWidth === 32", arg=image)
    p.click("#artifact-tree button.dir[data-path='model']")
    p.click("#artifact-tree button.file[data-path='model/MLmodel']")
    p.wait_for_selector("#artifact-text.yaml")
    with p.expect_download() as download:
        p.click("#artifact-download")
    saved = tmp_path / "MLmodel"
    download.value.save_as(saved)
    assert saved.read_text() == "flavors:\n  python_function: {}\n"


def test_the_audit_trail_filters_by_kind_and_shows_before_and_after(
    page: Watched, seeded: dict[str, Any]
) -> None:
    p = page.open(f"/runs/{seeded['edited']}")
    p.click("#history-link")
    p.wait_for_url(re.compile(r"/history$"))
    p.wait_for_selector("#history")
    p.select_option("#kind", "tags")
    p.wait_for_url(re.compile(r"kind=tags"))
    p.wait_for_selector("#history")
    kinds = p.locator("#history tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert set(kinds) == {"tags"}
    assert "tag stage: draft → final" in p.inner_text("#history")


def test_imported_runs_show_where_they_came_from(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/experiments/{seeded['imported_experiment']}?view=all")
    assert p.locator("#runs tbody tr").count() >= 1
    p = page.open(f"/runs/{seeded['imported_run']}")
    assert p.locator("#overview").inner_text().count(seeded["imported_run"]) == 1
    p = page.open(f"/runs/{seeded['imported_run']}/history")
    assert p.locator("#history .imported").count() == p.locator("#history tbody tr").count() > 0
    assert "imported from" in p.inner_text("#history .imported >> nth=0")


def test_a_hostile_name_param_tag_and_artifact_are_shown_as_text(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/experiments/{seeded['experiment_id']}?cols=params.comment,tags.note")
    assert HOSTILE in row_names(p)
    assert p.locator("#runs").inner_text().count(HOSTILE) == 3
    assert p.locator("img[src='x']").count() == 0
    p = page.open(f"/runs/{seeded['hostile']}")
    p.click(f"#artifact-tree button.file[data-path='{HOSTILE}']")
    assert p.wait_for_selector("#artifact-text").inner_text() == HOSTILE
    text = p.inner_text("main")
    assert text.count(HOSTILE) >= 5  # title, param, tag, artifact name, its content...
    assert p.locator("img[src='x']").count() == 0
    p.wait_for_selector("figure.chart[data-drawn=true]")
    p.wait_for_timeout(200)  # a dialog, were one to open, is collected by the fixture


# --- models ---------------------------------------------------------------------------------


def test_register_a_model_move_its_alias_and_see_both_positions(
    page: Watched, server: ServerProcess, seeded: dict[str, Any]
) -> None:
    # Register a model with two versions of a run, point champion at 1, then move it to 2,
    # through MLflow's REST API as the mlflow client sends it.
    http = httpx.Client(base_url=f"{server.url}/api/2.0/mlflow/", timeout=30)

    def call(path: str, body: dict[str, Any]) -> None:
        response = http.post(path, json=body)
        assert response.status_code == 200, response.text

    name, run_id = "churn", seeded["edited"]
    call("registered-models/create", {"name": name, "description": "predicts churn"})
    for _ in range(2):
        call("model-versions/create", {"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id})
    call("registered-models/alias", {"name": name, "alias": "champion", "version": "1"})
    call("registered-models/alias", {"name": name, "alias": "champion", "version": "2"})
    http.close()
    # The list shows where champion points now; the model page's history shows both moves.
    p = page.open("/models")
    assert p.inner_text("#models tr[data-model='churn'] .alias") == "@champion → v2"
    p.click("#models tr[data-model='churn'] td.name a")
    p.wait_for_url(re.compile(r"/models/churn$"))
    p.wait_for_selector("#model-history")
    assert p.inner_text("#aliases tr[data-alias=champion] td") == "version 2"
    trail = p.inner_text("#model-history")
    assert "alias champion: ∅ → version 1" in trail and "alias champion: version 1 → version 2" in trail
    p.select_option("#model-history-kind", "aliases")
    assert p.inner_text("#history-count") == "2 shown"
    # The first move's position leads to the model as it was then: champion at version 1.
    first = p.locator("#model-history tbody tr", has_text="∅ → version 1").first
    position = first.get_attribute("data-position")
    first.locator("td a").first.click()
    p.wait_for_url(re.compile(rf"as_of={position}$"))
    p.wait_for_selector("#as-of-banner")
    assert p.inner_text("#as-of-aliases li[data-alias=champion]").startswith("@champion pointed to version 1 on ")
    assert p.inner_text("#aliases tr[data-alias=champion] td") == "version 1"
    assert p.locator("#model-history tbody tr.later").count() >= 1  # the second move, greyed
    p.click("#as-of-clear")
    p.wait_for_url(re.compile(r"/models/churn$"))
    p.wait_for_selector("main[data-ready] #model-history")
    assert p.inner_text("#aliases tr[data-alias=champion] td") == "version 2"
    # The run names the versions made from it, linking back to the model.
    p = page.open(f"/runs/{run_id}")
    p.wait_for_selector("#run-versions")
    p.click("#run-versions a >> text='churn v2'")
    p.wait_for_url(re.compile(r"/models/churn\?version=2$"))
    p.wait_for_selector("#versions tr.focus[data-version='2']")


def test_a_hostile_model_name_and_description_are_shown_as_text(page: Watched) -> None:
    p = page.open("/models")
    row = p.locator("#models tbody tr").filter(has_text="alert('model')")
    assert row.locator("td.name").inner_text() == HOSTILE_MODEL
    assert row.locator("td.description").inner_text() == HOSTILE
    row.locator("td.name a").click()
    p.wait_for_selector("main[data-ready] #versions")
    assert p.inner_text("h1") == HOSTILE_MODEL
    assert p.inner_text("#model-overview").count(HOSTILE) == 1
    assert p.inner_text("#model-tags td") == HOSTILE and HOSTILE in p.inner_text("#versions")
    assert p.locator("main script").count() == 0 and p.locator("img[src='x']").count() == 0
    p.wait_for_timeout(200)  # a dialog, were one to open, is collected by the fixture


def test_the_store_page_shows_verify_and_the_head(page: Watched) -> None:
    p = page.open("/store")
    assert p.inner_text("#verify").startswith("✓ The hash chain holds")
    assert int(p.inner_text("#head-position")) > 0 and len(p.inner_text("#head-hash")) == 64
    assert p.locator("#read-models tbody tr").count() >= 5


def test_mlflow_links_land_on_the_same_pages(page: Watched, seeded: dict[str, Any]) -> None:
    p = page.open(f"/#/experiments/{seeded['experiment_id']}/runs/{seeded['edited']}")
    p.wait_for_url(re.compile(rf"/runs/{seeded['edited']}$"))
    p.wait_for_selector("main[data-ready]")
    assert p.inner_text("h1").startswith("renamed")
    p = page.open(f"/#/experiments/{seeded['experiment_id']}")
    p.wait_for_url(re.compile(rf"/experiments/{seeded['experiment_id']}$"))
    p = page.open("/#/models/" + quote(HOSTILE_MODEL, safe="") + "/versions/1")
    p.wait_for_url(re.compile(r"/models/[^/]+\?version=1$"))
    p.wait_for_selector("main[data-ready] #versions tr.focus[data-version='1']")
    assert p.inner_text("h1") == HOSTILE_MODEL


def test_sign_in_once_with_the_token(browser: Any, seeded: dict[str, Any]) -> None:
    guarded = ServerProcess(seeded["directory"], token=TOKEN)
    context = browser.new_context()
    try:
        watched = Watched(context.new_page(), guarded.url)
        p = watched.page
        p.goto(f"{guarded.url}/runs/{seeded['edited']}")
        p.wait_for_url(re.compile(r"/ui/signin"))
        p.fill("input[name=token]", TOKEN)
        p.click("button[type=submit]")
        p.wait_for_url(re.compile(rf"/runs/{seeded['edited']}$"))
        p.wait_for_selector("main[data-ready]")
        assert p.inner_text("h1").startswith("renamed")
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != TOKEN
        assert p.evaluate("document.cookie") == ""
        assert watched.problems == []
    finally:
        context.close()
        guarded.stop()


def _column(p: Any, index: int) -> list[str]:
    return p.locator(f"#runs tbody tr td:nth-child({6 + index})").all_inner_texts()


def _experiment_id(page: Watched, name: str) -> str:
    p = page.open("/experiments")
    href = p.locator("#experiments tbody a", has_text=re.compile(rf"^{name}$")).get_attribute("href")
    return str(href).rsplit("/", 1)[1]
