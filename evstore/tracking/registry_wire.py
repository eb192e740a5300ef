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
