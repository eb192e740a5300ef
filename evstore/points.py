"""Metric points packed into chunks: the one format of the metric history's blobs.

A chunk holds one series' points (a run's metric key), in the order they were logged,
as three columns. Steps and timestamps are stored as their first value and the
differences between neighbours: one difference when they are all the same (a step that
counts up, a timestamp every N ms); else each difference in one signed byte when they all
fit; else each difference less the smallest one, in the fewest bytes that hold the
largest (1, 2, 4 or 8). A column whose differences do not fit in 64 bits is stored as it
is. Values are IEEE 754 doubles, so NaN and +-inf come back exactly (-0.0 is kept as 0.0
and every NaN as one NaN: what a REAL column of SQLite holds, so a point reads the same
packed or not). Everything is little-endian::

    format (1 byte, 1) | count (uint16) | steps | timestamps | values (count x float64)
    column: code (1 byte) then
        0           first (int64), difference (int64)
        1           first (int64), count - 1 differences (int8)
        2, 3, 4, 5  first (int64), smallest difference (int64), count - 1 differences
                    less it (uint8, uint16, uint32, uint64)
        9           count x int64

Packing refuses an integer beyond 64 bits with ``OverflowError``, as SQLite would. It
runs once per chunk, in C where it can: the cheapest encodings are tried first.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable
from itertools import accumulate, islice, repeat
from math import isfinite, isnan
from operator import add, le, sub

FORMAT = 1
#: The columns :func:`series_arrays` reads besides the values.
STEPS, TIMESTAMPS = 0, 1
NAN = float("nan")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_EVEN, _BYTES, _RAW = 0, 1, 9
#: Code -> array type of the differences less the smallest one.
_OFFSET = {2: "B", 3: "H", 4: "I", 5: "Q"}
_HEAD = struct.Struct("<BH")
_FIRST = struct.Struct("<Bq")
_FIRST_AND_DIFFERENCE = struct.Struct("<Bqq")
#: The head of a chunk whose two columns are both one first value and one difference.
_BOTH_EVEN = struct.Struct("<BHBqqBqq")
_BIG_ENDIAN = sys.byteorder == "big"
assert [array(code).itemsize for code in _OFFSET.values()] == [1, 2, 4, 8]


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
    count, first = len(numbers), numbers[0]
    if not INT64_MIN <= first <= INT64_MAX:
        raise OverflowError(f"{first} does not fit in 64 bits")
    difference = numbers[1] - first if count > 1 else 0
    last = first + difference * (count - 1)
    if (
        INT64_MIN <= difference <= INT64_MAX
        and INT64_MIN <= last <= INT64_MAX
        and (
            numbers.count(first) == count
            if difference == 0
            else numbers == list(range(first, last + difference, difference))
        )
    ):
        return _FIRST_AND_DIFFERENCE.pack(_EVEN, first, difference)
    array("q", numbers)  # OverflowError for a number beyond 64 bits
    differences = list(map(sub, islice(numbers, 1, None), numbers))
    try:
        return _FIRST.pack(_BYTES, first) + _little(array("b", differences))
    except OverflowError:
        pass  # a difference beyond a signed byte
    low, high = min(differences), max(differences)
    if low < INT64_MIN or high > INT64_MAX:
        return bytes((_RAW,)) + _little(array("q", numbers))
    span = high - low
    code = 2 if span < 1 << 8 else 3 if span < 1 << 16 else 4 if span < 1 << 32 else 5
    offsets = array(_OFFSET[code], map(sub, differences, repeat(low)))
    return _FIRST_AND_DIFFERENCE.pack(code, first, low) + _little(offsets)


def _little(numbers: array[int]) -> bytes:
    if _BIG_ENDIAN:
        numbers.byteswap()
    return numbers.tobytes()


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
        end = offset + 1 + 8 * count
        return _native("q", chunk[offset + 1 : end]).tolist(), end
    if code == _BYTES:
        (_, first), start = _FIRST.unpack_from(chunk, offset), offset + _FIRST.size
        end = start + count - 1
        return list(accumulate(_native("b", chunk[start:end]), initial=first)), end
    _, first, low = _FIRST_AND_DIFFERENCE.unpack_from(chunk, offset)
    offset += _FIRST_AND_DIFFERENCE.size
    if code == _EVEN:
        if low == 0:
            return [first] * count, offset
        return list(range(first, first + low * count, low)), offset
    typecode = _OFFSET[code]
    end = offset + array(typecode).itemsize * (count - 1)
    offsets = _native(typecode, chunk[offset:end])
    return list(accumulate(map(add, offsets, repeat(low)), initial=first)), end


def _native(typecode: str, data: bytes) -> array[int]:
    numbers = array(typecode)
    numbers.frombytes(data)
    if _BIG_ENDIAN:
        numbers.byteswap()
    return numbers


def series_arrays(
    chunks: Iterable[bytes], column: int, tail_xs: list[int], tail_values: list[float]
) -> tuple[range | array[int], array[float], bool]:
    """One column (:data:`STEPS` or :data:`TIMESTAMPS`) and the values of a series' chunks,
    then its tail, as compact sequences; and whether that column never decreases.

    The column is a ``range`` when it counts evenly across every chunk (a step that counts
    up, a timestamp every N ms): nothing is unpacked point by point then. The other column
    is skipped, not read.
    """
    pieces: list[range | array[int]] = []
    values: list[bytes] = []
    rising = True
    last: int | None = None
    for chunk in chunks:
        piece: range | array[int]
        if chunk[3] == _EVEN and chunk[20] == _EVEN:  # both columns count evenly (most chunks)
            form, count, *columns = _BOTH_EVEN.unpack_from(chunk)
            first, difference = columns[1:3] if column == STEPS else columns[4:6]
            if difference:
                piece = range(first, first + difference * count, difference)
            else:
                piece = array("q", (first,)) * count
            piece_rising, offset = difference >= 0, _BOTH_EVEN.size
        else:
            form, count = _HEAD.unpack_from(chunk)
            offset = _HEAD.size
            if column == TIMESTAMPS:
                offset = _column_end(chunk, offset, count)
            piece, piece_rising = _column_piece(chunk, offset, count)
            offset = _column_end(chunk, offset, count)
            if column == STEPS:
                offset = _column_end(chunk, offset, count)
        if form != FORMAT:
            raise ValueError(f"metric chunk format {form} is not known to this evstore")
        values.append(chunk[offset : offset + 8 * count])
        if rising:
            rising = piece_rising and (last is None or piece[0] >= last)
        last = piece[-1]
        _add_piece(pieces, piece)
    if tail_xs:
        if rising:
            rising = (last is None or tail_xs[0] >= last) and all(map(le, tail_xs, tail_xs[1:]))
        before = pieces[-1] if pieces else None
        if isinstance(before, range) and tail_xs == list(
            range(before.stop, before.stop + before.step * len(tail_xs), before.step)
        ):  # the tail counts on too
            pieces[-1] = range(before.start, before.stop + before.step * len(tail_xs), before.step)
        else:
            pieces.append(array("q", tail_xs))
    floats = array("d")
    floats.frombytes(b"".join(values))
    if _BIG_ENDIAN:
        floats.byteswap()
    floats.extend(tail_values)
    if len(pieces) == 1 and isinstance(pieces[0], range):
        return pieces[0], floats, rising
    xs = array("q")
    for piece in pieces:
        xs.extend(piece)
    return xs, floats, rising


def _add_piece(pieces: list[range | array[int]], piece: range | array[int]) -> None:
    """Append a piece of a column, as one range with the last when it carries it on."""
    if pieces and isinstance(piece, range):
        before = pieces[-1]
        if isinstance(before, range) and before.step == piece.step and before.stop == piece.start:
            pieces[-1] = range(before.start, piece.stop, piece.step)
            return
    pieces.append(piece)


def _column_piece(chunk: bytes, offset: int, count: int) -> tuple[range | array[int], bool]:
    """A column of a chunk as a range (even differences) or an array; whether it rises."""
    code = chunk[offset]
    if code == _RAW:
        numbers = _native("q", chunk[offset + 1 : offset + 1 + 8 * count])
        return numbers, all(map(le, numbers, numbers[1:]))
    if code == _BYTES:
        (_, first), start = _FIRST.unpack_from(chunk, offset), offset + _FIRST.size
        differences = _native("b", chunk[start : start + count - 1])
        rising = count == 1 or min(differences) >= 0
        return array("q", accumulate(differences, initial=first)), rising
    _, first, low = _FIRST_AND_DIFFERENCE.unpack_from(chunk, offset)
    if code == _EVEN:
        if low == 0:
            return array("q", (first,)) * count, True
        return range(first, first + low * count, low), low > 0
    offset += _FIRST_AND_DIFFERENCE.size
    typecode = _OFFSET[code]
    offsets = _native(typecode, chunk[offset : offset + array(typecode).itemsize * (count - 1)])
    return array("q", accumulate(map(add, offsets, repeat(low)), initial=first)), low >= 0


def _column_end(chunk: bytes, offset: int, count: int) -> int:
    """Where the column that starts at ``offset`` ends."""
    code = chunk[offset]
    if code == _RAW:
        return offset + 1 + 8 * count
    if code == _BYTES:
        return offset + _FIRST.size + count - 1
    if code == _EVEN:
        return offset + _FIRST_AND_DIFFERENCE.size
    return offset + _FIRST_AND_DIFFERENCE.size + array(_OFFSET[code]).itemsize * (count - 1)


#: Bits of a chunk summary's ``rises``: which columns never decrease within the chunk.
STEPS_RISE, TIMESTAMPS_RISE = 1, 2


def summary(
    steps: list[int], timestamps: list[int], values: list[float]
) -> tuple[int, int, int, float | None, int | None, float | None, int | None]:
    """What a chunk's points are at a glance, for reading a long series without unpacking
    it: (least step, greatest step, :data:`STEPS_RISE` | :data:`TIMESTAMPS_RISE` where
    that column never decreases, lowest finite value, where it first is, highest finite
    value, where it first is); the values None when none is finite."""
    rises = (STEPS_RISE if steps == sorted(steps) else 0) | (
        TIMESTAMPS_RISE if timestamps == sorted(timestamps) else 0
    )
    finite = values if isfinite(sum(values)) else [v for v in values if isfinite(v)]
    if not finite:
        return min(steps), max(steps), rises, None, None, None, None
    low, high = min(finite), max(finite)
    return min(steps), max(steps), rises, low, values.index(low), high, values.index(high)
