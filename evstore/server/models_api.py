"""MLflow 3's logged-model endpoints (``/api/2.0/mlflow/logged-models/...``) and a run's
outputs, over the tracking service. Registered into ``mlflow_api.ENDPOINTS``; a
``{name}`` in a path is a URL segment the request takes that field from."""

from __future__ import annotations

from typing import Any

import msgspec

from evstore.server import model_schemas as s
from evstore.server._http import EMPTY_OBJECT
from evstore.server.mlflow_api import endpoint
from evstore.tracking.model_wire import logged_model_json
from evstore.tracking.service import TrackingService
from evstore.tracking.wire import page_json

MODEL = "logged-models/{model_id}"


@endpoint("POST", "logged-models", s.CreateLoggedModel)
def create_logged_model(client: TrackingService, req: s.CreateLoggedModel, _key: str) -> Any:
    model = client.create_logged_model(
        req.experiment_id, req.name or None, req.source_run_id or None,
        {t.key: t.value for t in req.tags}, {p.key: p.value for p in req.params},
        req.model_type or None,
    )  # fmt: skip
    return {"model": logged_model_json(model)}


@endpoint("GET", MODEL, s.LoggedModelId)
def get_logged_model(client: TrackingService, req: s.LoggedModelId, _key: str) -> Any:
    return {"model": logged_model_json(client.get_logged_model(req.model_id, req.allow_deleted))}


@endpoint("PATCH", MODEL, s.FinalizeLoggedModel)
def finalize_logged_model(client: TrackingService, req: s.FinalizeLoggedModel, _key: str) -> Any:
    status = req.status if isinstance(req.status, str) else {2: "READY", 3: "FAILED"}.get(req.status, str(req.status))
    return {"model": logged_model_json(client.finalize_logged_model(req.model_id, status))}


@endpoint("DELETE", MODEL, s.LoggedModelId)
def delete_logged_model(client: TrackingService, req: s.LoggedModelId, _key: str) -> Any:
    client.delete_logged_model(req.model_id)
    return EMPTY_OBJECT


@endpoint("PATCH", MODEL + "/tags", s.SetLoggedModelTags)
def set_logged_model_tags(client: TrackingService, req: s.SetLoggedModelTags, _key: str) -> Any:
    client.set_logged_model_tags(req.model_id, {t.key: t.value for t in req.tags})
    return EMPTY_OBJECT


@endpoint("DELETE", MODEL + "/tags/{tag_key}", s.DeleteLoggedModelTag)
def delete_logged_model_tag(client: TrackingService, req: s.DeleteLoggedModelTag, _key: str) -> Any:
    client.delete_logged_model_tag(req.model_id, req.tag_key)
    return EMPTY_OBJECT


@endpoint("POST", MODEL + "/params", s.LogLoggedModelParams)
def log_logged_model_params(client: TrackingService, req: s.LogLoggedModelParams, _key: str) -> Any:
    client.log_model_params(req.model_id, {p.key: p.value for p in req.params})
    return EMPTY_OBJECT


@endpoint("POST", "logged-models/search", s.SearchLoggedModels)
def search_logged_models(client: TrackingService, req: s.SearchLoggedModels, _key: str) -> Any:
    page = client.search_logged_models(
        req.experiment_ids, req.filter, msgspec.to_builtins(req.datasets), req.max_results,
        msgspec.to_builtins(req.order_by), req.page_token,
    )  # fmt: skip
    return page_json("models", [logged_model_json(m) for m in page], page.token)


@endpoint("POST", "runs/outputs", s.LogOutputs)
def log_outputs(client: TrackingService, req: s.LogOutputs, _key: str) -> Any:
    client.log_outputs(req.run_id, [(m.model_id, m.step) for m in req.models])
    return EMPTY_OBJECT


@endpoint("POST", "runs/log-inputs", s.LogInputs)
def log_inputs(client: TrackingService, req: s.LogInputs, _key: str) -> Any:
    client.log_inputs(req.run_id, msgspec.to_builtins(req.datasets), [m.model_id for m in req.models])
    return EMPTY_OBJECT
