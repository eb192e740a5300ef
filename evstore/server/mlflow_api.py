"""MLflow's tracking REST API (``/api/2.0/mlflow/...``) over ``evstore.Client``.

Each handler runs through the store gate with the decoded request and returns JSON-able
data in the shapes MLflow's server answers (see the 3.17 capture). Retries:

- metric points (log-metric, and the metrics and params of log-batch) are written with an
  idempotency key derived from the endpoint and the canonical request, so a retried
  request is stored once. MLflow's own store keeps identical points once as well.
- tags, run updates and experiment tags are set only when they change the state. A
  retry then writes nothing, while setting A=1, A=2, A=1 still ends at A=1 (a key over
  the request alone would have swallowed the third call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from evstore import reads
from evstore.client import Client
from evstore.entities import (
    Experiment,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunInfo,
    RunTag,
    ViewType,
)
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.inspect import json_number
from evstore.server import schemas as s
from evstore.server._http import EMPTY_OBJECT
from evstore.validation import validate_batch_limits, validate_key

Handler = Callable[[Client, Any, str], Any]

#: (HTTP method, path under /api/2.0/mlflow/) -> (request schema, handler)
ENDPOINTS: dict[tuple[str, str], tuple[type, Handler]] = {}
#: Endpoints whose cost grows with the store: run on the worker thread, off the event loop.
SLOW_ENDPOINTS = frozenset({"runs/search", "experiments/search", "metrics/get-history"})

_EXPERIMENT_ORDER_FIELDS = {"name", "experiment_id", "creation_time", "last_update_time"}
_LATEST_METRICS = (
    "SELECT run_id, key, value, timestamp, step FROM latest_metrics WHERE run_id IN ({marks})"
)


def endpoint(method: str, path: str, schema: type) -> Callable[[Handler], Handler]:
    """Register a handler for ``method /api/2.0/mlflow/<path>``."""

    def register(handler: Handler) -> Handler:
        ENDPOINTS[(method, path)] = (schema, handler)
        return handler

    return register


# --- JSON shapes ------------------------------------------------------------------------


def number(value: float | None) -> float | str:
    """A double as protobuf JSON writes it; None is a read model's NaN (stored as NULL)."""
    return "NaN" if value is None else json_number(value)


def _has_scheme(uri: str) -> bool:
    scheme = urlsplit(uri).scheme
    return len(scheme) > 1 or uri.startswith("mlflow-artifacts:")


def served_location(experiment: Experiment) -> str:
    """A local artifact location is served through this server's artifact proxy."""
    location = experiment.artifact_location
    return location if _has_scheme(location) else f"mlflow-artifacts:/{experiment.experiment_id}"


def served_artifact_uri(info: RunInfo) -> str:
    """A run's artifacts as the mlflow client should reach them: through the proxy."""
    uri = info.artifact_uri
    if _has_scheme(uri):
        return uri
    return f"mlflow-artifacts:/{info.experiment_id}/{info.run_id}/artifacts"


def _pairs(items: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in items.items()]


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
        out["tags"] = _pairs(experiment.tags)
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


def runs_json(client: Client, runs: list[Run]) -> list[dict[str, Any]]:
    """Runs as MLflow's JSON, latest metrics with their step and timestamp."""
    latest: dict[str, list[dict[str, Any]]] = {run.info.run_id: [] for run in runs}
    ids = list(latest)
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        sql = _LATEST_METRICS.format(marks=",".join("?" * len(chunk)))
        for run_id, key, value, timestamp, step in client.store.query(sql, chunk):
            latest[run_id].append(
                {"key": key, "value": number(value), "timestamp": timestamp, "step": step}
            )
    return [
        {
            "info": run_info_json(run.info),
            "data": {
                "metrics": sorted(latest[run.info.run_id], key=lambda m: m["key"]),
                "params": _pairs(run.data.params),
                "tags": _pairs(run.data.tags),
            },
            "inputs": {},
            "outputs": {},
        }
        for run in runs
    ]


def _offset(token: str | None) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidParameterValue(f"Invalid page token {token!r}")
    return int(token)


# --- experiments ------------------------------------------------------------------------


@endpoint("GET", "experiments/get-by-name", s.GetExperimentByName)
def get_experiment_by_name(client: Client, req: s.GetExperimentByName, _key: str) -> Any:
    found = client.get_experiment_by_name(req.experiment_name)
    if found is None:
        raise ResourceDoesNotExist(f"Could not find experiment with name '{req.experiment_name}'")
    return {"experiment": experiment_json(found)}


@endpoint("POST", "experiments/create", s.CreateExperiment)
def create_experiment(client: Client, req: s.CreateExperiment, _key: str) -> Any:
    tags = {t.key: t.value for t in req.tags}
    with client.store.transaction() as conn:
        proposed = reads.next_experiment_id(conn)
        location = req.artifact_location or f"mlflow-artifacts:/{proposed}"
        experiment_id = client.create_experiment(req.name, location, tags)
        if not req.artifact_location and experiment_id != proposed:  # pragma: no cover
            raise InvalidParameterValue("experiment id allocation changed; retry the request")
    return {"experiment_id": experiment_id}


@endpoint("GET", "experiments/get", s.ExperimentId)
def get_experiment(client: Client, req: s.ExperimentId, _key: str) -> Any:
    return {"experiment": experiment_json(client.get_experiment(req.experiment_id))}


def search_experiments(client: Client, req: s.SearchExperiments, _key: str) -> Any:
    try:
        view_type = ViewType.from_string(req.view_type)
    except KeyError:
        raise InvalidParameterValue(f"Invalid view_type {req.view_type!r}") from None
    for clause in req.order_by:
        field, _, direction = clause.strip().partition(" ")
        if field.split(".")[-1] not in _EXPERIMENT_ORDER_FIELDS or direction.strip().upper() not in (
            "", "ASC", "DESC",
        ):  # fmt: skip
            raise InvalidParameterValue(f"Invalid order_by clause {clause!r}")
    if not 1 <= req.max_results <= 50000:
        raise InvalidParameterValue(f"max_results must be between 1 and 50000, got {req.max_results}")
    page = client.search_experiments(  # checks the page token
        view_type, req.max_results, req.filter, req.order_by or None, req.page_token
    )
    out: dict[str, Any] = {"experiments": [experiment_json(e) for e in page]}
    if page.token:
        out["next_page_token"] = page.token
    return out


ENDPOINTS[("POST", "experiments/search")] = (s.SearchExperiments, search_experiments)
ENDPOINTS[("GET", "experiments/search")] = (s.SearchExperiments, search_experiments)


@endpoint("POST", "experiments/update", s.UpdateExperiment)
def update_experiment(client: Client, req: s.UpdateExperiment, _key: str) -> Any:
    client.rename_experiment(req.experiment_id, req.new_name)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/delete", s.ExperimentId)
def delete_experiment(client: Client, req: s.ExperimentId, _key: str) -> Any:
    client.delete_experiment(req.experiment_id)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/restore", s.ExperimentId)
def restore_experiment(client: Client, req: s.ExperimentId, _key: str) -> Any:
    client.restore_experiment(req.experiment_id)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/set-experiment-tag", s.SetExperimentTag)
def set_experiment_tag(client: Client, req: s.SetExperimentTag, _key: str) -> Any:
    with client.store.transaction():
        if client.get_experiment(req.experiment_id).tags.get(req.key) != req.value:
            client.set_experiment_tag(req.experiment_id, req.key, req.value)
    return EMPTY_OBJECT


# --- runs -------------------------------------------------------------------------------


@endpoint("POST", "runs/create", s.CreateRun)
def create_run(client: Client, req: s.CreateRun, _key: str) -> Any:
    run = client.create_run(
        req.experiment_id,
        start_time=req.start_time,
        tags={t.key: t.value for t in req.tags},
        run_name=req.run_name or None,
        user_id=req.user_id or None,
    )
    return {"run": runs_json(client, [run])[0]}


@endpoint("GET", "runs/get", s.GetRun)
def get_run(client: Client, req: s.GetRun, _key: str) -> Any:
    return {"run": runs_json(client, [client.get_run(req.run_id)])[0]}


@endpoint("POST", "runs/update", s.UpdateRun)
def update_run(client: Client, req: s.UpdateRun, _key: str) -> Any:
    with client.store.transaction():
        info = client.get_run(req.run_id).info
        unchanged = (
            info.lifecycle_stage == LifecycleStage.ACTIVE
            and req.status in (None, info.status)
            and req.end_time in (None, info.end_time)
            and req.run_name in (None, "", info.run_name)
        )
        if not unchanged:
            client.update_run(req.run_id, req.status, req.run_name or None, req.end_time)
            info = client.get_run(req.run_id).info
    return {"run_info": run_info_json(info)}


@endpoint("POST", "runs/delete", s.RunId)
def delete_run(client: Client, req: s.RunId, _key: str) -> Any:
    client.delete_run(req.run_id)
    return EMPTY_OBJECT


@endpoint("POST", "runs/restore", s.RunId)
def restore_run(client: Client, req: s.RunId, _key: str) -> Any:
    client.restore_run(req.run_id)
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-metric", s.LogMetric)
def log_metric(client: Client, req: s.LogMetric, key: str) -> Any:
    client.log_metric(
        req.run_id, req.key, req.value, req.timestamp, req.step, None,
        req.dataset_name, req.dataset_digest, req.model_id, idempotency_key=key,
    )  # fmt: skip
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-parameter", s.LogParam)
def log_param(client: Client, req: s.LogParam, _key: str) -> Any:
    client.log_param(req.run_id, req.key, req.value)  # the same value again writes nothing
    return EMPTY_OBJECT


@endpoint("POST", "runs/set-tag", s.SetTag)
def set_tag(client: Client, req: s.SetTag, _key: str) -> Any:
    with client.store.transaction():
        run = client.get_run(req.run_id)
        if run.info.lifecycle_stage != LifecycleStage.ACTIVE or run.data.tags.get(req.key) != req.value:
            client.set_tag(req.run_id, req.key, req.value)
    return EMPTY_OBJECT


@endpoint("POST", "runs/delete-tag", s.DeleteTag)
def delete_tag(client: Client, req: s.DeleteTag, _key: str) -> Any:
    client.delete_tag(req.run_id, req.key)
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-batch", s.LogBatch)
def log_batch(client: Client, req: s.LogBatch, key: str) -> Any:
    validate_batch_limits(len(req.metrics), len(req.params), len(req.tags))
    final_tags = {validate_key("tag", t.key): t.value for t in req.tags}  # last value wins
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step, m.model_id, m.dataset_name, m.dataset_digest)
        for m in req.metrics
    ]
    params = [Param(p.key, p.value) for p in req.params]
    # One transaction: the keyed metrics-and-params write and the changed tags commit together.
    with client.store.transaction():
        if final_tags:
            run = client.get_run(req.run_id)
            if run.info.lifecycle_stage == LifecycleStage.ACTIVE:
                current = run.data.tags
                final_tags = {k: v for k, v in final_tags.items() if current.get(k) != v}
        client.log_batch(req.run_id, metrics, params, idempotency_key=key)
        if final_tags:
            client.log_batch(req.run_id, tags=[RunTag(k, v) for k, v in final_tags.items()])
    return EMPTY_OBJECT


@endpoint("POST", "runs/search", s.SearchRuns)
def search_runs(client: Client, req: s.SearchRuns, _key: str) -> Any:
    page = client.search_runs(
        req.experiment_ids, req.filter, req.run_view_type, req.max_results,
        req.order_by or None, req.page_token,
    )  # fmt: skip
    out: dict[str, Any] = {"runs": runs_json(client, list(page))}
    if page.token:
        out["next_page_token"] = page.token
    return out


@endpoint("GET", "metrics/get-history", s.GetMetricHistory)
def get_metric_history(client: Client, req: s.GetMetricHistory, _key: str) -> Any:
    history = client.get_metric_history(req.run_id, req.metric_key)
    start = _offset(req.page_token)
    end = len(history) if not req.max_results else start + req.max_results
    out: dict[str, Any] = {
        "metrics": [
            {"key": m.key, "value": number(m.value), "timestamp": m.timestamp, "step": m.step}
            for m in history[start:end]
        ]
    }
    if end < len(history):
        out["next_page_token"] = str(end)
    return out

