"""MLflow 3.17 and evstore, each serving a PostgreSQL database, with the real mlflow client.

Starts ``mlflow server --backend-store-uri postgresql+psycopg://.../<its database>``
(``--workers 1``) and ``evstore server --store postgresql://.../<its database>`` on the
same PostgreSQL server, in the same run, and measures with the real ``MlflowClient``:

- per-call ``log_metric`` points/s and ``log_batch`` points/s (1,000 metrics a call);
- ``search_runs`` over an experiment of 2,000 runs (a param filter, ordered by a metric,
  every run returned), median of a few calls;
- ``get_metric_history`` of one metric of 100,000 points.

The search and history data are written straight into each store first (MLflow's own
SQL store in process, ``evstore.Client`` in process), so only the reads go through the
servers. Then, with the servers stopped, the same four workloads in process on the same
databases: ``MlflowClient(tracking_uri="postgresql+psycopg://...")`` (MLflow's SQLAlchemy
store in this process) against ``evstore.Client("postgresql://...")``, with no HTTP
between (the issue's reference figures for MLflow are of this kind). Two floors measured on the same PostgreSQL: single-row commits/s (one INSERT a
transaction, ``synchronous_commit = local``, evstore's ``normal``) and ``COPY`` rows/s of
metric-shaped rows. Each database is made for the run and dropped at its end.

    python benchmarks/bench_postgres.py            # the issue's sizes
    python benchmarks/bench_postgres.py --quick    # a few seconds of each: the code paths work

Targets (issue 16): per-call >= 5x MLflow and >= 50% of single-row commits/s; log_batch
>= 20x MLflow and >= 30% of COPY rows/s; search >= 10x; get_metric_history >= 20x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import BIN, free_port, log_rates, measure, start, stop, wait_ready

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SERVER = os.environ.get("EVSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def database_url(name: str) -> str:
    """The server's URL naming database ``name``."""
    return urlunsplit(urlsplit(SERVER)._replace(path=f"/{name}"))


def single_row_commits(url: str, rows: int) -> float:
    """INSERTs of one row, each its own transaction, per second."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = local")
        conn.execute("CREATE TABLE floor_commits (run_id text, key text, value float8,"
                     " step bigint, ts bigint)")  # fmt: skip
        started = time.perf_counter()
        for i in range(rows):
            conn.execute("INSERT INTO floor_commits VALUES (%s, %s, %s, %s, %s)",
                         ("r" * 32, "loss", float(i), i, i))  # fmt: skip
        return rows / (time.perf_counter() - started)


def copy_rows(url: str, rows: int) -> float:
    """Metric-shaped rows COPYed in one transaction, per second."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE floor_copy (run_id text, key text, value float8,"
                     " step bigint, ts bigint)")  # fmt: skip
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(
            "COPY floor_copy FROM STDIN"
        ) as copy:
            for i in range(rows):
                copy.write_row(("r" * 32, f"m{i % 10}", float(i), i, i))
        return rows / (time.perf_counter() - started)


def seed(client: Any, runs: int, points: int) -> tuple[str, str]:
    """An experiment of ``runs`` runs (a param, a tag, two metrics each) and one run with
    ``points`` points of one metric, written in process; returns (experiment, that run)."""
    from mlflow.entities import Metric, Param, RunTag

    experiment_id = client.create_experiment(f"search-{time.time_ns()}")
    now = int(time.time() * 1000)
    for i in range(runs):
        run_id = client.create_run(experiment_id, start_time=now + i).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("acc", (i % 97) / 97, now, 0), Metric("loss", 1 / (i + 1), now, 0)],
            params=[Param("kind", "a" if i % 2 else "b"), Param("lr", str(i % 7))],
            tags=[RunTag("team", f"t{i % 5}")],
        )
    history_run = client.create_run(experiment_id).info.run_id
    for start_at in range(0, points, 1000):
        client.log_batch(history_run, metrics=[
            Metric("curve", float(i), now + i, i) for i in range(start_at, min(points, start_at + 1000))
        ])  # fmt: skip
    return experiment_id, history_run


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The median seconds of ``repeat`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def read_times(client: Any, experiment_id: str, history_run: str, runs: int, points: int,
               repeat: int) -> tuple[float, float]:  # fmt: skip
    """(seconds of the search returning every run, seconds of the whole history)."""

    def search() -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = client.search_runs(
                [experiment_id], "params.kind != 'z' and metrics.acc >= 0",
                order_by=["metrics.acc DESC"], max_results=1000, page_token=token,
            )  # fmt: skip
            found += page
            token = page.token
            if not token:
                return found

    search_seconds, found = timed(search, repeat)
    assert len(found) == runs, f"the search found {len(found)} of {runs} runs"
    history_seconds, history = timed(lambda: client.get_metric_history(history_run, "curve"), repeat)
    assert len(history) == points, f"{len(history)} of {points} points"
    return search_seconds, history_seconds


def report(
    labels: dict[str, str],
    logging: dict[str, tuple[float, float]],
    reads: dict[str, tuple[float, float]],
    floors: tuple[float, float],
) -> None:
    """One table (mlflow and evstore, then the floors) and the ratios against the targets."""
    header = f"{'':<32}{'log_metric pts/s':>17}{'log_batch pts/s':>17}{'search ms':>11}{'history ms':>12}"
    print(header)
    for name in ("mlflow", "evstore"):
        (per_call, batched), (search, history) = logging[name], reads[name]
        print(f"{labels[name]:<32}{per_call:>17,.0f}{batched:>17,.0f}{search * 1000:>11,.0f}{history * 1000:>12,.0f}")
    print(f"{'PostgreSQL: single-row commits/s':<32}{floors[0]:>17,.0f}")
    print(f"{'PostgreSQL: COPY rows/s':<32}{'':>17}{floors[1]:>17,.0f}")
    (m_call, m_batch), (e_call, e_batch) = logging["mlflow"], logging["evstore"]
    (m_search, m_history), (e_search, e_history) = reads["mlflow"], reads["evstore"]
    rows = [
        ("per call: evstore / mlflow", e_call / m_call, 5, "x"),
        ("per call: evstore / single-row commits", e_call / floors[0], 0.5, "%"),
        ("log_batch: evstore / mlflow", e_batch / m_batch, 20, "x"),
        ("log_batch: evstore / COPY rows", e_batch / floors[1], 0.3, "%"),
        ("search: mlflow time / evstore time", m_search / e_search, 10, "x"),
        ("history: mlflow time / evstore time", m_history / e_history, 20, "x"),
    ]
    for label, value, target, unit in rows:
        shown = f"{value:.0%}" if unit == "%" else f"{value:.1f}x"
        goal = f">= {target:.0%}" if unit == "%" else f">= {target}x"
        verdict = "met" if value >= target else "NOT met"
        print(f"{label:<42}{shown:>10}   target {goal:<7} {verdict}")


def main() -> None:
    """Make the databases, start both servers, measure, print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the paths work")
    args = parser.parse_args()
    if args.quick:
        calls, batches, runs, points, repeat, floor_rows, copy_count = 100, 3, 200, 10_000, 1, 300, 20_000
    else:
        calls, batches, runs, points, repeat, floor_rows, copy_count = 1000, 20, 2000, 100_000, 3, 2000, 200_000
    import psycopg

    from evstore import Client as EvstoreClient
    from evstore.tracking.service import close_tracking_stores

    names = {kind: f"bench_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("mlflow", "evstore", "floor")}
    with psycopg.connect(SERVER, autocommit=True) as admin:
        for name in names.values():
            admin.execute(f"CREATE DATABASE {name}")
    work = tempfile.mkdtemp(prefix="bench-postgres-")
    servers: dict[str, Any] = {}
    try:
        floors = (single_row_commits(database_url(names["floor"]), floor_rows),
                  copy_rows(database_url(names["floor"]), copy_count))  # fmt: skip
        mlflow_db = "postgresql+psycopg://" + database_url(names["mlflow"]).split("://", 1)[1]
        evstore_db = database_url(names["evstore"])
        os.environ["EVSTORE_ARTIFACT_ROOT"] = os.path.join(work, "evstore-artifacts")
        ports = {"mlflow": free_port(), "evstore": free_port()}
        launched = {"mlflow": time.perf_counter()}
        servers["mlflow"] = start(
            [os.path.join(BIN, "mlflow"), "server", "--backend-store-uri", mlflow_db,
             "--artifacts-destination", f"{work}/mlartifacts", "--host", "127.0.0.1",
             "--port", str(ports["mlflow"]), "--workers", "1"],
            os.path.join(work, "mlflow-server.log"),
        )  # fmt: skip
        launched["evstore"] = time.perf_counter()
        servers["evstore"] = start(
            [os.path.join(BIN, "evstore"), "server", "--store", evstore_db,
             "--artifacts-root", f"{work}/evstore-artifacts", "--port", str(ports["evstore"])],
            os.path.join(work, "evstore-server.log"),
        )  # fmt: skip
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name in ("evstore", "mlflow"):
            wait_ready(urls[name], servers[name], launched[name], 180)
        # Seed the search and history data in process, while mlflow server settles.
        from mlflow import MlflowClient

        seeded = {"mlflow": seed(MlflowClient(tracking_uri=mlflow_db), runs, points),
                  "evstore": seed(EvstoreClient(evstore_db), runs, points)}  # fmt: skip
        close_tracking_stores()
        served = {name: MlflowClient(tracking_uri=urls[name]) for name in ("mlflow", "evstore")}
        logging = {name: measure(urls[name], calls, batches, 1000, round_no=0) for name in ("mlflow", "evstore")}
        reads = {name: read_times(served[name], *seeded[name], runs, points, repeat)
                 for name in ("mlflow", "evstore")}  # fmt: skip
        for process in servers.values():
            stop(process)
        servers.clear()
        # In process, on the same databases: MLflow's SQLAlchemy store and evstore's
        # PostgreSQL store, each in this process, with no server between.
        local = {"mlflow": MlflowClient(tracking_uri=mlflow_db), "evstore": EvstoreClient(evstore_db)}
        logging_local = {name: log_rates(local[name], calls, batches, 1000, "in-process") for name in ("mlflow", "evstore")}
        reads_local = {name: read_times(local[name], *seeded[name], runs, points, repeat)
                       for name in ("mlflow", "evstore")}  # fmt: skip
        close_tracking_stores()
    finally:
        for process in servers.values():
            stop(process)
        with psycopg.connect(SERVER, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    import mlflow

    load = os.getloadavg()
    print(f"real mlflow client {mlflow.__version__}; PostgreSQL at {urlsplit(SERVER).netloc};"
          f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          f"{' (--quick: small sizes)' if args.quick else ''}")  # fmt: skip
    print(f"{calls} log_metric calls, {batches} x log_batch(1000), search of {runs} runs,"
          f" history of {points:,} points")  # fmt: skip
    print("\nThrough servers (the real MlflowClient over HTTP):")
    report({"mlflow": "mlflow server (1 worker)", "evstore": "evstore server"}, logging, reads, floors)
    print("\nIn process (MlflowClient on postgresql+psycopg://, evstore.Client on postgresql://):")
    report({"mlflow": "mlflow SQLAlchemy store", "evstore": "evstore.Client"},
           logging_local, reads_local, floors)  # fmt: skip


if __name__ == "__main__":
    main()
