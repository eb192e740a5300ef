"""Append throughput of the event log, against plain sqlite3 doing the same inserts.

    python benchmarks/bench_append.py [--n 2000] [--batches 50] [--repeats 5]

Each event is a realistic ``MetricsLogged`` with one point. Two ways of writing:

- per-call: one event per ``append`` (one transaction, one commit each);
- batched: 1,000 events per ``append`` (one transaction each).

The peer is plain ``sqlite3`` on a table of an integer primary key and a payload blob
holding the same encoded bytes: no envelope, no hash, no checks. It runs the same
journal mode (WAL) and synchronous setting: one INSERT + commit per row for per-call,
``executemany`` of 1,000 rows per transaction for batched. Every measurement uses a
fresh temp file and is warmed up first; each figure is the median of the repeats, with
the writers alternating so background load hits them alike.

A third writer, ``layout``, shows what the stored envelope itself allows: evstore's
writes (``BEGIN IMMEDIATE``, the INSERT into its events table with its indexes and
triggers, COMMIT) over rows encoded, id'd and hashed before the clock starts, so no
Python work of evstore's is timed, nor the one read an append makes (the stream's
version and the head's hash). Its ratio to plain sqlite3 is therefore a generous ceiling
for evstore on this layout; the ``ceiling`` column prints it beside each target.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from evstore import codec
from evstore.codec import encode, now_ms
from evstore.events import Event, MetricPoint, MetricsLogged
from evstore.stores.base import default_metadata
from evstore.stores.sqlite import _INSERT, _INSERT_COMMIT, DURABILITY, FORM, SQLiteEventStore

BATCH = 1_000
WARMUP_CALLS = 200
RUN_ID = "5f0c2a9e1b7d4c3e8a6f0b1d2c3e4f5a"
#: Minimum ratio evstore / plain sqlite3, from issue 2.
TARGETS = {"per-call": 0.50, "batched": 0.30}

Writer = Callable[[Sequence[Event]], None]


def metric_events(count: int, start: int = 0) -> list[Event]:
    """``count`` one-point MetricsLogged events, as a training loop logs them."""
    base = now_ms()
    return [
        MetricsLogged(points=[MetricPoint("train/loss", 1.0 / (step + 1), step, base + step)])
        for step in range(start, start + count)
    ]


def chunks(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    """``events`` cut into consecutive slices of ``size``."""
    return [events[i : i + size] for i in range(0, len(events), size)]


# --- the two writers -----------------------------------------------------------------------


def evstore_writer(path: str, durability: str) -> tuple[Writer, Callable[[], None]]:
    """Append through SQLiteEventStore; each call is one ``append``."""
    store = SQLiteEventStore(path, durability=durability)

    def write(events: Sequence[Event]) -> None:
        store.append(RUN_ID, events)

    return write, store.close


def plain_writer(path: str, durability: str) -> tuple[Writer, Callable[[], None]]:
    """Insert the encoded payloads with plain sqlite3; each call is one transaction."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {DURABILITY[durability]}")
    connection.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    connection.commit()
    insert = "INSERT INTO events (payload) VALUES (?)"

    def write(events: Sequence[Event]) -> None:
        if len(events) == 1:
            connection.execute(insert, (encode(events[0]),))
        else:
            connection.executemany(insert, [(encode(event),) for event in events])
        connection.commit()

    return write, connection.close


def stored_rows(events: Sequence[Event], per_call: int) -> list[tuple[object, ...]]:
    """The rows evstore stores for ``events`` appended ``per_call`` at a time, hashed
    (storage format 4: ids made of positions are not stored; one stream, type and
    metadata row, made once; an event alone in its commit stores no commit id)."""
    meta, previous, at = codec.encode_metadata(default_metadata()), codec.GENESIS_HASH, now_ms()
    rows = []
    for position, event in enumerate(events, start=1):
        commit = min(((position - 1) // per_call + 1) * per_call, len(events))
        event_id, payload = f"{position:032x}", encode(event)
        canonical = codec.canonical_bytes(
            RUN_ID, position, event_id, type(event).__name__, event.version, at,
            codec.payload_digest(payload), meta, commit,
        )  # fmt: skip
        previous = codec.chain_hash(previous, canonical)
        stored_commit = None if per_call == 1 else commit
        rows.append((position, 1, position, None, 1, event.version, stored_commit, payload, previous))
    return rows


def layout_writer(
    rows: list[tuple[object, ...]],
) -> Callable[[str, str], tuple[Writer, Callable[[], None]]]:
    """Run evstore's SQL over ``rows`` made beforehand: the envelope's own cost, no Python."""

    def make(path: str, durability: str) -> tuple[Writer, Callable[[], None]]:
        store = SQLiteEventStore(path, durability=durability)
        conn, done = store.connection, 0
        meta = codec.encode_metadata(default_metadata())
        conn.execute("INSERT INTO streams VALUES (1, ?, 'run')", (RUN_ID,))
        conn.execute("INSERT INTO event_types VALUES (1, 'MetricsLogged')")
        conn.execute("INSERT INTO event_metadata VALUES (1, ?)", (meta,))
        at = now_ms()

        def write(events: Sequence[Event]) -> None:
            nonlocal done
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_INSERT_COMMIT, (done + len(events), at, 1, FORM))
            if len(events) == 1:
                conn.execute(_INSERT, rows[done])
            else:
                conn.executemany(_INSERT, rows[done : done + len(events)])
            conn.execute("COMMIT")
            done += len(events)

        return write, store.close

    return make


# --- measuring -------------------------------------------------------------------------------


def measure(
    make: Callable[[str, str], tuple[Writer, Callable[[], None]]],
    durability: str,
    calls: list[Sequence[Event]],
    warmup: list[Sequence[Event]],
) -> float:
    """Events per second for one run of ``calls`` against a fresh file."""
    with tempfile.TemporaryDirectory(prefix="bench-append-") as directory:
        write, close = make(os.path.join(directory, "bench.db"), durability)
        try:
            for events in warmup:
                write(events)
            started = time.perf_counter()
            for events in calls:
                write(events)
            elapsed = time.perf_counter() - started
        finally:
            close()
    return sum(len(events) for events in calls) / elapsed


def compare(
    durability: str,
    calls: list[Sequence[Event]],
    warmup: list[Sequence[Event]],
    repeats: int,
) -> tuple[float, float, float]:
    """Median events/s of evstore, of plain sqlite3 and of evstore's SQL alone (alternating)."""
    rows = stored_rows([event for events in [*warmup, *calls] for event in events], len(calls[0]))
    ours: list[float] = []
    plain: list[float] = []
    layout: list[float] = []
    writers = [(ours, evstore_writer), (plain, plain_writer), (layout, layout_writer(rows))]
    for repeat in range(repeats):
        # Rotate who goes first, so no writer always runs on a warmer or busier machine.
        turn = writers[repeat % 3 :] + writers[: repeat % 3]
        for results, make in turn:
            results.append(measure(make, durability, calls, warmup))
    return statistics.median(ours), statistics.median(plain), statistics.median(layout)


def main(argv: Sequence[str] | None = None) -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000, help="one-event appends per run")
    parser.add_argument("--batches", type=int, default=50, help="1,000-event appends per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (the median)")
    args = parser.parse_args(argv)

    single = [[event] for event in metric_events(args.n)]
    single_warmup = [[event] for event in metric_events(WARMUP_CALLS, start=args.n)]
    batched = chunks(metric_events(args.batches * BATCH), BATCH)
    batched_warmup = chunks(metric_events(2 * BATCH, start=args.batches * BATCH), BATCH)
    plans = [
        ("per-call", "normal", single, single_warmup),
        ("per-call", "full", single, single_warmup),
        ("batched", "normal", batched, batched_warmup),
        ("batched", "full", batched, batched_warmup),
    ]

    print(
        f"evstore append benchmark: Python {platform.python_version()}, SQLite"
        f" {sqlite3.sqlite_version}, {os.cpu_count()} cores, {sys.platform}"
    )
    print(
        f"per-call: {args.n:,} appends of 1 event; batched: {args.batches} appends of"
        f" {BATCH:,} events; median of {args.repeats}; events/s\n"
    )
    header = (
        f"{'mode':<9} {'durability':<10} {'evstore':>9} {'sqlite3':>9} {'ratio':>6}"
        f"  {'target':<7} result {'layout':>9} {'ceiling':>7}"
    )
    print(header)
    print("-" * len(header))
    for mode, durability, calls, warmup in plans:
        ours, plain, layout = compare(durability, calls, warmup, args.repeats)
        ratio = ours / plain
        target = TARGETS[mode]
        verdict = "PASS" if ratio >= target else "MISS"
        print(
            f"{mode:<9} {durability:<10} {ours:>9,.0f} {plain:>9,.0f} {ratio:>6.0%}"
            f"  >= {target:.0%}  {verdict}   {layout:>9,.0f} {layout / plain:>7.0%}"
        )
    print("\nsqlite3 = plain sqlite3 inserting the same encoded payloads (see the docstring).")
    print(
        "layout = evstore's own SQL over rows prepared before the clock (no Python work);"
        " ceiling = layout / sqlite3,\nthe best ratio any code could reach on this stored layout."
    )


if __name__ == "__main__":
    main()
