"""Artifacts: logical path, size and sha256 per run (a re-upload replaces the entry)."""

from __future__ import annotations

from evstore.events import ArtifactRecorded
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def recorded(rec: RecordedEvent, out: Ops) -> None:
    """One file stored under the run's artifacts."""
    e: ArtifactRecorded = rec.event  # type: ignore[assignment]
    out.add("upsert", (rec.stream_id, e.path, e.size, e.sha256))


ARTIFACTS = ReadModel(
    name="artifacts",
    version=1,
    tables={
        "artifacts": (
            (
                "CREATE TABLE {artifacts} (run_id TEXT NOT NULL, path TEXT NOT NULL,"
                " size INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (run_id, path))"
                " WITHOUT ROWID"
            ),
        ),
    },
    statements={"upsert": "INSERT OR REPLACE INTO {artifacts} VALUES (?, ?, ?, ?)"},
    handlers={ArtifactRecorded: recorded},
)
