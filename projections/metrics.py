"""The full metric history: every point, ordered by (position, seq).

``position`` is the event's position in the log and ``seq`` the point's index in its
event. NaN is stored as NULL (SQLite's own rule); +-inf are stored as they are.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from evstore.events import MetricsLogged
from evstore.projection import ReadModel
from evstore.stores.base import RecordedEvent


def point_rows(logged: list[RecordedEvent]) -> list[tuple[Any, ...]]:
    """One row per point of every MetricsLogged, in order (grouped by key for a single one)."""
    rows = [
        (rec.stream_id, p.key, p.value, p.step, p.timestamp, rec.position, seq)
        for rec in logged
        for seq, p in enumerate(rec.event.points)  # type: ignore[union-attr]
    ]
    if len(logged) == 1:
        # One logged batch (an append, not a rebuild's chunk): inserting each metric's
        # points together touches a few index pages instead of one per point, half again
        # as fast for 1,000 points. The sort is stable; (position, seq) still orders.
        rows.sort(key=_run_and_key)
    return rows


_run_and_key = itemgetter(0, 1)


METRICS = ReadModel(
    name="metrics",
    version=1,
    tables={
        "metrics": (
            (
                "CREATE TABLE {metrics} (run_id TEXT NOT NULL, key TEXT NOT NULL, value REAL,"
                " step INTEGER NOT NULL, timestamp INTEGER NOT NULL, position INTEGER NOT NULL,"
                " seq INTEGER NOT NULL)"
            ),
            "CREATE INDEX {metrics}_history ON {metrics} (run_id, key, position, seq)",
        ),
    },
    statements={"insert": "INSERT INTO {metrics} VALUES (?, ?, ?, ?, ?, ?, ?)"},
    prepare={"insert": point_rows},
    collect={MetricsLogged: "insert"},
)
