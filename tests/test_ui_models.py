"""The UI's registry pages as served by ``evstore server``: the models list, a registered
model with its versions, history and "as of", a run's datasets and models, permissions.

The server runs on a thread of this process (``ThreadServer``); the registry is written
through MLflow's REST endpoints as the ``mlflow`` client sends them, by an authenticated
user, so the history names who did what. The browser's side is tests/test_ui_browser.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import close_cached_stores
from servers import ThreadServer
from starlette.requests import Request

from evstore import Client, users
from evstore.identity import acting_as
from evstore.model_history import model_changes
from evstore.server import permissions
from evstore.server._http import HTTPError
from evstore.server.permissions import Guard
from evstore.server.ui import models
from evstore.tracking.service import TrackingService
from evstore.users import DELETE, Directory

API = "/api/2.0/mlflow"
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_TEXT = "<img src=x onerror=alert(1)> & </td>"


class Registry:
    """The server, the ids and the log positions the tests look for."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        store = directory / "server.db"
        self.admin = self.add(store, "admin", admin=True)
        self.reader = self.add(store, "reader")
        self.server = ThreadServer(directory)
        self.http = httpx.Client(base_url=self.server.url, headers=self.admin, timeout=30)  # one pool: fast
        self.client = Client(str(store))  # a training script beside the server
        self.positions: dict[str, int] = {}

    @staticmethod
    def add(store: Path, name: str, admin: bool = False) -> dict[str, str]:
        from evstore.projection import attach
        from evstore.stores import open_log

        log = attach(open_log(store)).store
        try:
            return {"Authorization": f"Bearer {users.add_user(log, name, admin=admin)}"}
        finally:
            log.close()

    def call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        response = self.http.request(method, API + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def ui(self, path: str, **params: Any) -> Any:
        response = self.http.get("/ui/api" + path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def service(self) -> TrackingService:
        """The tracking service of the server's store (the same store object, in this process)."""
        return TrackingService(str(self.directory / "server.db"))

    def head(self) -> int:
        return int(self.client.store.head_position())


def _next_millisecond(after_ms: int) -> None:
    """Wait until the clock has passed ``after_ms``, so the next event is recorded later."""
    deadline = time.monotonic() + 5
    while time.time() * 1000 <= after_ms + 1:
        if time.monotonic() > deadline:
            pytest.fail("the clock did not move past one millisecond within 5 s")
        time.sleep(0.001)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("ui-models"))
    client = reg.client
    # A training run: a dataset in, a logged model out.
    experiment = client.create_experiment("churn-training")
    run = client.create_run(experiment, run_name="trainer").info.run_id
    reg.positions["run_started"] = reg.head()
    client.log_inputs(run, datasets=[{
        "dataset": {"name": "customers", "digest": "d41d8cd9", "source_type": "local",
                    "source": str(reg.directory / "customers.csv")},
        "tags": [{"key": "mlflow.data.context", "value": "training"}]}])  # fmt: skip
    logged = client.create_logged_model(experiment, name="clf", source_run_id=run)
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run, [(logged.model_id, 3)])
    reg.run_id, reg.model_id = run, logged.model_id
    reg.positions["before_model"] = reg.head()
    # The registry, through MLflow's REST API as the admin user.
    reg.call("POST", "/registered-models/create", {"name": "churn", "description": "predicts churn",
                                                   "tags": [{"key": "team", "value": "growth"}]})  # fmt: skip
    reg.call("POST", "/model-versions/create", {"name": "churn", "source": f"runs:/{run}/model", "run_id": run})
    reg.call("POST", "/model-versions/create", {"name": "churn", "source": f"models:/{logged.model_id}",
                                               "model_id": logged.model_id})
    reg.call("POST", "/registered-models/alias", {"name": "churn", "alias": "champion", "version": "1"})
    reg.positions["champion_1"] = reg.head()
    reg.champion_1_ms = next(client.store.read_all(after_position=reg.head() - 1)).recorded_at
    _next_millisecond(reg.champion_1_ms)
    reg.call("POST", "/registered-models/alias", {"name": "churn", "alias": "champion", "version": "2"})
    reg.positions["champion_2"] = reg.head()
    reg.call("POST", "/model-versions/transition-stage",
             {"name": "churn", "version": "2", "stage": "Production", "archive_existing_versions": False})  # fmt: skip
    reg.call("POST", "/registered-models/create", {"name": HOSTILE_NAME, "description": HOSTILE_TEXT,
                                                   "tags": [{"key": "note", "value": HOSTILE_TEXT}]})  # fmt: skip
    reg.call("POST", "/registered-models/create", {"name": "old-name"})
    # A local path as a source: the server refuses it without a run (MLflow's rule), a
    # local store takes it (as MLflow's local stores do), and the UI must not show it.
    for _ in range(2):
        client.create_model_version("old-name", str(reg.directory / "model"))
    reg.call("DELETE", "/model-versions/delete", {"name": "old-name", "version": "2"})  # "before" names it
    reg.call("POST", "/registered-models/rename", {"name": "old-name", "new_name": "new-name"})
    reg.call("POST", "/registered-models/create", {"name": "gone"})
    reg.call("DELETE", "/registered-models/delete", {"name": "gone"})
    # A run that evaluated the logged model: it used it, and made no version.
    reg.evaluator = client.create_run(experiment, run_name="evaluator").info.run_id
    client.log_inputs(reg.evaluator, models=[logged.model_id])
    for i in range(30):  # enough for pages
        reg.call("POST", "/registered-models/create", {"name": f"zz-{i:02d}"})
    yield reg
    reg.http.close()
    reg.client.close()
    reg.server.stop()
    close_cached_stores(reg.directory)


# --- the models list --------------------------------------------------------------------------


def test_the_models_list_shows_latest_version_aliases_tags_and_description(registry: Registry) -> None:
    found = registry.ui("/models", filter="name = 'churn'")
    (churn,) = found["models"]
    assert churn["latest_version"] == "2" and churn["aliases"] == {"champion": "2"}
    assert churn["tags"] == {"team": "growth"} and churn["description"] == "predicts churn"
    assert {"version": "2", "stage": "Production"} in churn["latest_versions"]
    assert churn["last_updated_timestamp"] >= churn["creation_timestamp"] > 0


def test_the_models_list_pages_sorts_filters_and_points_at_a_bad_filter(registry: Registry) -> None:
    first = registry.ui("/models", size=25)
    names = [m["name"] for m in first["models"]]
    assert first["total"] == 33 and first["has_next"] and names == sorted(names) and len(names) == 25
    second = registry.ui("/models", size=25, page=1)
    assert len(second["models"]) == 8 and not second["has_next"]
    assert set(names).isdisjoint(m["name"] for m in second["models"])
    assert "gone" not in names + [m["name"] for m in second["models"]]  # deleted: not listed
    newest = registry.ui("/models", order="last_updated_timestamp DESC", size=1)["models"]
    assert newest[0]["name"] == "zz-29"
    assert [m["name"] for m in registry.ui("/models", filter="name LIKE 'zz-0%'")["models"]] == [
        f"zz-{i:02d}" for i in range(10)
    ]
    bad = registry.ui("/models", filter="name = ")
    assert "search_error" in bad and "models" not in bad
    refused = registry.http.get("/ui/api/models", params={"order": "drop table"})
    assert refused.status_code == 400 and "order must be one of" in refused.json()["message"]


# --- one registered model -------------------------------------------------------------------


def test_a_model_page_has_its_versions_with_their_sources_and_who_made_them(registry: Registry) -> None:
    page = registry.ui("/models/churn")
    model = page["model"]
    assert model["aliases"] == {"champion": "2"} and model["tags"] == {"team": "growth"}
    v2, v1 = model["versions"]
    assert (v1["version"], v1["run_id"], v1["run_name"], v1["model_id"]) == ("1", registry.run_id, "trainer", None)
    assert (v2["model_id"], v2["model_name"], v2["run_id"]) == (registry.model_id, "clf", registry.run_id)
    assert v2["aliases"] == ["champion"] and v2["stage"] == "Production" and v1["stage"] == "None"
    assert v1["status"] == "READY" and v1["created_by"] == v2["created_by"] == "admin"
    assert page["as_of"] is None and page["absent"] is None


def test_the_history_is_what_history_model_prints_with_both_alias_positions(registry: Registry) -> None:
    history = registry.ui("/models/churn")["history"]
    assert history == json.loads(json.dumps(model_changes(registry.client.store, "churn")))  # no path in it
    moves = [(e["position"], c) for e in history for c in e["changes"] if c["what"] == "alias champion"]
    assert moves == [
        (registry.positions["champion_1"], {"what": "alias champion", "before": None, "after": "version 1"}),
        (registry.positions["champion_2"], {"what": "alias champion", "before": "version 1", "after": "version 2"}),
    ]
    assert {e["principal"] for e in history} == {"admin"}


def test_as_of_a_position_or_a_time_answers_where_champion_pointed(registry: Registry) -> None:
    then = registry.ui("/models/churn", as_of=registry.positions["champion_1"])
    assert then["model"]["aliases"] == {"champion": "1"}
    assert then["as_of"]["position"] == registry.positions["champion_1"]
    assert [v["stage"] for v in then["model"]["versions"]] == ["None", "None"]
    # half a millisecond after the alias was set, and before it moved again
    moment = datetime.fromtimestamp((registry.champion_1_ms + 0.5) / 1000, UTC).isoformat()
    by_time = registry.ui("/models/churn", as_of=moment)
    assert by_time["model"]["aliases"] == {"champion": "1"}
    assert by_time["as_of"]["position"] == registry.positions["champion_1"]
    assert registry.ui("/models/churn", as_of=registry.positions["champion_2"])["model"]["aliases"] == {"champion": "2"}
    before = registry.ui("/models/churn", as_of=registry.positions["before_model"])
    assert before["model"] is None and "did not exist" in before["absent"] and before["history"]
    refused = registry.http.get("/ui/api/models/churn", params={"as_of": "yesterday"})
    assert refused.status_code == 400 and "as_of must be" in refused.json()["message"]


def test_a_deleted_model_keeps_its_page_and_history(registry: Registry) -> None:
    gone = registry.ui("/models/gone")
    assert gone["model"] is None and gone["absent"] == "gone was deleted."
    assert gone["history"][-1]["changes"] == [{"what": "model", "before": None, "after": "deleted"}]
    missing = registry.http.get("/ui/api/models/never")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_renamed_model_is_found_by_either_name_and_no_path_on_the_server_is_shown(registry: Registry) -> None:
    old = registry.ui("/models/old-name")
    assert old["model"] is None and old["absent"] == "old-name was renamed to new-name." and old["current_name"] == "new-name"
    new = registry.ui("/models/new-name")
    assert new["history"] == old["history"]
    assert {"what": "name", "before": "old-name", "after": "new-name"} in [c for e in new["history"] for c in e["changes"]]
    (version,) = new["model"]["versions"]
    assert version["source"].endswith("/model") and str(registry.directory) not in json.dumps(new)


def test_a_hostile_model_name_and_description_come_back_as_data(registry: Registry) -> None:
    listed = registry.ui("/models", filter="tags.note LIKE '%onerror%'")["models"]
    assert [(m["name"], m["description"]) for m in listed] == [(HOSTILE_NAME, HOSTILE_TEXT)]
    page = registry.ui("/models/" + quote(HOSTILE_NAME, safe=""))
    assert page["name"] == HOSTILE_NAME and page["model"]["description"] == HOSTILE_TEXT
    assert page["model"]["tags"] == {"note": HOSTILE_TEXT}


# --- a run's datasets and models --------------------------------------------------------------


def test_a_run_lists_its_dataset_its_logged_model_and_the_versions_made_from_it(registry: Registry) -> None:
    found = registry.ui(f"/runs/{registry.run_id}/models")
    (dataset,) = found["datasets"]
    assert (dataset["name"], dataset["digest"], dataset["context"]) == ("customers", "d41d8cd9", "training")
    assert dataset["source"].endswith("/customers.csv") and str(registry.directory) not in dataset["source"]
    assert [(m["model_id"], m["name"], m["status"]) for m in found["produced"]] == [(registry.model_id, "clf", "READY")]
    assert [(v["name"], v["version"]) for v in found["versions"]] == [("churn", "1"), ("churn", "2")]
    assert [v["from_run"] for v in found["versions"]] == [True, True]
    used = registry.ui(f"/runs/{registry.evaluator}/models")
    assert [(m["model_id"], m["source_run_id"]) for m in used["used"]] == [(registry.model_id, registry.run_id)]
    assert [(v["name"], v["version"], v["from_run"]) for v in used["versions"]] == [("churn", "2", False)]
    assert used["produced"] == [] and used["datasets"] == []
    then = registry.ui(f"/runs/{registry.run_id}/models", as_of=registry.positions["run_started"])
    assert then == {"datasets": [], "produced": [], "used": [], "versions": []}
    assert registry.http.get("/ui/api/runs/nope/models").status_code == 404


# --- permissions ------------------------------------------------------------------------------


def test_the_model_pages_ask_the_servers_own_registry_check(registry: Registry) -> None:
    """``models.reader`` is the server's check of ``registered-models/get``: an admin may,
    a user the default refuses may not (whatever grants the server learns, it asks them)."""
    store = registry.client.store
    service = registry.service()
    directory = Directory(store)
    refusing = models.reader(Guard(directory, "NO_PERMISSIONS"))
    allowing = models.reader(Guard(directory, "READ"))
    with acting_as("reader"):
        assert not refusing(service, "churn") and allowing(service, "churn")
    with acting_as("admin"):
        assert refusing(service, "churn")
    assert refusing(service, "churn")  # no user acting: no check, as the API


def test_a_model_the_caller_may_not_read_is_nowhere_in_the_ui(registry: Registry) -> None:
    service = registry.service()

    def may_read(service: Any, name: str) -> bool:
        return name != "churn"

    def ask(view: Any, path: str, path_params: dict[str, str], query: str = "") -> Any:
        request = Request({"type": "http", "method": "GET", "path": path, "headers": [],
                           "query_string": query.encode(), "path_params": path_params})  # fmt: skip
        return view(service, request, may_read, *([] if view is models.models_page else [()]))()

    listed = ask(models.models_page, "/ui/api/models", {}, "size=500")
    assert "churn" not in [m["name"] for m in listed["models"]] and listed["total"] == 32
    assert ask(models.run_models, "", {"run_id": registry.run_id})["versions"] == []
    with pytest.raises(HTTPError) as refused:
        ask(models.model_page, "", {"name": "churn"})
    assert refused.value.status == 403


def test_the_ui_and_the_api_refuse_a_model_by_the_same_rule(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a registered model made to need MANAGE (as a per-model grant could): a
    READ user sees no model in the UI, and is refused the page as the API refuses it."""
    assert registry.http.get("/ui/api/models", headers=registry.reader).json()["total"] == 33
    monkeypatch.setitem(permissions.RULES, "registered-models/get", (DELETE, "registry"))
    listed = registry.http.get("/ui/api/models", headers=registry.reader).json()
    assert listed["models"] == [] and listed["total"] == 0
    assert registry.http.get(f"/ui/api/runs/{registry.run_id}/models", headers=registry.reader).json()["versions"] == []
    page = registry.http.get("/ui/api/models/churn", headers=registry.reader)
    api = registry.http.get(API + "/registered-models/get", params={"name": "churn"}, headers=registry.reader)
    assert page.status_code == api.status_code == 403 and "champion" not in page.text
    assert registry.ui("/models")["total"] == 33  # the admin still sees every one


def test_with_users_a_reader_sees_the_models_and_a_refused_user_sees_no_ui(tmp_path: Path) -> None:
    store = tmp_path / "server.db"
    admin = Registry.add(store, "admin", admin=True)
    nobody = Registry.add(store, "nobody")
    server = ThreadServer(tmp_path, default_permission="NO_PERMISSIONS")
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        created = http.post(API + "/registered-models/create", json={"name": "secret"}, headers=admin)
        assert created.status_code == 200, created.text
        assert [m["name"] for m in http.get("/ui/api/models", headers=admin).json()["models"]] == ["secret"]
        for path in ("/ui/api/models", "/ui/api/models/secret"):
            refused = http.get(path, headers=nobody)
            assert refused.status_code == 403 and "secret" not in refused.text
    finally:
        http.close()
        server.stop()
        close_cached_stores(tmp_path)
