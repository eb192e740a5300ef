"""The fluent API and ``evstore.Client`` on a local store, with MLflow's names: logged
models, ``log_input``, ``register_model``, aliases, and a model's history in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import close_cached_stores

import evstore as mlflow
from evstore import fluent
from evstore.errors import InvalidParameterValue
from evstore.model_history import model_changes


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("EVSTORE_TRACKING_URI", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                 "EVSTORE_EXPERIMENT_ID", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    fluent.reset()
    path = tmp_path / "evstore.db"
    mlflow.set_tracking_uri(str(path))
    yield path
    fluent.reset()
    close_cached_stores(tmp_path)


def test_fluent_and_client_names_over_a_local_store(tracking: Path) -> None:
    client = mlflow.Client()
    dataset = SimpleNamespace(name="train", digest="abc123", source_type="local",
                              source='{"uri": "/data.csv"}', schema=None, profile=None)  # fmt: skip
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training")
        mlflow.log_input(dataset, context="training")  # the same dataset: stored once
        model = client.create_logged_model(run.info.experiment_id, "clf", run.info.run_id,
                                           params={"C": 1})  # fmt: skip
        client.finalize_logged_model(model.model_id, "READY")
        mlflow.log_metric("acc", 0.9, model_id=model.model_id)
    datasets, _models = client._transport.run_inputs(run.info.run_id)
    assert [(d.name, d.tags) for d in datasets] == [("train", {"mlflow.data.context": "training"})]
    got = client.get_logged_model(model.model_id)
    assert (got.status, got.params, [m[0].key for m in got.metrics]) == ("READY", {"C": "1"}, ["acc"])
    assert [m.model_id for m in mlflow.search_logged_models(filter_string="params.C = '1'")] == [model.model_id]

    v1 = mlflow.register_model(model.model_uri, "clf-model")
    v2 = mlflow.register_model(f"runs:/{run.info.run_id}/model", "clf-model")
    assert (v1.version, v1.model_id, v2.version, v2.run_id) == ("1", model.model_id, "2", run.info.run_id)
    client.set_registered_model_alias("clf-model", "champion", "1")
    client.set_registered_model_alias("clf-model", "champion", 2)
    assert client.get_model_version_by_alias("clf-model", "champion").version == "2"
    assert [v.version for v in mlflow.search_model_versions("name = 'clf-model'")] == ["2", "1"]
    assert [m.name for m in mlflow.search_registered_models()] == ["clf-model"]
    # the logged model names its versions, as MLflow's server tags it
    assert '"version": 1' in client.get_logged_model(model.model_id).tags["mlflow.modelVersions"]
    with pytest.raises(InvalidParameterValue, match="log_input takes a dataset"), mlflow.start_run():
        mlflow.log_input(object())
    changes = [c for row in model_changes(client.store, "clf-model") for c in row["changes"]]
    assert [(c["before"], c["after"]) for c in changes if c["what"] == "alias champion"] == [
        (None, "version 1"), ("version 1", "version 2")]
