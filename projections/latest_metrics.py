"""The latest value of each metric of each run, by MLflow's rule.

MLflow keeps the point with the greatest (step, timestamp, value), comparing NaN as 0
(it stores NaN as 0 plus a flag); on a tie the point logged first stays. NaN is stored
as NULL here, hence the ``coalesce`` in the comparison.
"""

from __future__ import annotations

from itertools import groupby
from math import isnan
from operator import attrgetter
from typing import Any

from evstore.events import MetricPoint, MetricsLogged
from evstore.projection import ReadModel
from evstore.stores.base import RecordedEvent


def keep_greatest(logged: list[RecordedEvent]) -> list[tuple[Any, ...]]:
    """The first greatest point per (run, key): what offering them one by one would leave."""
    if len(logged) == 1:
        rec = logged[0]
        points = rec.event.points  # type: ignore[attr-defined]
        if len(points) > 1:
            return _greatest_of_one(rec.stream_id, points)
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


def _greatest_of_one(run_id: str, points: list[MetricPoint]) -> list[tuple[Any, ...]]:
    """keep_greatest of one event's points, a key at a time: ``max`` keeps the first
    greatest, as offering them one by one does (points with a NaN value: one by one)."""
    if any(map(isnan, map(_VALUE, points))):
        return keep_greatest_one_by_one(run_id, points)
    keys = dict.fromkeys(map(_KEY, points))  # in the order first named
    if len(keys) == 1:
        groups = {points[0].key: points}
    else:  # a stable sort keeps each key's points in log order
        groups = {k: list(g) for k, g in groupby(sorted(points, key=_KEY), _KEY)}
    rows = []
    for key in keys:
        p = max(groups[key], key=_ORDER)
        rows.append((run_id, key, p.value, p.step, p.timestamp))
    return rows


def keep_greatest_one_by_one(run_id: str, points: list[MetricPoint]) -> list[tuple[Any, ...]]:
    """The first greatest point per key of one run's points, compared one by one."""
    best: dict[str, MetricPoint] = {}
    for p in points:
        held = best.get(p.key)
        if (
            held is None
            or p.step > held.step
            or (p.step == held.step and (p.timestamp > held.timestamp
                or (p.timestamp == held.timestamp
                    and _zero_nan(p.value) > _zero_nan(held.value))))
        ):  # fmt: skip
            best[p.key] = p
    return [(run_id, key, p.value, p.step, p.timestamp) for key, p in best.items()]


_KEY = attrgetter("key")
_VALUE = attrgetter("value")
_ORDER = attrgetter("step", "timestamp", "value")


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
