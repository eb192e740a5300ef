"""A long series downsampled from its chunks' summaries, unpacking only the chunks it must.

Each chunk of the metric history carries a summary (:func:`evstore.points.summary`): its
span of steps and timestamps, whether they rise, and its lowest and highest finite value
and where each first is. When a series rises along the chart's x, the M4 downsample of
:func:`evstore.server.ui.series.downsample` needs, per bucket, its first and last point and
the first of its lowest and highest finite values: a chunk wholly inside a bucket answers
those from its summary, and only the chunks that straddle a bucket's edge or hold its
extreme are unpacked (for a million points to 2,000, about one chunk in ten). The answer
is the one the whole series would give, point for point.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import pairwise
from math import isfinite
from typing import Any

from evstore.points import STEPS, STEPS_RISE, TIMESTAMPS_RISE, unpack

#: Points per chunk of the metric history (``projections.metrics.CHUNK``).
CHUNK = 64
#: Unpacked chunks a summarized series keeps for the next answer.
_UNPACKED_KEPT = 2048
#: Downsampled answers kept (zoomed ranges of one chart, a few widths).
_ANSWERS_KEPT = 16
#: Series of at least this many chunks are read as summaries...
SUMMARIZED_FROM = 32
#: ... when they have at least this many chunks to a bucket of the chart that asks: with
#: fewer, most chunks straddle a bucket's edge and reading the series whole costs no more.
CHUNKS_A_BUCKET = 8

_SUMMARIES = (
    "SELECT min_step, max_step, rises, low, low_at, high, high_at, min_timestamp, max_timestamp"
    " FROM metric_chunks WHERE series_id = ? ORDER BY chunk"
)
_POINTS = "SELECT points FROM metric_chunks WHERE series_id = ? AND chunk = ?"

Summary = tuple[int, int, int, "float | None", "int | None", "float | None", "int | None"]


class Summarized:
    """A series of ``len(firsts)`` full chunks and a tail, rising along x, read as
    summaries; ``fetch(chunk)`` gives a chunk's packed bytes when it must be unpacked."""

    def __init__(
        self, column: int, firsts: list[int], lasts: list[int], summaries: Sequence[Summary],
        tail_xs: list[int], tail_ys: list[float], fetch: Callable[[int], bytes],
    ) -> None:  # fmt: skip
        self.column = column
        self.stamp: Any = None
        self.chunks = len(firsts)
        self.lasts = lasts + tail_xs[-1:]  # the last x of each chunk, the tail as the last
        self.lows = [s[3] for s in summaries]
        self.low_ats = [s[4] for s in summaries]
        self.highs = [s[5] for s in summaries]
        self.high_ats = [s[6] for s in summaries]
        self.tail = (tail_xs, tail_ys)
        self.total = self.chunks * CHUNK + len(tail_xs)
        self._fetch = fetch
        self._unpacked: dict[int, tuple[list[int], list[float]]] = {}
        self._answers: dict[tuple[Any, ...], tuple[list[float], list[float | None]]] = {}
        self._lock = threading.Lock()
        self.series_id: int | None = None

    def __len__(self) -> int:
        return self.total

    @property
    def weight(self) -> int:
        """About how many points' memory it holds (for the series cache's limit)."""
        return 8 * self.chunks + len(self.tail[0]) + CHUNK * len(self._unpacked)

    def downsampled(
        self, points: int, low: float | None, high: float | None, conn: Any = None
    ) -> tuple[list[float], list[float | None]]:
        """:meth:`downsample`, reading the chunks it unpacks on ``conn`` (the caller's)."""
        key = (points, low, high)
        with self._lock:
            found = self._answers.get(key)
            if found is None:
                if conn is not None:
                    self._fetch = _fetcher(conn, self.series_id)
                found = self.downsample(points, low, high)
                if len(self._answers) >= _ANSWERS_KEPT:
                    self._answers.clear()
                self._answers[key] = found
        return found

    def _chunk(self, index: int) -> tuple[list[int], list[float]]:
        """The xs and values of a chunk (the tail after the last one)."""
        if index == self.chunks:
            return self.tail
        found = self._unpacked.get(index)
        if found is None:
            steps, stamps, values = unpack(self._fetch(index))
            found = (steps if self.column == STEPS else stamps, values)
            if len(self._unpacked) >= _UNPACKED_KEPT:
                self._unpacked.clear()
            self._unpacked[index] = found
        return found

    def _point(self, i: int) -> tuple[int, float]:
        xs, ys = self._chunk(i // CHUNK)
        return xs[i % CHUNK], ys[i % CHUNK]

    def _bisect(self, x: float, right: bool = False) -> int:
        """The index of the first point whose x is at least ``x`` (past ``x``: right)."""
        index = (bisect_right if right else bisect_left)(self.lasts, x)
        if index == len(self.lasts):
            return self.total
        xs, _ = self._chunk(index)
        return index * CHUNK + (bisect_right if right else bisect_left)(xs, x)

    def downsample(
        self, points: int, low: float | None = None, high: float | None = None
    ) -> tuple[list[float], list[float | None]]:
        """What :func:`~evstore.server.ui.series.downsample` gives for the whole series."""
        start = 0 if low is None else self._bisect(low)
        stop = self.total if high is None else self._bisect(high, right=True)
        out_x: list[float] = []
        out_y: list[float | None] = []
        if stop - start <= points:
            for i in range(start, stop):
                x, y = self._point(i)
                out_x.append(x)
                out_y.append(y if isfinite(y) else None)
            return out_x, out_y
        buckets = max(1, points // 4)
        first, last = self._point(start)[0], self._point(stop - 1)[0]
        width = (last - first) / buckets or 1
        lo = start
        for b in range(1, buckets + 1):
            hi = stop if b == buckets else min(stop, max(lo, self._bisect(first + width * b)))
            if hi > lo:
                self._bucket(lo, hi, out_x, out_y)
            lo = hi
        return out_x, out_y

    def _bucket(self, lo: int, hi: int, out_x: list[float], out_y: list[float | None]) -> None:
        """Append the first, lowest, highest and last point of points lo to hi, in order."""
        low: Any = None
        high: Any = None
        low_at = high_at = lo
        for index in range(lo // CHUNK, (hi - 1) // CHUNK + 1):
            begin, end = max(lo, index * CHUNK), min(hi, (index + 1) * CHUNK)
            if end - begin == CHUNK and index < self.chunks:  # whole: its summary
                value = self.lows[index]
                if value is not None and (low is None or value < low):
                    low, low_at = value, begin + self.low_ats[index]  # type: ignore[operator]
                value = self.highs[index]
                if value is not None and (high is None or value > high):
                    high, high_at = value, begin + self.high_ats[index]  # type: ignore[operator]
                continue
            _, ys = self._chunk(index)
            part = ys[begin - index * CHUNK : end - index * CHUNK]
            finite = part if isfinite(sum(part)) else [v for v in part if isfinite(v)]
            if finite:
                value = min(finite)
                if low is None or value < low:
                    low, low_at = value, begin + part.index(value)
                value = max(finite)
                if high is None or value > high:
                    high, high_at = value, begin + part.index(value)
        for i in sorted({lo, low_at, high_at, hi - 1}):
            x, y = self._point(i)
            out_x.append(x)
            out_y.append(y if isfinite(y) else None)


def rises(column: int, firsts: list[int], lasts: list[int], summaries: Sequence[Summary],
          tail_xs: list[int]) -> bool:  # fmt: skip
    """Whether a series never goes back along x (each chunk rises, and each starts at or
    after the last one ends; the tail too)."""
    bit = STEPS_RISE if column == STEPS else TIMESTAMPS_RISE
    if not all(s[2] & bit for s in summaries):
        return False
    if any(first < last for first, last in zip(firsts[1:], lasts, strict=False)):
        return False
    if tail_xs:
        if lasts and tail_xs[0] < lasts[-1]:
            return False
        return all(a <= b for a, b in pairwise(tail_xs))
    return True


def _fetcher(conn: Any, series_id: int | None) -> Callable[[int], bytes]:
    def fetch(chunk: int) -> bytes:
        return bytes(conn.execute(_POINTS, (series_id, chunk)).fetchone()[0])

    return fetch


def read_summarized(
    conn: Any, series_id: int, column: int, tail: list[tuple[int, float]]
) -> Summarized | None:
    """A series of the read model as its summaries (None when it does not rise along x:
    it is read whole then); ``tail`` is its tail's (x, value) points."""
    summaries = conn.execute(_SUMMARIES, (series_id,)).fetchall()
    if column == STEPS:
        firsts, lasts = [s[0] for s in summaries], [s[1] for s in summaries]
    else:
        firsts, lasts = [s[7] for s in summaries], [s[8] for s in summaries]
    tail_xs = [x for x, _ in tail]
    if not rises(column, firsts, lasts, summaries, tail_xs):
        return None
    found = Summarized(column, firsts, lasts, summaries, tail_xs, [v for _, v in tail],
                       _fetcher(conn, series_id))  # fmt: skip
    found.series_id = series_id
    return found
