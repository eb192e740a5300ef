"""Logged models (MLflow 3): one row per model, its tags, params and linked metrics, and
the models each run produced (``run_outputs``)."""

from __future__ import annotations

from evstore.events import (
    ArtifactRecorded,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagSet,
    MetricsLogged,
    RunOutputsLogged,
)
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def created(rec: RecordedEvent, out: Ops) -> None:
    """A new model, PENDING until finalized."""
    e: LoggedModelCreated = rec.event  # type: ignore[assignment]
    out.add(
        "insert",
        (rec.stream_id, e.experiment_id, e.name, e.artifact_location, e.creation_time,
         e.creation_time, "PENDING", "", e.model_type, e.source_run_id, "active", None),
    )  # fmt: skip


def finalized(rec: RecordedEvent, out: Ops) -> None:
    """READY or FAILED, with the time it was recorded as the model's last update."""
    e: LoggedModelFinalized = rec.event  # type: ignore[assignment]
    out.add("set_status", (e.status, e.status_message, rec.occurred_at, rec.stream_id))


def tag_set(rec: RecordedEvent, out: Ops) -> None:
    """A tag set (or overwritten)."""
    e: LoggedModelTagSet = rec.event  # type: ignore[assignment]
    out.add("tag", (rec.stream_id, e.key, e.value))


def tag_deleted(rec: RecordedEvent, out: Ops) -> None:
    """A tag removed."""
    e: LoggedModelTagDeleted = rec.event  # type: ignore[assignment]
    out.add("untag", (rec.stream_id, e.key))


def params_logged(rec: RecordedEvent, out: Ops) -> None:
    """Params of the model (the first value of a key stays, as MLflow keeps it)."""
    e: LoggedModelParamsLogged = rec.event  # type: ignore[assignment]
    out.extend("param", [(rec.stream_id, k, v) for k, v in e.params.items()])


def deleted(rec: RecordedEvent, out: Ops) -> None:
    """Soft delete: the model stays, marked deleted."""
    e: LoggedModelDeleted = rec.event  # type: ignore[assignment]
    out.add("set_stage", ("deleted", e.deleted_time, rec.stream_id))


def metrics_logged(rec: RecordedEvent, out: Ops) -> None:
    """Points of a run that name a model are that model's metrics too."""
    e: MetricsLogged = rec.event  # type: ignore[assignment]
    linked = [
        (p.model_id, rec.stream_id, p.key, p.value, p.step, p.timestamp,
         p.dataset_name or "", p.dataset_digest or "")
        for p in e.points if p.model_id is not None
    ]  # fmt: skip
    out.extend("metric", linked)


def outputs_logged(rec: RecordedEvent, out: Ops) -> None:
    """The models a run produced."""
    e: RunOutputsLogged = rec.event  # type: ignore[assignment]
    out.extend("output", [(rec.stream_id, m.model_id, m.step) for m in e.models])


def artifact_recorded(rec: RecordedEvent, out: Ops) -> None:
    """A file uploaded under a model's artifacts moves its last update."""
    if rec.stream_id.startswith("m-"):
        out.add("touch", (rec.occurred_at, rec.stream_id))


LOGGED_MODELS = ReadModel(
    name="logged_models",
    version=1,
    tables={
        "logged_models": (
            (
                "CREATE TABLE {logged_models} (model_id TEXT PRIMARY KEY,"
                " experiment_id TEXT NOT NULL, name TEXT NOT NULL, artifact_location TEXT,"
                " creation_time INTEGER, last_updated_time INTEGER, status TEXT NOT NULL,"
                " status_message TEXT, model_type TEXT, source_run_id TEXT,"
                " lifecycle_stage TEXT NOT NULL, deleted_time INTEGER)"
            ),
            "CREATE INDEX {logged_models}_search ON {logged_models} (experiment_id, creation_time)",
        ),
        "logged_model_tags": (
            (
                "CREATE TABLE {logged_model_tags} (model_id TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT, PRIMARY KEY (model_id, key)) WITHOUT ROWID"
            ),
        ),
        "logged_model_params": (
            (
                "CREATE TABLE {logged_model_params} (model_id TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT, PRIMARY KEY (model_id, key)) WITHOUT ROWID"
            ),
        ),
        "logged_model_metrics": (
            (
                "CREATE TABLE {logged_model_metrics} (model_id TEXT NOT NULL, run_id TEXT NOT NULL,"
                " key TEXT NOT NULL, value REAL, step INTEGER NOT NULL, timestamp INTEGER NOT NULL,"
                " dataset_name TEXT NOT NULL, dataset_digest TEXT NOT NULL, PRIMARY KEY (model_id,"
                " key, step, timestamp, run_id, dataset_name, dataset_digest)) WITHOUT ROWID"
            ),
        ),
        "run_outputs": (
            (
                "CREATE TABLE {run_outputs} (run_id TEXT NOT NULL, model_id TEXT NOT NULL,"
                " step INTEGER NOT NULL, PRIMARY KEY (run_id, model_id)) WITHOUT ROWID"
            ),
        ),
    },
    statements={
        "insert": "INSERT INTO {logged_models} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "set_status": (
            "UPDATE {logged_models} SET status = ?, status_message = ?, last_updated_time = ?"
            " WHERE model_id = ?"
        ),
        "touch": "UPDATE {logged_models} SET last_updated_time = ? WHERE model_id = ?",
        "set_stage": (
            "UPDATE {logged_models} SET lifecycle_stage = ?, deleted_time = ? WHERE model_id = ?"
        ),
        "tag": "INSERT OR REPLACE INTO {logged_model_tags} VALUES (?, ?, ?)",
        "untag": "DELETE FROM {logged_model_tags} WHERE model_id = ? AND key = ?",
        "param": "INSERT OR IGNORE INTO {logged_model_params} VALUES (?, ?, ?)",
        "metric": "INSERT OR REPLACE INTO {logged_model_metrics} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "output": "INSERT OR REPLACE INTO {run_outputs} VALUES (?, ?, ?)",
    },
    handlers={
        LoggedModelCreated: created,
        LoggedModelFinalized: finalized,
        LoggedModelTagSet: tag_set,
        LoggedModelTagDeleted: tag_deleted,
        LoggedModelParamsLogged: params_logged,
        LoggedModelDeleted: deleted,
        MetricsLogged: metrics_logged,
        RunOutputsLogged: outputs_logged,
        ArtifactRecorded: artifact_recorded,
    },
)
