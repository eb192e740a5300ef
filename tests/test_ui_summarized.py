"""A long series downsampled from its chunks' summaries gives what the whole series gives."""

from __future__ import annotations

import math
from array import array
from pathlib import Path

from drawn import filler, floats, rising
from hypothesis import given, settings
from hypothesis import strategies as st

from evstore.entities import Metric
from evstore.points import STEPS, TIMESTAMPS, pack, summary, unpack
from evstore.server.ui.series import Series, SeriesCache, downsample
from evstore.server.ui.summarized import CHUNK, SUMMARIZED_FROM, Summarized, rises
from evstore.tracking.service import TrackingService


@st.composite
def rising_series(draw: st.DrawFn) -> tuple[list[int], list[int], list[float]]:
    """Points whose steps and timestamps never go back (repeats allowed), any values."""
    size = draw(st.integers(1, 7 * CHUNK))
    step_span = draw(st.sampled_from([0, 3, 60, 1000]))
    stamp_span = draw(st.sampled_from([0, 5, 10**6]))
    rng, special = draw(filler())
    steps = rising(rng, size, -step_span // 2, step_span // 2)
    return steps, rising(rng, size, 0, stamp_span), floats(rng, size, special)


def summarized(
    steps: list[int], stamps: list[int], values: list[float], column: int
) -> tuple[Summarized, list[int], list[float]]:
    """The series as the read model holds it (chunks with summaries, a tail), and the xs
    and values it reads back whole."""
    full = len(values) - len(values) % CHUNK
    blobs, summaries = [], []
    for start in range(0, full, CHUNK):
        part = (
            steps[start : start + CHUNK],
            stamps[start : start + CHUNK],
            values[start : start + CHUNK],
        )
        blobs.append(pack(*part))
        summaries.append(summary(*part))
    xs_of = steps if column == STEPS else stamps
    firsts = [xs_of[i] for i in range(0, full, CHUNK)]
    lasts = [xs_of[i + CHUNK - 1] for i in range(0, full, CHUNK)]
    tail_xs, tail_ys = xs_of[full:], values[full:]
    assert rises(column, firsts, lasts, summaries, tail_xs)
    series = Summarized(column, firsts, lasts, summaries, tail_xs, tail_ys, blobs.__getitem__)
    whole_xs, whole_ys = [], []
    for blob in blobs:
        unpacked = unpack(blob)
        whole_xs += unpacked[0 if column == STEPS else 1]
        whole_ys += unpacked[2]
    return series, whole_xs + tail_xs, whole_ys + tail_ys


@given(rising_series(), st.sampled_from([STEPS, TIMESTAMPS]), st.integers(4, 120), st.data())
@settings(max_examples=300, deadline=None)
def test_the_summaries_give_the_answer_of_the_whole_series(
    points: tuple[list[int], list[int], list[float]], column: int, width: int, data: st.DataObject
) -> None:
    series, xs, ys = summarized(*points, column)
    assert len(series) == len(xs)
    low = data.draw(st.none() | st.integers(min(xs) - 5, max(xs) + 5))
    high = data.draw(st.none() | st.integers(min(xs) - 5, max(xs) + 5))
    expected = downsample(array("q", xs), array("d", ys), width, low, high)
    assert series.downsample(width, low, high) == expected


def test_a_series_that_goes_back_is_not_summarized() -> None:
    steps = [*range(CHUNK), *range(CHUNK)]  # the second chunk starts again at 0
    stamps = list(range(2 * CHUNK))
    summaries = [
        summary(steps[i : i + CHUNK], stamps[i : i + CHUNK], [1.0] * CHUNK) for i in (0, CHUNK)
    ]
    assert not rises(STEPS, [0, 0], [CHUNK - 1, CHUNK - 1], summaries, [])
    assert rises(TIMESTAMPS, [0, CHUNK], [CHUNK - 1, 2 * CHUNK - 1], summaries, [2 * CHUNK])
    assert not rises(TIMESTAMPS, [0, CHUNK], [CHUNK - 1, 2 * CHUNK - 1], summaries, [5])


def test_a_long_series_of_the_store_is_read_as_summaries_and_answers_as_the_whole(
    tmp_path: Path,
) -> None:
    svc = TrackingService(str(tmp_path / "evstore.db"))
    try:
        run = svc.create_run(svc.create_experiment("ui")).info.run_id
        size = SUMMARIZED_FROM * CHUNK + 10
        values = [math.sin(i / 50) + (30.0 if i == 777 else 0.0) for i in range(size)]
        values[1500] = math.nan
        metrics = [Metric("loss", v, 1000 + 2 * i, i) for i, v in enumerate(values)]
        for start in range(0, size, 1000):
            svc.log_batch(run, metrics[start : start + 1000])
        cache = SeriesCache()
        with svc.reading() as conn:
            for mode, xs in (("step", range(size)), ("time", range(1000, 1000 + 2 * size, 2))):
                held = cache.get(conn, run, "loss", mode)
                assert isinstance(held, Summarized) and len(held) == size
                for width, low, high in ((400, None, None), (100, 900, 2100), (4000, 1200, 1300)):
                    answer = held.downsampled(width, low, high, conn)
                    assert answer == downsample(
                        array("q", xs), array("d", values), width, low, high
                    )
            # a chart with few chunks to each bucket reads the series whole: no cheaper
            wide = SeriesCache().get_many(conn, [run], "loss", "step", 4 * SUMMARIZED_FROM)
            assert isinstance(wide[run], Series) and list(wide[run].ys)[:3] == values[:3]
    finally:
        svc.store.close()
