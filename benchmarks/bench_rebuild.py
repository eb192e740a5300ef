"""Benchmark: `evstore rebuild` against the plain read-and-decode rate of the same rows.

Builds a store of N events (default 1,000,000) with a realistic mix: experiments, many
runs, each with tags, a batch of params, per-step metrics (one MetricsLogged event per
step, as ``log_metrics`` writes them, with 1 to ``--max-points`` keys, default 4),
artifacts and an end status. Then, in the same run:

- times ``rebuild`` of every read model (events/s);
- times a plain ``SELECT`` of the same rows plus ``evstore.codec.decode`` per row;
- prints the ratio (target: rebuild >= 40% of the plain rate), by wall time and, beside
  it, by the process's CPU time (the shared machine's load shows as the gap between them),
  then the rebuild's own phases (``RebuildSummary.phases``): the replay into the shadow
  tables, the deferred index builds, and the tail and swap under the write lock;
- measures the peak memory of a rebuild in a fresh process (Python heap by
  tracemalloc, and RSS) over a log of N/4 and of N events: it must not grow with the log.

    python benchmarks/bench_rebuild.py              # 1,000,000 events
    python benchmarks/bench_rebuild.py --events 100000 --max-points 1
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time

from evstore import codec
from evstore.events import (
    ArtifactRecorded,
    Event,
    ExperimentCreated,
    MetricPoint,
    MetricsLogged,
    ParamsLogged,
    RunStarted,
    RunStatusChanged,
    TagSet,
)
from evstore.rebuild import rebuild
from evstore.stores import open_log

STEPS_PER_RUN = 200
EXPERIMENTS = 20
METRIC_KEYS = ("loss", "accuracy", "val_loss", "learning_rate", "grad_norm", "epoch_time")


def run_events(
    rng: random.Random, experiment_id: str, index: int, t0: int, max_points: int = 4
) -> list[Event]:
    """One run's history: start, tags, params, per-step metrics, artifacts, end."""
    events: list[Event] = [
        RunStarted(experiment_id=experiment_id, run_name=f"run-{index}", user_id="bench",
                   start_time=t0, artifact_uri=f"evstore-artifacts/{index}"),
        TagSet(key="mlflow.user", value="bench"),
        TagSet(key="mlflow.source.name", value="train.py"),
        TagSet(key="mlflow.runName", value=f"run-{index}"),
        TagSet(key="team", value=rng.choice(["vision", "nlp", "speech"])),
        ParamsLogged(params={f"p{k}": str(rng.random()) for k in range(10)}),
    ]  # fmt: skip
    for step in range(STEPS_PER_RUN):
        keys = METRIC_KEYS[: rng.randint(1, max_points)]
        events.append(
            MetricsLogged(points=[MetricPoint(k, rng.random(), step, t0 + step) for k in keys])
        )
    events += [
        ArtifactRecorded(path="model.pkl", size=1234, sha256="ab" * 32),
        ArtifactRecorded(path="plots/loss.png", size=99, sha256="cd" * 32),
        RunStatusChanged(status="FINISHED", end_time=t0 + STEPS_PER_RUN),
    ]
    return events


def build_store(path: str, total: int, max_points: int = 4) -> int:
    """Append about ``total`` events in per-run batches (no projections attached)."""
    rng = random.Random(42)
    store = open_log(path)
    count = 0
    for e in range(EXPERIMENTS):
        store.append(
            f"experiment-{e}",
            [ExperimentCreated(experiment_id=str(e), name=f"exp-{e}",
                               artifact_location=f"a/{e}", creation_time=codec.now_ms())],
        )  # fmt: skip
        count += 1
    index = 0
    while count < total:
        events = run_events(
            rng, str(index % EXPERIMENTS), index, 1_700_000_000_000 + index, max_points
        )
        events = events[: total - count]
        store.append(os.urandom(16).hex(), events)
        count += len(events)
        index += 1
    store.close()
    return count


def plain_read_decode(path: str) -> tuple[int, float, float]:
    """SELECT every row and decode each payload: the floor any replay pays (wall, CPU s)."""
    conn = sqlite3.connect(path)
    decode = codec.decode
    started, cpu = time.perf_counter(), time.process_time()
    # Storage format 4: the names and the commit's time and metadata joined in by SQL.
    cursor = conn.execute(
        "SELECT e.position, s.name, e.stream_version, e.event_id, t.name, e.version,"
        " c.recorded_at, e.payload, m.bytes FROM events e"
        " JOIN streams s ON s.stream_key = e.stream_key"
        " JOIN event_types t ON t.type_key = e.type_key"
        " JOIN commits c ON c.commit_id = coalesce(e.commit_id, e.position)"
        " JOIN event_metadata m ON m.metadata_key = c.metadata_key ORDER BY e.position"
    )
    count = 0
    while rows := cursor.fetchmany(5000):
        for row in rows:
            decode(row[4], row[5], row[7])
        count += len(rows)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return count, seconds, cpu


def time_rebuild(path: str) -> tuple[int, float, float, dict[str, float]]:
    """Rebuild every read model; returns events replayed, seconds, CPU seconds, phases."""
    store = open_log(path)
    try:
        cpu = time.process_time()
        summary = rebuild(store)
        cpu = time.process_time() - cpu
    finally:
        store.close()
    return summary.events, summary.seconds, cpu, summary.phases


def history_sql_seconds(path: str) -> tuple[int, float]:
    """Seconds the metric history's own writer needs to store every metric point.

    The log's events are read and decoded off the clock, 5,000 positions at a time as a
    rebuild feeds them; only the writer of the metric history (points grouped per series,
    kept once, packed into chunks, and its SQL) is timed, into fresh tables of the model's
    DDL in a new file of the store's page size and the rebuild's pragmas. Added to the
    plain read, this is a floor for a rebuild that, like evstore's, reads and writes in
    one process: the other read models and the rest of the Python work add to it.
    """
    from evstore.events import MetricsLogged
    from evstore.rebuild import _SHADOW_PRAGMAS
    from evstore.stores.sqlite import PAGE_SIZE
    from projections.metrics import METRICS

    target = path + ".floor.db"
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode = WAL")
    for pragma in _SHADOW_PRAGMAS:
        conn.execute(pragma)
    for sql in METRICS.ddl():
        conn.execute(sql)
    (make,) = METRICS.writers.values()
    write = make({table: table for table in METRICS.tables})
    source = open_log(path)
    head = source.head_position()
    points, seconds = 0, 0.0
    for after in range(0, head, 5000):
        batch = [
            rec for rec in source.read_all(after, 5000, until_position=after + 5000)
            if isinstance(rec.event, MetricsLogged)
        ]
        started = time.perf_counter()
        conn.execute("BEGIN")
        write(conn, batch)
        conn.execute("COMMIT")
        seconds += time.perf_counter() - started
        points += sum(len(rec.event.points) for rec in batch)  # type: ignore[union-attr]
    source.close()
    conn.close()
    return points, seconds


def child_peak_memory(path: str) -> tuple[int, int]:
    """Peak Python heap (tracemalloc) and peak RSS, in KiB, of a fresh process's rebuild."""
    code = (
        "import resource, sys, tracemalloc; from evstore.rebuild import rebuild;"
        " from evstore.stores import open_log; s = open_log(sys.argv[1]); tracemalloc.start();"
        " rebuild(s); print(tracemalloc.get_traced_memory()[1] // 1024,"
        " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, path], check=True, capture_output=True, text=True
    )
    heap, rss = out.stdout.split()
    return int(heap), int(rss)


def main() -> None:
    """Build, time, compare, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--max-points", type=int, default=4, help="metric keys per step: 1 to N")
    parser.add_argument("--skip-memory", action="store_true", help="skip the N/4 vs N check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        started = time.perf_counter()
        total = build_store(path, args.events, args.max_points)
        print(f"built a store of {total:,} events in {time.perf_counter() - started:.1f} s")
        read_count, read_seconds, read_cpu = plain_read_decode(path)
        events, seconds, cpu, phases = time_rebuild(path)
        plain_rate, rebuild_rate = read_count / read_seconds, events / seconds
        print(f"{'workload':34} {'events':>10} {'seconds':>8} {'events/s':>10} {'CPU s':>7}")
        for name, count, wall, used in (
            ("plain SELECT + codec.decode", read_count, read_seconds, read_cpu),
            ("rebuild (all read models)", events, seconds, cpu),
        ):
            print(f"{name:34} {count:>10,} {wall:>8.2f} {count / wall:>10,.0f} {used:>7.2f}")
        print(
            f"ratio rebuild / plain read+decode: {rebuild_rate / plain_rate:.0%} (target >= 40%);"
            f" by CPU time: {(events / cpu) / (read_count / read_cpu):.0%}"
        )
        print("rebuild phases: " + ", ".join(f"{name} {s:.2f} s" for name, s in phases.items()))
        points, sql_seconds = history_sql_seconds(path)
        floor = read_seconds + sql_seconds
        print(
            f"floor: the plain read ({read_seconds:.2f} s) + the metric history's writer storing"
            f" the {points:,} metric points ({sql_seconds:.2f} s) = {floor:.2f} s;\n"
            f"ceiling of a one-process rebuild of this layout: {read_seconds / floor:.0%} of the"
            " plain rate (every other read model and all Python work cost extra)"
        )
        if args.skip_memory:
            return
        small_path = os.path.join(tmp, "small.db")
        build_store(small_path, args.events // 4, args.max_points)
        (small_heap, small_rss), (big_heap, big_rss) = (
            child_peak_memory(small_path),
            child_peak_memory(path),
        )
        print(
            f"peak memory of a rebuild   {args.events // 4:>10,} events {args.events:>10,} events"
        )
        print(
            f"{'  Python heap (tracemalloc)':26} {small_heap / 1024:>13.1f} MiB {big_heap / 1024:>13.1f} MiB"
        )
        print(
            f"{'  process RSS (ru_maxrss)':26} {small_rss / 1024:>13.1f} MiB {big_rss / 1024:>13.1f} MiB"
        )
        print(
            "  (RSS includes SQLite's page caches: 64 MiB per connection at most, two connections)"
        )


if __name__ == "__main__":
    main()
