"""MLflow's JSON for logged models (``LoggedModel``: ``info`` and ``data``) and a run's
inputs and outputs."""

from __future__ import annotations

from typing import Any

from evstore.events import DatasetInput
from evstore.tracking.logged_models import STATUS_NAMES, LoggedModel
from evstore.tracking.wire import number, pairs, served_location_of


def served_model_location(model: LoggedModel) -> str:
    """Where the mlflow client reaches a logged model's files: through the proxy."""
    return served_location_of(
        model.artifact_location, f"{model.experiment_id}/models/{model.model_id}/artifacts"
    )


def logged_model_json(model: LoggedModel) -> dict[str, Any]:
    """A logged model as MLflow's JSON."""
    info: dict[str, Any] = {
        "model_id": model.model_id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "creation_timestamp_ms": model.creation_timestamp,
        "last_updated_timestamp_ms": model.last_updated_timestamp,
        "artifact_uri": served_model_location(model),
        "status": STATUS_NAMES.get(model.status, model.status),
        "model_type": model.model_type,
        "source_run_id": model.source_run_id or "",
    }
    if model.status_message:
        info["status_message"] = model.status_message
    if model.tags:
        info["tags"] = pairs(dict(sorted(model.tags.items())))
    data: dict[str, Any] = {}
    if model.params:
        data["params"] = pairs(dict(sorted(model.params.items())))
    if model.metrics:
        data["metrics"] = [_linked_metric_json(model.model_id, *linked) for linked in model.metrics]
    return {"info": info, "data": data}


def _linked_metric_json(
    model_id: str, metric: Any, run_id: str, dataset_name: str, dataset_digest: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"key": metric.key, "value": number(metric.value),
                           "timestamp": metric.timestamp, "step": metric.step}  # fmt: skip
    if dataset_name:
        out["dataset_name"] = dataset_name
    if dataset_digest:
        out["dataset_digest"] = dataset_digest
    out["model_id"] = model_id
    out["run_id"] = run_id
    return out


def run_outputs_json(outputs: list[tuple[str, int]]) -> dict[str, Any]:
    """A run's ``outputs``: the models it produced."""
    if not outputs:
        return {}
    return {"model_outputs": [{"model_id": m, "step": step} for m, step in outputs]}


def run_inputs_json(datasets: list[DatasetInput], models: list[str]) -> dict[str, Any]:
    """A run's ``inputs``: the datasets it used (tags by key) and the logged models."""
    out: dict[str, Any] = {}
    if datasets:
        out["dataset_inputs"] = [_dataset_input_json(d) for d in datasets]
    if models:
        out["model_inputs"] = [{"model_id": m} for m in models]
    return out


def _dataset_input_json(given: DatasetInput) -> dict[str, Any]:
    dataset = {"name": given.name, "digest": given.digest, "source_type": given.source_type,
               "source": given.source}  # fmt: skip
    if given.schema is not None:
        dataset["schema"] = given.schema
    if given.profile is not None:
        dataset["profile"] = given.profile
    out: dict[str, Any] = {"dataset": dataset}
    if given.tags:
        out = {"tags": pairs(dict(sorted(given.tags.items()))), **out}
    return out
