"""``evstore.Client``'s logged-model, input and registry methods: MlflowClient's names,
forwarded to the transport: the tracking service in process, or ``evstore server`` over
MLflow's REST paths (``evstore.tracking.http_models``), with the same answers and errors.
"""

from __future__ import annotations

from typing import Any


class ModelsClient:
    """Mixed into ``Client``: logged models, run inputs/outputs, the model registry."""

    _transport: Any

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._transport, name)(*args, **kwargs)

    # --- logged models --------------------------------------------------------------------

    def create_logged_model(self, experiment_id: str, name: str | None = None,
                            source_run_id: str | None = None, tags: Any = None, params: Any = None,
                            model_type: str | None = None) -> Any:  # fmt: skip
        """Create a PENDING logged model (MLflow 3)."""
        return self._call("create_logged_model", experiment_id, name, source_run_id, tags, params, model_type)

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> Any:
        """One logged model with its tags, params and linked metrics."""
        return self._call("get_logged_model", model_id, allow_deleted)

    def finalize_logged_model(self, model_id: str, status: Any) -> Any:
        """Mark a logged model READY or FAILED."""
        return self._call("finalize_logged_model", model_id, status)

    def set_logged_model_tags(self, model_id: str, tags: Any) -> None:
        """Set tags on a logged model."""
        self._call("set_logged_model_tags", model_id, tags)

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        """Delete a tag of a logged model."""
        self._call("delete_logged_model_tag", model_id, key)

    def log_model_params(self, model_id: str, params: Any) -> None:
        """Log params of a logged model."""
        self._call("log_model_params", model_id, params)

    def delete_logged_model(self, model_id: str) -> None:
        """Mark a logged model deleted."""
        self._call("delete_logged_model", model_id)

    def search_logged_models(self, experiment_ids: list[str], filter_string: str | None = None,
                             datasets: Any = None, max_results: int | None = None,
                             order_by: Any = None, page_token: str | None = None) -> Any:  # fmt: skip
        """Logged models of experiments matching MLflow's filter, newest first, paged."""
        return self._call("search_logged_models", experiment_ids, filter_string, datasets,
                          max_results, order_by, page_token)  # fmt: skip

    def log_inputs(self, run_id: str, datasets: Any = None, models: Any = None) -> None:
        """Record datasets (and logged models) a run used."""
        self._call("log_inputs", run_id, datasets, models)

    def log_outputs(self, run_id: str, models: Any) -> None:
        """Record logged models a run produced."""
        self._call("log_outputs", run_id, models)

    # --- the registry -----------------------------------------------------------------------

    def create_registered_model(self, name: str, tags: dict[str, Any] | None = None,
                                description: str | None = None) -> Any:  # fmt: skip
        """A new registered model."""
        return self._call("create_registered_model", name, tags, description)

    def get_registered_model(self, name: str) -> Any:
        """A registered model with its tags, aliases and latest versions."""
        return self._call("get_registered_model", name)

    def rename_registered_model(self, name: str, new_name: str) -> Any:
        """Rename a registered model."""
        return self._call("rename_registered_model", name, new_name)

    def update_registered_model(self, name: str, description: str | None = None) -> Any:
        """Set a registered model's description."""
        return self._call("update_registered_model", name, description)

    def delete_registered_model(self, name: str) -> None:
        """Delete a registered model (its history stays in the log)."""
        self._call("delete_registered_model", name)

    def search_registered_models(self, filter_string: str | None = None, max_results: int = 100,
                                 order_by: list[str] | None = None, page_token: str | None = None) -> Any:  # fmt: skip
        """Registered models matching a filter, by name, paged."""
        return self._call("search_registered_models", filter_string, max_results, order_by, page_token)

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Set a tag on a registered model."""
        self._call("set_registered_model_tag", name, key, value)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a registered model."""
        self._call("delete_registered_model_tag", name, key)

    def set_registered_model_alias(self, name: str, alias: str, version: Any) -> None:
        """Point an alias at a version."""
        self._call("set_registered_model_alias", name, alias, version)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        """Remove an alias."""
        self._call("delete_registered_model_alias", name, alias)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        """The version an alias points at."""
        return self._call("get_model_version_by_alias", name, alias)

    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             tags: dict[str, Any] | None = None, run_link: str | None = None,
                             description: str | None = None, model_id: str | None = None) -> Any:  # fmt: skip
        """The next version of a registered model."""
        return self._call("create_model_version", name, source, run_id, tags, run_link, description, model_id)

    def get_model_version(self, name: str, version: Any) -> Any:
        """One version."""
        return self._call("get_model_version", name, version)

    def update_model_version(self, name: str, version: Any, description: str | None = None) -> Any:
        """Set a version's description."""
        return self._call("update_model_version", name, version, description)

    def transition_model_version_stage(self, name: str, version: Any, stage: str,
                                       archive_existing_versions: bool = False) -> Any:  # fmt: skip
        """Move a version to a stage (deprecated in MLflow, still called)."""
        return self._call("transition_model_version_stage", name, version, stage, archive_existing_versions)

    def delete_model_version(self, name: str, version: Any) -> None:
        """Delete a version."""
        self._call("delete_model_version", name, version)

    def set_model_version_tag(self, name: str, version: Any, key: str, value: Any) -> None:
        """Set a tag on a version."""
        self._call("set_model_version_tag", name, version, key, value)

    def delete_model_version_tag(self, name: str, version: Any, key: str) -> None:
        """Delete a tag of a version."""
        self._call("delete_model_version_tag", name, version, key)

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> Any:
        """The highest version in each stage."""
        return self._call("get_latest_versions", name, stages)

    def get_model_version_download_uri(self, name: str, version: Any) -> str:
        """Where a version's files are."""
        return str(self._call("get_model_version_download_uri", name, version))

    def search_model_versions(self, filter_string: str | None = None, max_results: int = 10_000,
                              order_by: list[str] | None = None, page_token: str | None = None) -> Any:  # fmt: skip
        """Versions matching a filter, last updated first, paged."""
        return self._call("search_model_versions", filter_string, max_results, order_by, page_token)
