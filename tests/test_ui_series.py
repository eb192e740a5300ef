"""The charts' downsampling: every point of a short series, every extreme of a long one."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from drawn import filler, floats, rising
from hypothesis import given, settings
from hypothesis import strategies as st

from evstore.entities import Metric
from evstore.server.ui.series import Series, SeriesCache, downsample, series_as_of
from evstore.tracking.service import TrackingService


@st.composite
def series(draw: st.DrawFn) -> tuple[array, array]:
    size = draw(st.integers(0, 400))
    span = draw(st.sampled_from([0, 50, 10**6]))
    rng, special = draw(filler())
    return array("q", rising(rng, size, -span, span)), array("d", floats(rng, size, special))


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


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[TrackingService, str]]:
    """A real store with one run."""
    svc = TrackingService(str(tmp_path / "evstore.db"))
    run_id = svc.create_run(svc.create_experiment("ui")).info.run_id
    yield svc, run_id
    svc.store.close()


def log(svc: TrackingService, run_id: str, key: str, points: list[tuple[float, int, int]]) -> None:
    svc.log_batch(run_id, [Metric(key, value, stamp, step) for value, step, stamp in points])


def test_the_cache_reads_a_series_again_only_when_it_gained_a_point(
    service: tuple[TrackingService, str],
) -> None:
    svc, run = service
    log(svc, run, "loss", [(float(i), i, 1000 + i) for i in range(10)])
    cache = SeriesCache()
    with svc.reading() as conn:
        first = cache.get(conn, run, "loss")
        assert list(first.ys) == [float(i) for i in range(10)]
        assert cache.get(conn, run, "loss") is first  # nothing new: the same arrays
    log(svc, run, "loss", [(float(i), i, 1000 + i) for i in range(10)])  # identical: kept once
    with svc.reading() as conn:
        assert cache.get(conn, run, "loss") is first
    svc.log_metric(run, "loss", math.nan, 2000, 3)
    with svc.reading() as conn:
        second = cache.get(conn, run, "loss")
        assert len(second) == 11 and math.isnan(second.ys[-1]) and len(first) == 10
        xs, _ = second.ordered()
        assert list(xs) == sorted([*range(10), 3])  # out-of-order steps are sorted for x
        times = cache.get(conn, run, "loss", "time")
        assert list(times.xs) == [*range(1000, 1010), 2000]
        assert len(cache.get(conn, run, "never logged")) == 0


def test_a_series_as_of_a_position_holds_only_the_points_logged_by_then(
    service: tuple[TrackingService, str],
) -> None:
    svc, run = service
    for i in range(10):
        svc.log_metric(run, "loss", float(i), 1000 + i, i)
        svc.log_metric(run, "other", 5.0, 1000 + i, i)
    svc.log_metric(run, "loss", 0.0, 1000, 0)  # identical to the first: counted once
    positions = [r.position for r in svc.store.read_stream(run) if type(r.event).__name__ == "MetricsLogged"]
    as_of = positions[9]  # the fifth loss point
    assert list(series_as_of(svc.store, run, "loss", "step", as_of).ys) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len(series_as_of(svc.store, run, "loss", "step", positions[-1])) == 10


def test_the_cache_drops_the_least_recently_used_series_past_its_limit(
    service: tuple[TrackingService, str],
) -> None:
    svc, run = service
    for key in "abc":
        log(svc, run, key, [(1.0, i, 0) for i in range(50)])
    cache = SeriesCache(limit=120)
    with svc.reading() as conn:
        held = [cache.get(conn, run, key) for key in "abc"]
        assert cache.get(conn, run, "c") is held[2]
        assert cache.get(conn, run, "a") is not held[0]  # 'a' was dropped and is read again
    assert isinstance(held[0], Series)


def test_many_runs_are_read_together_as_each_reads_alone_and_only_the_changed_again(
    service: tuple[TrackingService, str],
) -> None:
    from evstore.reads import series_points

    svc, first = service
    experiment = svc.get_run(first).info.experiment_id
    runs = [first, *(svc.create_run(experiment).info.run_id for _ in range(3))]
    # packed chunks and a tail, out-of-order steps with a NaN, a tail only, no such key
    log(svc, runs[0], "loss", [(math.sin(i), i, 1000 + i) for i in range(200)])
    log(svc, runs[1], "loss", [(math.nan if i == 70 else 1.0, 100 - i, 5000 + i) for i in range(130)])
    log(svc, runs[2], "loss", [(2.0, i, 7) for i in range(10)])
    log(svc, runs[3], "other", [(3.0, 0, 0)])
    cache = SeriesCache()
    for mode, column in (("step", 0), ("time", 1)):
        with svc.reading() as conn:
            together = cache.get_many(conn, runs, "loss", mode)
            for run_id in runs:
                found = conn.execute(
                    "SELECT series_id FROM metric_series WHERE run_id = ? AND key = 'loss'", (run_id,)
                ).fetchone()
                points = series_points(conn, found[0]) if found else ([], [], [])
                assert list(together[run_id].xs) == points[column]
                assert [None if math.isnan(v) else v for v in together[run_id].ys] == [
                    None if math.isnan(v) else v for v in points[2]
                ]
    svc.log_metric(runs[2], "loss", 9.0, 9, 9)
    with svc.reading() as conn:
        again = cache.get_many(conn, runs, "loss", "time")
    assert again[runs[0]] is together[runs[0]] and again[runs[1]] is together[runs[1]]
    assert again[runs[2]] is not together[runs[2]] and list(again[runs[2]].ys)[-1] == 9.0
