"""The model registry through a real ``evstore server`` with the real mlflow client:
register, alias, load by alias, move the alias, search; then the history MLflow throws
away: ``evstore history --model`` shows both positions of the alias (who, when, before ->
after) and ``--as-of`` answers which version it pointed to at a time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import close_cached_stores
from servers import EVSTORE, ThreadServer
from test_logged_models import run_mlflow

from evstore.integrity import verify
from evstore.model_history import model_changes, registered_model_as_of
from evstore.projection import open_store
from evstore.rebuild import rebuild

API = "/api/2.0/mlflow"

REGISTRY_SCRIPT = """\
import json
import time
import mlflow
import numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

out = {}
mlflow.set_experiment("registry")
X = np.array([[0.0], [1.0], [2.0], [3.0]])
y = np.array([0, 0, 1, 1])
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="clf",
                                    pip_requirements=["scikit-learn"])
client = MlflowClient()
v1 = mlflow.register_model(info.model_uri, "Churn", tags={"origin": "model"})
v2 = mlflow.register_model(f"runs:/{run.info.run_id}/clf", "Churn")
client.set_registered_model_alias("Churn", "champion", v1.version)
out["predicted"] = mlflow.pyfunc.load_model("models:/Churn@champion").predict(X).tolist()
time.sleep(0.01)  # orders the alias moves around `between` (no wall-clock assertion)
out["between"] = int(time.time() * 1000)
time.sleep(0.01)
client.set_registered_model_alias("Churn", "champion", v2.version)
out["champion"] = client.get_model_version_by_alias("Churn", "champion").version
client.set_model_version_tag("Churn", v1.version, "validated", "yes")
client.update_registered_model("Churn", description="churn classifier")
client.update_model_version("Churn", v2.version, description="retrained")
client.transition_model_version_stage("Churn", v1.version, "Production")
out["versions"] = sorted([v.version, v.current_stage, v.run_id == run.info.run_id, v.tags]
                         for v in mlflow.search_model_versions(filter_string="name='Churn'"))
out["latest"] = sorted([v.version, v.current_stage] for v in client.get_latest_versions("Churn"))
model = client.get_registered_model("Churn")
out["model"] = [model.name, model.description, model.aliases]
out["found"] = [m.name for m in client.search_registered_models(filter_string="name LIKE 'Ch%'")]
out["download"] = client.get_model_version_download_uri("Churn", v1.version)
out["model_uri"] = info.model_uri
print("RESULT " + json.dumps(out))
"""


def test_register_alias_load_move_and_the_history_of_both_positions(server: ThreadServer, tmp_path: Path) -> None:
    out = run_mlflow(server, REGISTRY_SCRIPT, tmp_path)
    assert out["predicted"] == [0, 0, 1, 1]  # loaded by alias, from the server's artifacts
    assert out["champion"] == "2"
    assert out["versions"] == [["1", "Production", True, {"origin": "model", "validated": "yes"}],
                               ["2", "None", True, {}]]  # fmt: skip
    assert out["latest"] == [["1", "Production"], ["2", "None"]]
    assert out["model"] == ["Churn", "churn classifier", {"champion": "2"}]
    assert out["found"] == ["Churn"]
    model_id = out["model_uri"].removeprefix("models:/")
    assert out["download"].endswith(f"/models/{model_id}/artifacts")
    server.stop()

    # The CLI: every change, with the alias's move before -> after.
    shown = subprocess.run([EVSTORE, "history", "--model", "Churn", "--store", str(server.store)],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    records = [dict((line.split(None, 1) + [""])[:2] for line in block.splitlines())
               for block in shown.strip().split("\n\n")]  # fmt: skip
    moves = [(r["before"], r["after"], r["user"]) for r in records if r["what"] == "alias champion"]
    assert [m[:2] for m in moves] == [("", "version 1"), ("version 1", "version 2")], shown
    assert all(m[2] for m in moves)  # who moved it
    then = subprocess.run([EVSTORE, "history", "--model", "Churn", "--as-of", f"ms:{out['between']}",
                           "--store", str(server.store)], capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(then.stdout)["aliases"] == {"champion": "1"}

    # The library: the same trail, and the model now and then.
    runner = open_store(server.store)
    store = runner.store
    try:
        assert verify(store).ok
        changes = [c for row in model_changes(store, "Churn") for c in row["changes"]]
        assert [c for c in changes if c["what"] == "alias champion"] == [
            {"what": "alias champion", "before": None, "after": "version 1"},
            {"what": "alias champion", "before": "version 1", "after": "version 2"},
        ]
        assert {"what": "version 1 stage", "before": "None", "after": "Production"} in changes
        assert {"what": "description", "before": None, "after": "churn classifier"} in changes
        now = registered_model_as_of(store, "Churn", store.head_position())
        assert now.aliases == {"champion": "2"}
        assert [v.current_stage for v in now.versions] == ["Production", "None"]
        from datetime import UTC, datetime

        before = registered_model_as_of(store, "Churn", datetime.fromtimestamp(out["between"] / 1000, UTC))
        assert before.aliases == {"champion": "1"} and before.description == ""
        # The read models rebuild row for row from the log.
        from test_projections import snapshot

        held = snapshot(store)
        assert held["registered_models"] and held["model_versions"]
        rebuild(store)
        assert snapshot(store) == held
    finally:
        store.close()


def call(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    if method == "GET":
        return http.get(API + path, params=body)
    return http.request(method, API + path, json=body)


def test_refusals_and_rules_as_mlflow(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert call(http, "POST", "/registered-models/create", {"name": "M"}).status_code == 200
        source = {"name": "M", "source": "s3://bucket/model"}
        assert call(http, "POST", "/model-versions/create", source).json()["model_version"]["version"] == "1"
        assert call(http, "POST", "/model-versions/create", source).json()["model_version"]["version"] == "2"
        for method, path, body, status, code, message in [
            ("POST", "/registered-models/create", {"name": "M"}, 400, "RESOURCE_ALREADY_EXISTS",
             "Registered Model (name=M) already exists."),
            ("GET", "/registered-models/get", {"name": "Nope"}, 404, "RESOURCE_DOES_NOT_EXIST",
             "Registered Model with name=Nope not found"),
            ("GET", "/model-versions/get", {"name": "M", "version": "9"}, 404, "RESOURCE_DOES_NOT_EXIST",
             "Model Version (name=M, version=9) not found"),
            ("GET", "/registered-models/alias", {"name": "M", "alias": "x"}, 400, "INVALID_PARAMETER_VALUE",
             "Registered model alias x not found."),
            ("POST", "/registered-models/alias", {"name": "M", "alias": "v1", "version": "1"}, 400,
             "INVALID_PARAMETER_VALUE", "Version alias name 'v1' is reserved."),
            ("POST", "/registered-models/alias", {"name": "M", "alias": "a", "version": "9"}, 404,
             "RESOURCE_DOES_NOT_EXIST", "Model Version (name=M, version=9) not found"),
            ("POST", "/model-versions/transition-stage", {"name": "M", "version": "1", "stage": "bogus"}, 400,
             "INVALID_PARAMETER_VALUE",
             "Invalid Model Version stage: bogus. Value must be one of None, Staging, Production, Archived."),
            ("GET", "/model-versions/get", {"name": "M", "version": "x"}, 400, "INVALID_PARAMETER_VALUE",
             "Parameter 'version' must be an integer, got 'x'."),
        ]:  # fmt: skip
            response = call(http, method, path, body)
            assert (response.status_code, response.json()["error_code"], response.json()["message"]) == (
                status, code, message), (path, response.text)
        # Deleting a missing tag or alias is no error (MLflow's rule) and writes nothing.
        head = httpx.get(server.url + "/api/evstore/info").json()
        assert call(http, "DELETE", "/registered-models/delete-tag", {"name": "M", "key": "zz"}).json() == {}
        assert call(http, "DELETE", "/registered-models/alias", {"name": "M", "alias": "zz"}).json() == {}
        assert httpx.get(server.url + "/api/evstore/info").json() == head
        # Archiving the others; a deleted version's alias goes with it, its number is never reused.
        call(http, "POST", "/model-versions/transition-stage", {"name": "M", "version": "1", "stage": "Production"})
        moved = call(http, "POST", "/model-versions/transition-stage",
                     {"name": "M", "version": "2", "stage": "Production", "archive_existing_versions": True})  # fmt: skip
        assert moved.json()["model_version"]["current_stage"] == "Production"
        got = call(http, "GET", "/model-versions/get", {"name": "M", "version": "1"}).json()
        assert got["model_version"]["current_stage"] == "Archived"
        call(http, "POST", "/registered-models/alias", {"name": "M", "alias": "best", "version": "2"})
        assert call(http, "DELETE", "/model-versions/delete", {"name": "M", "version": "2"}).json() == {}
        assert "aliases" not in call(http, "GET", "/registered-models/get", {"name": "M"}).json()["registered_model"]
        assert call(http, "POST", "/model-versions/create", source).json()["model_version"]["version"] == "3"
        # Search: filters, order and pages.
        for name in ("A", "B"):
            call(http, "POST", "/registered-models/create", {"name": name, "tags": [{"key": "team", "value": name}]})
        page = call(http, "GET", "/registered-models/search", {"max_results": 2}).json()
        assert [m["name"] for m in page["registered_models"]] == ["A", "B"]
        rest = call(http, "GET", "/registered-models/search", {"max_results": 2, "page_token": page["next_page_token"]})
        assert [m["name"] for m in rest.json()["registered_models"]] == ["M"]
        tagged = call(http, "GET", "/registered-models/search", {"filter": "tags.team = 'B'"}).json()
        assert [m["name"] for m in tagged["registered_models"]] == ["B"]
        versions = call(http, "GET", "/model-versions/search",
                        {"filter": "name = 'M'", "order_by": ["version_number ASC"]}).json()  # fmt: skip
        assert [v["version"] for v in versions["model_versions"]] == ["1", "3"]
        # Renaming keeps the versions; deleting frees the name.
        renamed = call(http, "POST", "/registered-models/rename", {"name": "M", "new_name": "N"}).json()
        assert renamed["registered_model"]["name"] == "N"
        assert call(http, "DELETE", "/registered-models/delete", {"name": "N"}).json() == {}
        assert call(http, "POST", "/registered-models/create", {"name": "N"}).status_code == 200


@pytest.mark.parametrize("default", ["READ", "NO_PERMISSIONS"])
def test_the_registry_obeys_the_servers_default_permission(tmp_path: Path, default: str) -> None:
    # bob holds no grant on M: the default permission decides.
    from test_permissions import add

    store = tmp_path / "server.db"
    admin, bob = add(store, "admin", admin=True), add(store, "bob")
    server = ThreadServer(tmp_path, default_permission=default)
    try:
        with httpx.Client(base_url=server.url + API) as http:
            http.post("/registered-models/create", json={"name": "M"}, headers=admin).raise_for_status()
            http.post("/model-versions/create", json={"name": "M", "source": "s3://b/m"},
                      headers=admin).raise_for_status()  # fmt: skip
            read = http.get("/registered-models/get", params={"name": "M"}, headers=bob)
            assert read.status_code == (200 if default == "READ" else 403)
            found = http.get("/registered-models/search", headers=bob).json()
            assert [m["name"] for m in found.get("registered_models", [])] == (["M"] if default == "READ" else [])
            for method, path, body in [
                ("POST", "/registered-models/set-tag", {"name": "M", "key": "a", "value": "b"}),
                ("POST", "/registered-models/alias", {"name": "M", "alias": "a", "version": "1"}),
                ("POST", "/model-versions/create", {"name": "M", "source": "s3://b/m"}),
                ("DELETE", "/registered-models/delete", {"name": "M"}),
            ]:
                refused = http.request(method, path, json=body, headers=bob)
                assert refused.status_code == 403, (path, refused.text)
            # Creating one needs no grant, as MLflow: the creator manages it whatever the default.
            assert http.post("/registered-models/create", json={"name": "bobs"}, headers=bob).status_code == 200
            assert http.post("/registered-models/set-tag", json={"name": "bobs", "key": "a", "value": "b"},
                             headers=bob).status_code == 200  # fmt: skip
            model = http.get("/registered-models/get", params={"name": "M"}, headers=admin).json()
            assert "tags" not in model["registered_model"] and "aliases" not in model["registered_model"]
    finally:
        server.stop()
        close_cached_stores(tmp_path)
