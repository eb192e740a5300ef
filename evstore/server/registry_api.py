"""MLflow's model-registry endpoints (``/api/2.0/mlflow/registered-models/...`` and
``/model-versions/...``) over the tracking service; registered into ``mlflow_api``."""

from __future__ import annotations

from typing import Any

from evstore.server import registry_schemas as s
from evstore.server._http import EMPTY_OBJECT
from evstore.server.mlflow_api import ENDPOINTS, endpoint
from evstore.tracking.registry_wire import model_version_json, registered_model_json
from evstore.tracking.service import TrackingService
from evstore.tracking.wire import page_json

RM, MV = "registered-models/", "model-versions/"


@endpoint("POST", RM + "create", s.CreateRegisteredModel)
def create_registered_model(client: TrackingService, req: s.CreateRegisteredModel, _key: str) -> Any:
    model = client.create_registered_model(req.name, {t.key: t.value for t in req.tags}, req.description)
    return {"registered_model": registered_model_json(model)}


@endpoint("GET", RM + "get", s.RegisteredModelName)
def get_registered_model(client: TrackingService, req: s.RegisteredModelName, _key: str) -> Any:
    return {"registered_model": registered_model_json(client.get_registered_model(req.name))}


@endpoint("POST", RM + "rename", s.RenameRegisteredModel)
def rename_registered_model(client: TrackingService, req: s.RenameRegisteredModel, _key: str) -> Any:
    return {"registered_model": registered_model_json(client.rename_registered_model(req.name, req.new_name))}


@endpoint("PATCH", RM + "update", s.UpdateRegisteredModel)
def update_registered_model(client: TrackingService, req: s.UpdateRegisteredModel, _key: str) -> Any:
    model = client.update_registered_model(req.name, req.description)
    return {"registered_model": registered_model_json(model)}


@endpoint("DELETE", RM + "delete", s.RegisteredModelName)
def delete_registered_model(client: TrackingService, req: s.RegisteredModelName, _key: str) -> Any:
    client.delete_registered_model(req.name)
    return EMPTY_OBJECT


@endpoint("GET", RM + "search", s.SearchRegisteredModels)
def search_registered_models(client: TrackingService, req: s.SearchRegisteredModels, _key: str) -> Any:
    page = client.search_registered_models(req.filter, req.max_results, req.order_by or None, req.page_token)
    return page_json("registered_models", [registered_model_json(m) for m in page], page.token)


@endpoint("POST", RM + "set-tag", s.RegisteredModelTag)
def set_registered_model_tag(client: TrackingService, req: s.RegisteredModelTag, _key: str) -> Any:
    client.set_registered_model_tag(req.name, req.key, req.value)
    return EMPTY_OBJECT


@endpoint("DELETE", RM + "delete-tag", s.RegisteredModelTag)
def delete_registered_model_tag(client: TrackingService, req: s.RegisteredModelTag, _key: str) -> Any:
    client.delete_registered_model_tag(req.name, req.key)
    return EMPTY_OBJECT


@endpoint("POST", RM + "alias", s.Alias)
def set_registered_model_alias(client: TrackingService, req: s.Alias, _key: str) -> Any:
    client.set_registered_model_alias(req.name, req.alias, req.version)
    return EMPTY_OBJECT


@endpoint("DELETE", RM + "alias", s.Alias)
def delete_registered_model_alias(client: TrackingService, req: s.Alias, _key: str) -> Any:
    client.delete_registered_model_alias(req.name, req.alias)
    return EMPTY_OBJECT


@endpoint("GET", RM + "alias", s.Alias)
def get_model_version_by_alias(client: TrackingService, req: s.Alias, _key: str) -> Any:
    return {"model_version": model_version_json(client.get_model_version_by_alias(req.name, req.alias))}


def get_latest_versions(client: TrackingService, req: s.GetLatestVersions, _key: str) -> Any:
    found = client.get_latest_versions(req.name, req.stages or None)
    return {"model_versions": [model_version_json(v) for v in found]}


ENDPOINTS[("POST", RM + "get-latest-versions")] = (s.GetLatestVersions, get_latest_versions)
ENDPOINTS[("GET", RM + "get-latest-versions")] = (s.GetLatestVersions, get_latest_versions)


@endpoint("POST", MV + "create", s.CreateModelVersion)
def create_model_version(client: TrackingService, req: s.CreateModelVersion, _key: str) -> Any:
    version = client.create_model_version(
        req.name, req.source, req.run_id, {t.key: t.value for t in req.tags},
        req.run_link, req.description, req.model_id,
    )  # fmt: skip
    return {"model_version": model_version_json(version)}


@endpoint("GET", MV + "get", s.ModelVersionId)
def get_model_version(client: TrackingService, req: s.ModelVersionId, _key: str) -> Any:
    return {"model_version": model_version_json(client.get_model_version(req.name, req.version))}


@endpoint("PATCH", MV + "update", s.UpdateModelVersion)
def update_model_version(client: TrackingService, req: s.UpdateModelVersion, _key: str) -> Any:
    version = client.update_model_version(req.name, req.version, req.description)
    return {"model_version": model_version_json(version)}


@endpoint("POST", MV + "transition-stage", s.TransitionStage)
def transition_stage(client: TrackingService, req: s.TransitionStage, _key: str) -> Any:
    version = client.transition_model_version_stage(
        req.name, req.version, req.stage, req.archive_existing_versions
    )
    return {"model_version": model_version_json(version)}


@endpoint("DELETE", MV + "delete", s.ModelVersionId)
def delete_model_version(client: TrackingService, req: s.ModelVersionId, _key: str) -> Any:
    client.delete_model_version(req.name, req.version)
    return EMPTY_OBJECT


@endpoint("GET", MV + "get-download-uri", s.ModelVersionId)
def get_download_uri(client: TrackingService, req: s.ModelVersionId, _key: str) -> Any:
    return {"artifact_uri": client.get_model_version_download_uri(req.name, req.version)}


@endpoint("POST", MV + "set-tag", s.ModelVersionTag)
def set_model_version_tag(client: TrackingService, req: s.ModelVersionTag, _key: str) -> Any:
    client.set_model_version_tag(req.name, req.version, req.key, req.value)
    return EMPTY_OBJECT


@endpoint("DELETE", MV + "delete-tag", s.ModelVersionTag)
def delete_model_version_tag(client: TrackingService, req: s.ModelVersionTag, _key: str) -> Any:
    client.delete_model_version_tag(req.name, req.version, req.key)
    return EMPTY_OBJECT


@endpoint("GET", MV + "search", s.SearchModelVersions)
def search_model_versions(client: TrackingService, req: s.SearchModelVersions, _key: str) -> Any:
    page = client.search_model_versions(req.filter, req.max_results, req.order_by or None, req.page_token)
    return page_json("model_versions", [model_version_json(v, False) for v in page], page.token)
