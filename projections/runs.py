"""Runs: one row per run, its status, times, name and lifecycle stage."""

from __future__ import annotations

from evstore.events import (
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagSet,
)
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent

RUN_NAME_TAG = "mlflow.runName"


def started(rec: RecordedEvent, out: Ops) -> None:
    """A new active run."""
    e: RunStarted = rec.event  # type: ignore[assignment]
    out.add(
        "insert",
        (rec.stream_id, e.experiment_id, e.run_name, e.user_id, e.status, e.start_time, None,
         "active", e.parent_run_id, e.artifact_uri, None),
    )  # fmt: skip


def status_changed(rec: RecordedEvent, out: Ops) -> None:
    """A new status; an end time when one is given (MLflow keeps the old one otherwise)."""
    e: RunStatusChanged = rec.event  # type: ignore[assignment]
    out.add("set_status", (e.status, e.end_time, rec.stream_id))


def renamed(rec: RecordedEvent, out: Ops) -> None:
    """A new name."""
    e: RunRenamed = rec.event  # type: ignore[assignment]
    out.add("rename", (e.run_name, rec.stream_id))


def tag_set(rec: RecordedEvent, out: Ops) -> None:
    """Setting the ``mlflow.runName`` tag renames the run, as in MLflow."""
    e: TagSet = rec.event  # type: ignore[assignment]
    if e.key == RUN_NAME_TAG:
        out.add("rename", (e.value, rec.stream_id))


def deleted(rec: RecordedEvent, out: Ops) -> None:
    """Soft delete."""
    e: RunDeleted = rec.event  # type: ignore[assignment]
    out.add("set_stage", ("deleted", e.deleted_time, rec.stream_id))


def restored(rec: RecordedEvent, out: Ops) -> None:
    """Back to active."""
    out.add("set_stage", ("active", None, rec.stream_id))


RUNS = ReadModel(
    name="runs",
    version=1,
    tables={
        "runs": (
            (
                "CREATE TABLE {runs} (run_id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL,"
                " run_name TEXT, user_id TEXT, status TEXT NOT NULL, start_time INTEGER,"
                " end_time INTEGER, lifecycle_stage TEXT NOT NULL, parent_run_id TEXT,"
                " artifact_uri TEXT, deleted_time INTEGER)"
            ),
            "CREATE INDEX {runs}_search ON {runs} (experiment_id, lifecycle_stage, start_time)",
        ),
    },
    statements={
        "insert": "INSERT INTO {runs} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "set_status": (
            "UPDATE {runs} SET status = ?, end_time = coalesce(?, end_time) WHERE run_id = ?"
        ),
        "rename": "UPDATE {runs} SET run_name = ? WHERE run_id = ?",
        "set_stage": "UPDATE {runs} SET lifecycle_stage = ?, deleted_time = ? WHERE run_id = ?",
    },
    handlers={
        RunStarted: started,
        RunStatusChanged: status_changed,
        RunRenamed: renamed,
        TagSet: tag_set,
        RunDeleted: deleted,
        RunRestored: restored,
    },
)
