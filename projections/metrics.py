"""The full metric history: every point, ordered by (position, seq).

``position`` is the event's position in the log and ``seq`` the point's index in its
event. NaN is stored as NULL (SQLite's own rule); +-inf are stored as they are.
"""

from __future__ import annotations

from evstore.events import MetricPoint, MetricsLogged
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def logged(rec: RecordedEvent, out: Ops) -> None:
    """Every point of the batch, in order."""
    run_id, position = rec.stream_id, rec.position
    points: list[MetricPoint] = rec.event.points  # type: ignore[union-attr]
    out.extend(
        "insert",
        [(run_id, p.key, p.value, p.step, p.timestamp, position, seq) for seq, p in enumerate(points)],
    )


METRICS = ReadModel(
    name="metrics",
    version=1,
    tables={
        "metrics": (
            "CREATE TABLE {metrics} (run_id TEXT NOT NULL, key TEXT NOT NULL, value REAL,"
            " step INTEGER NOT NULL, timestamp INTEGER NOT NULL, position INTEGER NOT NULL,"
            " seq INTEGER NOT NULL)",
            "CREATE INDEX {metrics}_history ON {metrics} (run_id, key, position, seq)",
        ),
    },
    statements={"insert": "INSERT INTO {metrics} VALUES (?, ?, ?, ?, ?, ?, ?)"},
    handlers={MetricsLogged: logged},
)
