"""The latest value of each metric of each run, by MLflow's rule.

MLflow keeps the point with the greatest (step, timestamp, value), comparing NaN as 0
(it stores NaN as 0 plus a flag); on a tie the point logged first stays. NaN is stored
as NULL here, hence the ``coalesce`` in the comparison.
"""

from __future__ import annotations

from typing import Any

from evstore.events import MetricPoint, MetricsLogged
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def keep_greatest(rows: list[tuple[str, str, float, int, int]]) -> list[tuple[Any, ...]]:
    """The first greatest row per (run, key): what offering them one by one would leave."""
    best: dict[tuple[str, str], tuple[Any, ...]] = {}
    get = best.get
    for row in rows:
        key = (row[0], row[1])
        held = get(key)
        if held is None or row[3] > held[3]:
            best[key] = row
        elif row[3] == held[3] and (
            row[4] > held[4]
            or (row[4] == held[4] and _nan_as_zero(row[2]) > _nan_as_zero(held[2]))
        ):
            best[key] = row
    return list(best.values())


def _nan_as_zero(value: float) -> float:
    return value if value == value else 0.0


def logged(rec: RecordedEvent, out: Ops) -> None:
    """Offer every point; the statement keeps the greatest."""
    run_id = rec.stream_id
    points: list[MetricPoint] = rec.event.points  # type: ignore[union-attr]
    out.extend("offer", [(run_id, p.key, p.value, p.step, p.timestamp) for p in points])


LATEST_METRICS = ReadModel(
    name="latest_metrics",
    version=1,
    tables={
        "latest_metrics": (
            "CREATE TABLE {latest_metrics} (run_id TEXT NOT NULL, key TEXT NOT NULL,"
            " value REAL, step INTEGER NOT NULL, timestamp INTEGER NOT NULL,"
            " PRIMARY KEY (run_id, key)) WITHOUT ROWID",
            "CREATE INDEX {latest_metrics}_by_value ON {latest_metrics} (key, value)",
        ),
    },
    statements={
        "offer": (
            "INSERT INTO {latest_metrics} VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value,"
            " step = excluded.step, timestamp = excluded.timestamp"
            " WHERE (excluded.step, excluded.timestamp, coalesce(excluded.value, 0.0))"
            " > (step, timestamp, coalesce(value, 0.0))"
        ),
    },
    handlers={MetricsLogged: logged},
    compactors={"offer": keep_greatest},
)
