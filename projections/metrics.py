"""The metric history: every distinct point of every run's metrics, packed per series.

A series is one metric key of one run, with an integer id (``metric_series``). Its points
are numbered in the order they were logged; point ``n`` lives in chunk ``n // CHUNK``
once that chunk is full (``metric_chunks``: CHUNK points packed by :mod:`evstore.points`,
with their least and greatest timestamp and step, which of those columns rise, and their
lowest and highest finite value and where each first is: enough for the UI to downsample a
long series reading few chunks), and in the tail until then
(``metric_tail``: one narrow row per point). The append that fills the tail packs it, in
its transaction. Where a point lives thus depends on the log alone, not on how its events
were split into appends: a rebuild writes the same rows as the appends did.

Identical points of a series (same step, timestamp and value, NaN equal to NaN) are kept
once, the first, as MLflow keeps them; the log keeps what was sent. The check is cheap in
the usual case: a point logged after every timestamp the series holds (the series and
tail bounds say so) is new; otherwise the tail and the chunks whose timestamps and steps span it
are read (a repeat has the same timestamp). Values are kept as a REAL column of SQLite
keeps them: -0.0 as 0.0, every NaN as one NaN (NULL in the tail); +-inf as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain, count, islice, repeat
from math import isnan
from operator import lt
from typing import Any

from evstore.events import MetricPoint, MetricsLogged
from evstore.points import NAN, pack, summary, unpack
from evstore.projection import ReadModel, Write
from evstore.stores.base import RecordedEvent

#: Points per chunk. A chunk row of 64 points (about 560 bytes when the values do not
#: repeat) fills a 2 KiB page three to a page; the tail it leaves holds at most 63 rows.
CHUNK = 64

_SERIES = (
    "SELECT run_id, key, series_id, chunks, min_timestamp, max_timestamp,"
    " (SELECT max(slot) FROM {metric_tail} t WHERE t.series_id = s.series_id),"
    " (SELECT max(timestamp) FROM {metric_tail} t WHERE t.series_id = s.series_id)"
    " FROM {metric_series} s WHERE "
)
_SQL = {
    # One run (an append): its keys. Several (a rebuild's chunk of the log): every series
    # of those runs, in one query.
    "series_of_keys": _SERIES + "run_id = ? AND key IN ({marks})",
    "series_of_runs": _SERIES + "run_id IN ({marks})",
    "last_id": "SELECT coalesce(max(series_id), 0) FROM {metric_series}",
    "add_series": "INSERT INTO {metric_series} VALUES (?, ?, ?, ?, ?, ?)",
    "move_series": (
        "UPDATE {metric_series} SET chunks = ?, min_timestamp = ?, max_timestamp = ?"
        " WHERE series_id = ?"
    ),
    "tail": "SELECT step, timestamp, value FROM {metric_tail} WHERE series_id = ? ORDER BY slot",
    "clear_tail": "DELETE FROM {metric_tail} WHERE series_id = ?",
    "add_chunk": "INSERT INTO {metric_chunks} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "add_tail": "INSERT INTO {metric_tail} VALUES (?, ?, ?, ?, ?)",
    "add_tails": "INSERT INTO {metric_tail} VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * 50),
    # A repeat needs the same timestamp and step: only chunks whose spans hold both can
    # hold it (a batch logged at one time, its steps rising, reads none of the earlier ones).
    "chunks_around": (
        "SELECT points FROM {metric_chunks} WHERE series_id = ? AND max_timestamp >= ?"
        " AND min_timestamp <= ? AND max_step >= ? AND min_step <= ?"
    ),
}
#: Tail rows to an INSERT statement (``add_tails``): fewer statements cost less.
_TAILS_PER_INSERT = 50


def history_writer(tables: dict[str, str]) -> Write:
    """The writer of the metric history over the named tables (``ReadModel.writers``)."""
    sql = {name: text.format_map({**tables, "marks": "{marks}"}) for name, text in _SQL.items()}
    shapes: dict[tuple[str, int], str] = {}

    def lookup(
        conn: sqlite3.Connection, name: str, lead: tuple[str, ...], names: list[str]
    ) -> list[Any]:
        """Rows of a series query over ``names``, in IN lists of a few sizes (all cached)."""
        rows: list[Any] = []
        for start in range(0, len(names), 256):
            part = names[start : start + 256]
            size = 1 << (len(part) - 1).bit_length()
            text = shapes.get((name, size))
            if text is None:
                text = shapes[name, size] = sql[name].format(marks=", ".join("?" * size))
            rows += conn.execute(text, (*lead, *part, *[part[-1]] * (size - len(part)))).fetchall()
        return rows

    def one_point(conn: sqlite3.Connection, run_id: str, point: MetricPoint) -> bool:
        """A per-call point of a known series, after all it holds and short of filling
        its tail: one row; False (nothing done) for anything else."""
        found = lookup(conn, "series_of_keys", (run_id,), [point.key])
        if not found:
            return False
        _, _, series_id, _, _, packed_last, tail_slot, tail_last = found[0]
        slot = 0 if tail_slot is None else tail_slot + 1
        held = [stamp for stamp in (packed_last, tail_last) if stamp is not None]
        if slot + 1 >= CHUNK or (held and point.timestamp <= max(held)):
            return False
        conn.execute(sql["add_tail"], (series_id, slot, point.step, point.timestamp, point.value))
        return True

    def write(conn: sqlite3.Connection, logged: list[RecordedEvent]) -> None:
        if len(logged) == 1:
            rec = logged[0]
            points = rec.event.points  # type: ignore[union-attr]
            if len(points) == 1 and one_point(conn, rec.stream_id, points[0]):
                return
        # Points per run and key; series in the order the log first names them.
        runs: dict[str, dict[str, list[MetricPoint]]] = {}
        order: list[tuple[str, str]] = []
        for rec in logged:
            keys = runs.get(rec.stream_id)
            if keys is None:
                keys = runs[rec.stream_id] = {}
            for point in rec.event.points:  # type: ignore[union-attr]
                found = keys.get(point.key)
                if found is None:
                    keys[point.key] = [point]
                    order.append((rec.stream_id, point.key))
                else:
                    found.append(point)
        if len(runs) == 1:
            ((run_id, keys),) = runs.items()
            series_rows = lookup(conn, "series_of_keys", (run_id,), list(keys))
        else:
            series_rows = lookup(conn, "series_of_runs", (), list(runs))
        stored = {(row[0], row[1]): row[2:] for row in series_rows}
        next_id = None
        added: list[Any] = []
        moved: list[Any] = []
        cleared: list[Any] = []
        chunks: list[Any] = []
        tails: list[Any] = []
        for run_id, key in order:
            points = runs[run_id][key]
            found = stored.get((run_id, key))
            if found is None:
                if next_id is None:
                    next_id = conn.execute(sql["last_id"]).fetchone()[0] + 1
                series = _Series(next_id, 0, None, None, None)
                next_id += 1
            else:
                series_id, packed, low, high, tail_slot, tail_last = found
                bounds = [low, high] if packed else None
                series = _Series(series_id, packed, bounds, tail_slot, tail_last)
            series.add(conn, sql, points, chunks, tails)
            if found is None:
                added.append((series.id, run_id, key, series.chunks, *series.bounds_or_none()))
            elif series.chunks != found[1]:
                moved.append((series.chunks, *series.bounds_or_none(), series.id))
            if series.emptied:
                cleared.append((series.id,))
        if added:
            conn.executemany(sql["add_series"], added)
        if moved:
            conn.executemany(sql["move_series"], moved)
        if cleared:  # before the tails are refilled
            conn.executemany(sql["clear_tail"], cleared)
        if chunks:
            conn.executemany(sql["add_chunk"], chunks)
        if len(tails) == 5:  # one row
            conn.execute(sql["add_tail"], tails)
        elif tails:  # laid end to end, five values a row
            width = 5 * _TAILS_PER_INSERT
            done = len(tails) - len(tails) % width
            if done:
                conn.executemany(
                    sql["add_tails"], [tails[i : i + width] for i in range(0, done, width)]
                )
            rest = range(done, len(tails), 5)
            conn.executemany(sql["add_tail"], [tails[i : i + 5] for i in rest])

    return write


class _Series:
    """One series while a batch of its points is placed: kept once, then packed or tailed."""

    __slots__ = ("bounds", "chunks", "emptied", "id", "tail_count", "tail_last")

    def __init__(
        self, series_id: int, chunks: int, bounds: list[int] | None, tail_slot: int | None,
        tail_last: int | None,
    ) -> None:  # fmt: skip
        self.id, self.chunks, self.bounds = series_id, chunks, bounds
        self.tail_count = 0 if tail_slot is None else tail_slot + 1  # slots count from 0
        self.tail_last = tail_last
        self.emptied = False

    def bounds_or_none(self) -> Sequence[int | None]:
        """(least, greatest timestamp) of the packed points."""
        return self.bounds or (None, None)

    def add(
        self, conn: sqlite3.Connection, sql: dict[str, str], points: list[MetricPoint],
        chunks: list[Any], tails: list[Any],
    ) -> None:  # fmt: skip
        """Place new points: rows for ``chunks``, values of rows for ``tails`` (laid end to
        end); the series' state moves."""
        steps = [p.step for p in points]
        stamps = [p.timestamp for p in points]
        values = [p.value for p in points]
        held: list[tuple[int, int, float]] | None = None
        if not self._surely_new(stamps):
            held = self._tail(conn, sql)
            steps, stamps, values = self._distinct(conn, sql, held, steps, stamps, values)
        total = self.tail_count + len(values)
        if total < CHUNK:
            tails += chain.from_iterable(
                zip(repeat(self.id), count(self.tail_count), steps, stamps, values)
            )
            self.tail_count = total
            return
        if self.tail_count:
            held = self._tail(conn, sql) if held is None else held
            steps = [s for s, _, _ in held] + steps
            stamps = [t for _, t, _ in held] + stamps
            values = [v for _, _, v in held] + values
            self.emptied = True
        full = total - total % CHUNK
        for start in range(0, full, CHUNK):
            end = start + CHUNK
            chunk_stamps = stamps[start:end]
            low, high = min(chunk_stamps), max(chunk_stamps)
            chunk_steps, chunk_values = steps[start:end], values[start:end]
            blob = pack(chunk_steps, chunk_stamps, chunk_values)
            at_a_glance = summary(chunk_steps, chunk_stamps, chunk_values)
            chunks.append((self.id, self.chunks, low, high, *at_a_glance, blob))
            self.chunks += 1
            if self.bounds is None:
                self.bounds = [low, high]
            else:
                self.bounds = [min(self.bounds[0], low), max(self.bounds[1], high)]
        tails += chain.from_iterable(
            zip(repeat(self.id), count(), steps[full:], stamps[full:], values[full:])
        )
        self.tail_count = total - full

    def _surely_new(self, stamps: list[int]) -> bool:
        """Whether no point can repeat one held or another: timestamps rise past all held."""
        last = self.tail_last
        if self.bounds is not None and (last is None or self.bounds[1] > last):
            last = self.bounds[1]
        if last is not None and stamps[0] <= last:
            return False
        return len(stamps) == 1 or all(map(lt, stamps, islice(stamps, 1, None)))

    def _tail(self, conn: sqlite3.Connection, sql: dict[str, str]) -> list[tuple[int, int, float]]:
        if not self.tail_count:
            return []
        rows = conn.execute(sql["tail"], (self.id,)).fetchall()
        return [(s, t, NAN if v is None else v) for s, t, v in rows]

    def _distinct(
        self, conn: sqlite3.Connection, sql: dict[str, str], held: list[tuple[int, int, float]],
        steps: list[int], stamps: list[int], values: list[float],
    ) -> tuple[list[int], list[int], list[float]]:  # fmt: skip
        """The points not held yet (nor earlier in this batch), first ones kept."""
        seen = {(s, t, None if isnan(v) else v) for s, t, v in held}
        low, high = min(stamps), max(stamps)
        if self.bounds is not None and low <= self.bounds[1] and high >= self.bounds[0]:
            spans = (self.id, low, high, min(steps), max(steps))
            for (blob,) in conn.execute(sql["chunks_around"], spans):
                chunk_steps, chunk_stamps, chunk_values = unpack(blob)
                seen.update(
                    zip(chunk_steps, chunk_stamps, [None if isnan(v) else v for v in chunk_values])
                )
        batch_steps = set(steps)
        if len(batch_steps) == len(steps) and not any(s in batch_steps for s, _, _ in seen):
            return steps, stamps, values  # a repeat needs a step twice: every point is new
        kept_steps, kept_stamps, kept_values = [], [], []
        for s, t, v in zip(steps, stamps, values):
            point = (s, t, None if isnan(v) else v)
            if point in seen:
                continue
            seen.add(point)
            kept_steps.append(s)
            kept_stamps.append(t)
            kept_values.append(v)
        return kept_steps, kept_stamps, kept_values


METRICS = ReadModel(
    name="metrics",
    version=3,
    tables={
        "metric_series": (
            (
                "CREATE TABLE {metric_series} (series_id INTEGER PRIMARY KEY,"
                " run_id TEXT NOT NULL, key TEXT NOT NULL, chunks INTEGER NOT NULL,"
                " min_timestamp INTEGER, max_timestamp INTEGER, UNIQUE (run_id, key))"
            ),
        ),
        "metric_chunks": (
            (
                "CREATE TABLE {metric_chunks} (series_id INTEGER NOT NULL,"
                " chunk INTEGER NOT NULL, min_timestamp INTEGER NOT NULL,"
                " max_timestamp INTEGER NOT NULL, min_step INTEGER NOT NULL,"
                " max_step INTEGER NOT NULL, rises INTEGER NOT NULL, low REAL, low_at INTEGER,"
                " high REAL, high_at INTEGER, points BLOB NOT NULL,"
                " PRIMARY KEY (series_id, chunk))"
            ),
        ),
        "metric_tail": (
            (
                "CREATE TABLE {metric_tail} (series_id INTEGER NOT NULL, slot INTEGER NOT NULL,"
                " step INTEGER NOT NULL, timestamp INTEGER NOT NULL, value REAL,"
                " PRIMARY KEY (series_id, slot)) WITHOUT ROWID"
            ),
        ),
    },
    statements={},
    writers={"history": history_writer},
    collect={MetricsLogged: "history"},
    # version 1: one row per point, with its history index; version 2: chunks without
    # their summary (steps' span, which columns rise, lowest and highest value)
    retired=("metrics",),
)
