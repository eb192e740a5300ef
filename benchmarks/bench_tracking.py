"""The tracking API against the real ``mlflow`` package (SQLite store), measured in the same run.

    python benchmarks/bench_tracking.py                 # all five workloads (a few minutes)
    python benchmarks/bench_tracking.py --quick         # small sizes, to try it out
    python benchmarks/bench_tracking.py --only search,history
    python benchmarks/bench_tracking.py --profile log_metric   # cProfile evstore's timed part

The five workloads of issue 5:

1. ``seed``: the seed script as a whole process on a fresh store: ``python seed.py`` in a
   fresh temp dir, with ``import mlflow`` (``MLFLOW_TRACKING_URI=sqlite:///mlflow.db``) or
   ``import evstore as mlflow`` (default ``./evstore.db``). The two alternate; median.
2. ``log_metric``: 5,000 per-call ``client.log_metric`` in one run, then one ``get_run``;
   three rounds, the libraries alternating, each round a fresh process per library.
3. ``log_batch``: ``client.log_batch`` of 1,000 metrics per call (10 keys x 100 steps), 10
   calls, then one ``get_run``.
4. ``search``: ``client.search_runs`` with a two-clause filter over 2,000 runs of 5 params
   and 5 metrics each (each store built through its own ``log_batch``).
5. ``history``: ``client.get_metric_history`` of one metric of 100,000 points.

The ``get_run`` closing workloads 2 and 3 is timed too: a write and the reads after it,
as a script does them (evstore writes every read model in each append's transaction).

Workloads 2-5 run the same code against both libraries, each workload in a fresh process
per library (``--worker``), the two one after the other: ``MlflowClient``, ``Metric``,
``Param`` and ``RunTag`` come from ``mlflow`` or from ``evstore`` (which mirrors them), and
nothing else differs. Each figure is a median of repeats. MLflow's telemetry is switched
off (that only makes MLflow faster).

Durability differs and is printed with the ratios: evstore's default is WAL with
``synchronous=NORMAL``; MLflow runs SQLite with its defaults, ``journal_mode=DELETE`` and
``synchronous=FULL``. The ``log_metric (evstore WAL+FULL)`` row shows evstore at FULL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

SEED_SCRIPT = """\
{import_line}

mlflow.set_experiment("v2_migration_demo")
with mlflow.start_run():
    mlflow.log_param("learning_rate", 0.01)
    mlflow.log_param("optimizer", "adam")
    mlflow.log_metric("accuracy", 0.95)
    mlflow.log_artifact("model_config.txt")
"""
IMPORTS = {"mlflow": "import mlflow", "evstore": "import evstore as mlflow"}

FULL = {"seed_repeats": 3, "log_metric": 5000, "log_metric_repeats": 1, "mlflow_log_metric_repeats": 1,
        "log_metric_rounds": 3,
        "batch_calls": 10, "batch_repeats": 3, "runs": 2000, "search_repeats": 11,
        "history_points": 100_000, "history_repeats": 3}  # fmt: skip
QUICK = {"seed_repeats": 1, "log_metric": 500, "log_metric_repeats": 1, "mlflow_log_metric_repeats": 1,
         "log_metric_rounds": 2,
         "batch_calls": 3, "batch_repeats": 2, "runs": 200, "search_repeats": 3,
         "history_points": 10_000, "history_repeats": 2}  # fmt: skip

#: (label, unit, target ratio) per workload; for rates the ratio is evstore / mlflow,
#: for times it is mlflow / evstore, so higher is always better for evstore.
WORKLOADS: dict[str, tuple[str, str, float]] = {
    "seed": ("seed script, whole process, fresh store", "s", 10.0),
    "log_metric": ("log_metric per call, {log_metric:,} calls", "points/s", 30.0),
    "log_batch": ("log_batch, 1,000 metrics per call", "points/s", 20.0),
    "search": ("search_runs, 2-clause filter, {runs:,} runs", "s", 10.0),
    "history": ("get_metric_history, {history_points:,} points", "s", 20.0),
}
SEARCH_FILTER = "metrics.m0 > 0.5 and params.optimizer = 'adam'"
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad")


def quiet_env() -> dict[str, str]:
    """The environment for child processes: no tracking URIs inherited, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVSTORE_", "MLFLOW_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", PYTHONWARNINGS="ignore")
    return env


# --- 1. the seed script, as whole processes ----------------------------------------------


def seed_once(library: str) -> float:
    """Seconds for ``python seed.py`` from start to exit, in a fresh temp dir."""
    with tempfile.TemporaryDirectory(prefix=f"bench-seed-{library}-") as tmp:
        with open(os.path.join(tmp, "seed.py"), "w") as f:
            f.write(SEED_SCRIPT.format(import_line=IMPORTS[library]))
        with open(os.path.join(tmp, "model_config.txt"), "w") as f:
            f.write("learning_rate: 0.01\noptimizer: adam\n")
        env = quiet_env()
        if library == "mlflow":
            env["MLFLOW_TRACKING_URI"] = "sqlite:///mlflow.db"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "seed.py"], cwd=tmp, env=env, check=False, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the {library} seed script failed:\n{done.stderr}")
        return elapsed


def bench_seed(sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Median whole-process time of the seed script for both libraries, alternating."""
    times: dict[str, list[float]] = {"mlflow": [], "evstore": []}
    for _ in range(sizes["seed_repeats"]):
        for library, measured in times.items():
            measured.append(seed_once(library))
    return {lib: {"value": statistics.median(t), "all": t} for lib, t in times.items()}


# --- 2-5. one worker process per library ------------------------------------------------


class Library:
    """The names a workload needs, from mlflow or from evstore."""

    def __init__(self, name: str, root: str) -> None:
        if name == "mlflow":
            import mlflow
            from mlflow.entities import Metric, Param, RunTag

            self.client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
        else:
            import evstore
            from evstore import Metric, Param, RunTag

            path = os.path.join(root, "evstore.db")
            if name == "evstore-full":
                _open_with_full_durability(path)
            self.client = evstore.MlflowClient(path)
        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag
        self.name = name

    def new_run(self, experiment: str) -> str:
        """A fresh run in a (new or existing) experiment; returns its id."""
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        return str(self.client.create_run(experiment_id).info.run_id)


def _open_with_full_durability(path: str) -> None:
    """Make the evstore Client's cached store for ``path`` one opened with synchronous=FULL."""
    from evstore.projection import open_store
    from evstore.tracking import service as client_module

    client_module._stores[os.path.abspath(path)] = open_store(path, durability="full")


def timed(profile: bool, work: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``work`` took (under cProfile when asked, printing the top to stderr)."""
    if not profile:
        started = time.perf_counter()
        result = work()
        return time.perf_counter() - started, result
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    result = profiler.runcall(work)
    elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    return elapsed, result


def work_log_metric(lib: Library, sizes: dict[str, int], profile: bool) -> dict[str, Any]:
    """Points/s of per-call log_metric (median of repeats, each a fresh run)."""
    repeats = sizes["mlflow_log_metric_repeats" if lib.name == "mlflow" else "log_metric_repeats"]
    count = sizes["log_metric"]
    rates = []
    for repeat in range(repeats):
        run_id = lib.new_run("log_metric")
        base = int(time.time() * 1000)
        for step in range(50):  # warm up caches and statements outside the timing
            lib.client.log_metric(run_id, "warmup", 0.0, base, step)

        def calls(run_id: str = run_id, base: int = base) -> None:
            log = lib.client.log_metric
            for step in range(count):
                log(run_id, "loss", 1.0 / (step + 1), base + step, step)
            lib.client.get_run(run_id)  # and a read of what was written

        seconds, _ = timed(profile and repeat == 0, calls)
        rates.append(count / seconds)
    return {"value": statistics.median(rates), "all": rates}


def work_log_batch(lib: Library, sizes: dict[str, int], profile: bool) -> dict[str, Any]:
    """Points/s of log_batch with 1,000 metrics per call (10 keys x 100 steps)."""
    rates = []
    for repeat in range(sizes["batch_repeats"]):
        run_id = lib.new_run("log_batch")
        base = int(time.time() * 1000)
        batches = [
            [lib.Metric(f"metric_{k}", random.random(), base + step, step)
             for step in range(call * 100, call * 100 + 100) for k in range(10)]
            for call in range(sizes["batch_calls"])
        ]  # fmt: skip
        lib.client.log_batch(run_id, metrics=[lib.Metric("warmup", 0.0, base, 0)])

        def calls(run_id: str = run_id, batches: list[Any] = batches) -> None:
            for batch in batches:
                lib.client.log_batch(run_id, metrics=batch)
            lib.client.get_run(run_id)  # and a read of what was written

        seconds, _ = timed(profile and repeat == 0, calls)
        rates.append(sum(len(b) for b in batches) / seconds)
    return {"value": statistics.median(rates), "all": rates}


def work_search(lib: Library, sizes: dict[str, int], profile: bool) -> dict[str, Any]:
    """Median seconds of search_runs with a two-clause filter over a store built by log_batch."""
    rng = random.Random(42)
    experiment_id = lib.client.create_experiment("search")
    started = time.perf_counter()
    for _ in range(sizes["runs"]):
        run_id = lib.client.create_run(experiment_id).info.run_id
        base = int(time.time() * 1000)
        lib.client.log_batch(
            run_id,
            metrics=[lib.Metric(f"m{k}", rng.random(), base, 0) for k in range(5)],
            params=[
                lib.Param("optimizer", rng.choice(OPTIMIZERS)),
                lib.Param("lr", str(rng.choice((0.1, 0.01, 0.001)))),
                lib.Param("batch_size", str(rng.choice((32, 64, 128)))),
                lib.Param("layers", str(rng.randint(1, 8))),
                lib.Param("seed", str(rng.randint(0, 10**6))),
            ],
        )
    lib.client.get_run(run_id)  # the store settled (evstore's metric tables caught up)
    build = time.perf_counter() - started
    times, found = [], 0
    for repeat in range(sizes["search_repeats"]):
        seconds, runs = timed(
            profile and repeat == 1,
            lambda: lib.client.search_runs([experiment_id], SEARCH_FILTER, max_results=1000),
        )
        times.append(seconds)
        found = len(runs)
    return {"value": statistics.median(times), "all": times, "matched": found, "build_s": build}


def work_history(lib: Library, sizes: dict[str, int], profile: bool) -> dict[str, Any]:
    """Median seconds of get_metric_history of one metric with many points."""
    run_id = lib.new_run("history")
    base = int(time.time() * 1000)
    for start in range(0, sizes["history_points"], 1000):
        lib.client.log_batch(
            run_id, metrics=[lib.Metric("loss", 1.0 / (s + 1), base + s, s) for s in range(start, start + 1000)]
        )
    lib.client.get_run(run_id)  # the store settled (evstore's metric tables caught up)
    times, points = [], 0
    for repeat in range(sizes["history_repeats"]):
        seconds, history = timed(profile and repeat == 1, lambda: lib.client.get_metric_history(run_id, "loss"))
        times.append(seconds)
        points = len(history)
    return {"value": statistics.median(times), "all": times, "points": points}


WORK = {"log_metric": work_log_metric, "log_batch": work_log_batch, "search": work_search,
        "history": work_history}  # fmt: skip


def worker(name: str, workloads: list[str], sizes: dict[str, int], profile: list[str]) -> None:
    """Run workloads against one library in this process; print the results as JSON."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as root:
        os.chdir(root)  # MLflow puts its default artifact root (./mlruns) in the cwd
        lib = Library(name, root)
        results = {w: WORK[w](lib, sizes, w in profile and name.startswith("evstore")) for w in workloads}
        os.chdir(os.path.dirname(root))
    print(json.dumps(results))


def run_worker(name: str, workloads: list[str], sizes: dict[str, int], profile: list[str]) -> dict[str, Any]:
    """Run ``--worker name`` as a fresh process; its results."""
    if not workloads:
        return {}
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--only", ",".join(workloads),
               "--sizes", json.dumps(sizes), "--profile", ",".join(profile)]  # fmt: skip
    done = subprocess.run(command, env=quiet_env(), stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {name} worker failed (exit {done.returncode})")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def merged(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One library's results of a workload over rounds: every repeat, and their median."""
    if len(rounds) == 1:
        return rounds[0]
    every = [value for found in rounds for value in found["all"]]
    return {**rounds[-1], "value": statistics.median(every), "all": every}


# --- the table ----------------------------------------------------------------------------


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"
    return f"{value:,.0f} {unit}"


def versions() -> tuple[str, str]:
    from importlib.metadata import version

    return version("evstore"), version("mlflow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    parser.add_argument("--quick", action="store_true", help="small sizes (figures not comparable)")
    parser.add_argument("--profile", default="", help="cProfile evstore in these workloads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = [w for w in args.only.split(",") if w]
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    profile = [w for w in args.profile.split(",") if w]
    sizes = json.loads(args.sizes) if args.sizes else (QUICK if args.quick else FULL)
    if args.worker:
        worker(args.worker, chosen, sizes, profile)
        return

    evstore_version, mlflow_version = versions()
    print(f"evstore {evstore_version} vs mlflow {mlflow_version} (SQLite store), measured in this run")
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs{'  [--quick: reduced sizes, not the issue targets]' if args.quick else ''}")  # fmt: skip
    print("durability: evstore WAL + synchronous=NORMAL (its default);"
          " mlflow journal_mode=DELETE + synchronous=FULL (SQLite defaults)")  # fmt: skip
    print(flush=True)

    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    if "seed" in chosen:
        results["seed"] = bench_seed(sizes)
    # Workload by workload, the two libraries one after the other (log_metric in rounds,
    # alternating): this machine's speed drifts over minutes, and a ratio of figures
    # measured minutes apart measured the drift as much as the libraries.
    for workload in (w for w in chosen if w != "seed"):
        rounds: dict[str, list[dict[str, Any]]] = {"mlflow": [], "evstore": []}
        for _ in range(sizes.get(f"{workload}_rounds", 1)):
            for name, found in rounds.items():
                found.append(run_worker(name, [workload], sizes, profile)[workload])
        results[workload] = {name: merged(found) for name, found in rounds.items()}
    full = run_worker("evstore-full", ["log_metric"], sizes, []) if "log_metric" in chosen else {}

    header = f"{'workload':46} {'mlflow':>16} {'evstore':>16} {'ratio':>8} {'target':>8}  result"
    print(header)
    print("-" * len(header))
    for workload in chosen:
        label, unit, target = WORKLOADS[workload]
        mlflow_value, evstore_value = results[workload]["mlflow"]["value"], results[workload]["evstore"]["value"]
        ratio = evstore_value / mlflow_value if unit != "s" else mlflow_value / evstore_value
        verdict = "PASS" if ratio >= target else "MISS"
        print(f"{label.format(**sizes):46} {fmt_value(mlflow_value, unit):>16} "
              f"{fmt_value(evstore_value, unit):>16} {ratio:>7.1f}x {'>= ' + format(target, 'g') + 'x':>8}  {verdict}")  # fmt: skip
        if workload == "log_metric" and full:
            full_value = full["log_metric"]["value"]
            print(f"{'  same, evstore at WAL + synchronous=FULL':46} {fmt_value(mlflow_value, unit):>16} "
                  f"{fmt_value(full_value, unit):>16} {full_value / mlflow_value:>7.1f}x {'':>8}  (info)")  # fmt: skip
    print("ratios: evstore at WAL + synchronous=NORMAL vs mlflow at journal_mode=DELETE +"
          " synchronous=FULL (not the same promise; the WAL+FULL row is evstore at FULL)")
    print()
    print("details (every repeat; ratios above use medians):")
    for workload in chosen:
        for name in ("mlflow", "evstore"):
            found = results[workload][name]
            extra = {k: v for k, v in found.items() if k not in ("value", "all")}
            shown = ", ".join(f"{v:.4g}" for v in found["all"])
            print(f"  {workload:10} {name:8} [{shown}] {json.dumps(extra) if extra else ''}")
    if "search" in results:
        matched = {results["search"][n]["matched"] for n in ("mlflow", "evstore")}
        print(f"  search filter: {SEARCH_FILTER!r}; runs matched: "
              f"{'same on both' if len(matched) == 1 else 'DIFFERENT'} ({', '.join(map(str, sorted(matched)))})")  # fmt: skip
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
