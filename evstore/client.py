"""``evstore.Client``: MlflowClient's names, signatures and return shapes, over a transport.

``Client(uri)`` picks the transport from the tracking URI, as httpx puts one client over a
transport: a store path or ``sqlite:`` URI runs the tracking service in this process
(``evstore.tracking.service``); ``http(s)://`` sends each call to ``evstore server``, whose
tracking service decides (``evstore.tracking.http``). The rules live in the service alone;
this class only forwards, so both transports answer the same calls the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from evstore import config
from evstore.artifact_logging import ArtifactLogging
from evstore.entities import Experiment, FileInfo, Metric, PagedList, Param, Run, RunTag, ViewType
from evstore.models_client import ModelsClient
from evstore.tracking.service import (  # noqa: F401 - the names other modules import from here
    DEFAULT_EXPERIMENT_ID,
    PARENT_RUN_TAG,
    RUN_NAME_TAG,
    USER_TAG,
    TrackingService,
    artifact_root_for,
    experiment_stream,
    open_tracking_store,
)
from evstore.validation import check_text


def transport_for(tracking_uri: str) -> Any:
    """The tracking service of a URI: in process for a store, over HTTP for a server."""
    if tracking_uri.startswith(("http://", "https://")):
        from evstore.tracking.http import HttpTransport

        return HttpTransport(tracking_uri)
    service = TrackingService(tracking_uri)
    service.ensure_default_experiment()
    return service


class Client(ArtifactLogging, ModelsClient):
    """A tracking client for one store or server, mirroring ``mlflow.MlflowClient``."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        if tracking_uri is None:
            self.tracking_uri: str = config.get_tracking_uri()
        else:
            self.tracking_uri = config.check_tracking_uri(check_text("tracking URI", tracking_uri))
        self._transport = transport_for(self.tracking_uri)

    @property
    def store(self) -> Any:
        """The event store (local) or the server's log (its head position)."""
        return self._transport.store

    @property
    def artifact_root(self) -> str | None:
        """Where a local store keeps artifact files (None over HTTP)."""
        return getattr(self._transport, "artifact_root", None)

    def reading(self) -> Any:
        """One consistent read of a local store's tables (a context manager; local only)."""
        return self._transport.reading()

    def close(self) -> None:
        """Close the connection to a server (a local store stays open for the process)."""
        close = getattr(self._transport, "close", None)
        if close is not None:
            close()

    # --- experiments --------------------------------------------------------------

    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Create an experiment; returns its id. Names are unique."""
        return self._transport.create_experiment(name, artifact_location, tags)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment; raises ResourceDoesNotExist when there is none."""
        return self._transport.get_experiment(experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """One experiment by name, or None."""
        return self._transport.get_experiment_by_name(name)

    def search_experiments(
        self, view_type: int = ViewType.ACTIVE_ONLY, max_results: int | None = None,
        filter_string: str | None = None, order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Experiments in a view, filtered, ordered and paged as MLflow does."""
        return self._transport.search_experiments(view_type, max_results, filter_string, order_by,
                                                  page_token)  # fmt: skip

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Give an experiment a new, unused name."""
        self._transport.rename_experiment(experiment_id, new_name)

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark an experiment and its runs deleted (restore undoes it)."""
        self._transport.delete_experiment(experiment_id)

    def restore_experiment(self, experiment_id: str) -> None:
        """Make a deleted experiment and its runs active again."""
        self._transport.restore_experiment(experiment_id)

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        """Set a tag on an active experiment."""
        self._transport.set_experiment_tag(experiment_id, key, value)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Delete a tag of an active experiment; the tag must exist."""
        self._transport.delete_experiment_tag(experiment_id, key)

    # --- runs ---------------------------------------------------------------------

    def create_run(
        self, experiment_id: str, start_time: int | None = None,
        tags: dict[str, Any] | Iterable[RunTag] | None = None, run_name: str | None = None,
        *, run_id: str | None = None, user_id: str | None = None,
    ) -> Run:  # fmt: skip
        """Start a run in an experiment; returns it (status RUNNING)."""
        return self._transport.create_run(experiment_id, start_time, tags, run_name,
                                          run_id=run_id, user_id=user_id)  # fmt: skip

    def get_run(self, run_id: str, as_of: int | datetime | None = None) -> Run:
        """A run with its params, latest metrics and tags; ``as_of`` reads it back in time."""
        return self._transport.get_run(run_id, as_of)

    def update_run(
        self, run_id: str, status: str | None = None, name: str | None = None,
        end_time: int | None = None, *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Change a run's status, name and/or end time, as MLflow's update_run."""
        self._transport.update_run(run_id, status, name, end_time, idempotency_key=idempotency_key)

    def set_terminated(
        self, run_id: str, status: str | None = None, end_time: int | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """End a run with a status (FINISHED by default) and an end time."""
        self._transport.set_terminated(run_id, status, end_time, idempotency_key=idempotency_key)

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (soft; restore_run undoes it)."""
        self._transport.delete_run(run_id)

    def restore_run(self, run_id: str) -> None:
        """Make a deleted run active again."""
        self._transport.restore_run(run_id)

    # --- logging ------------------------------------------------------------------

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        """Log one param. Re-logging the same value is fine; a different one is refused."""
        return self._transport.log_param(run_id, key, value)

    def log_metric(
        self, run_id: str, key: str, value: float, timestamp: int | None = None,
        step: int | None = None, synchronous: bool | None = None, dataset_name: str | None = None,
        dataset_digest: str | None = None, model_id: str | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Log one metric point (step 0 and now when not given), with MLflow 3's context."""
        self._transport.log_metric(run_id, key, value, timestamp, step, None, dataset_name,
                                   dataset_digest, model_id, idempotency_key=idempotency_key)  # fmt: skip

    def log_batch(
        self, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (), synchronous: bool | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Log metrics, params and tags in one atomic write, within MLflow's limits."""
        self._transport.log_batch(run_id, metrics, params, tags, idempotency_key=idempotency_key)

    def set_tag(
        self, run_id: str, key: str, value: Any, synchronous: bool | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Set one tag on a run."""
        self._transport.set_tag(run_id, key, value, idempotency_key=idempotency_key)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Delete a tag from a run; the tag must exist."""
        self._transport.delete_tag(run_id, key)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every distinct point of a metric, in MLflow's order."""
        return self._transport.get_metric_history(run_id, key)

    # --- artifacts ----------------------------------------------------------------

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Store one file (or a directory's files) under the run's artifacts."""
        self._transport.log_artifact(run_id, local_path, artifact_path)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        """Store every file under a directory, keeping its relative layout."""
        self._transport.log_artifacts(run_id, local_dir, artifact_path)

    def record_artifact_bytes(self, run_id: str, path: str, source: Any) -> None:
        """Store the bytes of a binary stream as one artifact file."""
        self._transport.record_artifact_bytes(run_id, path, source)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """Files and directories directly under ``path`` in a run's artifacts."""
        return self._transport.list_artifacts(run_id, path)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file, checked against its sha256."""
        return self._transport.read_artifact(run_id, path)

    def artifact_digest(self, run_id: str, path: str) -> tuple[int, str]:
        """(size, sha256) of one recorded artifact file (a local store)."""
        return self._transport.artifact_digest(run_id, path)

    def download_artifacts(self, run_id: str, path: str = "", dst_path: str | None = None) -> str:
        """Copy a file or directory of a run's artifacts locally; returns the local path."""
        return self._transport.download_artifacts(run_id, path, dst_path)

    # --- search -------------------------------------------------------------------

    def search_runs(
        self, experiment_ids: str | list[str], filter_string: str = "",
        run_view_type: int | str = ViewType.ACTIVE_ONLY, max_results: int = 1000,
        order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Runs matching MLflow's filter grammar (plus OR and parentheses), ordered, paged."""
        return self._transport.search_runs(experiment_ids, filter_string, run_view_type,
                                           max_results, order_by, page_token)  # fmt: skip
