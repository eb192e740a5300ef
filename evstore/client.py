"""``evstore.Client``: MlflowClient's names, signatures and return shapes over the log.

Every write checks the current state and appends its events inside one write
transaction, so a failed write changes nothing and two writers cannot both pass a
check. Reads come from the projections, which the same transaction keeps current.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import msgspec

from evstore import codec, reads
from evstore.artifact_logging import ArtifactLogging
from evstore.artifacts import ArtifactRepository, logical_path
from evstore.entities import (
    Experiment,
    FileInfo,
    LifecycleStage,
    Metric,
    PagedList,
    Param,
    Run,
    RunTag,
    ViewType,
)
from evstore.errors import (
    InvalidParameterValue,
    InvalidState,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)
from evstore.events import (
    RUN_STATUSES,
    ArtifactRecorded,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagSet,
    MetricPoint,
    MetricsLogged,
    ParamsLogged,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagDeleted,
    TagSet,
)
from evstore.stores import NO_STREAM, sqlite_path
from evstore.validation import (
    check_text,
    metric_context,
    metric_points,
    new_run_id,
    optional_int64,
    optional_text,
    param_value,
    shown,
    tag_value,
    validate_batch_limits,
    validate_key,
    validate_metric,
)

RUN_NAME_TAG = "mlflow.runName"
PARENT_RUN_TAG = "mlflow.parentRunId"
USER_TAG = "mlflow.user"
DEFAULT_EXPERIMENT_ID = "0"

_stores: dict[str, Any] = {}


def experiment_stream(experiment_id: str) -> str:
    """The stream id of an experiment's events."""
    return f"experiment-{experiment_id}"


def open_tracking_store(uri: str) -> Any:
    """The store at ``uri`` with its projections attached (a ProjectionRunner; ``.store``
    is the log). One per file per process, shared by the fluent API and every Client."""
    from evstore.projection import attach
    from evstore.stores import open_log

    path = os.path.abspath(sqlite_path(uri))
    runner = _stores.get(path)
    if runner is None:
        store = open_log(path)
        try:
            runner = attach(store)
        except BaseException:
            store.close()
            raise
        _stores[path] = runner
    return runner


def artifact_root_for(uri: str) -> str:
    """Where a store's artifact files live: $EVSTORE_ARTIFACT_ROOT, else beside the file."""
    return os.environ.get("EVSTORE_ARTIFACT_ROOT") or os.path.join(
        os.path.dirname(os.path.abspath(sqlite_path(uri))), "evstore-artifacts"
    )


def _event_ids(key: str | None, count: int, request: Any) -> list[str] | None:
    """Ids derived from a caller's idempotency key and what the call asked for.

    A retry (same key, same request) gets the same ids and is stored once. The request is
    part of the ids so that a key reused for a different write stores that write too,
    instead of answering it with the first one's positions and dropping it. ``request``
    holds the caller's values before defaults: a retried ``log_metric`` without a
    timestamp is the same request though its default timestamp differs.
    """
    if key is None:
        return None
    check_text("idempotency key", key)
    digest = hashlib.sha256(msgspec.msgpack.encode(request)).hexdigest()[:32]
    return [uuid.uuid5(uuid.NAMESPACE_URL, f"evstore:{key}:{digest}:{i}").hex for i in range(count)]


class Client(ArtifactLogging):
    """A tracking client for one store, mirroring ``mlflow.MlflowClient``."""

    def __new__(cls, tracking_uri: str | None = None) -> Any:
        """A local Client, or a RemoteClient with the same methods for an http(s) URI."""
        from evstore import fluent

        uri = check_text("tracking URI", tracking_uri or fluent.get_tracking_uri())
        if uri.startswith(("http://", "https://")):
            from evstore.remote import RemoteClient

            return RemoteClient(uri)
        return super().__new__(cls)

    def __init__(self, tracking_uri: str | None = None) -> None:
        from evstore import fluent

        self.tracking_uri = tracking_uri or fluent.get_tracking_uri()
        self._runner = open_tracking_store(self.tracking_uri)
        self._store = self._runner.store
        self.artifact_root = artifact_root_for(self.tracking_uri)
        self._artifacts = ArtifactRepository(self.artifact_root)
        self._ensure_default_experiment()

    @property
    def store(self) -> Any:
        """The underlying event store (for history, verify and export)."""
        return self._store

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """The connection for one consistent read (one snapshot) of read models that hold
        every event. Another writer's trailing append can land between the catch-up and
        the snapshot: such a snapshot is dropped and the catch-up runs again; after a few
        misses the read runs inside the catch-up's write transaction."""
        for _ in range(_READ_ATTEMPTS):
            self._runner.check_fresh()
            with self._store.reading() as conn:
                if self._runner.in_step(conn):
                    yield conn
                    return
        with self._store.transaction() as conn:
            self._runner.check_fresh()  # its catch-up joins this transaction
            yield conn

    def _ensure_default_experiment(self) -> None:
        with self.reading() as conn:
            if conn.execute("SELECT 1 FROM experiments LIMIT 1").fetchone():
                return
        with self._store.transaction() as conn:
            if conn.execute("SELECT 1 FROM experiments LIMIT 1").fetchone():
                return
            self._append_experiment_created(DEFAULT_EXPERIMENT_ID, "Default", None, {})

    # --- experiments --------------------------------------------------------------

    def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> str:
        """Create an experiment; returns its id. Names are unique."""
        _experiment_name(name)
        optional_text("artifact location", artifact_location)
        clean_tags = _tag_dict(tags)
        with self._store.transaction() as conn:
            if reads.experiment_by_name(conn, name) is not None:
                raise ResourceAlreadyExists(f"Experiment(name={name}) already exists.")
            experiment_id = reads.next_experiment_id(conn)
            self._append_experiment_created(experiment_id, name, artifact_location, clean_tags)
        return experiment_id

    def _append_experiment_created(
        self, experiment_id: str, name: str, location: str | None, tags: dict[str, str]
    ) -> None:
        event = ExperimentCreated(
            experiment_id=experiment_id,
            name=name,
            artifact_location=location or posixpath.join(self.artifact_root, experiment_id),
            creation_time=codec.now_ms(),
            tags=tags,
        )
        self._store.append(experiment_stream(experiment_id), [event], expected_version=NO_STREAM)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment; raises ResourceDoesNotExist when there is none."""
        with self.reading() as conn:
            found = reads.experiment_by_id(conn, str(experiment_id))
        if found is None:
            raise ResourceDoesNotExist(f"No Experiment with id={experiment_id} exists")
        return found

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """One experiment by name, or None."""
        check_text("experiment name", name)
        with self.reading() as conn:
            return reads.experiment_by_name(conn, name)

    def search_experiments(
        self,
        view_type: int = ViewType.ACTIVE_ONLY,
        max_results: int | None = None,
        filter_string: str | None = None,
        order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Experiments in the given view, newest first. Filters: ``name`` =, !=, LIKE, ILIKE."""
        from evstore.search import (
            create_page_token,
            parse_page_token,
            validate_max_results,
            view_type_stages,
        )

        try:
            stages = list(view_type_stages(view_type))
        except InvalidParameterValue:
            raise InvalidParameterValue(
                f"view_type must be ACTIVE_ONLY, DELETED_ONLY or ALL (or 1, 2, 3), not {shown(view_type)}"
            ) from None
        validate_max_results(max_results)
        optional_text("filter_string", filter_string)
        sort_keys = _experiment_order(order_by)
        start = parse_page_token(page_token)
        with self.reading() as conn:
            found = reads.experiments(conn, stages)
        if filter_string:
            found = [e for e in found if _experiment_matches(e, filter_string)]
        for field, descending in reversed(sort_keys):
            found.sort(key=_EXPERIMENT_SORT_KEYS[field], reverse=descending)
        end = len(found) if max_results is None else start + max_results
        token = create_page_token(end) if end < len(found) else None
        return PagedList(found[start:end], token)

    def _experiment_for_write(self, conn: Any, experiment_id: str) -> Experiment:
        found = reads.experiment_by_id(conn, str(experiment_id))
        if found is None:
            raise ResourceDoesNotExist(f"No Experiment with id={experiment_id} exists")
        return found

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Give an experiment a new, unused name."""
        _experiment_name(new_name)
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, experiment_id)
            if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
                raise InvalidState("Cannot rename a non-active experiment.")
            other = reads.experiment_by_name(conn, new_name)
            if other is not None and other.experiment_id != experiment.experiment_id:
                raise ResourceAlreadyExists(f"Experiment(name={new_name}) already exists.")
            self._store.append(
                experiment_stream(experiment.experiment_id),
                [ExperimentRenamed(experiment_id=experiment.experiment_id, name=new_name)],
            )

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark an experiment and its runs deleted, as MLflow does (restore undoes it)."""
        self._experiment_lifecycle(experiment_id, LifecycleStage.ACTIVE, ExperimentDeleted,
                                   RunDeleted)  # fmt: skip

    def restore_experiment(self, experiment_id: str) -> None:
        """Make a deleted experiment and its runs active again, as MLflow does."""
        self._experiment_lifecycle(experiment_id, LifecycleStage.DELETED, ExperimentRestored,
                                   RunRestored)  # fmt: skip

    def _experiment_lifecycle(
        self, experiment_id: str, required: str, event_type: type, run_event_type: type
    ) -> None:
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, experiment_id)
            if experiment.lifecycle_stage != required:
                raise InvalidState(
                    f"Experiment {experiment_id} is {experiment.lifecycle_stage}; expected {required}."
                )
            now = codec.now_ms()
            self._store.append(
                experiment_stream(experiment.experiment_id),
                [event_type(experiment.experiment_id, now)],
            )
            # Every run of the experiment follows it, in the same transaction.
            for (run_id,) in conn.execute(
                "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = ?",
                (experiment.experiment_id, required),
            ).fetchall():
                self._store.append(run_id, [run_event_type(now)])

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        """Set a tag on an experiment."""
        validate_key("tag", key)
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, experiment_id)
            self._store.append(
                experiment_stream(experiment.experiment_id),
                [ExperimentTagSet(experiment_id=experiment.experiment_id, key=key,
                                  value=tag_value(key, value))],
            )  # fmt: skip

    # --- runs ---------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: dict[str, Any] | Iterable[RunTag] | None = None,
        run_name: str | None = None,
        *,
        run_id: str | None = None,
        user_id: str | None = None,
    ) -> Run:
        """Start a run in an experiment; returns it (status RUNNING)."""
        start_time = optional_int64("start_time", start_time)
        optional_text("run name", run_name)
        optional_text("user id", user_id)
        tag_dict = _tag_dict(tags)
        run_name = run_name or tag_dict.get(RUN_NAME_TAG) or _random_run_name()
        tag_dict[RUN_NAME_TAG] = run_name
        run_id = uuid.uuid4().hex if run_id is None else new_run_id(run_id)
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, str(experiment_id))
            if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
                raise InvalidState(
                    f"Could not create run under non-active experiment with id {experiment_id}."
                )
            started = RunStarted(
                experiment_id=experiment.experiment_id,
                run_name=run_name,
                user_id=user_id or tag_dict.get(USER_TAG) or _user(),
                start_time=codec.now_ms() if start_time is None else start_time,
                parent_run_id=tag_dict.get(PARENT_RUN_TAG),
                artifact_uri=posixpath.join(experiment.artifact_location, run_id, "artifacts"),
            )
            events: list[Event] = [started]
            events += [TagSet(key=k, value=v) for k, v in tag_dict.items()]
            self._store.append(run_id, events, expected_version=NO_STREAM)
        return self.get_run(run_id)

    def get_run(self, run_id: str, as_of: int | datetime | None = None) -> Run:
        """A run with its params, latest metrics and tags; ``as_of`` reads it back in time."""
        check_text("run id", run_id)
        if as_of is not None:
            from evstore.history import run_as_of

            return run_as_of(self._store, run_id, as_of)
        with self.reading() as conn:
            found = reads.load_runs(conn, [run_id])
        if not found:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        return found[0]

    def _active_run(self, conn: Any, run_id: str) -> None:
        state = reads.run_state(conn, check_text("run id", run_id))
        if state is None:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        if state[1] != LifecycleStage.ACTIVE:
            raise InvalidState(
                f"The run {run_id} must be in the 'active' state. Current state is {state[1]}."
            )

    def _run_write(
        self, run_id: str, events: Sequence[Event], key: str | None = None, request: Any = None,
        *, ends: bool = False,
    ) -> None:  # fmt: skip
        """Append to an active run; ``request`` (default: the events) keys a retry."""
        event_ids = None if key is None else _event_ids(key, len(events), request or events)
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            self._store.append(run_id, events, event_ids=event_ids)
            if ends:
                # A run's end leaves every table whole: the trailing metric models catch
                # up in the same transaction, so a reader of the file at rest sees all.
                self._runner.catch_up()

    def set_terminated(
        self, run_id: str, status: str | None = None, end_time: int | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """End a run with a status (FINISHED by default) and an end time."""
        status = status or "FINISHED"
        if status not in RUN_STATUSES:
            raise InvalidParameterValue(
                f"Invalid run status {status!r}: use one of {', '.join(RUN_STATUSES)}"
            )
        given = optional_int64("end_time", end_time)
        end = codec.now_ms() if given is None else given
        self._run_write(run_id, [RunStatusChanged(status=status, end_time=end)], idempotency_key,
                        ("set_terminated", status, given), ends=status in _ENDED)  # fmt: skip

    def update_run(
        self, run_id: str, status: str | None = None, name: str | None = None,
        end_time: int | None = None, *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Change a run's status and/or name, as MLflow's update_run."""
        events: list[Event] = []
        end_time = optional_int64("end_time", end_time)
        optional_text("run name", name)
        if status is not None:
            if status not in RUN_STATUSES:
                raise InvalidParameterValue(
                    f"Invalid run status {status!r}: use one of {', '.join(RUN_STATUSES)}"
                )
            events.append(RunStatusChanged(status=status, end_time=end_time))
        if name:
            events.append(RunRenamed(run_name=name))
        if events:
            self._run_write(run_id, events, idempotency_key, ends=status in _ENDED)

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (soft; restore_run undoes it)."""
        self._run_lifecycle(run_id, LifecycleStage.ACTIVE, RunDeleted)

    def restore_run(self, run_id: str) -> None:
        """Make a deleted run active again."""
        self._run_lifecycle(run_id, LifecycleStage.DELETED, RunRestored)

    def _run_lifecycle(self, run_id: str, applies_to: str, event_type: type) -> None:
        """Append the lifecycle event if the run is in ``applies_to``; a no-op otherwise."""
        with self._store.transaction() as conn:
            state = reads.run_state(conn, check_text("run id", run_id))
            if state is None:
                raise ResourceDoesNotExist(f"Run with id={run_id} not found")
            if state[1] == applies_to:
                self._store.append(run_id, [event_type(codec.now_ms())])

    # --- logging ------------------------------------------------------------------

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        """Log one param. Re-logging the same value is fine; a different one is refused."""
        self.log_batch(run_id, params=[Param(key, param_value(value))])
        return value

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        synchronous: bool | None = None,
        dataset_name: str | None = None,
        dataset_digest: str | None = None,
        model_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        """Log one metric point (step 0 and now when not given), with MLflow 3's context."""
        defaulted = timestamp is None
        key, value, timestamp, step = validate_metric(
            key, value, codec.now_ms() if defaulted else timestamp, step or 0
        )
        if model_id is not None or dataset_name is not None or dataset_digest is not None:
            metric_context(model_id, dataset_name, dataset_digest)
        point = MetricPoint(key, value, step, timestamp, model_id, dataset_name, dataset_digest)
        request = None
        if idempotency_key is not None:  # the request as asked: no default timestamp in it
            request = ("log_metric", key, value, step, None if defaulted else timestamp,
                       model_id, dataset_name, dataset_digest)  # fmt: skip
        self._run_write(run_id, [MetricsLogged(points=[point])], idempotency_key, request)

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        synchronous: bool | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        """Log metrics, params and tags in one atomic write, within MLflow's limits."""
        try:
            validate_batch_limits(len(metrics), len(params), len(tags))
        except TypeError:
            raise InvalidParameterValue(
                "log_batch takes lists of Metric, Param and RunTag objects"
            ) from None
        points = [MetricPoint(*point) for point in metric_points(metrics)]
        new_params: dict[str, str] = {}
        for param in params:
            key, value = validate_key("param", _field(param, "key")), param_value(param.value)
            if new_params.get(key, value) != value:
                raise InvalidParameterValue(
                    f"Duplicate parameter keys have been submitted: '{key}' with values"
                    f" '{new_params[key]}' and '{value}'."
                )
            new_params[key] = value
        tag_events = [TagSet(key=validate_key("tag", _field(t, "key")), value=tag_value(t.key, t.value))
                      for t in tags]  # fmt: skip
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            stored = reads.params_of(conn, run_id, list(new_params))
            for key, old in stored.items():
                if old != new_params[key]:
                    raise InvalidParameterValue(
                        f"Changing param values is not allowed. Param with key='{key}' was already"
                        f" logged with value='{old}' for run ID='{run_id}'. Attempted logging new"
                        f" value '{new_params[key]}'."
                    )
            events: list[Event] = []
            fresh = {k: v for k, v in new_params.items() if k not in stored}
            if fresh:
                events.append(ParamsLogged(params=fresh))
            if points:
                events.append(MetricsLogged(points=points))
            events += tag_events
            if events:
                event_ids = None
                if idempotency_key is not None:
                    # keyed by the whole request: a retry whose params are stored by now
                    # sends fewer events, with the same leading ids
                    request = ("log_batch", points, sorted(new_params.items()), tag_events)
                    event_ids = _event_ids(idempotency_key, len(events), request)
                self._store.append(run_id, events, event_ids=event_ids)

    def set_tag(
        self, run_id: str, key: str, value: Any, synchronous: bool | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Set one tag on a run."""
        key = validate_key("tag", key)
        self._run_write(run_id, [TagSet(key=key, value=tag_value(key, value))], idempotency_key)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Delete a tag from a run; the tag must exist."""
        validate_key("tag", key)
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            if not reads.has_tag(conn, run_id, key):
                raise ResourceDoesNotExist(f"No tag with name: {key} in run with id {run_id}")
            self._store.append(run_id, [TagDeleted(key=key)])

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of a metric, in the order logged."""
        check_text("metric key", key)
        with self.reading() as conn:
            if reads.run_state(conn, check_text("run id", run_id)) is None:
                raise ResourceDoesNotExist(f"Run with id={run_id} not found")
            return reads.metric_history(conn, run_id, key)

    # --- artifacts ----------------------------------------------------------------

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Store one file under the run's artifacts (content-addressed)."""
        local_path = _local_path(local_path)
        optional_text("artifact path", artifact_path)
        if not os.path.isfile(local_path):
            if os.path.isdir(local_path):
                return self.log_artifacts(
                    run_id, local_path, posixpath.join(artifact_path or "", os.path.basename(local_path))
                )
            raise InvalidParameterValue(f"No such file to log as an artifact: {local_path}")
        name = os.path.basename(local_path)
        self._record_artifacts(run_id, [(local_path, _join(artifact_path, name))])
        return None

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        """Store every file under a directory, keeping its relative layout."""
        local_dir = _local_path(local_dir)
        optional_text("artifact path", artifact_path)
        if not os.path.isdir(local_dir):
            raise InvalidParameterValue(f"No such directory to log as artifacts: {local_dir}")
        files = []
        for root, _dirs, names in os.walk(local_dir):
            for name in sorted(names):
                full = os.path.join(root, name)
                relative = os.path.relpath(full, local_dir).replace(os.sep, "/")
                files.append((full, _join(artifact_path, relative)))
        self._record_artifacts(run_id, files)

    def _record_artifacts(self, run_id: str, files: list[tuple[str, str]]) -> None:
        # Every check before the first byte is copied: a refused write leaves no object.
        logicals = [logical_path(logical) for _local, logical in files]
        for local, _logical in files:
            if not os.path.isfile(local) or not os.access(local, os.R_OK):
                raise InvalidParameterValue(
                    f"Cannot log {shown(local)} as an artifact: it is not a readable regular file"
                    " (a dangling symlink, a pipe or a file without read permission)."
                )
        self._check_active(run_id)
        events: list[Event] = []
        for (local, _logical), logical in zip(files, logicals, strict=True):
            try:
                size, sha = self._artifacts.put_file(local)
            except OSError as e:
                raise InvalidParameterValue(f"Cannot read {shown(local)}: {e.strerror}") from e
            events.append(ArtifactRecorded(path=logical, size=size, sha256=sha))
        if events:
            self._run_write(run_id, events)

    def _check_active(self, run_id: str) -> None:
        """Refuse an unknown, or deleted, run before any artifact bytes are copied."""
        with self.reading() as conn:
            self._active_run(conn, run_id)

    def record_artifact_bytes(self, run_id: str, path: str, source: Any) -> None:
        """Store bytes from a stream under a logical path (the server's upload)."""
        logical = logical_path(path)
        self._check_active(run_id)
        try:
            size, sha = self._artifacts.put_stream(source)
        except (TypeError, AttributeError) as e:
            raise InvalidParameterValue(
                f"Artifact content must come from a binary stream, not {type(source).__name__}"
            ) from e
        self._run_write(run_id, [ArtifactRecorded(path=logical, size=size, sha256=sha)])

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """Files and directories directly under ``path`` in a run's artifacts."""
        optional_text("artifact path", path)
        with self.reading() as conn:
            if reads.run_state(conn, check_text("run id", run_id)) is None:
                raise ResourceDoesNotExist(f"Run with id={run_id} not found")
            entries = reads.artifact_entries(conn, run_id)
        return reads.list_artifacts(entries, path)

    def artifact_digest(self, run_id: str, path: str) -> tuple[int, str]:
        """(size, sha256) of one recorded artifact file."""
        with self.reading() as conn:
            entries = reads.artifact_entries(conn, run_id)
        if path not in entries:
            raise ResourceDoesNotExist(f"No artifact {path!r} in run {run_id}")
        return entries[path]

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file, checked against its sha256."""
        return self._artifacts.open_checked(self.artifact_digest(run_id, path)[1])

    def download_artifacts(self, run_id: str, path: str = "", dst_path: str | None = None) -> str:
        """Copy a file or directory of a run's artifacts locally; returns the local path."""
        import tempfile

        path = (optional_text("artifact path", path) or "").strip("/")
        dst = None if dst_path is None else _local_path(dst_path)
        with self.reading() as conn:
            if reads.run_state(conn, check_text("run id", run_id)) is None:
                raise ResourceDoesNotExist(f"Run with id={run_id} not found")
            entries = reads.artifact_entries(conn, run_id)
        if path in entries:
            chosen = {path: entries[path]}
        else:
            prefix = path + "/" if path else ""
            chosen = {p: v for p, v in entries.items() if p.startswith(prefix)}
            if not chosen:
                raise ResourceDoesNotExist(f"No artifact {path!r} in run {run_id}")
        dst = dst or tempfile.mkdtemp(prefix="evstore-artifacts-")
        try:
            for logical, (_size, sha) in chosen.items():
                self._artifacts.copy_out(sha, os.path.join(dst, logical))
        except OSError as e:
            raise InvalidParameterValue(
                f"Cannot write artifacts under {shown(dst)}: {e.strerror} ({shown(e.filename)})"
            ) from e
        return os.path.join(dst, path) if path else dst

    # --- search -------------------------------------------------------------------

    def search_runs(
        self,
        experiment_ids: str | list[str],
        filter_string: str = "",
        run_view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Runs matching MLflow's filter grammar (plus OR and parentheses), ordered, paged."""
        from evstore.search import search_run_ids

        if isinstance(experiment_ids, (str, int)) and not isinstance(experiment_ids, bool):
            experiment_ids = [str(experiment_ids)]
        if not isinstance(experiment_ids, (list, tuple)):
            raise InvalidParameterValue(
                f"experiment_ids must be a list of experiment ids, not {shown(experiment_ids)}"
            )
        optional_text("filter_string", filter_string)
        with self.reading() as conn:
            run_ids, token = search_run_ids(
                conn,
                filter_string or "",
                experiment_ids=[str(e) for e in experiment_ids],
                run_view_type=run_view_type,
                order_by=order_by,
                max_results=max_results,
                page_token=page_token,
            )
            # The page's ids first, then its rows: a run's params and tags are built for
            # the page alone, not for every run the sort or the offset passes over.
            return PagedList(reads.load_runs(conn, run_ids), token)


#: Snapshots a read may find behind before it reads under the write lock.
_READ_ATTEMPTS = 3
#: The statuses that end a run.
_ENDED = frozenset({"FINISHED", "FAILED", "KILLED"})


def _join(prefix: str | None, name: str) -> str:
    return posixpath.join(prefix.strip("/"), name) if prefix and prefix.strip("/") else name


def _tag_dict(tags: dict[str, Any] | Iterable[RunTag] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if isinstance(tags, dict):
        items = list(tags.items())
    else:
        try:
            items = [(t.key, t.value) for t in tags]
        except (AttributeError, TypeError):
            raise InvalidParameterValue(
                f"tags must be a dict of key to value, or RunTag objects, not {shown(tags)[:200]}"
            ) from None
    return {validate_key("tag", k): tag_value(k, v) for k, v in items}


def _field(entity: Any, name: str) -> Any:
    """One field of a Param or RunTag, or a clear error for something else."""
    try:
        return getattr(entity, name)
    except AttributeError:
        raise InvalidParameterValue(
            f"log_batch takes Param and RunTag objects, not {shown(entity)[:200]}"
        ) from None


def _local_path(path: Any) -> str:
    """A local file or directory path given as str or os.PathLike."""
    try:
        return check_text("local path", os.fspath(path))
    except TypeError:
        raise InvalidParameterValue(
            f"Invalid local path {shown(path)}: it must be a str or os.PathLike"
        ) from None


def _experiment_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterValue(
            f"Invalid experiment name {shown(name)}: the name must be a non-empty string"
        )
    return check_text("experiment name", name)


def _numeric_id(experiment_id: str) -> tuple[int, Any]:
    return (0, int(experiment_id)) if experiment_id.isdigit() else (1, experiment_id)


# The attributes search_experiments orders by, as in MLflow.
_EXPERIMENT_SORT_KEYS: dict[str, Any] = {
    "name": lambda e: e.name,
    "experiment_id": lambda e: _numeric_id(e.experiment_id),
    "creation_time": lambda e: e.creation_time or 0,
    "last_update_time": lambda e: e.last_update_time or 0,
}


def _experiment_order(order_by: Any) -> list[tuple[str, bool]]:
    """``order_by`` of search_experiments as (attribute, descending) pairs, checked."""
    if order_by is None:
        return []
    if not isinstance(order_by, (list, tuple)):
        raise InvalidParameterValue(
            f"order_by must be a list of strings such as ['name DESC'], not {shown(order_by)}"
        )
    keys = []
    for clause in order_by:
        parts = clause.split() if isinstance(clause, str) else []
        field = parts[0].removeprefix("attributes.").removeprefix("attribute.") if parts else ""
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if len(parts) not in (1, 2) or field not in _EXPERIMENT_SORT_KEYS or direction not in ("ASC", "DESC"):
            raise InvalidParameterValue(
                f"Invalid order_by clause {shown(clause)}: use one of"
                f" {', '.join(_EXPERIMENT_SORT_KEYS)}, optionally followed by ASC or DESC"
            )
        keys.append((field, direction == "DESC"))
    return keys


def _experiment_matches(experiment: Experiment, filter_string: str) -> bool:
    """A small filter for experiments: ``name`` or ``tags.<key>`` with =, !=, LIKE, ILIKE."""
    import re

    match = re.fullmatch(
        r"\s*(?:attributes\.)?(name|tags\.`?[^`=!<> ]+`?)\s*(=|!=|LIKE|ILIKE)\s*'(.*)'\s*",
        filter_string,
        flags=re.IGNORECASE,
    )
    if not match:
        raise InvalidParameterValue(
            f"Unsupported experiment filter {filter_string!r}: use name or tags.<key> with"
            " =, !=, LIKE or ILIKE and a quoted value"
        )
    field, op, value = match.groups()
    if field.lower() == "name":
        actual: str | None = experiment.name
    else:
        actual = experiment.tags.get(field[5:].strip("`"))
    if actual is None:
        return False
    op = op.upper()
    if op in ("=", "!="):
        return (actual == value) == (op == "=")
    pattern = "^" + re.escape(value).replace("%", ".*").replace("_", ".") + "$"
    return re.match(pattern, actual, flags=re.IGNORECASE if op == "ILIKE" else 0) is not None


_ADJECTIVES = ("amber", "bold", "calm", "deft", "eager", "fair", "glad", "keen", "lucid", "merry",
               "nimble", "proud", "quiet", "rapid", "sly", "tidy", "vivid", "wise")
_NOUNS = ("ant", "bear", "crane", "deer", "eel", "fish", "goat", "hawk", "ibis", "jay", "koi",
          "lynx", "mole", "newt", "owl", "puma", "quail", "ram", "seal", "toad", "wolf")  # fmt: skip


def _random_run_name() -> str:
    """A name like MLflow's: adjective-noun-number."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(1, 999)}"


def _user() -> str:
    from evstore.stores.base import default_metadata

    return str(default_metadata()["user"])
