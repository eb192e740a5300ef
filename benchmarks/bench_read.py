"""Read rate of a store at the current event version vs the oldest (through the chain).

Writes N MetricsLogged events (a few points each, batched appends) twice: once at the
current version, once at version 1 exactly as the v1 code stored them. Then reads each
store fully with ``store.read_all()`` and with plain ``sqlite3`` + ``msgspec`` (SELECT
payload, decode each row into MetricsLogged, no envelope), and prints the rates and
ratios. Target: reading through the chain at >= 50% of the current-version rate.

    python benchmarks/bench_read.py                 # 1,000,000 events
    python benchmarks/bench_read.py --events 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import msgspec

from evstore.events import MetricPoint, MetricsLogged
from evstore.stores.sqlite import SQLiteEventStore


class MetricPointV1(msgspec.Struct, frozen=True, array_like=True):
    """A metric point as the v1 code stored it: [key, value, step, timestamp]."""

    key: str
    value: float
    step: int
    timestamp: int


class MetricsLoggedV1(msgspec.Struct, frozen=True, kw_only=True):
    """MetricsLogged v1, stored under the name "MetricsLogged" with version 1."""

    version: ClassVar[int] = 1

    points: list[MetricPointV1]


MetricsLoggedV1.__name__ = "MetricsLogged"  # the stored type name; never registered

KEYS = ("loss", "accuracy", "learning_rate", "val_loss", "grad_norm", "throughput")
T0 = 1_700_000_000_000


def metric_batches(
    events: int, points: int, batch: int, runs: int, seed: int = 7
) -> Iterator[tuple[str, list[list[tuple[str, float, int, int]]]]]:
    """(run id, events as point tuples) batches: a training loop logging a few metrics."""
    rng = random.Random(seed)
    run_ids = [f"{i:032x}" for i in range(1, runs + 1)]
    step = 0
    for start in range(0, events, batch):
        run_id = run_ids[(start // batch) % runs]
        chunk = []
        for i in range(start, min(start + batch, events)):
            step += 1
            keys = rng.sample(KEYS, points)
            chunk.append([(k, rng.random() * 10, step, T0 + i) for k in keys])
        yield run_id, chunk


def write_store(path: str, version: int, args: argparse.Namespace) -> None:
    """Write the benchmark's events, all at the current version or all at version 1."""
    store = SQLiteEventStore(path)
    try:
        for run_id, chunk in metric_batches(args.events, args.points, args.batch, args.runs):
            if version == 1:
                built: list[Any] = [
                    MetricsLoggedV1(points=[MetricPointV1(*p) for p in e]) for e in chunk
                ]
            else:
                built = [MetricsLogged(points=[MetricPoint(*p) for p in e]) for e in chunk]
            store.append(run_id, built, metadata={"user": "bench", "host": "bench"})
    finally:
        store.close()


def check_stores(current: str, oldest: str) -> None:
    """Honesty checks: v1 bytes are the v1 shape, and both stores read as the same events."""
    with sqlite3.connect(oldest) as conn:
        version, payload = conn.execute("SELECT version, payload FROM events LIMIT 1").fetchone()
    data = msgspec.msgpack.decode(payload)
    assert version == 1 and all(len(p) == 4 for p in data["points"]), "not v1 payloads"
    a, b = SQLiteEventStore(current), SQLiteEventStore(oldest)
    try:
        for n, (x, y) in enumerate(zip(a.read_all(), b.read_all(), strict=True)):
            assert (x.type, x.version) == ("MetricsLogged", MetricsLogged.version)
            assert (y.type, y.version) == ("MetricsLogged", 1)
            assert x.event == y.event, (x, y)
            if n == 20_000:
                break
    finally:
        a.close()
        b.close()


def read_with_store(path: str) -> int:
    """Read every event through evstore's read_all (the one decode function)."""
    store = SQLiteEventStore(path)
    try:
        count = 0
        for _ in store.read_all():
            count += 1
        return count
    finally:
        store.close()


def read_plain(path: str) -> int:
    """The peer: plain sqlite3 + msgspec decoding each payload into MetricsLogged."""
    decode = msgspec.msgpack.Decoder(MetricsLogged).decode
    conn = sqlite3.connect(path)
    try:
        count = 0
        for (payload,) in conn.execute("SELECT payload FROM events ORDER BY position"):
            decode(payload)
            count += 1
        return count
    finally:
        conn.close()


def measure(
    readers: dict[str, tuple[Callable[[str], int], str]], expected: int, rounds: int
) -> dict[str, float]:
    """The best events/s of each reader; rounds interleave the readers (a shared machine
    drifts, and interleaving spreads the drift evenly)."""
    best = dict.fromkeys(readers, 0.0)
    for _ in range(rounds):
        for name, (read, path) in readers.items():
            gc.collect()
            started = time.perf_counter()
            count = read(path)
            elapsed = time.perf_counter() - started
            assert count == expected, f"{name}: read {count} events, expected {expected}"
            best[name] = max(best[name], count / elapsed)
    return best


def main(argv: list[str] | None = None) -> None:
    """Write both stores, read them, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=3, help="points per MetricsLogged")
    parser.add_argument("--batch", type=int, default=1000, help="events per append")
    parser.add_argument("--runs", type=int, default=100, help="run streams")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of reads; best kept")
    parser.add_argument("--dir", default=None, help="where to write the stores (a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="evstore-bench-") as folder:
        current, oldest = os.path.join(folder, "current.db"), os.path.join(folder, "v1.db")
        started = time.perf_counter()
        write_store(current, MetricsLogged.version, args)
        write_store(oldest, 1, args)
        written = time.perf_counter() - started
        check_stores(current, oldest)

        readers = {
            "current": (read_with_store, current),
            "chain": (read_with_store, oldest),
            "plain current": (read_plain, current),
            "plain v1": (read_plain, oldest),
        }
        rates = measure(readers, args.events, args.repeat)

    print(
        f"evstore read benchmark: {args.events:,} MetricsLogged events, {args.points} points"
        f" each, appended in batches of {args.batch} (both stores written in {written:.1f} s)"
    )
    print(
        f"python {sys.version.split()[0]}, msgspec {msgspec.__version__},"
        f" sqlite {sqlite3.sqlite_version}; best of {args.repeat} interleaved rounds"
    )
    print()
    rows = [
        (f"read_all, all at current v{MetricsLogged.version}", rates["current"],
         rates["plain current"]),
        ("read_all, all at v1 (through the chain)", rates["chain"], rates["plain v1"]),
    ]  # fmt: skip
    print(f"{'store':44} {'events/s':>12} {'vs plain sqlite3+msgspec':>26}")
    for label, rate, plain in rows:
        print(f"{label:44} {rate:12,.0f} {rate / plain:25.0%}")
    print(f"{'plain sqlite3+msgspec, current rows':44} {rates['plain current']:12,.0f}")
    print(f"{'plain sqlite3+msgspec, v1 rows':44} {rates['plain v1']:12,.0f}")
    ratio = rates["chain"] / rates["current"]
    verdict = "met" if ratio >= 0.5 else "MISSED"
    print()
    print(f"chain / current: {ratio:.0%} (target >= 50%: {verdict})")


if __name__ == "__main__":
    main()
