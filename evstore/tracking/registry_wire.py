"""MLflow's JSON for the model registry (``RegisteredModel``, ``ModelVersion``)."""

from __future__ import annotations

from typing import Any

from evstore.tracking.registry import ModelVersion, RegisteredModel
from evstore.tracking.wire import pairs


def model_version_json(version: ModelVersion, with_aliases: bool = True) -> dict[str, Any]:
    """A model version as MLflow's JSON (``run_id`` "" when it has none, as MLflow)."""
    out: dict[str, Any] = {
        "name": version.name,
        "version": version.version,
        "creation_timestamp": version.creation_timestamp,
        "last_updated_timestamp": version.last_updated_timestamp,
        "current_stage": version.current_stage,
        "description": version.description,
        "source": version.source,
    }
    if version.user_id:
        out["user_id"] = version.user_id
    out["run_id"] = version.run_id or ""
    out["status"] = version.status
    if version.tags:
        out["tags"] = pairs(version.tags)
    out["run_link"] = version.run_link
    if with_aliases and version.aliases:
        out["aliases"] = version.aliases
    if version.model_id:  # a field of MLflow's message its server leaves empty
        out["model_id"] = version.model_id
    return out


def registered_model_json(model: RegisteredModel) -> dict[str, Any]:
    """A registered model as MLflow's JSON: latest version per stage, tags, aliases."""
    out: dict[str, Any] = {
        "name": model.name,
        "creation_timestamp": model.creation_timestamp,
        "last_updated_timestamp": model.last_updated_timestamp,
    }
    if model.description:
        out["description"] = model.description
    if model.latest_versions:
        out["latest_versions"] = [model_version_json(v, False) for v in model.latest_versions]
    if model.tags:
        out["tags"] = pairs(model.tags)
    if model.aliases:
        out["aliases"] = [{"alias": a, "version": v} for a, v in model.aliases.items()]
    return out


# --- in: MLflow's JSON as the registry's entities --------------------------------------------


def _tags_from(data: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in data.get("tags", [])}


def model_version_from(data: dict[str, Any]) -> ModelVersion:
    """A model version from MLflow's JSON."""
    return ModelVersion(
        name=data["name"], version=str(data["version"]),
        creation_timestamp=int(data.get("creation_timestamp", 0)),
        last_updated_timestamp=int(data.get("last_updated_timestamp", 0)),
        description=data.get("description", ""), user_id=data.get("user_id", ""),
        current_stage=data.get("current_stage", "None"), source=data.get("source", ""),
        run_id=data.get("run_id") or None, model_id=data.get("model_id") or None, run_link=data.get("run_link", ""),
        status=data.get("status", "READY"), tags=_tags_from(data), aliases=list(data.get("aliases", [])),
    )  # fmt: skip


def registered_model_from(data: dict[str, Any]) -> RegisteredModel:
    """A registered model from MLflow's JSON."""
    return RegisteredModel(
        name=data["name"], creation_timestamp=int(data.get("creation_timestamp", 0)),
        last_updated_timestamp=int(data.get("last_updated_timestamp", 0)),
        description=data.get("description", ""), tags=_tags_from(data),
        aliases={a["alias"]: str(a["version"]) for a in data.get("aliases", [])},
        latest_versions=[model_version_from(v) for v in data.get("latest_versions", [])],
    )  # fmt: skip
