"""The latest value of each metric of each run, by MLflow's rule.

MLflow keeps the point with the greatest (step, timestamp, value), comparing NaN as 0
(it stores NaN as 0 plus a flag); on a tie the point logged first stays. NaN is stored
as NULL here, hence the ``coalesce`` in the comparison.
"""

from __future__ import annotations

from math import isnan
from typing import Any

from evstore.events import MetricPoint, MetricsLogged
from evstore.projection import ReadModel
from evstore.stores.base import RecordedEvent


def keep_greatest(logged: list[RecordedEvent]) -> list[tuple[Any, ...]]:
    """The first greatest point per (run, key): what offering them one by one would leave."""
    by_run: dict[str, dict[str, MetricPoint]] = {}
    for rec in logged:
        best = by_run.get(rec.stream_id)
        if best is None:
            best = by_run[rec.stream_id] = {}
        for p in rec.event.points:  # type: ignore[union-attr]
            held = best.get(p.key)
            if (
                held is None
                or p.step > held.step
                or (p.step == held.step and (p.timestamp > held.timestamp
                    or (p.timestamp == held.timestamp
                        and _zero_nan(p.value) > _zero_nan(held.value))))
            ):  # fmt: skip
                best[p.key] = p
    return [
        (run_id, key, p.value, p.step, p.timestamp)
        for run_id, best in by_run.items()
        for key, p in best.items()
    ]


def _zero_nan(value: float) -> float:
    return 0.0 if isnan(value) else value


LATEST_METRICS = ReadModel(
    name="latest_metrics",
    version=1,
    tables={
        "latest_metrics": (
            (
                "CREATE TABLE {latest_metrics} (run_id TEXT NOT NULL, key TEXT NOT NULL,"
                " value REAL, step INTEGER NOT NULL, timestamp INTEGER NOT NULL,"
                " PRIMARY KEY (run_id, key)) WITHOUT ROWID"
            ),
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
    prepare={"offer": keep_greatest},
    collect={MetricsLogged: "offer"},
)
