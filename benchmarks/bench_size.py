"""Bytes on disk per metric point: evstore's store file against MLflow's SQLite store.

    python benchmarks/bench_size.py [--runs 10] [--keys 10] [--points 100000] [--calls 5000]

Two workloads, each written the same way to a fresh evstore store and a fresh MLflow 3
SQLite store (``MlflowClient("sqlite:///...")``, its own defaults) in this run:

- batched: ``--runs`` runs x ``--keys`` keys, ``--points`` points in all, through
  ``log_batch`` with 1,000 points per call;
- per call: ``--calls`` points through one ``log_metric`` call each, on one run.

A figure is the growth of the store's file from just before the first point to the end
(the runs already created), divided by the points: what each point costs, without the
fixed size of an empty store. Both stores are closed first, so evstore's WAL is folded
back into the file and MLflow's journal is gone. Where SQLite's ``dbstat`` table is
available, the bytes are also split by table and index, to show where they go.
Sizes do not depend on the machine's load: one run is enough.

Goal (issue 15, storage format 4): <= 60 bytes/point batched, <= 150 per call.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

GOALS = {"batched": 60, "per call": 150}
BATCH = 1_000


def batched_points(runs: int, keys: int, points: int) -> list[list[tuple[str, float, int, int]]]:
    """Per run, its points as (key, value, timestamp, step), spread evenly over keys."""
    per_run = points // runs
    base = int(time.time() * 1000)
    return [
        [(f"metric_{i % keys}", 1.0 / (i + 1) + r, base + i, i // keys) for i in range(per_run)]
        for r in range(runs)
    ]


#: workload -> (bytes the file grew by, the file)
Sizes = dict[str, tuple[int, str]]


def grow(path: str, write: Callable[[], None]) -> tuple[int, str]:
    """Bytes the file at ``path`` grows by while ``write`` runs, and the file."""
    before = os.path.getsize(path)
    write()
    return os.path.getsize(path) - before, path


def evstore_sizes(directory: str, runs: int, keys: int, points: int, calls: int) -> Sizes:
    """Growth of evstore store files for both workloads."""
    from evstore.entities import Metric
    from evstore.tracking.service import TrackingService, close_tracking_stores

    sizes: Sizes = {}
    path = os.path.join(directory, "evstore-batched.db")
    service = TrackingService(path)
    experiment_id = service.create_experiment("size")
    run_ids = [service.create_run(experiment_id).info.run_id for _ in range(runs)]
    close_tracking_stores()

    def write_batched() -> None:
        writer = TrackingService(path)
        for run_id, run_points in zip(run_ids, batched_points(runs, keys, points)):
            for start in range(0, len(run_points), BATCH):
                chunk = run_points[start : start + BATCH]
                writer.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in chunk])
        close_tracking_stores()

    sizes["batched"] = grow(path, write_batched)

    path = os.path.join(directory, "evstore-calls.db")
    service = TrackingService(path)
    run_id = service.create_run(service.create_experiment("size")).info.run_id
    close_tracking_stores()

    def write_calls() -> None:
        writer = TrackingService(path)
        base = int(time.time() * 1000)
        for step in range(calls):
            writer.log_metric(run_id, "loss", 1.0 / (step + 1), base + step, step)
        writer.set_terminated(run_id, "FINISHED")  # as the MLflow side does
        close_tracking_stores()

    sizes["per call"] = grow(path, write_calls)
    return sizes


def mlflow_sizes(directory: str, runs: int, keys: int, points: int, calls: int) -> Sizes:
    """Growth of MLflow SQLite store files for both workloads."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    for noisy in ("alembic", "mlflow"):  # after the import: mlflow sets its own level then
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def client_for(path: str) -> MlflowClient:
        return MlflowClient(tracking_uri=f"sqlite:///{path}")

    def dispose(client: MlflowClient) -> None:
        client._tracking_client.store.engine.dispose()  # closes its connections

    sizes: Sizes = {}
    path = os.path.join(directory, "mlflow-batched.db")
    client = client_for(path)
    experiment_id = client.create_experiment("size")
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(runs)]
    dispose(client)

    def write_batched() -> None:
        writer = client_for(path)
        for run_id, run_points in zip(run_ids, batched_points(runs, keys, points)):
            for start in range(0, len(run_points), BATCH):
                chunk = run_points[start : start + BATCH]
                writer.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in chunk])
        dispose(writer)

    sizes["batched"] = grow(path, write_batched)

    path = os.path.join(directory, "mlflow-calls.db")
    client = client_for(path)
    run_id = client.create_run(client.create_experiment("size")).info.run_id
    dispose(client)

    def write_calls() -> None:
        writer = client_for(path)
        base = int(time.time() * 1000)
        for step in range(calls):
            writer.log_metric(run_id, "loss", 1.0 / (step + 1), base + step, step)
        writer.set_terminated(run_id, "FINISHED")
        dispose(writer)

    sizes["per call"] = grow(path, write_calls)
    return sizes


def by_table(path: str) -> Counter[str] | None:
    """Bytes per table and index of a SQLite file, from ``dbstat`` (None if not compiled in)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return None
    return Counter({name: size for name, size in rows})


def main() -> None:
    """Write both workloads to both stores, print bytes per point and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of the batched workload")
    parser.add_argument("--keys", type=int, default=10, help="metric keys per run (batched)")
    parser.add_argument("--points", type=int, default=100_000, help="points of the batched workload")
    parser.add_argument("--calls", type=int, default=5_000, help="log_metric calls (per call)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-size-") as directory:
        ours = evstore_sizes(directory, args.runs, args.keys, args.points, args.calls)
        theirs = mlflow_sizes(directory, args.runs, args.keys, args.points, args.calls)
        counts = {"batched": args.points // args.runs * args.runs, "per call": args.calls}
        print(f"{'workload':<34}{'MLflow B/pt':>12}{'evstore B/pt':>14}{'ratio':>8}{'goal':>8}")
        for workload, points in counts.items():
            mine, peer = ours[workload][0] / points, theirs[workload][0] / points
            label = f"{workload} ({points:,} points)"
            print(f"{label:<34}{peer:>12.0f}{mine:>14.0f}{mine / peer:>8.0%}{'<= ' + str(GOALS[workload]):>8}")
        for workload, points in counts.items():
            for name, sizes in (("evstore", ours), ("MLflow", theirs)):
                tables = by_table(sizes[workload][1])
                if tables is None:
                    continue
                top = ", ".join(f"{t} {b / points:.0f}" for t, b in tables.most_common(6))
                print(f"  {workload}, {name}, whole file by table (B/pt): {top}")
    print("A figure is the file's growth over the workload per point, both stores closed.")


if __name__ == "__main__":
    main()
