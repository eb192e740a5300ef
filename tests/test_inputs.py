"""A run's inputs through a real ``evstore server``: the real mlflow client's ``log_input``
with a pandas dataset, read back on the run as MLflow returns it (digest, source, schema,
profile, the context tag) by ``get_run`` and ``search_runs``, a second log of the same
dataset storing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from servers import ThreadServer
from test_logged_models import run_mlflow

from evstore.projection import open_store

LOG_INPUT_SCRIPT = """\
import json
import mlflow
import pandas as pd

mlflow.set_experiment("inputs")
df = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
train = mlflow.data.from_pandas(df, source="s3://bucket/data.csv", name="train", targets="y")
with mlflow.start_run() as run:
    mlflow.log_input(train, context="training", tags={"split": "a"})
    mlflow.log_input(train, context="training")  # the same dataset again: kept once
    mlflow.log_input(mlflow.data.from_pandas(df.head(1), name="eval"), context="eval")
got = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
(searched,) = mlflow.MlflowClient().search_runs([run.info.experiment_id])
model = mlflow.MlflowClient().create_logged_model(run.info.experiment_id, source_run_id=run.info.run_id)
mlflow.MlflowClient().log_outputs(run.info.run_id, [mlflow.entities.LoggedModelOutput(model.model_id, 2)])
(produced,) = mlflow.MlflowClient().search_runs([run.info.experiment_id])
print("RESULT " + json.dumps({
    "searched": [[d.dataset.name, d.dataset.digest, {t.key: t.value for t in d.tags}]
                 for d in searched.inputs.dataset_inputs],
    "outputs": [[m.model_id == model.model_id, m.step] for m in produced.outputs.model_outputs],
    "run_id": run.info.run_id,
    "digest": train.digest,
    "inputs": [[d.dataset.name, d.dataset.digest, d.dataset.source_type, json.loads(d.dataset.profile),
                {t.key: t.value for t in d.tags}] for d in got],
}))
"""


def test_log_input_with_a_pandas_dataset(server: ThreadServer, tmp_path: Path) -> None:
    out = run_mlflow(server, LOG_INPUT_SCRIPT, tmp_path)
    assert out["inputs"] == [
        ["train", out["digest"], "s3", {"num_rows": 2, "num_elements": 4},
         {"mlflow.data.context": "training", "split": "a"}],
        ["eval", out["inputs"][1][1], "code", {"num_rows": 1, "num_elements": 2},
         {"mlflow.data.context": "eval"}],
    ]  # fmt: skip
    # search_runs answers the same inputs as get_run, and the run's outputs (MLflow 3.17 does)
    assert out["searched"] == [[name, digest, tags] for name, digest, _type, _profile, tags in out["inputs"]]
    assert out["outputs"] == [[True, 2]]
    # MLflow's JSON: tags by key before the dataset, source as the client sent it.
    run = httpx.get(server.url + "/api/2.0/mlflow/runs/get", params={"run_id": out["run_id"]}).json()
    first = run["run"]["inputs"]["dataset_inputs"][0]
    assert first["tags"] == [{"key": "mlflow.data.context", "value": "training"},
                             {"key": "split", "value": "a"}]  # fmt: skip
    assert json.loads(first["dataset"]["source"]) == {"uri": "s3://bucket/data.csv"}
    assert "mlflow_colspec" in json.loads(first["dataset"]["schema"])
    server.stop()
    runner = open_store(server.store)
    logged = [e.event for e in runner.store.read_all() if e.type == "RunInputsLogged"]
    runner.store.close()
    assert [[d.name for d in e.datasets] for e in logged] == [["train"], ["eval"]]


def test_bad_inputs_are_refused_and_change_nothing(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.url + "/api/2.0/mlflow") as http:
        run_id = http.post("/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
        for body, code in [
            ({"run_id": run_id, "datasets": [{"dataset": {"name": "d", "digest": "1"}}]},
             "INVALID_PARAMETER_VALUE"),  # no source
            ({"run_id": "f" * 32, "datasets": []}, "RESOURCE_DOES_NOT_EXIST"),
            ({"run_id": run_id, "models": [{"model_id": "m-missing"}]}, "RESOURCE_DOES_NOT_EXIST"),
        ]:  # fmt: skip
            response = http.post("/runs/log-inputs", json=body)
            assert response.json()["error_code"] == code, response.text
        assert http.get("/runs/get", params={"run_id": run_id}).json()["run"]["inputs"] == {}
        model_id = http.post("/logged-models", json={"experiment_id": "0"}).json()["model"]["info"]["model_id"]
        assert http.post("/runs/log-inputs", json={"run_id": run_id, "models": [{"model_id": model_id}]}).json() == {}
        inputs = http.get("/runs/get", params={"run_id": run_id}).json()["run"]["inputs"]
        assert inputs == {"model_inputs": [{"model_id": model_id}]}
