"""Metric points packed into chunks: the one format of the metric history's blobs.

A chunk holds one series' points (a run's metric key), in the order they were logged,
as three columns. Steps and timestamps are stored as their first value and the
differences between neighbours: one difference when they are all the same (a step that
counts up, a timestamp every N ms), else each difference less the smallest one, in the
fewest bytes that hold the largest (1, 2, 4 or 8); a column whose differences do not fit
in 64 bits is stored as it is. Values are IEEE 754 doubles, so NaN and +-inf come back
exactly (-0.0 is kept as 0.0 and every NaN as one NaN: what a REAL column of SQLite
holds, so a point reads the same packed or not). Everything is little-endian::

    format (1 byte, 1) | count (uint16) | steps | timestamps | values (count x float64)
    column: code (1 byte) then
        0           first (int64), difference (int64)
        1, 2, 4, 8  first (int64), smallest difference (int64), count - 1 unsigned ints
        9           count x int64

Packing refuses an integer beyond 64 bits with ``OverflowError``, as SQLite would.
"""

from __future__ import annotations

import struct
import sys
from array import array
from itertools import accumulate, islice, repeat
from math import isnan
from operator import add, sub

FORMAT = 1
NAN = float("nan")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_CONSTANT, _RAW = 0, 9
_UNSIGNED = {1: "B", 2: "H", 4: "I", 8: "Q"}
_HEAD = struct.Struct("<BH")
_FIRST_AND_DIFFERENCE = struct.Struct("<Bqq")
_BIG_ENDIAN = sys.byteorder == "big"
assert all(array(code).itemsize == size for size, code in _UNSIGNED.items())


def pack(steps: list[int], timestamps: list[int], values: list[float]) -> bytes:
    """One chunk of points (1 to 65,535 of them, the three lists of equal length)."""
    count = len(values)
    if not 0 < count <= 0xFFFF or len(steps) != count or len(timestamps) != count:
        raise ValueError("a chunk holds 1 to 65,535 points, each with a step and a timestamp")
    # Canonical values: -0.0 as 0.0 and one NaN, as SQLite's REAL column holds them. Two
    # scans in C find the chunks that hold neither (nearly all) and need no rewriting.
    if 0.0 in values or isnan(sum(values)):
        values = [0.0 if value == 0.0 else NAN if isnan(value) else value for value in values]
    floats = array("d", values)
    if _BIG_ENDIAN:
        floats.byteswap()
    return b"".join(
        (_HEAD.pack(FORMAT, count), _column(steps), _column(timestamps), floats.tobytes())
    )


def _column(numbers: list[int]) -> bytes:
    first = numbers[0]
    if not INT64_MIN <= first <= INT64_MAX:
        raise OverflowError(f"{first} does not fit in 64 bits")
    if len(numbers) == 1:
        return _FIRST_AND_DIFFERENCE.pack(_CONSTANT, first, 0)
    differences = list(map(sub, islice(numbers, 1, None), numbers))
    low, high = min(differences), max(differences)
    if low < INT64_MIN or high > INT64_MAX:
        raw = array("q", numbers)  # OverflowError for a number beyond 64 bits
        if _BIG_ENDIAN:
            raw.byteswap()
        return bytes((_RAW,)) + raw.tobytes()
    if low == high:
        return _FIRST_AND_DIFFERENCE.pack(_CONSTANT, first, low)
    span = high - low
    size = 1 if span < 1 << 8 else 2 if span < 1 << 16 else 4 if span < 1 << 32 else 8
    packed = array(_UNSIGNED[size], map(sub, differences, repeat(low)))
    if _BIG_ENDIAN:
        packed.byteswap()
    return _FIRST_AND_DIFFERENCE.pack(size, first, low) + packed.tobytes()


def unpack(chunk: bytes) -> tuple[list[int], list[int], list[float]]:
    """The steps, timestamps and values of a chunk, in the order they were packed."""
    form, count = _HEAD.unpack_from(chunk)
    if form != FORMAT:
        raise ValueError(f"metric chunk format {form} is not known to this evstore")
    steps, offset = _read_column(chunk, _HEAD.size, count)
    timestamps, offset = _read_column(chunk, offset, count)
    floats = array("d")
    floats.frombytes(chunk[offset : offset + 8 * count])
    if _BIG_ENDIAN:
        floats.byteswap()
    return steps, timestamps, floats.tolist()


def _read_column(chunk: bytes, offset: int, count: int) -> tuple[list[int], int]:
    code = chunk[offset]
    if code == _RAW:
        raw = array("q")
        end = offset + 1 + 8 * count
        raw.frombytes(chunk[offset + 1 : end])
        if _BIG_ENDIAN:
            raw.byteswap()
        return raw.tolist(), end
    _, first, low = _FIRST_AND_DIFFERENCE.unpack_from(chunk, offset)
    offset += _FIRST_AND_DIFFERENCE.size
    if code == _CONSTANT:
        if low == 0:
            return [first] * count, offset
        return list(range(first, first + low * count, low)), offset
    packed = array(_UNSIGNED[code])
    end = offset + code * (count - 1)
    packed.frombytes(chunk[offset:end])
    if _BIG_ENDIAN:
        packed.byteswap()
    return list(accumulate(map(add, packed, repeat(low)), initial=first)), end
