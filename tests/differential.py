"""The machinery of the MLflow differential test: the two servers, a seeded scenario of
``MlflowClient`` calls, a player that runs it against one server, and the normalizer and
differ that compare the two recordings. See test_mlflow_differential.py for what is
normalized and why."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx

BIN = Path(sys.executable).parent
#: An empty tracking database as ``mlflow server`` 3.17.2 makes it (see its make_fixture.py).
EMPTY_MLFLOW_DB = Path(__file__).parent / "fixtures" / "mlflow-server-empty" / "mlflow-3.17.2.db"
#: Times at or after this (ms) were stamped by a server or client clock, not by the scenario.
CLOCK_FLOOR_MS = 1_500_000_000_000
#: The shape of the run names MLflow makes up ("bold-cat-123"); another shape is compared as is.
GENERATED_RUN_NAME = re.compile(r"[a-z]+-[a-z]+-\d+")
#: Where the scenario's own start times begin: far below any clock reading.
SCENARIO_EPOCH_MS = 1_000_000


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A tracking server (``mlflow server`` or ``evstore server``) in a subprocess."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = directory / "evstore.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVSTORE_"))}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        # mlflow server's job runner (seven huey consumer processes, each importing mlflow)
        # serves none of the tracking calls compared here, and costs ~20 s of CPU at start.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        if kind == "mlflow":
            # The database a first start makes, made once by mlflow itself: its migrations
            # cost seconds of CPU that no compared call depends on.
            shutil.copyfile(EMPTY_MLFLOW_DB, directory / "mlflow.db")
            command = [
                str(BIN / "mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
                "--artifacts-destination", str(directory / "mlartifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            ]  # fmt: skip
        else:
            command = [
                str(BIN / "evstore"), "server", "--store", str(self.store),
                "--port", str(self.port), "--artifacts-root", str(directory / "artifacts"),
            ]  # fmt: skip
        self.log_path = directory / "server.log"
        with open(self.log_path, "wb") as log:
            # A session of its own: mlflow server runs its app in child processes, which
            # stop() ends with it.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until the server answers /health."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not answer: {self.log_path.read_text()}")

    def stop(self) -> None:
        """Stop the server: evstore's as it stops (closing its store), mlflow's at once
        after a short grace (its graceful shutdown takes seconds and keeps nothing we need)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15 if self.kind == "evstore" else 1)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the session's children too
        self.process.wait()


# --- the scenario: plain data, ids as references to what an earlier call created ----------


class Ref(NamedTuple):
    """The id of the experiment or run an earlier call bound to ``key``."""

    key: str


class M(NamedTuple):
    """A metric point, built into ``mlflow.entities.Metric`` when played."""

    key: str
    value: float
    timestamp: int
    step: int


class P(NamedTuple):
    """A param, built into ``mlflow.entities.Param`` when played."""

    key: str
    value: Any


class T(NamedTuple):
    """A run tag, built into ``mlflow.entities.RunTag`` when played."""

    key: str
    value: Any


@dataclass
class Op:
    """One client call: ``method`` on MlflowClient (``store.x``: the RestStore, one request
    as sent; ``x!``: a composite the player performs, such as paging through a search)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    bind: str | None = None

    def __str__(self) -> str:
        parts = [_short(a) for a in self.args]
        parts += [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(parts)})" + (f" -> {self.bind}" if self.bind else "")


def _short(value: Any) -> str:
    if isinstance(value, Ref):
        return value.key
    if isinstance(value, list) and len(value) > 4:
        return f"[{_short(value[0])}, ... {len(value)} items]"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:20] + f"...<{len(value)} chars>")
    if isinstance(value, M | P | T):
        return f"{type(value).__name__}({', '.join(_short(v) for v in value)})"
    return repr(value)


ALL, ACTIVE, DELETED = 3, 1, 2  # mlflow.entities.ViewType


def scenario(seed: int) -> list[Op]:
    """The seeded sequence of calls; names carry the seed so seeds share the two servers."""
    rng = random.Random(seed)
    p = f"s{seed}"
    ops: list[Op] = []
    add = ops.append

    # Experiments: create, duplicates, reads, rename, tags, delete/restore both ways.
    n_exp = rng.randint(3, 4)
    for i in range(n_exp):
        tags = {"team": rng.choice(["a", "b"]), "idx": str(i)} if rng.random() < 0.7 else None
        add(Op("create_experiment", (f"{p}-exp{i}",), {"tags": tags}, bind=f"e{i}"))
    add(Op("create_experiment", (f"{p}-exp0",)))
    add(Op("create_experiment", ("",)))
    for i in range(n_exp):
        add(Op("get_experiment", (Ref(f"e{i}"),)))
    add(Op("get_experiment", ("999999",)))
    add(Op("get_experiment", ("not-a-number",)))
    add(Op("get_experiment_by_name", (f"{p}-exp1",)))
    add(Op("get_experiment_by_name", (f"{p}-nope",)))
    add(Op("rename_experiment", (Ref("e1"), f"{p}-exp1-renamed")))
    add(Op("rename_experiment", (Ref("e1"), f"{p}-exp0")))
    add(Op("rename_experiment", (Ref("e1"), "")))
    add(Op("get_experiment_by_name", (f"{p}-exp1",)))
    add(Op("get_experiment_by_name", (f"{p}-exp1-renamed",)))
    add(Op("set_experiment_tag", (Ref("e0"), "note", "x" * rng.choice([10, 5000]))))
    add(Op("set_experiment_tag", (Ref("e0"), "note", "overwritten")))
    add(Op("set_experiment_tag", (Ref("e0"), "big", "v" * 8001)))
    add(Op("store.set_experiment_tag", (Ref("e0"), T("big", "v" * 8001))))
    add(Op("get_experiment", (Ref("e0"),)))
    last = f"e{n_exp - 1}"
    add(Op("delete_experiment", (Ref(last),)))
    add(Op("get_experiment", (Ref(last),)))
    add(Op("delete_experiment", (Ref(last),)))
    add(Op("set_experiment_tag", (Ref(last), "k", "v")))
    add(Op("rename_experiment", (Ref(last), f"{p}-deleted-renamed")))
    add(Op("create_run", (Ref(last),), {"start_time": SCENARIO_EPOCH_MS, "run_name": "in-deleted"}))
    add(Op("create_experiment", (f"{p}-exp{n_exp - 1}",)))
    add(Op("restore_experiment", (Ref("e0"),)))
    add(Op("restore_experiment", (Ref(last),)))
    add(Op("restore_experiment", (Ref(last),)))
    add(Op("delete_experiment", (Ref(last),)))
    add(Op("delete_experiment", ("0",) if rng.random() < 0.3 else ("999999",)))

    # Runs: several per experiment, named or not, nested through the parent tag.
    n_runs = rng.randint(5, 7)
    clock = SCENARIO_EPOCH_MS + seed * 100_000
    for r in range(n_runs):
        clock += rng.randint(1, 5000)
        kwargs: dict[str, Any] = {"start_time": clock}
        if rng.random() < 0.7:
            kwargs["run_name"] = rng.choice([f"run-{r}", "dup-name", "ünïcode run"])
        tags: dict[str, Any] = {"kind": rng.choice(["train", "eval", "Train"])}
        if r >= 2 and rng.random() < 0.5:
            tags["mlflow.parentRunId"] = Ref(f"r{rng.randrange(r)}")
        kwargs["tags"] = tags
        add(Op("create_run", (Ref(f"e{rng.randrange(n_exp - 1)}"),), kwargs, bind=f"r{r}"))
    runs = [f"r{r}" for r in range(n_runs)]
    add(Op("create_run", ("999999",), {"start_time": clock}))
    add(Op("get_run", (Ref("r0"),)))
    add(Op("get_run", ("0" * 32,)))
    add(Op("get_run", ("not-a-run",)))
    add(Op("update_run", (Ref("r0"),), {"status": "RUNNING", "name": "renamed-r0"}))
    add(Op("update_run", (Ref("r1"),), {"name": ""}))
    add(Op("update_run", (Ref("r1"),), {"status": "BOGUS"}))
    add(Op("set_terminated", (Ref("r1"),), {"status": "FAILED", "end_time": clock + 10}))
    add(Op("set_terminated", (Ref("r2"),), {"status": "KILLED", "end_time": clock + 20}))
    add(Op("set_terminated", (Ref("r2"),), {"status": "FINISHED", "end_time": clock + 30}))
    add(Op("update_run", (Ref("r2"),), {"status": "RUNNING"}))
    for key in runs[:3]:
        add(Op("get_run", (Ref(key),)))
    # Names the servers made up sort differently on each side: give those runs a name of
    # their own before any search orders by run_name.
    unnamed = [op.bind for op in ops if op.method == "create_run" and "run_name" not in op.kwargs]
    for key in filter(None, unnamed):
        add(Op("update_run", (Ref(key),), {"name": f"named-{key}"}))

    # Params: repeats with the same and a different value, repeats inside one batch.
    target = Ref(rng.choice(runs))
    add(Op("log_param", (target, "lr", 0.01)))
    add(Op("log_param", (target, "lr", 0.01)))
    add(Op("log_param", (target, "lr", "0.01")))
    add(Op("log_param", (target, "lr", 0.02)))
    add(Op("log_batch", (target,), {"params": [P("bs", 32), P("bs", 32)]}))
    add(Op("log_batch", (target,), {"params": [P("opt", "adam"), P("opt", "sgd")]}))
    add(Op("log_batch", (target,), {"params": [P("lr", 0.01), P("new", 1)]}))
    add(Op("log_batch", (target,), {"params": [P("lr", 0.5), P("new2", 1)]}))
    add(Op("log_param", (target, "long", "p" * 6000)))
    add(Op("log_param", (target, "longer", "p" * 6001)))
    add(Op("store.log_param", (target, P("longer2", "p" * 6001))))
    add(Op("log_param", (target, "k" * 250, "ok")))
    add(Op("store.log_param", (target, P("k" * 251, "too long"))))
    add(Op("store.log_param", (target, P("bad/../key", "x"))))
    add(Op("store.log_param", (target, P("", "x"))))
    add(Op("get_run", (target,)))

    # Metrics: odd values, negative steps and timestamps, identical points repeated.
    mrun = Ref(rng.choice(runs))
    ts = 1_000 * rng.randint(1, 9)
    add(Op("log_metric", (mrun, "odd", math.nan), {"timestamp": ts, "step": 0}))
    add(Op("log_metric", (mrun, "odd", math.inf), {"timestamp": ts, "step": 1}))
    add(Op("log_metric", (mrun, "odd", -math.inf), {"timestamp": ts, "step": 2}))
    add(Op("log_metric", (mrun, "odd", -0.0), {"timestamp": ts, "step": 3}))
    add(Op("log_metric", (mrun, "odd", 1e308), {"timestamp": ts, "step": 4}))
    add(Op("log_metric", (mrun, "neg", 1.5), {"timestamp": -5, "step": -3}))
    add(Op("log_metric", (mrun, "neg", 2.5), {"timestamp": -1, "step": -(2**40)}))
    add(Op("log_metric", (mrun, "neg", 3.5), {"timestamp": 0, "step": 2**40}))
    add(Op("log_metric", (mrun, "neg", 4.5), {"timestamp": 2**62, "step": 0}))
    point = M("twice", 0.25, ts, 7)
    add(Op("log_batch", (mrun,), {"metrics": [point, point]}))
    add(Op("log_batch", (mrun,), {"metrics": [point]}))
    add(Op("log_metric", (mrun, "twice", 0.25), {"timestamp": ts, "step": 7}))
    add(Op("log_metric", (mrun, "twice", 0.75), {"timestamp": ts, "step": 7}))
    add(Op("log_metric", (mrun, "latest", 1.0), {"timestamp": 50, "step": 5}))
    add(Op("log_metric", (mrun, "latest", 2.0), {"timestamp": 99, "step": 5}))
    add(Op("log_metric", (mrun, "latest", 3.0), {"timestamp": 10_000, "step": 4}))
    add(Op("log_metric", (mrun, "latest", math.nan), {"timestamp": 99, "step": 5}))
    add(Op("store.log_metric", (mrun, M("m" * 251, 1.0, ts, 0))))
    add(Op("store.log_metric", (mrun, M("", 1.0, ts, 0))))
    for key in ["odd", "neg", "twice", "latest", "never-logged"]:
        add(Op("get_metric_history", (mrun, key)))
    add(Op("get_metric_history", ("0" * 32, "odd")))
    add(Op("get_run", (mrun,)))

    # Batches at and over the limits: one request each through the RestStore; the client
    # splits what it can.
    brun = Ref(rng.choice(runs))
    metrics_1000 = [M(f"b{i % 7}", float(i), ts + i, i) for i in range(1000)]
    add(Op("store.log_batch", (brun,), {"metrics": metrics_1000, "params": [], "tags": []}))
    add(Op("store.log_batch", (brun,), {
        "metrics": [*metrics_1000, M("b0", 0.0, ts, 1000)], "params": [], "tags": []}))
    params_100 = [P(f"bp{i}", i) for i in range(100)]
    add(Op("store.log_batch", (brun,), {"metrics": [], "params": params_100, "tags": []}))
    add(Op("store.log_batch", (brun,), {
        "metrics": [], "params": [*params_100, P("bp100", 100)], "tags": []}))
    tags_100 = [T(f"bt{i}", i) for i in range(100)]
    add(Op("store.log_batch", (brun,), {"metrics": [], "params": [], "tags": tags_100}))
    add(Op("store.log_batch", (brun,), {
        "metrics": [], "params": [], "tags": [*tags_100, T("bt100", 1)]}))
    mixed = {"metrics": metrics_1000[:800], "params": params_100, "tags": tags_100}
    add(Op("store.log_batch", (brun,), mixed))
    add(Op("store.log_batch", (brun,), {**mixed, "metrics": metrics_1000[:801]}))
    add(Op("log_batch", (brun,), {"params": [P(f"cp{i}", i) for i in range(150)]}))
    add(Op("log_batch", (brun,), {"metrics": [M("c", float(i), ts, i) for i in range(1500)]}))
    add(Op("store.log_batch", (brun,), {"metrics": [], "params": [], "tags": []}))
    add(Op("get_metric_history", (brun, "b3")))
    add(Op("get_run", (brun,)))

    # Tags: set, overwrite, delete, delete again, lengths at and over the limits.
    trun = Ref(rng.choice(runs))
    add(Op("set_tag", (trun, "t1", "v1")))
    add(Op("set_tag", (trun, "t1", "v2")))
    add(Op("set_tag", (trun, "t2", "")))
    add(Op("delete_tag", (trun, "t1")))
    add(Op("delete_tag", (trun, "t1")))
    add(Op("delete_tag", (trun, "never-set")))
    add(Op("set_tag", (trun, "long", "t" * 8000)))
    add(Op("set_tag", (trun, "longer", "t" * 8001)))
    add(Op("store.set_tag", (trun, T("longer2", "t" * 8001))))
    add(Op("store.set_tag", (trun, T("k" * 251, "v"))))
    add(Op("set_tag", (trun, "mlflow.runName", "via-tag")))
    add(Op("get_run", (trun,)))

    # Deleted runs: writes refused, reads allowed, delete/restore twice.
    drun = Ref(runs[-1])
    add(Op("delete_run", (drun,)))
    add(Op("delete_run", (drun,)))
    add(Op("get_run", (drun,)))
    add(Op("log_metric", (drun, "after", 1.0), {"timestamp": ts, "step": 0}))
    add(Op("log_param", (drun, "after", 1)))
    add(Op("set_tag", (drun, "after", "x")))
    add(Op("delete_tag", (drun, "kind")))
    add(Op("log_batch", (drun,), {"params": [P("after", 2)]}))
    add(Op("update_run", (drun,), {"status": "FINISHED"}))
    add(Op("set_terminated", (drun,), {"status": "FAILED", "end_time": clock + 40}))
    add(Op("restore_run", (drun,)))
    add(Op("restore_run", (drun,)))
    add(Op("restore_run", ("0" * 32,)))
    add(Op("delete_run", ("0" * 32,)))
    add(Op("delete_run", (Ref(runs[-2]),)))

    # Runs in a deleted experiment.
    add(Op("delete_experiment", (Ref("e0"),)))
    e0_runs = Ref(rng.choice(runs))
    add(Op("log_metric", (e0_runs, "in-deleted-exp", 1.0), {"timestamp": ts, "step": 0}))
    add(Op("get_run", (e0_runs,)))
    add(Op("restore_experiment", (Ref("e0"),)))

    # Search: experiments, then runs with every kind of filter, order and paging.
    names = f"name LIKE '{p}-%'"
    for view in (ACTIVE, DELETED, ALL):
        add(Op("search_experiments!", (), {"view_type": view, "filter_string": names,
                                            "max_results": rng.choice([1, 2, 1000])}))
    for filter_string, order_by in [
        (f"name = '{p}-exp0'", None),
        (f"name ILIKE '{p.upper()}-EXP%'", ["name DESC"]),
        (f"{names} AND tags.team = 'a'", ["name ASC"]),
        (f"{names} AND tags.team != 'a'", ["creation_time DESC"]),
        (f"{names} AND tags.`idx` LIKE '%'", ["last_update_time ASC", "name"]),
        ("name = 'a' AND", None),
        (names, ["bogus ASC"]),
    ]:
        add(Op("search_experiments!", (), {"view_type": ALL, "filter_string": filter_string,
                                            "order_by": order_by, "max_results": 2}))
    exps = [Ref(f"e{i}") for i in range(n_exp)]
    run_filters = [
        "",
        "metrics.odd > 0",
        "metrics.latest >= 1",
        "metrics.twice = 0.25",
        "metrics.b3 < 1e9",
        "params.lr = '0.01'",
        "params.opt != 'adam'",
        "params.bs LIKE '3%'",
        "tags.kind = 'train'",
        "tags.kind ILIKE 'TRAIN'",
        "tags.kind LIKE 'T%'",
        "tags.`mlflow.parentRunId` != ''",
        "attributes.status = 'FAILED'",
        "attributes.status IN ('FINISHED', 'KILLED')",
        "attributes.run_name LIKE 'run-%'",
        "run_name = 'dup-name'",
        "attributes.start_time > 0",
        f"attributes.start_time >= {clock - 3000}",
        "metrics.neg <= -1 OR params.x = '1'",
        "params.missing = '1'",
        "metrics.odd > 'x'",
        "bogus.x = 1",
    ]
    orders = [None, ["metrics.odd DESC"], ["params.lr ASC"], ["tags.kind DESC"],
              ["attributes.start_time ASC"], ["attributes.run_name DESC"],
              ["metrics.b3 ASC", "start_time DESC"], ["end_time DESC"], ["bogus"]]
    for filter_string in run_filters:
        add(Op("search_runs!", (exps,), {"filter_string": filter_string,
                                         "run_view_type": rng.choice([ACTIVE, DELETED, ALL]),
                                         "order_by": rng.choice(orders),
                                         "max_results": rng.choice([1, 2, 3, 1000])}))
    for order_by in orders:
        add(Op("search_runs!", (exps,), {"run_view_type": ALL, "order_by": order_by,
                                         "max_results": 2}))
    add(Op("search_runs!", ([Ref("e0"), "999999"],), {"max_results": 5}))
    add(Op("search_runs", (exps,), {"max_results": 50001}))
    add(Op("search_runs", (exps,), {"page_token": "not-a-token"}))

    # Artifacts: files in subdirectories, empty files, odd and long names, lists, downloads.
    arun = Ref(rng.choice(runs))
    add(Op("log_artifact!", (arun, "a.txt", b"alpha\n"), {"artifact_path": None}))
    add(Op("log_artifact!", (arun, "b.bin", bytes(range(256)) * rng.randint(1, 4)),
           {"artifact_path": "sub"}))
    add(Op("log_artifact!", (arun, "empty.txt", b""), {"artifact_path": "sub/deeper"}))
    add(Op("log_artifact!", (arun, "odd name ;=&.txt", b"odd"), {"artifact_path": "..;/x"}))
    add(Op("log_artifact!", (arun, "c.txt", b"c"), {"artifact_path": "../escape"}))
    add(Op("log_artifact!", (arun, "n" * 200, b"long name"), {"artifact_path": "long"}))
    add(Op("log_artifact!", (arun, "a.txt", b"alpha again\n"), {"artifact_path": None}))
    for path in [None, "sub", "sub/deeper", "..;", "..;/x", "long", "missing", "a.txt"]:
        add(Op("list_artifacts", (arun,), {"path": path}))
    for path in ["a.txt", "sub", "sub/b.bin", "sub/deeper/empty.txt", "..;/x", "missing.txt",
                 "long/" + "n" * 200, ""]:
        add(Op("download_artifacts!", (arun, path)))
    # Last, as a failed upload leaves MLflow's connection unusable for the next request.
    add(Op("log_artifact!", (arun, "d.txt", b"d"), {"artifact_path": "x" * 300}))
    add(Op("list_artifacts", (arun,), {"path": None}))
    add(Op("list_artifacts", (Ref(runs[-2]),)))
    add(Op("log_artifact!", (Ref(runs[-2]), "deleted.txt", b"x"), {"artifact_path": None}))

    # A random tail: the same menu of small calls in a seeded order.
    menu = [
        lambda: Op("log_metric", (Ref(rng.choice(runs)), rng.choice("xyz"), rng.choice(
            [0.0, 1.0, -1.0, math.nan, math.inf, 0.1])), {"timestamp": rng.randint(-5, 5),
                                                            "step": rng.randint(-2, 2)}),
        lambda: Op("log_param", (Ref(rng.choice(runs)), rng.choice("pq"), rng.choice("12"))),
        lambda: Op("set_tag", (Ref(rng.choice(runs)), rng.choice("uv"), rng.choice("12"))),
        lambda: Op("delete_tag", (Ref(rng.choice(runs)), rng.choice("uv"))),
        lambda: Op("delete_run", (Ref(rng.choice(runs)),)),
        lambda: Op("restore_run", (Ref(rng.choice(runs)),)),
        lambda: Op("set_terminated", (Ref(rng.choice(runs)),), {
            "status": rng.choice(["FINISHED", "FAILED", "KILLED"]), "end_time": clock + 50}),
        lambda: Op("get_run", (Ref(rng.choice(runs)),)),
        lambda: Op("get_metric_history", (Ref(rng.choice(runs)), rng.choice("xyz"))),
        lambda: Op("search_runs!", (exps,), {"filter_string": rng.choice(run_filters[:19]),
                                             "run_view_type": rng.choice([ACTIVE, ALL]),
                                             "order_by": rng.choice(orders[:-1]),
                                             "max_results": rng.choice([1, 3])}),
    ]
    for _ in range(20):
        add(rng.choice(menu)())
    for key in runs:
        add(Op("get_run", (Ref(key),)))
    return ops


# --- playing a scenario against one server -------------------------------------------------


class Player:
    """Plays scenarios against one server through a real MlflowClient; keeps the ids it saw."""

    def __init__(self, url: str, workdir: Path) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=url)
        self.store = self.client._tracking_client.store
        self.workdir = workdir
        #: real id -> the scenario key that created it ("<s3:e0>", "<s3:r2>")
        self.experiment_names: dict[str, str] = {"0": "<default-experiment>"}
        self.run_names: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.generated_run_names: dict[str, str] = {}
        self.counter = 0

    def play(self, seed: int, ops: list[Op]) -> list[Any]:
        """Each call's recorded outcome, in order."""
        return [self.call(seed, op) for op in ops]

    def resolve(self, seed: int, value: Any) -> Any:
        from mlflow.entities import Metric, Param, RunTag

        if isinstance(value, Ref):
            return self.ids.get(f"s{seed}:{value.key}", f"unbound-{value.key}")
        if isinstance(value, M):
            return Metric(value.key, value.value, value.timestamp, value.step)
        if isinstance(value, P):
            return Param(value.key, str(value.value))
        if isinstance(value, T):
            return RunTag(value.key, str(value.value))
        if isinstance(value, list):
            return [self.resolve(seed, v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(seed, v) for k, v in value.items()}
        return value

    def call(self, seed: int, op: Op) -> Any:
        """Run one call; its plain return value, or {"error": code} for an MlflowException."""
        from mlflow.exceptions import MlflowException

        args = [self.resolve(seed, a) for a in op.args]
        kwargs = {k: self.resolve(seed, v) for k, v in op.kwargs.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = self._dispatch(op.method, args, kwargs)
        except MlflowException as e:
            _drop_connections()
            return {"error": e.error_code, "message": str(e)[:300]}
        except Exception as e:  # noqa: BLE001 (a client-side failure is an outcome too)
            _drop_connections()
            outcome = {"raised": type(e).__name__, "message": str(e)[:300]}
            response = getattr(e, "response", None)
            if response is not None:  # the artifact endpoints' requests.HTTPError
                outcome["status"] = response.status_code
                outcome["error"] = _error_code(response)
            return outcome
        if op.bind:
            if isinstance(result, str):
                self.experiment_names[result] = f"<s{seed}:{op.bind}>"
                real = result
            else:
                real = result.info.run_id
                self.run_names[real] = f"<s{seed}:{op.bind}>"
            self.ids[f"s{seed}:{op.bind}"] = real
            generated = result.info.run_name if op.method == "create_run" else ""
            if "run_name" not in op.kwargs and GENERATED_RUN_NAME.fullmatch(generated):
                self.generated_run_names[generated] = f"<name of {op.bind}>"
        return plain(result)

    def _dispatch(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if method.startswith("store."):
            return getattr(self.store, method[len("store."):])(*args, **kwargs)
        if method == "search_experiments!":
            return self._pages(self.client.search_experiments, [], kwargs)
        if method == "search_runs!":
            return self._pages(self.client.search_runs, args, kwargs)
        if method == "log_artifact!":
            run_id, name, content = args
            self.counter += 1
            folder = self.workdir / f"up{self.counter}"
            folder.mkdir(parents=True)
            (folder / name).write_bytes(content)
            return self.client.log_artifact(run_id, str(folder / name), **kwargs)
        if method == "download_artifacts!":
            self.counter += 1
            target = self.workdir / f"down{self.counter}"
            target.mkdir(parents=True)
            local = Path(self.client.download_artifacts(*args, dst_path=str(target)))
            return {"relative": str(local.relative_to(target)), "tree": tree(local)}
        return getattr(self.client, method)(*args, **kwargs)

    def _pages(self, search: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        pages, token = [], None
        while True:
            page = search(*args, **kwargs, page_token=token)
            token = page.token
            pages.append({"items": [plain(item) for item in page], "more": bool(token)})
            if not token or len(pages) > 50:
                return pages

    def normalize(self, value: Any, key: str = "") -> Any:
        """The outcome with this server's ids, generated names and clock readings replaced."""
        if isinstance(value, dict):
            return {k: self.normalize(v, k) for k, v in value.items() if k != "message"}
        if isinstance(value, list):
            return [self.normalize(v, key) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        if isinstance(value, int) and not isinstance(value, bool) and key.endswith("time"):
            return "<clock>" if value >= CLOCK_FLOOR_MS else value
        if key == "user_id" and isinstance(value, str):
            return "<user>"
        if isinstance(value, str):
            return self._normalize_text(value, key)
        return value

    def _normalize_text(self, text: str, key: str) -> str:
        if key == "experiment_id":
            return self.experiment_names.get(text, text)
        if key in ("artifact_uri", "artifact_location"):
            path = text.split("://", 1)[1].split("/", 1)[1] if "://" in text else text
            path = path.removeprefix("mlflow-artifacts:")
            path = path.removeprefix("api/2.0/mlflow-artifacts/artifacts")
            parts = [part for part in path.split("/") if part]
            if parts:
                parts[0] = self.experiment_names.get(parts[0], parts[0])
            text = "<artifacts>/" + "/".join(parts)
        if text in self.generated_run_names:
            return self.generated_run_names[text]
        for real, name in self.run_names.items():
            if real in text:
                text = text.replace(real, name)
        return text


def _drop_connections() -> None:
    """Forget the client's pooled connections: a server that failed mid-upload (MLflow on a
    too-long file name) leaves its connection unusable, and the next call would fail too."""
    from mlflow.utils import request_utils

    request_utils._cached_get_request_session.cache_clear()


def _error_code(response: Any) -> str | None:
    try:
        return str(response.json().get("error_code"))
    except ValueError:
        return None


def plain(value: Any) -> Any:
    """MLflow entities as plain dicts and lists (the PagedList's token as presence only)."""
    from mlflow.entities._mlflow_object import _MlflowObject

    if isinstance(value, _MlflowObject):
        return {k: plain(getattr(value, k)) for k in value._properties()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        items = [plain(v) for v in value]
        token = getattr(value, "token", None)
        return {"items": items, "more": bool(token)} if hasattr(value, "token") else items
    if hasattr(value, "run_id") and hasattr(value, "to_dictionary"):  # RunOperations etc.
        return repr(type(value).__name__)
    return value


def tree(path: Path) -> Any:
    """A downloaded file's bytes (as text when it is text) or a directory's tree."""
    if path.is_dir():
        return {child.name: tree(child) for child in sorted(path.iterdir())}
    data = path.read_bytes()
    try:
        return data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes, sum {sum(data)}>"


def differences(
    ops: list[Op], left: list[Any], right: list[Any]
) -> Iterator[tuple[int, Op, Any, Any]]:
    """(index, op, mlflow's outcome, evstore's outcome) where the normalized outcomes differ."""
    for index, (op, a, b) in enumerate(zip(ops, left, right, strict=True)):
        if a != b:
            yield index, op, a, b


def where_different(left: Any, right: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, left part, right part) for the smallest parts in which two outcomes differ."""
    if isinstance(left, dict) and isinstance(right, dict) and left.keys() == right.keys():
        for key in left:
            yield from where_different(left[key], right[key], f"{path}.{compact(key)}")
    elif isinstance(left, dict) and isinstance(right, dict) and "error" not in left | right:
        for key in sorted(left.keys() | right.keys()):
            yield from where_different(left.get(key, "<absent>"), right.get(key, "<absent>"),
                                       f"{path}.{compact(key)}")
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            yield from where_different(a, b, f"{path}[{i}]")
    elif left != right:
        yield path or ".", left, right


def compact(value: Any) -> Any:
    """Runs, experiments and metric points of an outcome shown by their ids or coordinates,
    long runs of one character as ``<'p' x 6001>``."""
    if isinstance(value, str) and len(value) > 40 and len(set(value)) == 1:
        return f"<{value[0]!r} x {len(value)}>"
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, dict):
        if "info" in value and isinstance(value["info"], dict) and "run_id" in value["info"]:
            return value["info"]["run_id"]
        if "experiment_id" in value and "lifecycle_stage" in value:
            return value["experiment_id"]
        if {"key", "value", "step", "timestamp"} <= value.keys():
            return [value["step"], value["timestamp"], value["value"]]
        return {str(compact(k)): compact(v) for k, v in value.items()}
    return value
