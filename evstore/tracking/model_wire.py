"""MLflow's JSON for logged models (``LoggedModel``: ``info`` and ``data``) and a run's
inputs and outputs."""

from __future__ import annotations

from typing import Any

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


def logged_model_from(data: dict[str, Any]) -> LoggedModel:
    """A logged model from MLflow's JSON (its location as the server's proxy serves it)."""
    from evstore.tracking.wire import metric_from

    info, body = data["info"], data.get("data", {})
    status = {v: k for k, v in STATUS_NAMES.items()}.get(info.get("status", ""), info.get("status", ""))
    return LoggedModel(
        model_id=info["model_id"], experiment_id=info["experiment_id"], name=info.get("name", ""),
        artifact_location=info.get("artifact_uri", ""),
        creation_timestamp=int(info.get("creation_timestamp_ms", 0)),
        last_updated_timestamp=int(info.get("last_updated_timestamp_ms", 0)), status=status,
        status_message=info.get("status_message", ""), model_type=info.get("model_type", ""),
        source_run_id=info.get("source_run_id") or None,
        tags={t["key"]: t.get("value", "") for t in info.get("tags", [])},
        params={p["key"]: p.get("value", "") for p in body.get("params", [])},
        metrics=[
            (metric_from(m), m.get("run_id", ""), m.get("dataset_name", ""), m.get("dataset_digest", ""))
            for m in body.get("metrics", [])
        ],
    )  # fmt: skip
