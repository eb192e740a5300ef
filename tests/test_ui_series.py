"""The charts' downsampling: every point of a short series, every extreme of a long one."""

from __future__ import annotations

import math
import sqlite3
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from evstore.server.ui.series import Series, SeriesCache, downsample, series_as_of

values = st.floats(allow_nan=True, allow_infinity=True, width=64)


def sorted_series(draw: st.DrawFn, size: int) -> tuple[array, array]:
    steps = sorted(draw(st.lists(st.integers(-10**6, 10**6), min_size=size, max_size=size)))
    ys = draw(st.lists(values, min_size=size, max_size=size))
    return array("q", steps), array("d", ys)


@st.composite
def series(draw: st.DrawFn) -> tuple[array, array]:
    return sorted_series(draw, draw(st.integers(0, 400)))


@given(series(), st.integers(4, 200))
@settings(max_examples=200, deadline=None)
def test_a_downsampled_series_keeps_its_extremes_and_only_its_own_points(
    data: tuple[array, array], points: int
) -> None:
    xs, ys = data
    out_x, out_y = downsample(xs, ys, points)
    originals = {(x, None if not math.isfinite(y) else y) for x, y in zip(xs, ys, strict=True)}
    assert all(pair in originals for pair in zip(out_x, out_y, strict=True))  # nothing made up
    assert out_x == sorted(out_x)
    if len(xs) <= points:
        assert len(out_x) == len(xs)  # a short series is sent whole
        return
    assert len(out_x) <= points + 4
    finite = [y for y in ys if math.isfinite(y)]
    kept = [y for y in out_y if y is not None]
    if finite:
        assert min(kept) == min(finite) and max(kept) == max(finite)
    assert out_x[0] == xs[0] and out_x[-1] == xs[-1]


def test_a_chart_of_300_points_shows_all_300() -> None:
    xs = array("q", range(300))
    ys = array("d", (math.sin(i) for i in range(300)))
    out_x, out_y = downsample(xs, ys, 1000)
    assert out_x == list(xs) and out_y == list(ys)


def test_every_local_extreme_of_a_bucket_survives_a_spike_among_a_million_points() -> None:
    n = 1_000_000
    xs = array("q", range(n))
    ys = array("d", (math.sin(i / 5000) for i in range(n)))
    ys[123_457] = 50.0
    ys[876_543] = -50.0
    out_x, out_y = downsample(xs, ys, 2000)
    assert len(out_x) <= 2000
    assert (123_457, 50.0) in zip(out_x, out_y, strict=True)
    assert (876_543, -50.0) in zip(out_x, out_y, strict=True)
    # each of the 500 buckets keeps its own lowest and highest point
    width = (n - 1) / 500
    for b in range(500):
        lo, hi = math.ceil(b * width), math.ceil((b + 1) * width) if b < 499 else n
        chunk = ys[lo:hi]
        kept = [y for x, y in zip(out_x, out_y, strict=True) if lo <= x < hi]
        assert min(chunk) in kept and max(chunk) in kept


def test_a_zoomed_range_is_sent_at_full_resolution() -> None:
    xs = array("q", range(100_000))
    ys = array("d", (float(i % 17) for i in range(100_000)))
    out_x, _ = downsample(xs, ys, 1000, 5000, 5499)
    assert out_x == list(range(5000, 5500))


def metrics_table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE metrics (run_id, key, value, step, timestamp, position, seq)")
    return conn


def test_the_cache_reads_only_points_past_its_last_position() -> None:
    conn = metrics_table()
    conn.executemany("INSERT INTO metrics VALUES ('r', 'loss', ?, ?, ?, ?, 0)",
                     [(float(i), i, 1000 + i, i + 1) for i in range(10)])  # fmt: skip
    cache = SeriesCache()
    first = cache.get(conn, "r", "loss")
    assert list(first.ys) == [float(i) for i in range(10)] and first.read_to == 10
    assert cache.get(conn, "r", "loss") is first  # nothing new: the same arrays
    conn.execute("INSERT INTO metrics VALUES ('r', 'loss', NULL, 3, 2000, 11, 0)")
    second = cache.get(conn, "r", "loss")
    assert len(second) == 11 and math.isnan(second.ys[-1]) and len(first) == 10
    xs, _ = second.ordered()
    assert list(xs) == sorted([*range(10), 3])  # out-of-order steps are sorted for x
    times = cache.get(conn, "r", "loss", "time")
    assert list(times.xs) == [*range(1000, 1010), 2000]


def test_a_series_as_of_a_position_holds_only_the_points_logged_by_then() -> None:
    conn = metrics_table()
    conn.executemany("INSERT INTO metrics VALUES ('r', 'loss', ?, ?, ?, ?, 0)",
                     [(float(i), i, 1000 + i, 10 * i + 1) for i in range(10)])  # fmt: skip
    assert list(series_as_of(conn, "r", "loss", "step", 45).ys) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_cache_drops_the_least_recently_used_series_past_its_limit() -> None:
    conn = metrics_table()
    for n, key in enumerate("abc"):
        conn.executemany(f"INSERT INTO metrics VALUES ('r', '{key}', 1.0, ?, 0, ?, 0)",
                         [(i, n * 100 + i + 1) for i in range(50)])  # fmt: skip
    cache = SeriesCache(limit=120)
    held = [cache.get(conn, "r", key) for key in "abc"]
    assert cache.get(conn, "r", "c") is held[2]
    assert cache.get(conn, "r", "a") is not held[0]  # 'a' was dropped and is read again
    assert isinstance(held[0], Series)
