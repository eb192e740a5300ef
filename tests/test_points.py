"""The chunk format of the metric history: what is packed is what is unpacked."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstore.points import STEPS, TIMESTAMPS, pack, series_arrays, unpack

INT64 = st.integers(-(2**63), 2**63 - 1)
EDGES = st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
)


def counting(start: int, step: int, count: int) -> list[int]:
    return [start + step * i for i in range(count)]


# Columns as logs have them (counting up, a timestamp every N ms, nearly so), and any.
COLUMNS = st.one_of(
    st.builds(counting, st.integers(-(10**6), 10**6), st.integers(-3, 3), st.integers(1, 200)),
    st.lists(INT64 | EDGES, min_size=1, max_size=200),
    st.lists(st.integers(0, 300), min_size=1, max_size=200),
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=200),
)


@st.composite
def chunks(draw: st.DrawFn) -> tuple[list[int], list[int], list[float]]:
    steps = draw(COLUMNS)
    count = len(steps)
    stamps = draw(
        st.lists(INT64 | EDGES, min_size=count, max_size=count)
        | st.builds(counting, st.integers(0, 2**50), st.integers(0, 1000), st.just(count))
    )
    values = draw(st.lists(FLOATS, min_size=count, max_size=count))
    return steps, stamps, values


@st.composite
def series(draw: st.DrawFn) -> tuple[list[bytes], list[int], list[int], list[float]]:
    """A series' chunks (any, or one counting column cut in pieces) and its tail."""
    if draw(st.booleans()):
        packed = [pack(*draw(chunks())) for _ in range(draw(st.integers(0, 4)))]
    else:  # chunks that carry on counting where the last one stopped
        start, step = draw(st.integers(-(10**6), 10**6)), draw(st.integers(-2, 3))
        sizes = draw(st.lists(st.integers(1, 70), max_size=5))
        packed, at = [], start
        for size in sizes:
            column = counting(at, step, size)
            packed.append(
                pack(column, column, draw(st.lists(FLOATS, min_size=size, max_size=size)))
            )
            at += step * size
    size = draw(st.integers(0, 63))
    tail_xs = draw(st.lists(st.integers(-(10**7), 10**7), min_size=size, max_size=size))
    tail_values = draw(st.lists(FLOATS, min_size=size, max_size=size))
    return packed, tail_xs, tail_values


@given(series(), st.sampled_from([STEPS, TIMESTAMPS]))
def test_a_series_reads_into_arrays_as_its_chunks_unpack(
    data: tuple[list[bytes], list[int], list[float]], column: int
) -> None:
    packed, tail_xs, tail_values = data
    xs, ys, rising = series_arrays(packed, column, tail_xs, tail_values)
    expected_xs: list[int] = []
    expected_values: list[float] = []
    for chunk in packed:
        unpacked = unpack(chunk)
        expected_xs += unpacked[column]
        expected_values += unpacked[2]
    expected_xs += tail_xs
    expected_values += tail_values
    assert list(xs) == expected_xs
    assert [bits(v) for v in ys] == [bits(v) for v in expected_values]
    assert rising == (expected_xs == sorted(expected_xs))


def test_a_column_that_counts_on_across_chunks_reads_as_a_range() -> None:
    packed = [pack(list(range(i, i + 64)), [7] * 64, [1.0] * 64) for i in range(0, 640, 64)]
    xs, ys, rising = series_arrays(packed, STEPS, [640, 641], [2.0, 3.0])
    assert xs == range(642) and rising and len(ys) == 642
    stamps, _, rising = series_arrays(packed, TIMESTAMPS, [], [])
    assert list(stamps) == [7] * 640 and rising


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


@given(chunks())
def test_a_chunk_unpacks_to_what_was_packed_with_values_canonical(
    chunk: tuple[list[int], list[int], list[float]],
) -> None:
    steps, stamps, values = chunk
    got_steps, got_stamps, got_values = unpack(pack(steps, stamps, values))
    assert (got_steps, got_stamps) == (steps, stamps)
    # Every value comes back bit for bit, but for -0.0 (as 0.0) and NaN (one NaN).
    canonical = [math.nan if math.isnan(v) else v + 0.0 for v in values]
    assert [bits(v) for v in got_values] == [bits(v) for v in canonical]


def test_columns_take_the_fewest_bytes_their_differences_need() -> None:
    count, t0 = 64, 1_700_000_000_000
    steps = list(range(count))
    head, even, values = 3, 17, 8 * count  # format and count; first and difference

    def size(stamps: list[int]) -> int:
        return len(pack(steps, stamps, [0.5] * count)) - head - even - values

    assert size(counting(t0, 1000, count)) == even  # a timestamp every second
    assert size([t0 + i * i for i in range(count)]) == 9 + count - 1  # differences < 128
    assert size([t0 + 1000 * i + i % 7 for i in range(count)]) == even + count - 1  # 1000..1006
    assert size([t0 + 300 * i * i for i in range(count)]) == even + 2 * (count - 1)  # < 65536
    assert size([t0 + 2**40 * (i % 2) for i in range(count)]) == even + 8 * (count - 1)
    assert size([(-1) ** i * (2**63 - 1) for i in range(count)]) == 1 + 8 * count  # raw


@pytest.mark.parametrize(
    ("steps", "stamps"),
    [
        ([2**63], [0]),
        ([0, 0], [0, -(2**63) - 1]),
        ([1, 2**64], [0, 0]),
        ([2**63 - 2, 2**63 - 1, 2**63], [0, 0, 0]),  # counting past the last int64
        ([0, 0, 0], [2**63 - 1, 2**63, 2**63 - 1]),  # differences of one byte
        ([0, 0, 0], [-(2**63), -(2**63) - 1000, -(2**63)]),  # of two bytes
    ],
)
def test_an_integer_beyond_64_bits_is_refused(steps: list[int], stamps: list[int]) -> None:
    with pytest.raises(OverflowError):
        pack(steps, stamps, [1.0] * len(steps))


def test_an_unknown_format_is_an_error() -> None:
    chunk = bytearray(pack([1], [2], [3.0]))
    chunk[0] = 2
    with pytest.raises(ValueError, match="metric chunk format 2"):
        unpack(bytes(chunk))
