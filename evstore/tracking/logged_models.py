"""Logged models (MLflow 3): the rules, as a part of the tracking service.

A logged model is its own stream (its id, ``m-<hex>``): created PENDING with its tags and
params, finalized READY or FAILED, tagged, given params, deleted (soft). Its files are
``ArtifactRecorded`` events on its stream, stored like a run's. Metrics name a model by
the ``model_id`` of their points (logged on the run), and a run names the models it
produced with ``RunOutputsLogged``. ``LoggedModelsMixin`` is mixed into
``TrackingService``, whose store, reads and run checks it uses.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from evstore import codec
from evstore.artifacts import logical_path
from evstore.entities import (
    FileInfo,
    LifecycleStage,
    LoggedModelOutput,
    Metric,
    PagedList,
    RunOutputs,
)
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.events import (
    ArtifactRecorded,
    Event,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagSet,
    ModelOutput,
    RunOutputsLogged,
)
from evstore.stores import NO_STREAM
from evstore.validation import (
    check_artifact_path,
    check_text,
    optional_text,
    param_value,
    shown,
    tag_value,
    validate_key,
)

#: MLflow's statuses as its JSON names them, and the short names evstore stores.
STATUS_NAMES = {"PENDING": "LOGGED_MODEL_PENDING", "READY": "LOGGED_MODEL_READY",
                "FAILED": "LOGGED_MODEL_UPLOAD_FAILED"}  # fmt: skip
FINAL_STATUSES = ("READY", "FAILED")
#: MLflow's page size of a logged-model search that names none.
SEARCH_PAGE_DEFAULT = 100


@dataclass
class LoggedModel:
    """A logged model as MLflow's ``LoggedModel``: info, tags, params and linked metrics."""

    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    creation_timestamp: int
    last_updated_timestamp: int
    status: str
    status_message: str = ""
    model_type: str = ""
    source_run_id: str | None = None
    lifecycle_stage: str = LifecycleStage.ACTIVE
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: (metric, run id, dataset name, dataset digest) per point linked to the model.
    metrics: list[tuple[Metric, str, str, str]] = field(default_factory=list)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


def status_of(value: Any) -> str:
    """A final status as stored (READY, FAILED) from MLflow's names or evstore's."""
    text = str(getattr(value, "name", value)).upper()
    text = {"LOGGED_MODEL_READY": "READY", "LOGGED_MODEL_UPLOAD_FAILED": "FAILED"}.get(text, text)
    if text not in FINAL_STATUSES:
        raise InvalidParameterValue(
            f"Invalid logged model status {shown(value)}: use READY or FAILED"
            " (LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED)"
        )
    return text


def _pairs(items: dict[str, Any] | Iterable[Any] | None, what: str) -> dict[str, str]:
    """Tags or params given as a dict or as objects with ``key`` and ``value``."""
    if items is None:
        return {}
    try:
        found = list(items.items()) if isinstance(items, dict) else [(i.key, i.value) for i in items]  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        raise InvalidParameterValue(
            f"{what} must be a dict of key to value, or objects with key and value,"
            f" not {shown(items)[:200]}"
        ) from None
    if what == "tags":
        return {validate_key("tag", k): tag_value(k, v) for k, v in found}
    return {validate_key("param", k): param_value(v) for k, v in found}


class LoggedModelsMixin:
    """The logged-model methods of ``TrackingService`` (MlflowClient's names)."""

    _store: Any
    _served: bool
    _artifacts: Any
    reading: Callable[..., Any]
    _active_run: Callable[[Any, str], None]
    _experiment_for_write: Callable[[Any, str], Any]

    def create_logged_model(
        self,
        experiment_id: str,
        name: str | None = None,
        source_run_id: str | None = None,
        tags: dict[str, Any] | Iterable[Any] | None = None,
        params: dict[str, Any] | Iterable[Any] | None = None,
        model_type: str | None = None,
    ) -> LoggedModel:
        """Create a PENDING logged model in an experiment; returns it."""
        from evstore.tracking.service import _check_experiment_active, _random_run_name

        optional_text("model name", name)
        optional_text("model type", model_type)
        optional_text("source run id", source_run_id)
        clean_tags, clean_params = _pairs(tags, "tags"), _pairs(params, "params")
        model_id = f"m-{uuid.uuid4().hex}"
        with self._store.transaction() as conn:
            experiment = self._experiment_for_write(conn, str(experiment_id))
            _check_experiment_active(experiment)
            if source_run_id:
                self._active_run(conn, source_run_id)
            events: list[Event] = [
                LoggedModelCreated(
                    experiment_id=experiment.experiment_id,
                    name=name or _random_run_name(),
                    artifact_location=posixpath.join(
                        experiment.artifact_location, "models", model_id, "artifacts"
                    ),
                    creation_time=codec.now_ms(),
                    source_run_id=source_run_id or None,
                    model_type=model_type or "",
                )
            ]
            events += [LoggedModelTagSet(key=k, value=v) for k, v in clean_tags.items()]
            if clean_params:
                events.append(LoggedModelParamsLogged(params=clean_params))
            self._store.append(model_id, events, expected_version=NO_STREAM)
        return self.get_logged_model(model_id)

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> LoggedModel:
        """One logged model; a deleted one only with ``allow_deleted``."""
        with self.reading() as conn:
            found = load_models(conn, [check_text("model id", model_id)])
        if not found or (found[0].lifecycle_stage != LifecycleStage.ACTIVE and not allow_deleted):
            raise ResourceDoesNotExist(f"Logged model with ID '{model_id}' not found.")
        return found[0]

    def _model_for_write(self, conn: Any, model_id: str) -> LoggedModel:
        found = load_models(conn, [check_text("model id", model_id)])
        if not found or found[0].lifecycle_stage != LifecycleStage.ACTIVE:
            raise ResourceDoesNotExist(f"Logged model with ID '{model_id}' not found.")
        return found[0]

    def finalize_logged_model(self, model_id: str, status: Any) -> LoggedModel:
        """Mark a model READY or FAILED; returns it."""
        final = status_of(status)
        with self._store.transaction() as conn:
            model = self._model_for_write(conn, model_id)
            if model.status != final:
                self._store.append(model_id, [LoggedModelFinalized(status=final)])
        return self.get_logged_model(model_id)

    def set_logged_model_tags(self, model_id: str, tags: dict[str, Any] | Iterable[Any]) -> None:
        """Set tags on a model; a tag set to the value it holds writes nothing."""
        clean = _pairs(tags, "tags")
        with self._store.transaction() as conn:
            model = self._model_for_write(conn, model_id)
            changed = [LoggedModelTagSet(key=k, value=v) for k, v in clean.items()
                       if model.tags.get(k) != v]  # fmt: skip
            if changed:
                self._store.append(model_id, changed)

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        """Delete a tag of a model; the tag must exist."""
        check_text("tag key", key)
        with self._store.transaction() as conn:
            model = self._model_for_write(conn, model_id)
            if key not in model.tags:
                raise ResourceDoesNotExist(
                    f"No tag with key {key!r} found for model with ID '{model_id}'."
                )
            self._store.append(model_id, [LoggedModelTagDeleted(key=key)])

    def log_model_params(self, model_id: str, params: dict[str, Any] | Iterable[Any]) -> None:
        """Log params of a model; a key logged before keeps its first value."""
        clean = _pairs(params, "params")
        with self._store.transaction() as conn:
            model = self._model_for_write(conn, model_id)
            fresh = {k: v for k, v in clean.items() if k not in model.params}
            if fresh:
                self._store.append(model_id, [LoggedModelParamsLogged(params=fresh)])

    def delete_logged_model(self, model_id: str) -> None:
        """Mark a model deleted (its events and files stay in the log)."""
        with self._store.transaction() as conn:
            self._model_for_write(conn, model_id)
            self._store.append(model_id, [LoggedModelDeleted(deleted_time=codec.now_ms())])

    def log_outputs(self, run_id: str, models: Iterable[Any]) -> None:
        """Record models a run produced: ``LoggedModelOutput``s or (model id, step) pairs."""
        try:
            pairs = [(m.model_id, int(m.step)) if hasattr(m, "model_id") else (m[0], int(m[1]))
                     for m in models]  # fmt: skip
        except (TypeError, ValueError, IndexError):
            raise InvalidParameterValue(
                f"models must be LoggedModelOutput objects or (model_id, step) pairs, not {shown(models)[:200]}"
            ) from None
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            for model_id, _step in pairs:
                self._model_for_write(conn, check_text("model id", model_id))
            held = set(outputs_of(conn, run_id))  # one recorded already (a retry) writes nothing
            fresh = list(dict.fromkeys(pair for pair in pairs if pair not in held))
            if fresh:
                outputs = [ModelOutput(model_id=m, step=step) for m, step in fresh]
                self._store.append(run_id, [RunOutputsLogged(models=outputs)])

    def search_logged_models(
        self,
        experiment_ids: list[str],
        filter_string: str | None = None,
        datasets: list[dict[str, Any]] | None = None,
        max_results: int | None = None,
        order_by: list[dict[str, Any]] | None = None,
        page_token: str | None = None,
    ) -> PagedList:
        """Active models of the experiments matching a filter, ordered, paged (newest first;
        ``max_results`` None or 0 is MLflow's page of 100)."""
        from evstore.search import create_page_token, parse_page_token, validate_max_results

        max_results = max_results or SEARCH_PAGE_DEFAULT
        validate_max_results(max_results)
        matches = model_filter(filter_string, datasets)
        keys = _model_order(order_by)
        start = parse_page_token(page_token)
        ids = [str(e) for e in experiment_ids]
        with self.reading() as conn:
            rows = conn.execute(
                f"SELECT model_id FROM logged_models WHERE lifecycle_stage = 'active'"
                f" AND experiment_id IN ({', '.join('?' * len(ids))})", ids,
            ).fetchall()  # fmt: skip
            found = [m for m in load_models(conn, [r[0] for r in rows]) if matches(m)]
        found.sort(key=lambda m: m.model_id)
        for sort_key, descending in reversed(keys):
            found.sort(key=sort_key, reverse=descending)
        end = start + max_results
        token = create_page_token(end) if end < len(found) else None
        return PagedList(found[start:end], token)

    def run_outputs(self, run_id: str) -> list[tuple[str, int]]:
        """The models a run produced, as (model id, step)."""
        with self.reading() as conn:
            return outputs_of(conn, check_text("run id", run_id))

    # --- a model's files -------------------------------------------------------------

    def record_model_artifact_bytes(self, model_id: str, path: str, source: Any) -> None:
        """Store bytes from a stream under a logical path of a model's artifacts."""
        logical = check_artifact_path(logical_path(path))
        self.get_logged_model(model_id)
        size, sha = self._artifacts.put_stream(source)
        with self._store.transaction() as conn:
            self._model_for_write(conn, model_id)
            self._store.append(model_id, [ArtifactRecorded(path=logical, size=size, sha256=sha)])

    def list_model_artifacts(self, model_id: str, path: str | None = None) -> list[FileInfo]:
        """Files and directories directly under ``path`` in a model's artifacts."""
        from evstore import reads

        self.get_logged_model(model_id)
        with self.reading() as conn:
            entries = reads.artifact_entries(conn, model_id)
        return reads.list_artifacts(entries, path)

    def model_artifact_digest(self, model_id: str, path: str) -> tuple[int, str]:
        """(size, sha256) of one file of a model's artifacts."""
        from evstore import reads

        self.get_logged_model(model_id)
        with self.reading() as conn:
            entries = reads.artifact_entries(conn, model_id)
        if path not in entries:
            raise ResourceDoesNotExist(f"No artifact {path!r} in logged model {model_id}")
        return entries[path]


# --- reads -------------------------------------------------------------------------------


def load_models(conn: Any, model_ids: list[str]) -> list[LoggedModel]:
    """The models with these ids, in the order given (missing ones left out)."""
    if not model_ids:
        return []
    marks = ", ".join("?" * len(model_ids))
    models = {
        row[0]: LoggedModel(*row)
        for row in conn.execute(
            "SELECT model_id, experiment_id, name, artifact_location, creation_time,"
            " last_updated_time, status, status_message, model_type, source_run_id,"
            f" lifecycle_stage FROM logged_models WHERE model_id IN ({marks})", model_ids,
        )
    }  # fmt: skip
    for table, attribute in (("logged_model_tags", "tags"), ("logged_model_params", "params")):
        for model_id, key, value in conn.execute(
            f"SELECT model_id, key, value FROM {table} WHERE model_id IN ({marks})", model_ids
        ):
            getattr(models[model_id], attribute)[key] = value
    for model_id, run_id, key, value, step, timestamp, name, digest in conn.execute(
        "SELECT model_id, run_id, key, value, step, timestamp, dataset_name, dataset_digest"
        f" FROM logged_model_metrics WHERE model_id IN ({marks})"
        " ORDER BY model_id, key, step, timestamp", model_ids,
    ):  # fmt: skip
        if model_id in models:
            metric = Metric(key, float("nan") if value is None else value, timestamp, step)
            models[model_id].metrics.append((metric, run_id, name, digest))
    return [models[m] for m in model_ids if m in models]


def outputs_of(conn: Any, run_id: str) -> list[tuple[str, int]]:
    """The models a run produced, as (model id, step)."""
    return [tuple(r) for r in conn.execute(
        "SELECT model_id, step FROM run_outputs WHERE run_id = ? ORDER BY model_id", (run_id,)
    )]  # fmt: skip


def outputs_for(conn: Any, run_ids: list[str]) -> dict[str, RunOutputs]:
    """What each of these runs produced (runs that produced nothing are left out)."""
    if not run_ids:
        return {}
    found: dict[str, list[LoggedModelOutput]] = {}
    for run_id, model_id, step in conn.execute(
        f"SELECT run_id, model_id, step FROM run_outputs WHERE run_id IN ({', '.join('?' * len(run_ids))})"
        " ORDER BY run_id, model_id", run_ids,
    ).fetchall():  # fmt: skip
        found.setdefault(run_id, []).append(LoggedModelOutput(model_id, step))
    return {run_id: RunOutputs(models) for run_id, models in found.items()}


# --- search ------------------------------------------------------------------------------

_ATTRIBUTES: dict[str, Callable[[LoggedModel], Any]] = {
    "name": lambda m: m.name,
    "model_id": lambda m: m.model_id,
    "model_type": lambda m: m.model_type,
    "status": lambda m: STATUS_NAMES.get(m.status, m.status),
    "source_run_id": lambda m: m.source_run_id or "",
    "creation_timestamp": lambda m: m.creation_timestamp,
    "creation_time": lambda m: m.creation_timestamp,
    "last_updated_timestamp": lambda m: m.last_updated_timestamp,
}
_NUMERIC = frozenset({"creation_timestamp", "creation_time", "last_updated_timestamp"})


def _latest_metrics(model: LoggedModel, datasets: list[dict[str, Any]] | None) -> dict[str, float]:
    """Each metric's value at its greatest (step, timestamp), within ``datasets`` if given."""
    latest: dict[str, tuple[int, int, float]] = {}
    for metric, _run, name, digest in model.metrics:
        if datasets and not any(
            d.get("dataset_name") == name and d.get("dataset_digest") in (None, "", digest)
            for d in datasets
        ):
            continue
        held = latest.get(metric.key)
        if held is None or (metric.step, metric.timestamp) >= held[:2]:
            latest[metric.key] = (metric.step, metric.timestamp, metric.value)
    return {k: v[2] for k, v in latest.items()}


def model_filter(
    filter_string: str | None, datasets: list[dict[str, Any]] | None = None
) -> Callable[[LoggedModel], bool]:
    """MLflow's logged-model filter (attributes, metrics., params., tags.) as a test."""
    from evstore.search import ATTRIBUTE, METRIC, PARAM, TAG, Grammar, parse_filter
    from evstore.tracking.filters import comparison, expression_test

    grammar = Grammar(
        {"metric": METRIC, "metrics": METRIC, "param": PARAM, "params": PARAM, "tag": TAG,
         "tags": TAG, "attribute": ATTRIBUTE, "attributes": ATTRIBUTE},
        frozenset(_ATTRIBUTES) - _NUMERIC, _NUMERIC, {}, frozenset({"model_id"}),
        key_hint="a key such as name, metrics.acc, params.lr or tags.`my tag`",
        entity_hint="attributes., metrics., params. or tags.", attribute_ops={},
    )  # fmt: skip

    def clause_test(node: Any) -> Callable[[LoggedModel], bool]:
        test, key = comparison(node.op, node.value), node.key
        if node.entity == METRIC:
            return lambda m: test(_latest_metrics(m, datasets).get(key))
        if node.entity in (PARAM, TAG):
            attribute = "params" if node.entity == PARAM else "tags"
            return lambda m: test(getattr(m, attribute).get(key))
        value_of = _ATTRIBUTES[key]
        return lambda m: test(value_of(m))

    return expression_test(parse_filter(optional_text("filter_string", filter_string), grammar), clause_test)


def _model_order(order_by: list[dict[str, Any]] | None) -> list[tuple[Callable[..., Any], bool]]:
    """``order_by`` entries ({field_name, ascending, dataset_name?, dataset_digest?}) as
    (sort key, descending); newest first when none is given."""
    if not order_by:
        return [(_ATTRIBUTES["creation_timestamp"], True)]
    keys: list[tuple[Callable[..., Any], bool]] = []
    for entry in order_by:
        name = str(entry.get("field_name", ""))
        descending = not entry.get("ascending", True)
        if name.startswith("metrics."):
            metric = name.removeprefix("metrics.")
            scope = [entry] if entry.get("dataset_name") else None

            def by_metric(m: LoggedModel, metric: str = metric, scope: Any = scope,
                          descending: bool = descending) -> Any:
                value = _latest_metrics(m, scope).get(metric)
                return (value is None) != descending, value if value is not None else 0.0

            keys.append((by_metric, descending))
            continue
        attribute = name.removeprefix("attributes.")
        if attribute not in _ATTRIBUTES:
            raise InvalidParameterValue(
                f"Invalid order_by field {shown(name)}: use metrics.<key> or one of"
                f" {', '.join(sorted(_ATTRIBUTES))}"
            )
        keys.append((_ATTRIBUTES[attribute], descending))
    return keys
