"""Benchmark: `evstore import mlflow` from an MLflow SQLite store of a million metric points.

The source is built with raw SQL in MLflow's own schema: the 3.17 fixture's
``mlflow.db`` is copied as the schema template (alembic head included), emptied of its
runs, and filled with one experiment of RUNS runs, each logging KEYS metrics over STEPS
steps (``metrics`` and ``latest_metrics`` filled consistently, as MLflow's
SqlAlchemyStore writes them: ``is_nan`` 0, NaN as value 0 with ``is_nan`` 1, and the
latest point being the one with the greatest (step, timestamp, value)). Then:

- times ``import_mlflow`` into a fresh evstore store, in a fresh process per size, and
  prints metric points/s (target: >= 200,000/s on the team's 2-core machines);
- prints each import's peak memory (ru_maxrss of that process, and its growth over the
  process before the import): bounded memory means the peak does not grow with the source.

    python benchmarks/bench_import.py                       # 250,000 and 1,000,000 points
    python benchmarks/bench_import.py --points 20000 80000  # quick
    python benchmarks/bench_import.py --points 250000 --breakdown # CPU per stage
    python benchmarks/bench_import.py --points 250000 --profile   # cProfile of the import
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "tests/fixtures/mlflow/mlflow-3.17-sqlite/mlflow.db"
KEYS = 10
STEPS = 1000
T0 = 1_700_000_000_000
_NAMESPACE = uuid.UUID("0e7c4a52-31d6-4c0b-9d7e-3b6e1c0a5d42")

# MLflow's SqlAlchemyStore rows, column for column (3.17 schema; 2.22 has the same
# runs/metrics/latest_metrics/params/tags columns, experiments lack ``workspace``).
INSERT_EXPERIMENT = (
    "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage,"
    " creation_time, last_update_time) VALUES (?, ?, ?, 'active', ?, ?)"
)
INSERT_RUN = (
    "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id,"
    " status, start_time, end_time, source_version, lifecycle_stage, artifact_uri,"
    " experiment_id, deleted_time) VALUES (?, ?, 'UNKNOWN', '', '', 'bench', 'FINISHED', ?, ?,"
    " '', 'active', ?, ?, NULL)"
)
INSERT_TAG = 'INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?)'
INSERT_PARAM = 'INSERT INTO params ("key", value, run_uuid) VALUES (?, ?, ?)'
INSERT_METRIC = (
    'INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)'
)
INSERT_LATEST = (
    'INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid)'
    " VALUES (?, ?, ?, ?, ?, ?)"
)
RUN_TABLES = ("latest_metrics", "metrics", "params", "tags", "logged_model_metrics", "runs")


def run_id_for(experiment_id: int, index: int) -> str:
    """A run id (32 hex chars) derived from its place, so rebuilt sources are identical."""
    return uuid.uuid5(_NAMESPACE, f"{experiment_id}/{index}").hex


def _value(run: int, key: int, step: int) -> float:
    """A loss-like curve: exact binary fractions are not needed, distinct values are."""
    return (1.0 + (run * 7 + key * 13) % 97) / (1.0 + step + key * 0.5)


def _points(
    run_id: str, run: int, keys: int, steps: int, t0: int, nan_every: int
) -> Iterator[tuple[str, float, int, str, int, int]]:
    for step in range(steps):
        timestamp = t0 + step * 10
        for key in range(keys):
            if nan_every and (step * keys + key) % nan_every == nan_every - 1:
                yield (f"metric_{key}", 0.0, timestamp, run_id, step, 1)
            else:
                yield (f"metric_{key}", _value(run, key, step), timestamp, run_id, step, 0)


def add_experiment(
    db_path: str | os.PathLike[str],
    *,
    runs: int,
    keys: int = KEYS,
    steps: int = STEPS,
    name: str = "bench",
    nan_every: int = 0,
) -> tuple[str, list[str]]:
    """Add an experiment of finished runs with per-step metrics; returns (id, run ids).

    ``nan_every`` > 0 makes every n-th point NaN (MLflow stores it as 0 with is_nan 1).
    """
    conn = sqlite3.connect(os.fspath(db_path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = MEMORY")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        experiment_id = conn.execute(
            "SELECT coalesce(max(experiment_id), -1) + 1 FROM experiments"
        ).fetchone()[0]
        location = f"file:///srv/mlflow/bench/mlartifacts/{experiment_id}"
        conn.execute(INSERT_EXPERIMENT, (experiment_id, name, location, T0, T0))
        run_ids = []
        for run in range(runs):
            run_id = run_id_for(experiment_id, run)
            start = T0 + run * steps * 10
            end = start + steps * 10
            conn.execute(
                INSERT_RUN,
                (run_id, f"{name}-{run}", start, end, f"{location}/{run_id}/artifacts", experiment_id),
            )
            conn.executemany(INSERT_TAG, [("mlflow.runName", f"{name}-{run}", run_id),
                                          ("mlflow.user", "bench", run_id)])  # fmt: skip
            conn.executemany(INSERT_PARAM, [("lr", str(10.0 ** -(run % 4 + 1)), run_id),
                                            ("batch_size", str(32 << run % 3), run_id)])  # fmt: skip
            conn.executemany(INSERT_METRIC, _points(run_id, run, keys, steps, start, nan_every))
            # The latest point of each key: greatest (step, timestamp, value) = the last step.
            conn.execute(
                "INSERT INTO latest_metrics (\"key\", value, timestamp, step, is_nan, run_uuid)"
                ' SELECT "key", value, timestamp, step, is_nan, run_uuid FROM metrics'
                " WHERE run_uuid = ? AND step = ?",
                (run_id, steps - 1),
            )
            run_ids.append(run_id)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return str(experiment_id), run_ids


def build_source(path: str | os.PathLike[str], points: int, keys: int = KEYS) -> int:
    """An MLflow 3.17 SQLite store of about ``points`` metric points; returns the exact count."""
    runs = max(1, round(points / (keys * STEPS)))
    shutil.copyfile(TEMPLATE, path)
    conn = sqlite3.connect(os.fspath(path), isolation_level=None)
    try:
        conn.execute("BEGIN")
        for table in RUN_TABLES:
            conn.execute(f'DELETE FROM "{table}"')
        conn.execute("DELETE FROM experiment_tags")
        conn.execute("DELETE FROM experiments WHERE experiment_id != 0")
        conn.execute("COMMIT")
    finally:
        conn.close()
    add_experiment(path, runs=runs, keys=keys, steps=STEPS)
    return runs * keys * STEPS


# --- the measured part, in its own process -------------------------------------------


def _child(source: str, target: str, mode: str) -> None:
    """Import ``source`` into ``target`` and print one JSON line of figures.

    ``mode``: ``time`` (plain), ``profile`` (cProfile to stderr) or ``trace`` (tracemalloc:
    the peak of Python's own allocations, which excludes SQLite's page caches).
    """
    import resource

    from evstore.importers.mlflow_import import import_mlflow

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    traced_peak = None
    cpu_started = time.process_time()
    started = time.perf_counter()
    if mode == "profile":
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        summary = profiler.runcall(import_mlflow, target, f"sqlite:///{source}")
        seconds = time.perf_counter() - started
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)
    elif mode == "trace":
        import tracemalloc

        tracemalloc.start()
        summary = import_mlflow(target, f"sqlite:///{source}")
        seconds = time.perf_counter() - started
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        summary = import_mlflow(target, f"sqlite:///{source}")
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "points": summary.metric_points, "runs": summary.runs, "events": summary.events_appended,
        "seconds": seconds, "cpu_seconds": time.process_time() - cpu_started,
        "rss_before_kib": before, "rss_peak_kib": peak,
        "python_peak_bytes": traced_peak,
    }))  # fmt: skip


def _breakdown(source: str, target: str) -> None:
    """CPU seconds of each stage of an import, each measured alone; one JSON line.

    read: the source's metric batches; encode: msgpack of the MetricsLogged events;
    hash: the chain hashes; log: appends to a log without read models (encode, hash,
    insert, commit); projections: the same appends with the read models attached, minus
    log; import: the whole import_mlflow, for the share the importer itself adds.
    """
    from evstore import codec
    from evstore.client import open_tracking_store
    from evstore.events import MetricsLogged
    from evstore.importers.mlflow_import import METRICS_PER_EVENT, import_mlflow
    from evstore.importers.mlflow_source import open_source
    from evstore.stores import open_log

    clock = time.process_time
    figures: dict[str, float] = {}
    with open_source(f"sqlite:///{source}") as mlflow_store:
        runs = [run for e in mlflow_store.experiments() for run in mlflow_store.runs(e)]
        started = clock()
        batches = [(run.run_id, points) for run in runs
                   for points in mlflow_store.metric_batches(run, METRICS_PER_EVENT)]  # fmt: skip
        figures["read"] = clock() - started
    events = [(run_id, MetricsLogged(points=points)) for run_id, points in batches]
    started = clock()
    payloads = [codec.encode(event) for _, event in events]
    figures["encode"] = clock() - started
    started = clock()
    previous = codec.GENESIS_HASH
    for index, payload in enumerate(payloads):
        previous = codec.chain_hash(previous, codec.canonical_bytes(
            events[index][0], index + 1, f"{index:032x}", "MetricsLogged", 2, 0, payload, b""))
    figures["hash"] = clock() - started
    for name, store in (("log", open_log(target + ".log")),
                        ("log+projections", open_tracking_store(target + ".proj").store)):  # fmt: skip
        started = clock()
        for run_id, event in events:
            store.append(run_id, [event])
        figures[name] = clock() - started
    del events, payloads, batches
    started = clock()
    summary = import_mlflow(target, f"sqlite:///{source}")
    figures["import"] = clock() - started
    figures["points"] = summary.metric_points
    print(json.dumps(figures))


def _measure(source: str, target: str, mode: str) -> dict[str, float]:
    """Run one import in a fresh process (into a fresh target) and return its figures."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(target + suffix):
            os.unlink(target + suffix)
    done = subprocess.run(
        [sys.executable, __file__, "--child", source, target, mode],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mode == "profile":
        sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"import failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_breakdown(stages: dict[str, float]) -> None:
    """Where an import's CPU time goes, stage by stage."""
    total = stages["import"]
    rows = [
        ("read the source (SQL + MetricPoint)", stages["read"]),
        ("  of log: encode MetricsLogged", stages["encode"]),
        ("  of log: chain hashes", stages["hash"]),
        ("append to the log (encode+hash+insert+commit)", stages["log"]),
        ("read models (metrics, latest_metrics)", stages["log+projections"] - stages["log"]),
        ("importer's own work (runs, tags, ids, ...)",
         total - stages["read"] - stages["log+projections"]),
    ]  # fmt: skip
    print(f"\nwhere the CPU time goes, {stages['points']:,.0f} points (each stage timed alone):")
    for name, seconds in rows:
        print(f"  {name:48} {seconds:6.2f} s  {100 * seconds / total:5.1f}%")
    print(f"  {'whole import (CPU)':48} {total:6.2f} s  {stages['points'] / total:,.0f} points/s")


def main() -> None:
    """Build each source size, import it in fresh processes, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--profile", action="store_true", help="cProfile the import (slower).")
    parser.add_argument("--breakdown", action="store_true",
                        help="Also time each stage alone (CPU s) on the smallest size.")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[2] == "breakdown":
            _breakdown(*args.child[:2])
        else:
            _child(*args.child)
        return
    print(f"{'source points':>14} {'runs':>5} {'build s':>8} {'import s':>9} {'points/s':>10}"
          f" {'CPU s':>6} {'events':>7} {'peak RSS MiB':>13} {'RSS growth':>11} {'Python peak MiB':>16}")  # fmt: skip
    rates = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        for size in args.points:
            source = os.path.join(tmp, f"mlflow-{size}.db")
            target = os.path.join(tmp, f"evstore-{size}.db")
            started = time.perf_counter()
            expected = build_source(source, size)
            built = time.perf_counter() - started
            figures = _measure(source, target, "profile" if args.profile else "time")
            if figures["points"] != expected:
                raise SystemExit(f"imported {figures['points']} points, expected {expected}")
            traced = _measure(source, target, "trace")  # a second, untimed import
            rate = figures["points"] / figures["seconds"]
            rates.append(rate)
            peak = figures["rss_peak_kib"] / 1024
            growth = (figures["rss_peak_kib"] - figures["rss_before_kib"]) / 1024
            python_peak = traced["python_peak_bytes"] / 2**20
            print(f"{expected:>14,} {figures['runs']:>5} {built:>8.1f} {figures['seconds']:>9.2f}"
                  f" {rate:>10,.0f} {figures['cpu_seconds']:>6.2f} {figures['events']:>7,} {peak:>13.1f} {growth:>11.1f}"
                  f" {python_peak:>16.1f}")  # fmt: skip
            if args.breakdown and size == min(args.points):
                stages = _measure(source, target, "breakdown")
            for path in glob.glob(os.path.join(tmp, "*")):
                os.unlink(path)
    if args.breakdown:
        _print_breakdown(stages)
    verdict = "met" if min(rates) >= 200_000 else "MISSED"
    print(f"target >= 200,000 metric points/s: {verdict} (slowest {min(rates):,.0f}/s)")
    print("RSS includes SQLite's page caches (the target's is capped at 64 MiB by the store's"
          " PRAGMA cache_size); the Python peak (tracemalloc, a second untimed import) does not.")


if __name__ == "__main__":
    main()
