"""MLflow's tracking REST API (``/api/2.0/mlflow/...``) over the tracking service.

Each handler takes the decoded request, calls the one tracking service (every rule lives
there: validation, lifecycle checks, "write only if changed", paging) and returns its
answer in MLflow's JSON (``evstore.tracking.wire``). Retries: metric points (log-metric,
and the metrics and params of log-batch) are written with an idempotency key naming the
endpoint, the run and the ``Idempotency-Key`` header if sent; the service derives the
event ids from it and the request's values, so a retried request is stored once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evstore.entities import Param, RunTag, ViewType
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.server import schemas as s
from evstore.server._http import EMPTY_OBJECT
from evstore.tracking.service import TrackingService
from evstore.tracking.wire import experiment_json, metric_json, page_json, run_info_json, run_json

Handler = Callable[[TrackingService, Any, str], Any]

#: (HTTP method, path under /api/2.0/mlflow/) -> (request schema, handler)
ENDPOINTS: dict[tuple[str, str], tuple[type, Handler]] = {}
#: Endpoints whose cost grows with the store: run on the worker thread, off the event loop.
SLOW_ENDPOINTS = frozenset({"runs/search", "experiments/search", "metrics/get-history",
                            "logged-models/search", "registered-models/search", "model-versions/search"})

def endpoint(method: str, path: str, schema: type) -> Callable[[Handler], Handler]:
    """Register a handler for ``method /api/2.0/mlflow/<path>``."""

    def register(handler: Handler) -> Handler:
        ENDPOINTS[(method, path)] = (schema, handler)
        return handler

    return register


# --- experiments ------------------------------------------------------------------------


@endpoint("GET", "experiments/get-by-name", s.GetExperimentByName)
def get_experiment_by_name(client: TrackingService, req: s.GetExperimentByName, _key: str) -> Any:
    found = client.get_experiment_by_name(req.experiment_name)
    if found is None:
        raise ResourceDoesNotExist(f"Could not find experiment with name '{req.experiment_name}'")
    return {"experiment": experiment_json(found)}


@endpoint("POST", "experiments/create", s.CreateExperiment)
def create_experiment(client: TrackingService, req: s.CreateExperiment, _key: str) -> Any:
    tags = {t.key: t.value for t in req.tags}
    return {"experiment_id": client.create_experiment(req.name, req.artifact_location or None, tags)}


@endpoint("GET", "experiments/get", s.ExperimentId)
def get_experiment(client: TrackingService, req: s.ExperimentId, _key: str) -> Any:
    return {"experiment": experiment_json(client.get_experiment(req.experiment_id))}


def search_experiments(client: TrackingService, req: s.SearchExperiments, _key: str) -> Any:
    try:
        view_type = ViewType.from_string(req.view_type)
    except KeyError:
        raise InvalidParameterValue(f"Invalid view_type {req.view_type!r}") from None
    page = client.search_experiments(
        view_type, req.max_results, req.filter, req.order_by or None, req.page_token
    )
    return page_json("experiments", [experiment_json(e) for e in page], page.token)


ENDPOINTS[("POST", "experiments/search")] = (s.SearchExperiments, search_experiments)
ENDPOINTS[("GET", "experiments/search")] = (s.SearchExperiments, search_experiments)


@endpoint("POST", "experiments/update", s.UpdateExperiment)
def update_experiment(client: TrackingService, req: s.UpdateExperiment, _key: str) -> Any:
    client.rename_experiment(req.experiment_id, req.new_name)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/delete", s.ExperimentId)
def delete_experiment(client: TrackingService, req: s.ExperimentId, _key: str) -> Any:
    client.delete_experiment(req.experiment_id)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/restore", s.ExperimentId)
def restore_experiment(client: TrackingService, req: s.ExperimentId, _key: str) -> Any:
    client.restore_experiment(req.experiment_id)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/set-experiment-tag", s.SetExperimentTag)
def set_experiment_tag(client: TrackingService, req: s.SetExperimentTag, _key: str) -> Any:
    client.set_experiment_tag(req.experiment_id, req.key, req.value)
    return EMPTY_OBJECT


@endpoint("POST", "experiments/delete-experiment-tag", s.DeleteExperimentTag)
def delete_experiment_tag(client: TrackingService, req: s.DeleteExperimentTag, _key: str) -> Any:
    client.delete_experiment_tag(req.experiment_id, req.key)
    return EMPTY_OBJECT


# --- runs -------------------------------------------------------------------------------


@endpoint("POST", "runs/create", s.CreateRun)
def create_run(client: TrackingService, req: s.CreateRun, _key: str) -> Any:
    run = client.create_run(
        req.experiment_id,
        start_time=req.start_time,
        tags={t.key: t.value for t in req.tags},
        run_name=req.run_name or None,
        user_id=req.user_id or None,
    )
    return {"run": run_json(run)}


@endpoint("GET", "runs/get", s.GetRun)
def get_run(client: TrackingService, req: s.GetRun, _key: str) -> Any:
    return {"run": run_json(client.get_run(req.run_id))}


@endpoint("POST", "runs/update", s.UpdateRun)
def update_run(client: TrackingService, req: s.UpdateRun, _key: str) -> Any:
    info = client.update_run(req.run_id, req.status, req.run_name or None, req.end_time)
    return {"run_info": run_info_json(info)}


@endpoint("POST", "runs/delete", s.RunId)
def delete_run(client: TrackingService, req: s.RunId, _key: str) -> Any:
    client.delete_run(req.run_id)
    return EMPTY_OBJECT


@endpoint("POST", "runs/restore", s.RunId)
def restore_run(client: TrackingService, req: s.RunId, _key: str) -> Any:
    client.restore_run(req.run_id)
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-metric", s.LogMetric)
def log_metric(client: TrackingService, req: s.LogMetric, key: str) -> Any:
    client.log_metric(
        req.run_id, req.key, req.value, req.timestamp, req.step, None,
        req.dataset_name, req.dataset_digest, req.model_id, idempotency_key=key,
    )  # fmt: skip
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-parameter", s.LogParam)
def log_param(client: TrackingService, req: s.LogParam, _key: str) -> Any:
    client.log_param(req.run_id, req.key, req.value)
    return EMPTY_OBJECT


@endpoint("POST", "runs/set-tag", s.SetTag)
def set_tag(client: TrackingService, req: s.SetTag, _key: str) -> Any:
    client.set_tag(req.run_id, req.key, req.value)
    return EMPTY_OBJECT


@endpoint("POST", "runs/delete-tag", s.DeleteTag)
def delete_tag(client: TrackingService, req: s.DeleteTag, _key: str) -> Any:
    client.delete_tag(req.run_id, req.key)
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-batch", s.LogBatch)
def log_batch(client: TrackingService, req: s.LogBatch, key: str) -> Any:
    params = [Param(p.key, p.value) for p in req.params]
    tags = [RunTag(t.key, t.value) for t in req.tags]
    client.log_batch(req.run_id, req.metrics, params, tags, idempotency_key=key)
    return EMPTY_OBJECT


@endpoint("POST", "runs/search", s.SearchRuns)
def search_runs(client: TrackingService, req: s.SearchRuns, _key: str) -> Any:
    page = client.search_runs(
        req.experiment_ids, req.filter, req.run_view_type, req.max_results,
        req.order_by or None, req.page_token,
    )  # fmt: skip
    return page_json("runs", [run_json(run) for run in page], page.token)


@endpoint("GET", "metrics/get-history", s.GetMetricHistory)
def get_metric_history(client: TrackingService, req: s.GetMetricHistory, _key: str) -> Any:
    page = client.get_metric_history_page(
        req.run_id, req.metric_key, req.max_results, req.page_token
    )
    return page_json("metrics", [metric_json(m) for m in page], page.token)


def match_path(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The registered ``(method, template)`` path a URL path fills (``logged-models/{model_id}``
    for ``logged-models/m-1``) and the values of its ``{fields}``; None when none fits."""
    parts = path.split("/")
    for registered_method, template in ENDPOINTS:
        if registered_method != method or "{" not in template:
            continue
        pattern = template.split("/")
        if len(pattern) != len(parts):
            continue
        values: dict[str, str] = {}
        for expected, found in zip(pattern, parts, strict=True):
            if expected.startswith("{"):
                if not found:
                    break
                values[expected[1:-1]] = found
            elif expected != found:
                break
        else:
            return template, values
    return None


# The other domains register their endpoints here too (after ``endpoint`` exists).
from evstore.server import models_api as _models_api  # noqa: F401
from evstore.server import registry_api as _registry_api  # noqa: F401
