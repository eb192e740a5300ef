"""Run tags with deletes applied; ``mlflow.runName`` follows the run's name, as in MLflow."""

from __future__ import annotations

from evstore.events import RunRenamed, RunStarted, TagDeleted, TagSet
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent

RUN_NAME_TAG = "mlflow.runName"


def started(rec: RecordedEvent, out: Ops) -> None:
    """MLflow's create_run sets ``mlflow.runName`` to the run's name."""
    run_name: str = rec.event.run_name  # type: ignore[union-attr]
    if run_name:
        out.add("upsert", (rec.stream_id, RUN_NAME_TAG, run_name))


def tag_set(rec: RecordedEvent, out: Ops) -> None:
    """A tag set (or overwritten)."""
    e: TagSet = rec.event  # type: ignore[assignment]
    out.add("upsert", (rec.stream_id, e.key, e.value))


def tag_deleted(rec: RecordedEvent, out: Ops) -> None:
    """A tag removed."""
    e: TagDeleted = rec.event  # type: ignore[assignment]
    out.add("delete", (rec.stream_id, e.key))


def renamed(rec: RecordedEvent, out: Ops) -> None:
    """Renaming a run rewrites its ``mlflow.runName`` tag."""
    e: RunRenamed = rec.event  # type: ignore[assignment]
    out.add("upsert", (rec.stream_id, RUN_NAME_TAG, e.run_name))


TAGS = ReadModel(
    name="tags",
    version=1,
    tables={
        "tags": (
            (
                "CREATE TABLE {tags} (run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT,"
                " PRIMARY KEY (run_id, key)) WITHOUT ROWID"
            ),
            "CREATE INDEX {tags}_by_value ON {tags} (key, value)",
        ),
    },
    statements={
        "upsert": "INSERT OR REPLACE INTO {tags} VALUES (?, ?, ?)",
        "delete": "DELETE FROM {tags} WHERE run_id = ? AND key = ?",
    },
    handlers={RunStarted: started, TagSet: tag_set, TagDeleted: tag_deleted, RunRenamed: renamed},
)
