"""MLflow's JSON, both ways: what the server answers and what the HTTP transport reads back.

The server encodes the tracking service's entities here (``experiment_json``,
``run_json``, ...) and the HTTP transport decodes them with the inverse functions, so the
two ends cannot drift apart. Doubles follow protobuf's JSON (``"NaN"``, ``"Infinity"``);
an error answers ``{"error_code", "message"}`` and comes back as the matching
``EvstoreError``. Page tokens are the one format of ``evstore.search``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec

from evstore.entities import (
    Dataset,
    DatasetInput,
    Experiment,
    InputTag,
    LoggedModelInput,
    LoggedModelOutput,
    Metric,
    Run,
    RunData,
    RunInfo,
    RunInputs,
    RunOutputs,
)
from evstore.errors import (
    EvstoreError,
    InvalidParameterValue,
    InvalidState,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    SearchTimeout,
    StoreError,
)
from evstore.inspect import json_number

#: MLflow's error codes and the evstore errors they stand for.
ERRORS: dict[str, type[EvstoreError]] = {
    "RESOURCE_DOES_NOT_EXIST": ResourceDoesNotExist,
    "RESOURCE_ALREADY_EXISTS": ResourceAlreadyExists,
    "INVALID_PARAMETER_VALUE": InvalidParameterValue,
    "BAD_REQUEST": InvalidParameterValue,
    "INVALID_STATE": InvalidState,
    "DEADLINE_EXCEEDED": SearchTimeout,
}


# --- out: entities as MLflow's JSON ----------------------------------------------------------


def number(value: float | None) -> float | str:
    """A double as protobuf JSON writes it; None is a read model's NaN (stored as NULL)."""
    return "NaN" if value is None else json_number(value)


def _has_scheme(uri: str) -> bool:
    scheme = urlsplit(uri).scheme
    return len(scheme) > 1 or uri.startswith("mlflow-artifacts:")


def served_location(experiment: Experiment) -> str:
    """A local artifact location is served through the server's artifact proxy."""
    location = experiment.artifact_location
    return location if _has_scheme(location) else f"mlflow-artifacts:/{experiment.experiment_id}"


def served_location_of(location: str, proxied: str) -> str:
    """A local location as the proxy serves it (``mlflow-artifacts:/<proxied>``)."""
    return location if _has_scheme(location) else f"mlflow-artifacts:/{proxied}"


def served_artifact_uri(info: RunInfo) -> str:
    """A run's artifacts as the mlflow client should reach them: through the proxy."""
    uri = info.artifact_uri
    if _has_scheme(uri):
        return uri
    return f"mlflow-artifacts:/{info.experiment_id}/{info.run_id}/artifacts"


def pairs(items: dict[str, Any] | Iterable[Any] | None) -> list[dict[str, str]]:
    """Tags or params as MLflow's ``[{"key", "value"}]``; values become text."""
    if not items:
        return []
    found: Iterable[tuple[str, Any]]
    if isinstance(items, dict):
        found = items.items()
    else:
        found = ((item.key, item.value) for item in cast(Iterable[Any], items))
    return [{"key": k, "value": v if isinstance(v, str) else str(v)} for k, v in found]


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    """An experiment as MLflow's JSON."""
    out: dict[str, Any] = {
        "experiment_id": experiment.experiment_id,
        "name": experiment.name,
        "artifact_location": served_location(experiment),
        "lifecycle_stage": experiment.lifecycle_stage,
    }
    if experiment.last_update_time is not None:
        out["last_update_time"] = experiment.last_update_time
    if experiment.creation_time is not None:
        out["creation_time"] = experiment.creation_time
    if experiment.tags:
        out["tags"] = pairs(experiment.tags)
    return out


def run_info_json(info: RunInfo) -> dict[str, Any]:
    """A run's info as MLflow's JSON (``run_uuid`` and ``run_id`` both)."""
    out: dict[str, Any] = {
        "run_uuid": info.run_id,
        "experiment_id": info.experiment_id,
        "run_name": info.run_name,
        "user_id": info.user_id,
        "status": info.status,
        "start_time": info.start_time,
        "artifact_uri": served_artifact_uri(info),
        "lifecycle_stage": info.lifecycle_stage,
        "run_id": info.run_id,
    }
    if info.end_time is not None:
        out["end_time"] = info.end_time
    return out


def metric_json(metric: Metric) -> dict[str, Any]:
    """One metric point as MLflow's JSON."""
    return {"key": metric.key, "value": number(metric.value), "timestamp": metric.timestamp,
            "step": metric.step}  # fmt: skip


def run_json(run: Run) -> dict[str, Any]:
    """A run as MLflow's JSON: latest metrics with their step and timestamp, by key."""
    data: dict[str, Any] = {}
    if run.data.latest_metrics:
        data["metrics"] = [metric_json(m) for m in sorted(run.data.latest_metrics, key=_by_key)]
    if run.data.params:
        data["params"] = pairs(run.data.params)
    if run.data.tags:
        data["tags"] = pairs(run.data.tags)
    return {"info": run_info_json(run.info), "data": data, "inputs": run_inputs_json(run.inputs),
            "outputs": run_outputs_json(run.outputs)}  # fmt: skip


def run_inputs_json(inputs: RunInputs) -> dict[str, Any]:
    """A run's ``inputs``: the datasets it used (tags by key) and the logged models."""
    out: dict[str, Any] = {}
    if inputs.dataset_inputs:
        out["dataset_inputs"] = [_dataset_input_json(d) for d in inputs.dataset_inputs]
    if inputs.model_inputs:
        out["model_inputs"] = [{"model_id": m.model_id} for m in inputs.model_inputs]
    return out


def _dataset_input_json(given: DatasetInput) -> dict[str, Any]:
    dataset = {k: v for k, v in msgspec.structs.asdict(given.dataset).items() if v is not None}
    out: dict[str, Any] = {"dataset": dataset}
    if given.tags:
        out = {"tags": pairs(given.tags), **out}
    return out


def run_outputs_json(outputs: RunOutputs) -> dict[str, Any]:
    """A run's ``outputs``: the models it produced."""
    if not outputs.model_outputs:
        return {}
    return {"model_outputs": [{"model_id": m.model_id, "step": m.step} for m in outputs.model_outputs]}


def _by_key(metric: Metric) -> str:
    return metric.key


def page_json(name: str, items: list[Any], token: str | None) -> dict[str, Any]:
    """A page of results under ``name``, with ``next_page_token`` when there is more (an
    empty page leaves ``name`` out, as protobuf's JSON leaves out an empty list)."""
    out: dict[str, Any] = {name: items} if items else {}
    if token:
        out["next_page_token"] = token
    return out


# --- in: MLflow's JSON as entities ------------------------------------------------------------


def _float(value: Any) -> float:
    return float(value) if isinstance(value, str) else value


def experiment_from(data: dict[str, Any]) -> Experiment:
    """An experiment from MLflow's JSON."""
    return Experiment(
        experiment_id=data["experiment_id"], name=data["name"],
        artifact_location=data.get("artifact_location", ""),
        lifecycle_stage=data.get("lifecycle_stage", "active"),
        tags={t["key"]: t.get("value", "") for t in data.get("tags", [])},
        creation_time=data.get("creation_time"), last_update_time=data.get("last_update_time"),
    )  # fmt: skip


def run_info_from(info: dict[str, Any]) -> RunInfo:
    """A run's info from MLflow's JSON."""
    return RunInfo(
        run_id=info.get("run_id") or info["run_uuid"], experiment_id=info["experiment_id"],
        run_name=info.get("run_name", ""), user_id=info.get("user_id", ""),
        status=info.get("status", "RUNNING"), start_time=info.get("start_time", 0),
        end_time=info.get("end_time"), lifecycle_stage=info.get("lifecycle_stage", "active"),
        artifact_uri=info.get("artifact_uri", ""),
    )  # fmt: skip


def metric_from(data: dict[str, Any]) -> Metric:
    """One metric point from MLflow's JSON."""
    return Metric(data["key"], _float(data.get("value", 0.0)), data.get("timestamp", 0),
                  data.get("step", 0))  # fmt: skip


def run_from(data: dict[str, Any]) -> Run:
    """A run from MLflow's JSON."""
    body = data.get("data", {})
    latest = [metric_from(m) for m in body.get("metrics", [])]
    return Run(
        run_info_from(data["info"]),
        RunData(
            params={p["key"]: p.get("value", "") for p in body.get("params", [])},
            metrics={m.key: m.value for m in latest},
            tags={t["key"]: t.get("value", "") for t in body.get("tags", [])},
            latest_metrics=latest,
        ),
        run_inputs_from(data.get("inputs") or {}),
        run_outputs_from(data.get("outputs") or {}),
    )


def run_inputs_from(data: dict[str, Any]) -> RunInputs:
    """A run's inputs from MLflow's JSON."""
    return RunInputs(
        [DatasetInput(Dataset(**{k: d["dataset"].get(k) for k in _DATASET_FIELDS}),  # type: ignore[arg-type]
                      [InputTag(t["key"], t.get("value", "")) for t in d.get("tags", [])])
         for d in data.get("dataset_inputs", [])],
        [LoggedModelInput(m["model_id"]) for m in data.get("model_inputs", [])],
    )  # fmt: skip


_DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def run_outputs_from(data: dict[str, Any]) -> RunOutputs:
    """A run's outputs from MLflow's JSON."""
    return RunOutputs([LoggedModelOutput(m["model_id"], int(m.get("step", 0)))
                       for m in data.get("model_outputs", [])])  # fmt: skip


def error_from(status: int, data: bytes) -> EvstoreError:
    """The evstore error an MLflow error response stands for."""
    try:
        payload = msgspec.json.decode(data)
        code, message = payload.get("error_code", ""), payload.get("message", "")
    except (msgspec.DecodeError, AttributeError):
        code, message = "", data[:200].decode("utf-8", "replace")
    error_type = ERRORS.get(code) or (ResourceDoesNotExist if status == 404 else StoreError)
    return error_type(message or f"HTTP {status}")
