"""The UI as served by a real ``evstore server`` over HTTP: pages, its JSON, its gate.

The browser's side (clicking, drawing, escaping in the DOM) is tests/test_ui_browser.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import EVSTORE, ServerProcess, free_port
from ui_seed import HOSTILE, seed_in_child

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return seed_in_child(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def server(seeded: dict[str, Any]) -> Iterator[ServerProcess]:
    process = ServerProcess(seeded["directory"])
    yield process
    process.stop()


@pytest.fixture(scope="module")
def guarded(seeded: dict[str, Any]) -> Iterator[ServerProcess]:
    process = ServerProcess(seeded["directory"], token=TOKEN)
    yield process
    process.stop()


def get(server: ServerProcess, route: str, **params: Any) -> Any:
    response = httpx.get(server.url + route, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


# --- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/experiments", "/experiments/1", "/runs/abc", "/runs/abc/history",
                                  "/compare?runs=a,b", "/store", "/models", "/models/a%2Fb"])  # fmt: skip
def test_every_page_is_the_shell_under_a_strict_content_security_policy(server: ServerProcess, path: str) -> None:
    response = httpx.get(server.url + path, timeout=10)
    assert response.status_code == 200
    assert '<script type="module" src="/ui/static/app.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text  # no inline script anywhere in the shell


def test_every_asset_ships_in_the_package_and_none_loads_from_elsewhere(server: ServerProcess) -> None:
    static = ROOT / "evstore" / "server" / "ui" / "static"
    for path in static.rglob("*"):
        if path.is_file() and path.suffix in (".js", ".css", ".html"):
            text = path.read_text()
            assert "http://" not in text.replace("http://www.w3.org", "") or path.name.startswith("uPlot")
            assert "https://cdn" not in text
            assert httpx.get(f"{server.url}/ui/static/{path.relative_to(static).as_posix()}").status_code == 200
    assert (static / "vendor" / "uplot" / "LICENSE").read_text().startswith("The MIT License")


def test_the_ui_scripts_never_turn_strings_into_markup() -> None:
    static = ROOT / "evstore" / "server" / "ui" / "static"
    scripts = [p for p in static.rglob("*.js") if "vendor" not in p.parts]
    assert len(scripts) >= 8
    for script in scripts:
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "javascript:"):  # fmt: skip
            assert sink not in text, f"{script.name} uses {sink}"


# --- the JSON the pages draw --------------------------------------------------------------


def test_the_runs_table_pages_sorts_and_chooses_columns(server: ServerProcess, seeded: dict[str, Any]) -> None:
    many = get(server, f"/ui/api/experiments/{_experiment(server, 'many')}/runs", size=25,
               order="params.seed ASC", cols="params.seed,metrics.score")  # fmt: skip
    assert many["columns"] == ["params.seed", "metrics.score"] and many["has_next"]
    seeds = [row["cells"][0] for row in many["runs"]]
    assert seeds == sorted(seeds) and len(seeds) == 25
    last = get(server, f"/ui/api/experiments/{_experiment(server, 'many')}/runs", size=25, page=2)
    assert len(last["runs"]) == 10 and not last["has_next"]


def test_a_filter_with_or_and_parentheses_and_a_bad_one_pointing_at_the_mistake(
    server: ServerProcess, seeded: dict[str, Any]
) -> None:
    path = f"/ui/api/experiments/{seeded['experiment_id']}/runs"
    found = get(server, path, filter="(params.lr = '0.1' or params.lr = '0.01') and params.optimizer = 'adam'")
    assert sorted(r["run_name"] for r in found["runs"]) == ["lr=0.01", "lr=0.1"]
    bad = get(server, path, filter="metrics.loss < (")
    assert "search_error" in bad and "runs" not in bad
    assert bad["search_error"].splitlines()[-1].index("^") == len("  metrics.loss < ")


def test_deleted_runs_show_in_their_view_and_children_name_their_parent(
    server: ServerProcess, seeded: dict[str, Any]
) -> None:
    path = f"/ui/api/experiments/{seeded['experiment_id']}/runs"
    assert [r["run_id"] for r in get(server, path, view="deleted")["runs"]] == [seeded["deleted"]]
    active = get(server, path)["runs"]
    assert seeded["deleted"] not in [r["run_id"] for r in active]
    by_id = {r["run_id"]: r for r in get(server, path, view="all")["runs"]}
    assert by_id[seeded["parent"]]["children"] == 3
    assert {by_id[c]["parent_run_id"] for c in seeded["children"]} == {seeded["parent"]}


def test_column_keys_are_listed_on_demand_and_narrowed(server: ServerProcess, seeded: dict[str, Any]) -> None:
    path = f"/ui/api/experiments/{seeded['experiment_id']}/keys"
    assert get(server, path, kind="params")["keys"] == ["comment", "epochs", "lr", "optimizer"]
    assert get(server, path, kind="metrics", q="acc")["keys"] == ["accuracy"]
    narrowed = get(server, path, kind="params", limit=2)
    assert narrowed["keys"] == ["comment", "epochs"] and narrowed["total"] == 4


def test_a_run_as_of_a_position_is_the_run_as_it_was(server: ServerProcess, seeded: dict[str, Any]) -> None:
    now = get(server, f"/ui/api/runs/{seeded['edited']}")
    then = get(server, f"/ui/api/runs/{seeded['edited']}", as_of=seeded["edited_position"])
    assert now["run"]["run_name"] == "renamed" and then["run"]["run_name"] == "first-name"
    assert now["tags"]["stage"] == "final" and then["tags"]["stage"] == "draft"
    assert then["as_of"]["position"] == seeded["edited_position"] and now["as_of"] is None
    series = get(server, "/ui/api/series", runs=seeded["edited"], key="loss", as_of=seeded["edited_position"])
    assert series["series"][0]["y"] == [3.0]


def test_the_audit_trail_shows_before_and_after_and_import_provenance(
    server: ServerProcess, seeded: dict[str, Any]
) -> None:
    trail = get(server, f"/ui/api/runs/{seeded['edited']}/history")["events"]
    changes = [c for e in trail for c in e["changes"]]
    assert {"what": "tag stage", "before": "draft", "after": "final"} in changes
    assert {"what": "name", "before": "first-name", "after": "renamed"} in changes
    imported = get(server, f"/ui/api/runs/{seeded['imported_run']}/history")["events"]
    assert all(e["source"] for e in imported) and imported[0]["imported_at"]
    assert not any(str(seeded["directory"]) in e["source"] or e["source"].startswith("/") for e in imported)


def test_artifacts_preview_and_download(server: ServerProcess, seeded: dict[str, Any]) -> None:
    path = f"/ui/api/runs/{seeded['edited']}/artifact"
    assert get(server, path, path="notes.txt")["text"] == "first line\nsecond line\n"
    assert get(server, path, path="predictions.csv")["rows"] == [["1", "cat", "0.9"], ["2", "dog", "0.8"]]
    assert json.loads(get(server, path, path="summary.json")["text"]) == {"best": 0.91, "epochs": [1, 2, 3]}
    assert get(server, path, path="config.yaml")["kind"] == "yaml"
    assert get(server, path, path="plot.png")["kind"] == "image"
    download = httpx.get(server.url + path, params={"path": "notes.txt", "as": "download"})
    assert download.content == b"first line\nsecond line\n"
    assert download.headers["content-disposition"].startswith("attachment")
    image = httpx.get(server.url + path, params={"path": "plot.png", "as": "image"})
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    listing = get(server, f"/ui/api/runs/{seeded['edited']}/artifacts", path="model")
    assert listing["files"] == [{"path": "model/MLmodel", "is_dir": False, "size": 31}]


def test_hostile_strings_come_back_as_data_and_html_artifacts_never_inline(
    server: ServerProcess, seeded: dict[str, Any]
) -> None:
    run = get(server, f"/ui/api/runs/{seeded['hostile']}")
    assert run["run"]["run_name"] == HOSTILE and run["params"]["comment"] == HOSTILE
    served = httpx.get(server.url + f"/ui/api/runs/{seeded['hostile']}/artifact",
                       params={"path": HOSTILE, "as": "download"})  # fmt: skip
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-security-policy"].startswith("sandbox")


def test_compare_marks_the_params_that_differ(server: ServerProcess, seeded: dict[str, Any]) -> None:
    found = get(server, "/ui/api/compare", runs=",".join(seeded["children"]))
    assert found["differing"] == ["lr"] and found["metric_keys"] == ["accuracy", "loss"]
    series = get(server, "/ui/api/series", runs=",".join(seeded["children"]), key="loss", points=40)
    assert [len(s["x"]) <= 44 and s["total"] == 300 for s in series["series"]] == [True] * 3


def test_the_store_page_reports_verify_the_head_and_the_read_models(server: ServerProcess) -> None:
    health = get(server, "/ui/api/store")
    assert health["verify"]["ok"] and health["info"]["head_position"] == health["verify"]["head_position"]
    assert health["info"]["store"] == "server.db" and health["unknown"] == {} and health["redactions"] == {}
    assert {m["name"] for m in health["read_models"]} >= {"runs", "metrics", "params"}


def test_no_ui_answer_names_a_path_on_the_server(server: ServerProcess, seeded: dict[str, Any]) -> None:
    directory = str(seeded["directory"])
    for path in [f"/ui/api/runs/{seeded['edited']}", f"/ui/api/runs/{seeded['imported_run']}",
                 f"/ui/api/experiments/{seeded['experiment_id']}/runs", "/ui/api/store",
                 f"/ui/api/runs/{seeded['imported_run']}/history", "/ui/api/runs/nope",
                 f"/ui/api/compare?runs={seeded['edited']},{seeded['imported_run']}"]:  # fmt: skip
        text = httpx.get(server.url + path).text
        assert directory not in text and os.path.realpath(directory) not in text, path


def test_bad_parameters_are_one_clear_error(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/ui/api/series", params={"runs": "a", "key": "k", "x": "weird"})
    assert response.status_code == 400 and "x must be one of step, time, relative" in response.json()["message"]
    assert httpx.get(server.url + "/ui/api/runs/nope").status_code == 404


# --- the gate ------------------------------------------------------------------------------


def test_with_a_token_pages_ask_to_sign_in_and_the_cookie_is_httponly_strict(guarded: ServerProcess) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        page = browser.get("/experiments/1?view=all")
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/signin?next=")
        assert browser.get("/ui/api/experiments").status_code == 401
        wrong = browser.post("/ui/signin", data={"token": "nope", "next": "/experiments"})
        assert wrong.status_code == 401 and "evstore_session" not in wrong.headers.get("set-cookie", "")
        signed = browser.post("/ui/signin", data={"token": TOKEN, "next": "/experiments/1?view=all"})
        assert signed.status_code == 303 and signed.headers["location"] == "/experiments/1?view=all"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        assert browser.get("/ui/api/experiments").status_code == 200
        assert browser.get("/experiments").status_code == 200
        # the cookie is the UI's: the MLflow API still wants the bearer token
        assert browser.get("/api/2.0/mlflow/experiments/search").status_code == 401
        assert browser.post("/api/2.0/mlflow/experiments/create", json={"name": "x"}).status_code == 401


def test_sign_in_never_sends_a_browser_to_another_site(guarded: ServerProcess) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        signed = httpx.post(guarded.url + "/ui/signin", data={"token": TOKEN, "next": target})
        assert signed.headers["location"] == "/experiments"


def test_the_ui_answers_only_its_own_host_names(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/experiments", headers={"host": "evil.example"})
    assert response.status_code == 403


def test_evstore_ui_serves_on_loopback_and_prints_the_address(seeded: dict[str, Any]) -> None:
    port = free_port()
    env = dict(os.environ, EVSTORE_ARTIFACT_ROOT=str(seeded["directory"] / "artifacts"))
    process = subprocess.Popen([EVSTORE, "ui", "--store", str(seeded["directory"] / "server.db"),
                                "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/experiments", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("evstore ui did not answer at the address it printed within 30 s")
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def _experiment(server: ServerProcess, name: str) -> str:
    found = get(server, "/ui/api/experiments")["experiments"]
    return next(e["experiment_id"] for e in found if e["name"] == name)
