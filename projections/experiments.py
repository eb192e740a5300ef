"""Experiments and their tags; ``last_update_time`` moves on every experiment event."""

from __future__ import annotations

from evstore.events import (
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
)
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def created(rec: RecordedEvent, out: Ops) -> None:
    """A new active experiment, with its initial tags."""
    e: ExperimentCreated = rec.event  # type: ignore[assignment]
    out.add(
        "insert",
        (e.experiment_id, e.name, e.artifact_location, "active", e.creation_time, e.creation_time),
    )
    out.extend("set_tag", [(e.experiment_id, key, value) for key, value in e.tags.items()])


def renamed(rec: RecordedEvent, out: Ops) -> None:
    """A new name."""
    e: ExperimentRenamed = rec.event  # type: ignore[assignment]
    out.add("rename", (e.name, rec.recorded_at, e.experiment_id))


def tag_set(rec: RecordedEvent, out: Ops) -> None:
    """A tag set (or overwritten)."""
    e: ExperimentTagSet = rec.event  # type: ignore[assignment]
    out.add("set_tag", (e.experiment_id, e.key, e.value))
    out.add("touch", (rec.recorded_at, e.experiment_id))


def tag_deleted(rec: RecordedEvent, out: Ops) -> None:
    """A tag removed."""
    e: ExperimentTagDeleted = rec.event  # type: ignore[assignment]
    out.add("delete_tag", (e.experiment_id, e.key))
    out.add("touch", (rec.recorded_at, e.experiment_id))


def deleted(rec: RecordedEvent, out: Ops) -> None:
    """Soft delete."""
    e: ExperimentDeleted = rec.event  # type: ignore[assignment]
    out.add("set_stage", ("deleted", e.deleted_time, e.experiment_id))


def restored(rec: RecordedEvent, out: Ops) -> None:
    """Back to active."""
    e: ExperimentRestored = rec.event  # type: ignore[assignment]
    out.add("set_stage", ("active", e.restored_time, e.experiment_id))


EXPERIMENTS = ReadModel(
    name="experiments",
    version=1,
    tables={
        "experiments": (
            (
                "CREATE TABLE {experiments} (experiment_id TEXT PRIMARY KEY, name TEXT UNIQUE,"
                " artifact_location TEXT, lifecycle_stage TEXT NOT NULL,"
                " creation_time INTEGER, last_update_time INTEGER)"
            ),
        ),
        "experiment_tags": (
            (
                "CREATE TABLE {experiment_tags} (experiment_id TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT, PRIMARY KEY (experiment_id, key)) WITHOUT ROWID"
            ),
        ),
    },
    statements={
        "insert": "INSERT INTO {experiments} VALUES (?, ?, ?, ?, ?, ?)",
        "rename": "UPDATE {experiments} SET name = ?, last_update_time = ? WHERE experiment_id = ?",
        "touch": "UPDATE {experiments} SET last_update_time = ? WHERE experiment_id = ?",
        "set_stage": (
            "UPDATE {experiments} SET lifecycle_stage = ?, last_update_time = ?"
            " WHERE experiment_id = ?"
        ),
        "set_tag": "INSERT OR REPLACE INTO {experiment_tags} VALUES (?, ?, ?)",
        "delete_tag": "DELETE FROM {experiment_tags} WHERE experiment_id = ? AND key = ?",
    },
    handlers={
        ExperimentCreated: created,
        ExperimentRenamed: renamed,
        ExperimentTagSet: tag_set,
        ExperimentTagDeleted: tag_deleted,
        ExperimentDeleted: deleted,
        ExperimentRestored: restored,
    },
)
