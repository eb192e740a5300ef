"""The full metric history: every point, ordered by (position, seq).

``position`` is the event's position in the log and ``seq`` the point's index in its
event. NaN is stored as NULL (SQLite's own rule); +-inf are stored as they are.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from evstore.events import MetricsLogged
from evstore.projection import TRAIL_ROWS, FlatRows, ReadModel
from evstore.stores.base import RecordedEvent
from evstore.validation import INT64_MAX, INT64_MIN


def point_rows(logged: list[RecordedEvent]) -> list[tuple[Any, ...]] | FlatRows:
    """One row per point of every MetricsLogged, in order (grouped by key for a single one)."""
    if len(logged) == 1:
        # One logged batch (an append, not a rebuild's chunk): inserting each metric's
        # points together touches a few index pages instead of one per point, half again
        # as fast for 1,000 points. The sort is stable; (position, seq) still orders.
        rec = logged[0]
        rows = [
            (rec.stream_id, p.key, p.value, p.step, p.timestamp, rec.position, seq)
            for seq, p in enumerate(rec.event.points)  # type: ignore[union-attr]
        ]
        rows.sort(key=_run_and_key)
        return rows
    # Many batches (a rebuild's chunk, half a million points for a million events): the
    # values end to end, with no tuple per point, cost less than half as much to build.
    values: list[Any] = []
    extend = values.extend
    for rec in logged:
        run_id, position = rec.stream_id, rec.position
        for seq, p in enumerate(rec.event.points):  # type: ignore[union-attr]
            extend((run_id, p.key, p.value, p.step, p.timestamp, position, seq))
    return FlatRows(values, 7)


_run_and_key = itemgetter(0, 1)

#: How many events the two metric models may trail the head by (``ReadModel.max_lag``).
#: A per-call ``log_metric`` then writes only the log and the checkpoints: its commit
#: touched four B-trees of these tables, about 25 us of 110 per call. One append in 256
#: applies the trail in a batch; a read first catches up at most 255 events.
METRIC_LAG = 256


def point_count(rec: RecordedEvent) -> int:
    """The rows of one MetricsLogged (``ReadModel.trail``); an integer beyond 64 bits
    (step, timestamp, or a value given as an int), which the log holds but SQLite does
    not, is refused in a batch that may trail (a bigger one is applied at once, and
    SQLite refuses it)."""
    points = rec.event.points  # type: ignore[union-attr]
    if len(points) > TRAIL_ROWS:
        return len(points)
    for p in points:
        if not (INT64_MIN <= p.step <= INT64_MAX and INT64_MIN <= p.timestamp <= INT64_MAX):
            raise ValueError(
                f"metric {p.key!r}: step {p.step} and timestamp {p.timestamp} must fit in 64 bits"
            )
        if type(p.value) is int and not INT64_MIN <= p.value <= INT64_MAX:
            raise ValueError(f"metric {p.key!r}: value {p.value} must fit in 64 bits")
    return len(points)


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
    max_lag=METRIC_LAG,
    trail={MetricsLogged: point_count},
)
