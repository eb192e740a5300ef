"""Metric series for the UI's charts: read once, kept in memory, downsampled per request.

A chart is a few hundred pixels wide; a history can hold millions of points. The server
sends about one point per pixel: the x range is cut into equal buckets and each bucket
keeps its first, minimum, maximum and last point (M4), so every spike and every dip the
full series has is still drawn. A series of ``points`` or fewer is sent whole, and a
zoomed chart asks again for its visible range only, at full resolution once it is small.

Points are cached per (run, metric key, x axis) in compact arrays, with the stamp of the
read model's series they were read at (its chunk count and tail slot): a series that
gained no point is answered from the cache after one index seek.
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from operator import itemgetter
from typing import Any

from evstore.points import NAN, STEPS, TIMESTAMPS, series_arrays
from evstore.server.ui.summarized import (
    CHUNKS_A_BUCKET,
    SUMMARIZED_FROM,
    Summarized,
    read_summarized,
)

#: How many points the cache holds in all (16 bytes each).
CACHE_POINTS = 8_000_000
#: The most points one series answer carries.
MAX_POINTS = 20_000
X_MODES = ("step", "time", "relative")
#: Downsampled answers kept per series (zoomed ranges of one chart, a few widths).
_ANSWERS_KEPT = 16
#: The column each x axis reads ('relative' is 'time' shifted by the run's start).
X_COLUMNS = {"step": "step", "time": "timestamp"}

#: What changes whenever a series gains a point: its chunk count and its tail's last slot.
_STAMPS = (
    "SELECT run_id, series_id, chunks, (SELECT max(slot) FROM metric_tail t"
    " WHERE t.series_id = s.series_id) FROM metric_series s WHERE key = ? AND run_id IN ({marks})"
)
_CHUNKS = (
    "SELECT series_id, points FROM metric_chunks WHERE series_id IN ({marks})"
    " ORDER BY series_id, chunk"
)
_TAILS = (
    "SELECT series_id, step, timestamp, value FROM metric_tail WHERE series_id IN ({marks})"
    " ORDER BY series_id, slot"
)
#: Runs (or series) to one query.
_PER_QUERY = 500


@dataclass
class Series:
    """One metric's points against one x (step or time), in the order logged; ``stamp``
    says which state of the read model they are (None: read from the log)."""

    column: str
    xs: range | array = field(default_factory=lambda: array("q"))
    ys: array = field(default_factory=lambda: array("d"))
    stamp: Any = None
    rising: bool = False  # x known never to decrease: no need to look
    _sorted: tuple[range | array, array] | None = None
    _answers: dict[tuple[Any, ...], tuple[list[float], list[float | None]]] = field(
        default_factory=dict
    )

    def __len__(self) -> int:
        return len(self.ys)

    @classmethod
    def of(cls, column: str, steps: list[int], stamps: list[int], values: list[float],
           stamp: Any = None) -> Series:  # fmt: skip
        """A series of these points (NaN kept), against step or time."""
        xs = array("q", steps if column == "step" else stamps)
        return cls(column, xs, array("d", values), stamp)

    def ordered(self) -> tuple[range | array, array]:
        """(x, y) sorted by x (the points as logged when x already grows with them)."""
        if self._sorted is None:
            xs, ys = self.xs, self.ys
            if not self.rising and not _non_decreasing(xs):
                order = sorted(range(len(xs)), key=xs.__getitem__)
                xs = array("q", (xs[i] for i in order))
                ys = array("d", (ys[i] for i in order))
            self._sorted = (xs, ys)
        return self._sorted

    @property
    def weight(self) -> int:
        """How many points it holds (for the series cache's limit)."""
        return len(self.ys)

    def downsampled(
        self, points: int, low: float | None, high: float | None, conn: Any = None
    ) -> tuple[list[float], list[float | None]]:
        """:func:`downsample` of the sorted points, kept for the next chart that asks."""
        key = (points, low, high)
        found = self._answers.get(key)
        if found is None:
            xs, ys = self.ordered()
            found = downsample(xs, ys, points, low, high)
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = found
        return found


def _non_decreasing(xs: range | array) -> bool:
    """Whether ``xs`` is sorted (the usual case: steps and times grow as points are logged)."""
    return all(a <= b for a, b in pairwise(xs))


def series_as_of(store: Any, run_id: str, key: str, mode: str, position: int) -> Series:
    """The points logged up to a log position, from the log itself (not cached: an earlier
    view is asked rarely); each distinct point once, as the read model keeps them."""
    seen: set[tuple[int, int, float | None]] = set()
    steps: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    for recorded in store.read_stream(run_id):
        if recorded.position > position:
            break
        for point in getattr(recorded.event, "points", None) or ():
            if point.key != key:
                continue
            value = float(point.value)
            identity = (point.step, point.timestamp, None if math.isnan(value) else value)
            if identity in seen:
                continue
            seen.add(identity)
            steps.append(point.step)
            stamps.append(point.timestamp)
            values.append(value)
    return Series.of(X_COLUMNS[mode], steps, stamps, values)


def read_series(conn: Any, series_ids: list[int], column: str) -> dict[int, Series]:
    """Series of the read model against one x column, read straight into arrays: three
    queries for them all, however many."""
    found: dict[int, Series] = {}
    for start in range(0, len(series_ids), _PER_QUERY):
        part = series_ids[start : start + _PER_QUERY]
        marks = ", ".join("?" * len(part))
        tails: dict[int, list[Any]] = {series_id: [] for series_id in part}
        for row in conn.execute(_TAILS.format(marks=marks), part):
            tails[row[0]].append(row)
        chunks = conn.execute(_CHUNKS.format(marks=marks), part)
        for series_id, rows in groupby(chunks, key=itemgetter(0)):
            found[series_id] = _series(column, (blob for _, blob in rows), tails[series_id])
        for series_id in part:
            if series_id not in found:  # no chunk yet: its tail only
                found[series_id] = _series(column, (), tails[series_id])
    return found


def _series(column: str, chunks: Iterable[bytes], tail: list[Any]) -> Series:
    at = 1 if column == "step" else 2
    xs, ys, rising = series_arrays(
        chunks,
        STEPS if column == "step" else TIMESTAMPS,
        [row[at] for row in tail],
        [NAN if row[3] is None else row[3] for row in tail],
    )
    return Series(column, xs, ys, rising=rising)


def _summarized(conn: Any, series_id: int, column: str) -> Summarized | None:
    tail = conn.execute(_TAILS.format(marks="?"), (series_id,)).fetchall()
    at = 1 if column == "step" else 2
    points = [(row[at], NAN if row[3] is None else row[3]) for row in tail]
    return read_summarized(conn, series_id, STEPS if column == "step" else TIMESTAMPS, points)


class SeriesCache:
    """Series by (run id, key, x), least recently used dropped past ``limit`` points in all."""

    def __init__(self, limit: int = CACHE_POINTS) -> None:
        self.limit = limit
        self._held: OrderedDict[tuple[str, str, str], Series | Summarized] = OrderedDict()
        self._total = 0  # points held
        self._lock = threading.Lock()

    def get(self, conn: Any, run_id: str, key: str, mode: str = "step") -> Series | Summarized:
        """The series as the read model holds it now (read again only when it changed)."""
        return self.get_many(conn, [run_id], key, mode)[run_id]

    def get_many(
        self, conn: Any, run_ids: list[str], key: str, mode: str = "step", points: int = 0
    ) -> dict[str, Series | Summarized]:
        """One metric of each run as the read model holds it now; those that changed (or
        were not held) read together. A series of many chunks to each of the ``points // 4``
        buckets of a chart is read as its chunks' summaries (few chunks a bucket: whole)."""
        stamps: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(run_ids), _PER_QUERY):
            part = run_ids[start : start + _PER_QUERY]
            sql = _STAMPS.format(marks=", ".join("?" * len(part)))
            stamps.update((row[0], row[1:]) for row in conn.execute(sql, (key, *part)))
        column = X_COLUMNS[mode]
        out: dict[str, Series | Summarized] = {}
        stale: dict[int, str] = {}
        with self._lock:
            for run_id in run_ids:
                stamp = stamps.get(run_id)
                held = self._held.get((run_id, key, mode))
                if stamp is None:
                    out[run_id] = Series(column)
                elif held is not None and held.stamp == stamp:
                    self._held.move_to_end((run_id, key, mode))
                    out[run_id] = held
                else:
                    stale[stamp[0]] = run_id
        for series_id, run_id in list(stale.items()):
            if stamps[run_id][1] >= max(SUMMARIZED_FROM, CHUNKS_A_BUCKET * points // 4):
                summarized = _summarized(conn, series_id, column)
                if summarized is not None:
                    summarized.stamp = stamps[run_id]
                    self._keep((run_id, key, mode), summarized)
                    out[run_id] = summarized
                    del stale[series_id]
        for series_id, read in read_series(conn, list(stale), column).items():
            run_id = stale[series_id]
            read.stamp = stamps[run_id]
            self._keep((run_id, key, mode), read)
            out[run_id] = read
        return out

    def _keep(self, name: tuple[str, str, str], series: Series | Summarized) -> None:
        with self._lock:
            replaced = self._held.pop(name, None)
            self._total += series.weight - (0 if replaced is None else replaced.weight)
            self._held[name] = series
            while self._total > self.limit and len(self._held) > 1:
                _, dropped = self._held.popitem(last=False)
                self._total -= dropped.weight


def downsample(
    xs: range | array, ys: array, points: int, low: float | None = None, high: float | None = None
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


def _bucket(xs: range | array, ys: array, lo: int, hi: int, out_x: list[float],
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
