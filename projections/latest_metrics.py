"""The latest value of each metric of each run, by MLflow's rule.

MLflow keeps the point with the greatest (step, timestamp, value), comparing NaN as 0
(it stores NaN as 0 plus a flag); on a tie the point logged first stays. NaN is stored
as NULL here, hence the ``coalesce`` in the comparison.
"""

from __future__ import annotations

from math import isnan
from typing import Any

from evstore.events import MetricPoint, MetricsLogged
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def logged(rec: RecordedEvent, out: Ops) -> None:
    """Offer the batch's points; ``keep_greatest`` and the statement keep the greatest."""
    out.add("offer", (rec.stream_id, rec.event.points))  # type: ignore[union-attr]


def keep_greatest(batches: list[tuple[str, list[MetricPoint]]]) -> list[tuple[Any, ...]]:
    """The first greatest point per (run, key): what offering them one by one would leave."""
    best: dict[tuple[str, str], MetricPoint] = {}
    get = best.get
    for run_id, points in batches:
        for p in points:
            key = (run_id, p.key)
            held = get(key)
            if (
                held is None
                or p.step > held.step
                or (p.step == held.step and p.timestamp > held.timestamp)
                or (p.step == held.step and p.timestamp == held.timestamp
                    and _zero_nan(p.value) > _zero_nan(held.value))
            ):  # fmt: skip
                best[key] = p
    return [(run_id, key, p.value, p.step, p.timestamp) for (run_id, key), p in best.items()]


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
    handlers={MetricsLogged: logged},
    prepare={"offer": keep_greatest},
)
