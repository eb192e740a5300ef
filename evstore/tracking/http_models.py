"""The HTTP transport's logged-model, input and registry methods: MlflowClient's names over
the REST paths ``evstore server`` serves (MLflow's), decoded into the same entities the
local tracking service returns. No rules here: the server's tracking service decides."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from evstore.entities import PagedList
from evstore.errors import InvalidParameterValue
from evstore.tracking import wire
from evstore.tracking.inputs import dataset_input
from evstore.tracking.logged_models import LoggedModel, status_of
from evstore.tracking.model_wire import logged_model_from
from evstore.tracking.registry import ModelVersion, RegisteredModel
from evstore.tracking.registry_wire import model_version_from, registered_model_from
from evstore.validation import shown

RM, MV = "registered-models/", "model-versions/"


def _given(**fields: Any) -> dict[str, Any]:
    """The fields of a request that were given (a GET query cannot say None)."""
    return {k: v for k, v in fields.items() if v is not None}


def _pairs(items: Any, what: str) -> list[dict[str, str]]:
    """Tags or params (a dict, or objects with key and value) as MLflow's key-value list."""
    if items is None:
        return []
    try:
        return wire.pairs(items)
    except (AttributeError, TypeError):
        raise InvalidParameterValue(
            f"{what} must be a dict of key to value, or objects with key and value, not {shown(items)[:200]}"
        ) from None


def _model_path(model_id: Any, *rest: str) -> str:
    """``logged-models/<id>/...`` with the id as one URL segment."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidParameterValue(f"Invalid logged model id {shown(model_id)}")
    return "/".join(["logged-models", quote(model_id, safe=""), *rest])


class HttpModelsMixin:
    """Mixed into ``HttpTransport``: logged models, run inputs/outputs, the model registry."""

    _call: Callable[..., Any]  # HttpTransport's: one MLflow REST call, its JSON answer

    # --- logged models --------------------------------------------------------------------

    def create_logged_model(
        self, experiment_id: str, name: str | None = None, source_run_id: str | None = None,
        tags: Any = None, params: Any = None, model_type: str | None = None,
    ) -> LoggedModel:  # fmt: skip
        """Create a PENDING logged model in an experiment; returns it."""
        payload = _given(experiment_id=str(experiment_id), name=name, source_run_id=source_run_id,
                         model_type=model_type)  # fmt: skip
        payload.update(tags=_pairs(tags, "tags"), params=_pairs(params, "params"))
        return logged_model_from(self._call("POST", "logged-models", payload)["model"])

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> LoggedModel:
        """One logged model; a deleted one only with ``allow_deleted``."""
        query = {"allow_deleted": "true"} if allow_deleted else None
        return logged_model_from(self._call("GET", _model_path(model_id), query)["model"])

    def finalize_logged_model(self, model_id: str, status: Any) -> LoggedModel:
        """Mark a model READY or FAILED; returns it."""
        name = {"READY": "LOGGED_MODEL_READY", "FAILED": "LOGGED_MODEL_UPLOAD_FAILED"}[status_of(status)]
        payload = {"model_id": model_id, "status": name}
        return logged_model_from(self._call("PATCH", _model_path(model_id), payload)["model"])

    def set_logged_model_tags(self, model_id: str, tags: Any) -> None:
        """Set tags on a model."""
        payload = {"model_id": model_id, "tags": _pairs(tags, "tags")}
        self._call("PATCH", _model_path(model_id, "tags"), payload)

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        """Delete a tag of a model; the tag must exist."""
        if not isinstance(key, str) or not key:
            raise InvalidParameterValue(f"Invalid tag key {shown(key)}")
        self._call("DELETE", _model_path(model_id, "tags", quote(key, safe="")))

    def log_model_params(self, model_id: str, params: Any) -> None:
        """Log params of a model; a key logged before keeps its first value."""
        payload = {"model_id": model_id, "params": _pairs(params, "params")}
        self._call("POST", _model_path(model_id, "params"), payload)

    def delete_logged_model(self, model_id: str) -> None:
        """Mark a model deleted."""
        self._call("DELETE", _model_path(model_id))

    def search_logged_models(
        self, experiment_ids: list[str], filter_string: str | None = None,
        datasets: list[dict[str, Any]] | None = None, max_results: int | None = None,
        order_by: list[dict[str, Any]] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Logged models of experiments matching MLflow's filter, ordered, one page."""
        payload = _given(filter=filter_string, max_results=max_results, page_token=page_token)
        payload.update(experiment_ids=[str(e) for e in experiment_ids], datasets=datasets or [],
                       order_by=order_by or [])  # fmt: skip
        page = self._call("POST", "logged-models/search", payload)
        return PagedList([logged_model_from(m) for m in page.get("models", [])], page.get("next_page_token"))

    # --- a run's inputs and outputs ---------------------------------------------------------

    def log_inputs(self, run_id: str, datasets: Iterable[Any] | None = None,
                   models: Iterable[Any] | None = None) -> None:  # fmt: skip
        """Record datasets (and logged models) a run used."""
        given = []
        for d in datasets or []:
            found = dataset_input(d)  # the local client's reading of MLflow's shapes
            dataset = _given(name=found.name, digest=found.digest, source_type=found.source_type,
                             source=found.source, schema=found.schema, profile=found.profile)  # fmt: skip
            given.append({"dataset": dataset, "tags": wire.pairs(found.tags)})
        model_ids = [{"model_id": getattr(m, "model_id", m)} for m in models or []]
        self._call("POST", "runs/log-inputs", {"run_id": run_id, "datasets": given, "models": model_ids})

    def log_outputs(self, run_id: str, models: Iterable[Any]) -> None:
        """Record models a run produced: ``LoggedModelOutput``s or (model id, step) pairs."""
        try:
            outputs = [{"model_id": m.model_id, "step": int(m.step)} if hasattr(m, "model_id")
                       else {"model_id": m[0], "step": int(m[1])} for m in models]  # fmt: skip
        except (TypeError, ValueError, IndexError):
            raise InvalidParameterValue(
                f"models must be LoggedModelOutput objects or (model_id, step) pairs, not {shown(models)[:200]}"
            ) from None
        self._call("POST", "runs/outputs", {"run_id": run_id, "models": outputs})

    # --- registered models ------------------------------------------------------------------

    def create_registered_model(self, name: str, tags: dict[str, Any] | None = None,
                                description: str | None = None) -> RegisteredModel:  # fmt: skip
        """A new registered model; names are unique."""
        payload = _given(name=name, description=description)
        payload["tags"] = _pairs(tags, "tags")
        return registered_model_from(self._call("POST", RM + "create", payload)["registered_model"])

    def get_registered_model(self, name: str) -> RegisteredModel:
        """A registered model with its tags, aliases and latest version per stage."""
        return registered_model_from(self._call("GET", RM + "get", {"name": name})["registered_model"])

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        """Give a registered model an unused name."""
        found = self._call("POST", RM + "rename", {"name": name, "new_name": new_name})
        return registered_model_from(found["registered_model"])

    def update_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        """Set a registered model's description."""
        found = self._call("PATCH", RM + "update", _given(name=name, description=description))
        return registered_model_from(found["registered_model"])

    def delete_registered_model(self, name: str) -> None:
        """Delete a registered model with its versions."""
        self._call("DELETE", RM + "delete", {"name": name})

    def search_registered_models(
        self, filter_string: str | None = None, max_results: int = 100,
        order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Registered models matching a filter, ordered, one page."""
        query = _given(filter=filter_string, max_results=max_results, order_by=order_by or None,
                       page_token=page_token)  # fmt: skip
        page = self._call("GET", RM + "search", query)
        found = [registered_model_from(m) for m in page.get("registered_models", [])]
        return PagedList(found, page.get("next_page_token"))

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Set a tag on a registered model."""
        self._call("POST", RM + "set-tag", {"name": name, "key": key, "value": str(value)})

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a registered model."""
        self._call("DELETE", RM + "delete-tag", {"name": name, "key": key})

    def set_registered_model_alias(self, name: str, alias: str, version: Any) -> None:
        """Point an alias at a version."""
        self._call("POST", RM + "alias", {"name": name, "alias": alias, "version": str(version)})

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        """Remove an alias."""
        self._call("DELETE", RM + "alias", {"name": name, "alias": alias})

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version an alias points at."""
        return model_version_from(self._call("GET", RM + "alias", {"name": name, "alias": alias})["model_version"])

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The highest version in each stage (or in each of ``stages``)."""
        found = self._call("POST", RM + "get-latest-versions", {"name": name, "stages": stages or []})
        return [model_version_from(v) for v in found.get("model_versions", [])]

    # --- versions ---------------------------------------------------------------------------

    def create_model_version(
        self, name: str, source: str, run_id: str | None = None, tags: dict[str, Any] | None = None,
        run_link: str | None = None, description: str | None = None, model_id: str | None = None,
    ) -> ModelVersion:  # fmt: skip
        """The next version of a registered model."""
        payload = _given(name=name, source=source, run_id=run_id, run_link=run_link,
                         description=description, model_id=model_id)  # fmt: skip
        payload["tags"] = _pairs(tags, "tags")
        return model_version_from(self._call("POST", MV + "create", payload)["model_version"])

    def get_model_version(self, name: str, version: Any) -> ModelVersion:
        """One version."""
        found = self._call("GET", MV + "get", {"name": name, "version": str(version)})
        return model_version_from(found["model_version"])

    def update_model_version(self, name: str, version: Any, description: str | None = None) -> ModelVersion:
        """Set a version's description."""
        payload = _given(name=name, version=str(version), description=description)
        return model_version_from(self._call("PATCH", MV + "update", payload)["model_version"])

    def transition_model_version_stage(self, name: str, version: Any, stage: str,
                                       archive_existing_versions: bool = False) -> ModelVersion:  # fmt: skip
        """Move a version to a stage."""
        payload = {"name": name, "version": str(version), "stage": stage,
                   "archive_existing_versions": bool(archive_existing_versions)}  # fmt: skip
        return model_version_from(self._call("POST", MV + "transition-stage", payload)["model_version"])

    def delete_model_version(self, name: str, version: Any) -> None:
        """Delete a version."""
        self._call("DELETE", MV + "delete", {"name": name, "version": str(version)})

    def set_model_version_tag(self, name: str, version: Any, key: str, value: Any) -> None:
        """Set a tag on a version."""
        payload = {"name": name, "version": str(version), "key": key, "value": str(value)}
        self._call("POST", MV + "set-tag", payload)

    def delete_model_version_tag(self, name: str, version: Any, key: str) -> None:
        """Delete a tag of a version."""
        self._call("DELETE", MV + "delete-tag", {"name": name, "version": str(version), "key": key})

    def get_model_version_download_uri(self, name: str, version: Any) -> str:
        """Where a version's files are."""
        found = self._call("GET", MV + "get-download-uri", {"name": name, "version": str(version)})
        return str(found["artifact_uri"])

    def search_model_versions(
        self, filter_string: str | None = None, max_results: int = 10_000,
        order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Versions matching a filter, ordered, one page."""
        query = _given(filter=filter_string, max_results=max_results, order_by=order_by or None,
                       page_token=page_token)  # fmt: skip
        page = self._call("GET", MV + "search", query)
        return PagedList([model_version_from(v) for v in page.get("model_versions", [])],
                         page.get("next_page_token"))  # fmt: skip
