"""Metric series for the UI's charts: read once, kept in memory, downsampled per request.

A chart is a few hundred pixels wide; a history can hold millions of points. The server
sends about one point per pixel: the x range is cut into equal buckets and each bucket
keeps its first, minimum, maximum and last point (M4), so every spike and every dip the
full series has is still drawn. A series of ``points`` or fewer is sent whole, and a
zoomed chart asks again for its visible range only, at full resolution once it is small.

Points are cached per (run, metric key) in compact arrays. The log is append-only and
every new point has a greater log position, so a cached series is brought up to date by
reading only the points past its last position (one index seek when nothing changed).
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

#: How many points the cache holds in all (about 32 bytes each).
CACHE_POINTS = 4_000_000
#: The most points one series answer carries.
MAX_POINTS = 20_000
X_MODES = ("step", "time", "relative")
#: Downsampled answers kept per series (zoomed ranges of one chart, a few widths).
_ANSWERS_KEPT = 16

_POINTS_AFTER = (
    "SELECT step, timestamp, value, position FROM metrics"
    " WHERE run_id = ? AND key = ? AND position > ? ORDER BY position, seq"
)
_STEP, _TIME, _VALUE, _POSITION = (itemgetter(i) for i in range(4))
_LAST_POSITION = "SELECT max(position) FROM metrics WHERE run_id = ? AND key = ?"


@dataclass
class Series:
    """One metric's points in log order, with orderings by step and by time made on demand."""

    steps: array = field(default_factory=lambda: array("q"))
    times: array = field(default_factory=lambda: array("q"))
    values: array = field(default_factory=lambda: array("d"))
    positions: array = field(default_factory=lambda: array("q"))
    _orders: dict[tuple[str, int], tuple[array, array]] = field(default_factory=dict)
    _answers: dict[tuple[Any, ...], tuple[list[float], list[float | None]]] = field(
        default_factory=dict
    )

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, rows: list[tuple[int, int, float | None, int]]) -> None:
        """Append points read from the metrics table (NaN is stored as NULL)."""
        if not rows:
            return
        self.steps.extend(array("q", map(_STEP, rows)))
        self.times.extend(array("q", map(_TIME, rows)))
        values = list(map(_VALUE, rows))
        if None in values:
            values = [math.nan if v is None else v for v in values]
        self.values.extend(array("d", values))
        self.positions.extend(array("q", map(_POSITION, rows)))
        self._orders.clear()
        self._answers.clear()

    def downsampled(
        self, mode: str, upto: int, points: int, low: float | None, high: float | None
    ) -> tuple[list[float], list[float | None]]:
        """:func:`downsample` of ``ordered(mode, upto)``, kept for the next chart that asks."""
        key = (mode, upto, points, low, high)
        found = self._answers.get(key)
        if found is None:
            xs, ys = self.ordered(mode, upto)
            found = downsample(xs, ys, points, low, high)
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = found
        return found

    def ordered(self, mode: str, upto: int) -> tuple[array, array]:
        """(x, y) sorted by x for ``mode`` ('step' or 'time'), of the first ``upto`` points."""
        key = (mode, upto)
        found = self._orders.get(key)
        if found is None:
            xs = (self.steps if mode == "step" else self.times)[:upto]
            ys = self.values[:upto]
            if not _non_decreasing(xs):
                order = sorted(range(len(xs)), key=xs.__getitem__)
                xs = array("q", (xs[i] for i in order))
                ys = array("d", (ys[i] for i in order))
            found = self._orders[key] = (xs, ys)
        return found


def _non_decreasing(xs: array) -> bool:
    """Whether ``xs`` is sorted (the usual case: steps and times grow as points are logged)."""
    from itertools import pairwise

    return all(a <= b for a, b in pairwise(xs))


class SeriesCache:
    """Series by (run id, key), least recently used dropped past ``limit`` points in all."""

    def __init__(self, limit: int = CACHE_POINTS) -> None:
        self.limit = limit
        self._held: OrderedDict[tuple[str, str], tuple[Series, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conn: Any, run_id: str, key: str) -> Series:
        """The series as the read models hold it now (read past the cached position only)."""
        last = conn.execute(_LAST_POSITION, (run_id, key)).fetchone()[0] or 0
        with self._lock:
            held = self._held.get((run_id, key))
            if held is not None:
                self._held.move_to_end((run_id, key))
        series, read_to = held if held is not None else (Series(), 0)
        if last > read_to:
            fresh = Series(array("q", series.steps), array("q", series.times),
                           array("d", series.values), array("q", series.positions))  # fmt: skip
            fresh.extend(conn.execute(_POINTS_AFTER, (run_id, key, read_to)).fetchall())
            series = fresh
            self._keep(run_id, key, series, last)
        return series

    def _keep(self, run_id: str, key: str, series: Series, last: int) -> None:
        with self._lock:
            self._held[(run_id, key)] = (series, last)
            self._held.move_to_end((run_id, key))
            total = sum(len(s) for s, _ in self._held.values())
            while total > self.limit and len(self._held) > 1:
                (_, (dropped, _)) = self._held.popitem(last=False)
                total -= len(dropped)


def downsample(
    xs: array, ys: array, points: int, low: float | None = None, high: float | None = None
) -> tuple[list[float], list[float | None]]:
    """The points of sorted ``xs`` within [low, high], at most about ``points`` of them.

    Each of ``points // 4`` equal x buckets keeps its first, lowest, highest and last
    point, in x order; NaN and infinities become None (a gap in the chart).
    """
    start = 0 if low is None else bisect_left(xs, low)
    stop = len(xs) if high is None else bisect_right(xs, high)
    if stop - start <= points:
        return list(xs[start:stop]), [_finite(v) for v in ys[start:stop]]
    buckets = max(1, points // 4)
    first, last = xs[start], xs[stop - 1]
    width = (last - first) / buckets or 1
    out_x: list[float] = []
    out_y: list[float | None] = []
    lo = start
    for b in range(1, buckets + 1):
        hi = stop if b == buckets else max(lo, bisect_left(xs, first + width * b, lo, stop))
        if hi > lo:
            _bucket(xs, ys, lo, hi, out_x, out_y)
        lo = hi
    return out_x, out_y


def _bucket(xs: array, ys: array, lo: int, hi: int, out_x: list[float],
            out_y: list[float | None]) -> None:  # fmt: skip
    """Append the first, lowest, highest and last point of xs[lo:hi], in x order, once each."""
    chunk = ys[lo:hi]
    finite = [v for v in chunk if math.isfinite(v)] if _has_gaps(chunk) else None
    if finite is None:
        low_at, high_at = chunk.index(min(chunk)), chunk.index(max(chunk))
    elif finite:
        low_at, high_at = chunk.index(min(finite)), chunk.index(max(finite))
    else:
        low_at = high_at = 0
    for i in sorted({0, low_at, high_at, hi - lo - 1}):
        out_x.append(xs[lo + i])
        out_y.append(_finite(chunk[i]))


def _has_gaps(chunk: array) -> bool:
    total = sum(chunk)  # NaN or an infinity anywhere makes the sum one of them
    return not math.isfinite(total)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
