"""The tracking service: every rule of MLflow's tracking API, over one local store.

``evstore.Client`` calls it in process; ``evstore server`` calls it for each HTTP request,
so a rule (validation, lifecycle checks, "write only if changed", paging) lives here once.
Every write checks the current state and appends its events inside one write
transaction, so a failed write changes nothing and two writers cannot both pass a
check. Reads come from the projections, which the same transaction keeps current.
"""

from __future__ import annotations

import atexit
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
from evstore.artifacts import ArtifactRepository, logical_path
from evstore.entities import (
    Experiment,
    FileInfo,
    LifecycleStage,
    Metric,
    PagedList,
    Param,
    Run,
    RunInfo,
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
    ExperimentTagDeleted,
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
from evstore.stores import NO_STREAM, is_postgres_uri, sqlite_path
from evstore.tracking.inputs import InputsMixin
from evstore.tracking.logged_models import LoggedModelsMixin
from evstore.tracking.registry import RegistryMixin
from evstore.validation import (
    check_artifact_path,
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


def close_tracking_stores() -> None:
    """Close every store this process opened for tracking: each thread's read connection
    first, then the writer, so the last connection folds the WAL back into the file."""
    while _stores:
        _path, runner = _stores.popitem()
        runner.store.close()


def _store_key(uri: str) -> str:
    """What names one store in this process: a PostgreSQL URI, or a file's absolute path."""
    return uri if is_postgres_uri(uri) else os.path.abspath(sqlite_path(uri))


def close_tracking_store(uri: str) -> None:
    """Close the store at ``uri`` if this process has it open, so the next open is a new one."""
    runner = _stores.pop(_store_key(uri), None)
    if runner is not None:
        runner.store.close()


# Registered when this module is first imported, before the fluent API registers its own
# exit hook (evstore imports the client first): exit hooks run last-in first-out, so a run
# still active at exit is ended before its store is closed.
atexit.register(close_tracking_stores)


def experiment_stream(experiment_id: str) -> str:
    """The stream id of an experiment's events."""
    return f"experiment-{experiment_id}"


def open_tracking_store(uri: str) -> Any:
    """The store at ``uri`` with its projections attached (a ProjectionRunner; ``.store``
    is the log). One per file per process, shared by the fluent API and every Client."""
    from evstore.projection import attach
    from evstore.stores import open_log

    path = _store_key(uri)
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
    """Where a store's artifact files live: $EVSTORE_ARTIFACT_ROOT, else beside the file
    (for a PostgreSQL store, in the working directory)."""
    found = os.environ.get("EVSTORE_ARTIFACT_ROOT")
    if found:
        return found
    if is_postgres_uri(uri):
        return os.path.abspath("evstore-artifacts")
    return os.path.join(os.path.dirname(os.path.abspath(sqlite_path(uri))), "evstore-artifacts")


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
    return [uuid5_hex(f"evstore:{key}:{digest}:{i}") for i in range(count)]


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def uuid5_hex(name: str) -> str:
    """``uuid.uuid5(uuid.NAMESPACE_URL, name).hex``, without building a UUID object
    (a third of an idempotent append's id cost)."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


class TrackingService(LoggedModelsMixin, InputsMixin, RegistryMixin):
    """MlflowClient's methods over one local store: the rules, the reads and the writes."""

    def __init__(
        self, tracking_uri: str, served: bool = False, artifact_root: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self._runner = open_tracking_store(tracking_uri)
        self._store = self._runner.store
        self.artifact_root = (
            os.path.abspath(artifact_root) if artifact_root else artifact_root_for(tracking_uri)
        )
        self._artifacts = ArtifactRepository(self.artifact_root)
        # A server hands out artifact locations its proxy serves (mlflow-artifacts:/<id>).
        self._served = served

    @property
    def store(self) -> Any:
        """The underlying event store (for history, verify and export)."""
        return self._store

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """The connection for one consistent read: one snapshot, on this thread's read
        connection (never the write lock), of read models that hold every event in it;
        ``StaleProjectionError`` if one does not (``ProjectionRunner.check_fresh``)."""
        with self._store.reading() as conn:
            self._runner.check_fresh(conn=conn)
            yield conn

    def ensure_default_experiment(self) -> None:
        """Create experiment 0, "Default", in a store that has no experiment (as MLflow's
        stores do when first opened for writing)."""
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
            artifact_location=location or self._default_location(experiment_id),
            creation_time=codec.now_ms(),
            tags=tags,
        )
        self._store.append(experiment_stream(experiment_id), [event], expected_version=NO_STREAM)

    def _default_location(self, experiment_id: str) -> str:
        if self._served:
            return f"mlflow-artifacts:/{experiment_id}"
        return posixpath.join(self.artifact_root, experiment_id)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment; raises ResourceDoesNotExist when there is none."""
        with self.reading() as conn:
            return _found_experiment(conn, experiment_id)

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
            experiment_filter,
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
        matches = experiment_filter(filter_string) if filter_string else None  # checked first
        with self.reading() as conn:
            found = reads.experiments(conn, stages)
        if matches is not None:
            found = [e for e in found if matches(e)]
        for field, descending in reversed(sort_keys):
            found.sort(key=_EXPERIMENT_SORT_KEYS[field], reverse=descending)
        end = len(found) if max_results is None else start + max_results
        token = create_page_token(end) if end < len(found) else None
        return PagedList(found[start:end], token)

    def _experiment_for_write(self, conn: Any, experiment_id: str) -> Experiment:
        return _found_experiment(conn, experiment_id)

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
                # MLflow looks the experiment up in the stage the change applies to.
                raise ResourceDoesNotExist(f"No Experiment with id={experiment_id} exists")
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
        value = tag_value(key, value)
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, experiment_id)
            _check_experiment_active(experiment)
            if experiment.tags.get(key) == value:
                return  # unchanged: a retry writes nothing
            self._store.append(
                experiment_stream(experiment.experiment_id),
                [ExperimentTagSet(experiment_id=experiment.experiment_id, key=key, value=value)],
            )  # fmt: skip

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Delete a tag of an active experiment; the tag must exist (as MLflow)."""
        check_text("tag key", key)
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, experiment_id)
            _check_experiment_active(experiment)
            if key not in experiment.tags:
                raise ResourceDoesNotExist(
                    f"No tag with name: {key} in experiment with id {experiment_id}"
                )
            self._store.append(
                experiment_stream(experiment.experiment_id),
                [ExperimentTagDeleted(experiment_id=experiment.experiment_id, key=key)],
            )

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
            _check_experiment_active(experiment)
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
            found = _with_inputs_and_outputs(conn, reads.load_runs(conn, [run_id]))
        if not found:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        return found[0]

    def _active_run(self, conn: Any, run_id: str) -> None:
        state = reads.run_state(conn, check_text("run id", run_id))
        if state is None:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        if state[1] != LifecycleStage.ACTIVE:
            raise InvalidParameterValue(  # MLflow's code for a write to a deleted run
                f"The run {run_id} must be in the 'active' state. Current state is {state[1]}."
            )

    def _run_write(
        self, run_id: str, events: Sequence[Event], key: str | None = None, request: Any = None
    ) -> None:
        """Append to an active run; ``request`` (default: the events) keys a retry."""
        event_ids = None if key is None else _event_ids(key, len(events), request or events)
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            self._store.append(run_id, events, event_ids=event_ids)

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
                        ("set_terminated", status, given))  # fmt: skip

    def update_run(
        self, run_id: str, status: str | None = None, name: str | None = None,
        end_time: int | None = None, *, idempotency_key: str | None = None,
    ) -> RunInfo:  # fmt: skip
        """Change a run's status, name and/or end time, as MLflow's update_run; a change
        to what the run already holds writes nothing. Returns the run's info."""
        end_time = optional_int64("end_time", end_time)
        optional_text("run name", name)
        if status is not None and status not in RUN_STATUSES:
            raise InvalidParameterValue(
                f"Invalid run status {status!r}: use one of {', '.join(RUN_STATUSES)}"
            )
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            info = reads.load_runs(conn, [run_id])[0].info
            events: list[Event] = []
            if status not in (None, info.status) or end_time not in (None, info.end_time):
                events.append(RunStatusChanged(status=status or info.status, end_time=end_time))
            if name and name != info.run_name:
                events.append(RunRenamed(run_name=name))
            if not events:
                return info
            self._run_write(run_id, events, idempotency_key)
            return reads.load_runs(conn, [run_id])[0].info

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
        points = metric_points(metrics)
        new_params: dict[str, str] = {}
        for param in params:
            key, value = validate_key("param", _field(param, "key")), param_value(param.value)
            if key in new_params:
                raise InvalidParameterValue(
                    f"Duplicate parameter keys have been submitted: ['{key}']. Please ensure"
                    " the request contains only one param value per param key."
                )
            new_params[key] = value
        new_tags: dict[str, str] = {}  # the last value of a key wins, as in MLflow
        for t in tags:
            key = validate_key("tag", _field(t, "key"))
            new_tags[key] = tag_value(key, t.value)
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
            if events:
                event_ids = None
                if idempotency_key is not None:
                    # keyed by the request's params and metrics: a retry whose params are
                    # stored by now sends fewer events, with the same leading ids
                    request = ("log_batch", points, sorted(new_params.items()))
                    event_ids = _event_ids(idempotency_key, len(events), request)
                self._store.append(run_id, events, event_ids=event_ids)
            if new_tags:
                # Tags are kept idempotent by state instead: one set to the value it holds
                # writes nothing, so A=1, A=2, A=1 ends at 1 and a retry adds nothing.
                held = reads.tag_values(conn, run_id, list(new_tags))
                changed = [TagSet(key=k, value=v) for k, v in new_tags.items() if held.get(k) != v]
                if changed:
                    self._store.append(run_id, changed)

    def set_tag(
        self, run_id: str, key: str, value: Any, synchronous: bool | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Set one tag on a run; setting the value it holds writes nothing."""
        key = validate_key("tag", key)
        value = tag_value(key, value)
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            if reads.tag_values(conn, run_id, [key]).get(key) == value:
                return
            self._run_write(run_id, [TagSet(key=key, value=value)], idempotency_key)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Delete a tag from a run; the tag must exist."""
        validate_key("tag", key)
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            if not reads.has_tag(conn, run_id, key):
                raise ResourceDoesNotExist(f"No tag with name: {key} in run with id {run_id}")
            self._store.append(run_id, [TagDeleted(key=key)])

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every distinct point of a metric (none for an unknown run, as MLflow answers)."""
        check_text("metric key", key)
        with self.reading() as conn:
            return reads.metric_history(conn, check_text("run id", run_id), key)

    def get_metric_history_page(
        self, run_id: str, key: str, max_results: int | None = None, page_token: str | None = None
    ) -> PagedList:
        """One page of a metric's history (all of it when ``max_results`` is None or 0)."""
        from evstore.search import create_page_token, parse_page_token

        start = parse_page_token(page_token)
        history = self.get_metric_history(run_id, key)
        end = len(history) if not max_results else start + max_results
        return PagedList(history[start:end], create_page_token(end) if end < len(history) else None)

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
        logicals = [check_artifact_path(logical_path(logical)) for _local, logical in files]
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
        logical = check_artifact_path(logical_path(path))
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
            return PagedList(_with_inputs_and_outputs(conn, reads.load_runs(conn, run_ids)), token)


def _with_inputs_and_outputs(conn: Any, runs: list[Run]) -> list[Run]:
    """The runs with what each used and produced (MLflow 3's ``inputs`` and ``outputs``)."""
    from evstore.tracking.inputs import inputs_of
    from evstore.tracking.logged_models import outputs_for

    run_ids = [run.info.run_id for run in runs]
    inputs, outputs = inputs_of(conn, run_ids), outputs_for(conn, run_ids)
    if not inputs and not outputs:
        return runs
    return [
        msgspec.structs.replace(run, inputs=inputs.get(run.info.run_id, run.inputs),
                                outputs=outputs.get(run.info.run_id, run.outputs))
        for run in runs
    ]  # fmt: skip


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


def _found_experiment(conn: Any, experiment_id: Any) -> Experiment:
    """An experiment by id, or MLflow's error: an id that is no integer is an invalid
    parameter (unless an imported store holds it), a missing one does not exist."""
    experiment_id = str(experiment_id)
    found = reads.experiment_by_id(conn, experiment_id)
    if found is not None:
        return found
    if not experiment_id.isdigit():
        raise InvalidParameterValue(
            f"Invalid experiment ID '{experiment_id}'. Experiment ID must be a valid integer."
        )
    raise ResourceDoesNotExist(f"No Experiment with id={experiment_id} exists")


def _check_experiment_active(experiment: Experiment) -> None:
    """MLflow's refusal of a write under a deleted experiment."""
    if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        raise InvalidParameterValue(
            f"The experiment {experiment.experiment_id} must be in the 'active' state."
            f" Current state is {experiment.lifecycle_stage}."
        )


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
