"""The chunk format of the metric history: what is packed is what is unpacked."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstore.points import pack, unpack

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
