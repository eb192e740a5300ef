"""MLflow 3's logged models through a real ``evstore server``, with the real mlflow client.

One server serves the module: each script writes to its own experiment. The proofs are
the client's own: ``mlflow.sklearn.log_model`` then ``load_model("models:/<id>")``
predicts; sklearn autolog keeps its metrics and params and links them to its model.
Afterwards the store must hold what the client logged as events, verify, and rebuild its
read models row for row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import close_cached_stores
from forked import run_python
from servers import ThreadServer
from test_projections import snapshot

from evstore.integrity import verify
from evstore.projection import open_store
from evstore.rebuild import rebuild

API = "/api/2.0/mlflow"

LOG_MODEL_SCRIPT = """\
import json
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression

out = {}
mlflow.set_experiment("log-model")
X = np.array([[0.0], [1.0], [2.0], [3.0]])
y = np.array([0, 0, 1, 1])
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(
        LogisticRegression().fit(X, y), name="clf", pip_requirements=["scikit-learn"],
        params={"C": "1.0"}, model_type="classifier",
    )
    mlflow.log_metric("acc", 0.75, step=1, model_id=info.model_id)
out["model_id"] = info.model_id
out["predicted"] = mlflow.pyfunc.load_model(f"models:/{info.model_id}").predict(X).tolist()
client = MlflowClient()
model = client.get_logged_model(info.model_id)
out["status"] = str(model.status)
out["params"] = model.params
out["metrics"] = [[m.key, m.value, m.step, m.run_id] for m in model.metrics]
out["source_run"] = [model.source_run_id, run.info.run_id]
out["outputs"] = [o.model_id for o in mlflow.get_run(run.info.run_id).outputs.model_outputs]
client.set_logged_model_tags(info.model_id, {"stage": "candidate", "owner": "ml"})
client.delete_logged_model_tag(info.model_id, "owner")
out["tags"] = {k: v for k, v in client.get_logged_model(info.model_id).tags.items()
               if not k.startswith("mlflow.")}
other = mlflow.create_external_model(name="other", model_type="agent")
found = mlflow.search_logged_models(
    experiment_ids=[run.info.experiment_id], filter_string="metrics.acc > 0.5",
    output_format="list",
)
out["found"] = [m.model_id for m in found]
out["newest_first"] = [m.name for m in mlflow.search_logged_models(
    experiment_ids=[run.info.experiment_id], output_format="list")]
page = client.search_logged_models(experiment_ids=[run.info.experiment_id], max_results=1)
out["paged"] = [len(page), bool(page.token)]
client.delete_logged_model(other.model_id)
try:
    client.get_logged_model(other.model_id)
except MlflowException as e:
    out["deleted"] = e.error_code
print("RESULT " + json.dumps(out))
"""

AUTOLOG_SCRIPT = """\
import json
import warnings
import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

warnings.simplefilter("ignore")
mlflow.set_experiment("autolog")
mlflow.sklearn.autolog()
X = np.array([[0.0], [1.0], [2.0], [3.0]])
y = np.array([0, 0, 1, 1])
with mlflow.start_run() as run:
    LogisticRegression(C=0.5).fit(X, y)
got = mlflow.get_run(run.info.run_id)
models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
print("RESULT " + json.dumps({
    "run_id": run.info.run_id,
    "metrics": got.data.metrics,
    "params": got.data.params,
    "outputs": [o.model_id for o in got.outputs.model_outputs],
    "inputs": [[d.dataset.name, {t.key: t.value for t in d.tags}] for d in got.inputs.dataset_inputs],
    "models": [[m.model_id, m.params.get("C"), sorted(x.key for x in m.metrics), str(m.status)]
               for m in models],
}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    running = ThreadServer(tmp_path_factory.mktemp("logged-models"))
    try:
        yield running
    finally:
        running.stop()


def run_mlflow(server: ThreadServer, script: str, cwd: Path) -> dict[str, Any]:
    """Run an mlflow script in a subprocess against the server; returns its RESULT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # No retries: a failing request fails the script at once, with the server's answer.
    env.update(MLFLOW_TRACKING_URI=server.url, MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")  # fmt: skip
    done = run_python(script, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))  # type: ignore[no-any-return]


def test_log_model_then_load_it_by_id_and_predict(server: ThreadServer, tmp_path: Path) -> None:
    out = run_mlflow(server, LOG_MODEL_SCRIPT, tmp_path)
    # The model came back from the server's artifacts and predicts as the one logged.
    assert out["predicted"] == [0, 0, 1, 1]
    assert out["status"] == "READY"
    assert out["params"] == {"C": "1.0"}
    assert out["metrics"] == [["acc", 0.75, 1, out["source_run"][1]]]
    assert out["source_run"][0] == out["source_run"][1]
    assert out["outputs"] == [out["model_id"]]
    assert out["tags"] == {"stage": "candidate"}
    assert out["found"] == [out["model_id"]]  # "other" has no metric acc
    assert out["newest_first"] == ["other", "clf"]
    assert out["paged"] == [1, True]
    assert out["deleted"] == "RESOURCE_DOES_NOT_EXIST"


def test_sklearn_autolog_keeps_its_metrics_params_and_model(server: ThreadServer, tmp_path: Path) -> None:
    out = run_mlflow(server, AUTOLOG_SCRIPT, tmp_path)
    assert out["params"]["C"] == "0.5"
    assert out["metrics"]["training_accuracy_score"] == 1.0
    [(model_id, c, metric_keys, status)] = out["models"]
    assert out["outputs"] == [model_id]
    assert c == "0.5"
    assert "training_accuracy_score" in metric_keys
    assert status == "READY"
    assert out["inputs"] == [["dataset", {"mlflow.data.context": "train"}]]  # the training data


def test_refusals_are_mlflows_and_change_nothing(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.url + API) as http:
        check_refusals(server, http)


def check_refusals(server: ThreadServer, http: httpx.Client) -> None:
    created = http.post("/logged-models", json={"experiment_id": "0", "name": "m"}).json()["model"]
    model_id = created["info"]["model_id"]
    assert created["info"]["status"] == "LOGGED_MODEL_PENDING"
    assert created["info"]["artifact_uri"] == f"mlflow-artifacts:/0/models/{model_id}/artifacts"
    head = http.get("/logged-models/" + model_id).json()
    for method, path, body, status, code in [
        ("GET", "/logged-models/m-missing", None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("PATCH", f"/logged-models/{model_id}", {"status": "LOGGED_MODEL_PENDING"}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("DELETE", f"/logged-models/{model_id}/tags/nope", None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "/logged-models", {"experiment_id": "404"}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "/logged-models", {"experiment_id": "0", "source_run_id": "f" * 32}, 404,
         "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "/logged-models/search", {"experiment_ids": ["0"], "filter": "bogus.x = 1"}, 400,
         "INVALID_PARAMETER_VALUE"),
    ]:  # fmt: skip
        response = http.request(method, path, json=body)
        assert response.status_code == status, (path, response.text)
        assert response.json()["error_code"] == code
    missing = http.get("/logged-models/m-missing").json()["message"]
    assert missing == "Logged model with ID 'm-missing' not found."
    assert http.get("/logged-models/" + model_id).json() == head
    # A file under the model's artifacts is stored and listed; an unknown model's is refused.
    artifacts = server.url + "/api/2.0/mlflow-artifacts/artifacts"
    put = httpx.put(f"{artifacts}/0/models/{model_id}/artifacts/MLmodel", content=b"flavors: {}\n")
    assert put.status_code == 200, put.text
    listed = httpx.get(artifacts, params={"path": f"0/models/{model_id}/artifacts"}).json()
    assert listed == {"files": [{"path": "MLmodel", "is_dir": False, "file_size": 12}]}
    refused = httpx.put(f"{artifacts}/0/models/m-missing/artifacts/MLmodel", content=b"x")
    assert refused.status_code == 404
    # A run's outputs: a retried request (or the same output again) writes nothing.
    run_id = http.post("/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
    output = {"run_id": run_id, "models": [{"model_id": model_id, "step": 3}]}
    assert http.post("/runs/outputs", json=output).json() == {}
    head = httpx.get(server.url + "/api/evstore/info").json()
    assert http.post("/runs/outputs", json=output).json() == {}
    assert httpx.get(server.url + "/api/evstore/info").json() == head
    outputs = http.get("/runs/get", params={"run_id": run_id}).json()["run"]["outputs"]
    assert outputs == {"model_outputs": [{"model_id": model_id, "step": 3}]}
    # Deleted: gone from get and search, readable with allow_deleted.
    assert http.delete(f"/logged-models/{model_id}").status_code == 200
    assert http.get(f"/logged-models/{model_id}").status_code == 404
    kept = http.get(f"/logged-models/{model_id}", params={"allow_deleted": "true"})
    assert kept.status_code == 200


def test_the_store_holds_it_all_as_events_and_rebuilds_row_for_row(server: ThreadServer, tmp_path: Path) -> None:
    run_mlflow(server, LOG_MODEL_SCRIPT.replace('"log-model"', '"again"'), tmp_path)
    server.stop()
    try:
        runner = open_store(server.store)
        store = runner.store
        assert verify(store).ok
        types = {e.type for e in store.read_all()}
        assert {"LoggedModelCreated", "LoggedModelFinalized", "LoggedModelTagSet",
                "LoggedModelParamsLogged", "LoggedModelDeleted", "RunOutputsLogged"} <= types
        before = snapshot(store)
        assert before["logged_models"] and before["logged_model_metrics"]
        rebuild(store)
        assert snapshot(store) == before
        store.close()
    finally:
        close_cached_stores(server.store.parent)


def test_a_models_permissions_are_its_experiments(tmp_path: Path) -> None:
    from test_permissions import add, grant

    store = tmp_path / "server.db"
    admin, bob = add(store, "admin", admin=True), add(store, "bob")
    server = ThreadServer(tmp_path, default_permission="NO_PERMISSIONS")
    try:
        with httpx.Client(base_url=server.url + API) as http:
            seen, hidden = (http.post("/experiments/create", json={"name": n}, headers=admin)
                            .json()["experiment_id"] for n in ("seen", "hidden"))  # fmt: skip
            grant(server.store, "bob", seen, "READ")
            mine, theirs = (http.post("/logged-models", json={"experiment_id": e}, headers=admin)
                            .json()["model"]["info"]["model_id"] for e in (seen, hidden))  # fmt: skip
            assert http.get(f"/logged-models/{mine}", headers=bob).status_code == 200
            assert http.get(f"/logged-models/{theirs}", headers=bob).status_code == 403
            for method, path, body in [
                ("PATCH", f"/logged-models/{mine}", {"status": "LOGGED_MODEL_READY"}),
                ("PATCH", f"/logged-models/{mine}/tags", {"tags": [{"key": "a", "value": "b"}]}),
                ("POST", f"/logged-models/{mine}/params", {"params": [{"key": "a", "value": "b"}]}),
                ("DELETE", f"/logged-models/{mine}", None),
                ("POST", "/logged-models", {"experiment_id": seen}),
            ]:
                refused = http.request(method, path, json=body, headers=bob)
                assert refused.status_code == 403, (method, path, refused.text)
            found = http.post("/logged-models/search", json={"experiment_ids": [seen, hidden]},
                              headers=bob).json()["models"]  # fmt: skip
            assert [m["info"]["model_id"] for m in found] == [mine]
            # The admin's view is unchanged by bob's refusals.
            model = http.get(f"/logged-models/{mine}", headers=admin).json()["model"]
            assert model["info"]["status"] == "LOGGED_MODEL_PENDING" and "tags" not in model["info"]
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_a_run_whose_id_starts_with_m_keeps_its_artifacts(tmp_path: Path) -> None:
    # An imported run may have an id like m-1: only the path's models/ segment names a model.
    from evstore.tracking.service import TrackingService

    service = TrackingService(str(tmp_path / "server.db"))
    service.ensure_default_experiment()
    service.create_run("0", run_id="m-1")
    close_cached_stores(tmp_path)
    server = ThreadServer(tmp_path)
    try:
        url = server.url + "/api/2.0/mlflow-artifacts/artifacts/0/m-1/artifacts/x.txt"
        assert httpx.put(url, content=b"hello").status_code == 200
        assert httpx.get(url).content == b"hello"
    finally:
        server.stop()
        close_cached_stores(tmp_path)
