"""The real ``mlflow`` client (3.17.2) against ``evstore server``, unchanged.

Every mlflow script runs in its own subprocess with only ``MLFLOW_TRACKING_URI`` pointing at
the server (and MLflow's telemetry off, so the tests make no outside calls). Afterwards
the store file is opened with ``evstore.Client`` and verified: what the client logged is
what the log holds, byte for byte for artifacts.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import close_cached_stores
from forked import run_python
from servers import ThreadServer

import evstore
from evstore.integrity import verify

SEED_SCRIPT = """\
import mlflow

mlflow.set_experiment("v2_migration_demo")
with mlflow.start_run():
    mlflow.log_param("learning_rate", 0.01)
    mlflow.log_param("optimizer", "adam")
    mlflow.log_metric("accuracy", 0.95)
    mlflow.log_artifact("model_config.txt")
"""

CONFIG_BYTES = b"lr=0.01\noptimizer=adam\n"

# The calls of the 3.17 capture, plus the client's error mapping and an artifact round trip.
CAPTURE_SCRIPT = """\
import json
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

out = {}
mlflow.set_experiment("v2_migration_demo")
with mlflow.start_run() as parent:
    mlflow.log_param("learning_rate", 0.01)
    mlflow.log_param("optimizer", "adam")
    mlflow.log_metric("accuracy", 0.95)
    mlflow.log_artifact("model_config.txt")
    for step, loss in enumerate([1.0, 0.5, 1 / 3]):
        mlflow.log_metric("loss", loss, step=step)
    mlflow.log_metrics({"precision": 0.9, "recall": 0.8}, step=3)
    mlflow.log_params({"batch_size": 32, "epochs": 10})
    mlflow.set_tag("team", "evstore")
    with mlflow.start_run(nested=True) as child:
        mlflow.log_metric("child_metric", 1.5)
client = MlflowClient()
found = mlflow.search_runs(
    experiment_ids=[parent.info.experiment_id],
    filter_string="metrics.accuracy > 0.9 and params.optimizer = 'adam'",
    output_format="list",
)
out["found"] = [r.info.run_id for r in found]
out["loss_history"] = [[m.step, m.value] for m in client.get_metric_history(parent.info.run_id, "loss")]
run = mlflow.get_run(parent.info.run_id)
out["parent"] = {"params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags,
                 "status": run.info.status, "artifact_uri": run.info.artifact_uri}
out["child_parent_tag"] = client.get_run(child.info.run_id).data.tags.get("mlflow.parentRunId")
failed = mlflow.start_run()
mlflow.log_metric("x", 1.0)
mlflow.end_run(status="FAILED")
out["failed_status"] = client.get_run(failed.info.run_id).info.status
client.delete_run(failed.info.run_id)
out["failed_stage"] = client.get_run(failed.info.run_id).info.lifecycle_stage
local = mlflow.artifacts.download_artifacts(
    run_id=parent.info.run_id, artifact_path="model_config.txt", dst_path="downloaded"
)
out["downloaded"] = open(local, "rb").read().decode()
out["listed"] = [[f.path, f.is_dir, f.file_size] for f in client.list_artifacts(parent.info.run_id)]
try:
    client.get_run("0" * 32)
except MlflowException as e:
    out["missing_run"] = e.error_code
# 101 params: the mlflow client splits them into batches the server's limits accept.
client.log_batch(child.info.run_id, params=[Param(f"p{i}", str(i)) for i in range(101)])
out["ids"] = [parent.info.run_id, child.info.run_id, failed.info.run_id]
print("RESULT " + json.dumps(out))
"""

WORKER_SCRIPT = """\
import sys, threading
from mlflow import MlflowClient

count, jobs = int(sys.argv[1]), [job.split(":") for job in sys.argv[2:]]
start = threading.Barrier(len(jobs) + 1)
failed = []

def log(run_id, key):
    client = MlflowClient()  # a client of its own per thread
    start.wait()
    try:
        for step in range(count):
            client.log_metric(run_id, key, float(step), step=step)
    except BaseException as e:
        failed.append(repr(e))

threads = [threading.Thread(target=log, args=job) for job in jobs]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.readline()  # both processes start logging together, once both have imported mlflow
start.wait()
for thread in threads:
    thread.join()
sys.exit("; ".join(failed) or None)
"""


def log_together(groups: list[tuple[Any, list[tuple[str, str]]]], count: int, cwd: Path) -> None:
    """Log ``count`` points to each (run, key) of each group, a thread per key and a process
    per group talking to its server; all start together once every process is ready."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(count), *(f"{r}:{k}" for r, k in jobs)],
            cwd=cwd, env=mlflow_env(server), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for server, jobs in groups
    ]  # fmt: skip
    try:
        for worker in workers:
            assert worker.stdout is not None
            ready, _, _ = select.select([worker.stdout], [], [], 300)
            assert ready and worker.stdout.readline() == b"ready\n", "a worker did not start within 300 s"
        for worker in workers:
            worker.stdin.write(b"go\n")  # type: ignore[union-attr]
            worker.stdin.flush()  # type: ignore[union-attr]
        for worker in workers:
            _, stderr = worker.communicate(timeout=600)
            assert worker.returncode == 0, stderr.decode()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()


def mlflow_env(server: ThreadServer) -> dict[str, str]:
    """The environment of an mlflow script: only the tracking URI points at the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = server.url
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # a failing request fails the script at once
    return env


def run_mlflow(server: ThreadServer, script: str, cwd: Path, *args: str) -> str:
    """Run an mlflow script in a subprocess; returns its stdout."""
    (cwd / "model_config.txt").write_bytes(CONFIG_BYTES)
    done = run_python(script, *args, cwd=cwd, env=mlflow_env(server), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def local_client(server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """After the test body: an evstore.Client on the server's store file (server stopped)."""
    opened: list[Any] = []

    def open_store() -> Any:
        server.stop()
        monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(server.artifacts))
        opened.append(evstore.Client(str(server.store)))
        return opened[0]

    yield open_store
    close_cached_stores(server.store.parent)


def test_seed_script_unchanged(server: ThreadServer, local_client: Any, tmp_path: Path) -> None:
    run_mlflow(server, SEED_SCRIPT, tmp_path)
    client = local_client()
    experiment = client.get_experiment_by_name("v2_migration_demo")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "0.01", "optimizer": "adam"}
    assert run.data.metrics == {"accuracy": 0.95}
    assert run.data.tags["mlflow.source.type"] == "LOCAL"
    assert run.data.tags["mlflow.runName"] == run.info.run_name
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment.experiment_id}/{run.info.run_id}/artifacts"
    assert [(f.path, f.file_size) for f in client.list_artifacts(run.info.run_id)] == [
        ("model_config.txt", len(CONFIG_BYTES))
    ]
    assert client.read_artifact(run.info.run_id, "model_config.txt") == CONFIG_BYTES
    report = verify(client.store)
    assert report.ok and report.head_position == client.store.head_position()


def test_capture_calls(server: ThreadServer, local_client: Any, tmp_path: Path) -> None:
    stdout = run_mlflow(server, CAPTURE_SCRIPT, tmp_path)
    out = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    parent_id, child_id, failed_id = out["ids"]

    # What the mlflow client saw.
    assert out["found"] == [parent_id]
    assert out["loss_history"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    assert out["parent"]["params"] == {"learning_rate": "0.01", "optimizer": "adam", "batch_size": "32", "epochs": "10"}
    assert out["parent"]["metrics"] == {"accuracy": 0.95, "loss": 1 / 3, "precision": 0.9, "recall": 0.8}
    assert out["parent"]["tags"]["team"] == "evstore" and out["parent"]["status"] == "FINISHED"
    assert out["parent"]["artifact_uri"].startswith("mlflow-artifacts:/")
    assert out["child_parent_tag"] == parent_id
    assert (out["failed_status"], out["failed_stage"]) == ("FAILED", "deleted")
    assert out["downloaded"] == CONFIG_BYTES.decode()
    assert out["listed"] == [["model_config.txt", False, len(CONFIG_BYTES)]]
    assert out["missing_run"] == "RESOURCE_DOES_NOT_EXIST"

    # What the store holds, read by evstore itself.
    client = local_client()
    parent = client.get_run(parent_id)
    assert parent.data.params == out["parent"]["params"]
    assert parent.data.metrics == out["parent"]["metrics"]
    assert [(m.step, m.value) for m in client.get_metric_history(parent_id, "loss")] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert [(m.key, m.step) for m in client.get_metric_history(parent_id, "precision")] == [("precision", 3)]
    child = client.get_run(child_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id and child.data.metrics == {"child_metric": 1.5}
    assert child.data.params == {f"p{i}": str(i) for i in range(101)}
    assert child.info.status == "FINISHED"
    failed = client.get_run(failed_id)
    assert (failed.info.status, failed.info.lifecycle_stage) == ("FAILED", "deleted")
    assert client.read_artifact(parent_id, "model_config.txt") == CONFIG_BYTES
    assert verify(client.store).ok


def test_eight_clients_log_concurrently(server: ThreadServer, local_client: Any, tmp_path: Path) -> None:
    # Eight clients in two processes: four share one run (two from each process), four log
    # to runs of their own; 8 x 200 log_metric calls, all started together.
    count = 200
    with httpx.Client(base_url=server.url) as http:
        experiment_id = http.post("/api/2.0/mlflow/experiments/create", json={"name": "load"}).json()["experiment_id"]
        runs = [
            http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
            for _ in range(5)
        ]
        head_before = http.get("/api/evstore/info").json()["head_position"]
    assignments = [(runs[0], f"shared{i}") for i in range(4)] + [(runs[1 + i], "own") for i in range(4)]
    (tmp_path / "model_config.txt").write_bytes(CONFIG_BYTES)
    log_together([(server, assignments[half::2]) for half in (0, 1)], count, tmp_path)

    client = local_client()
    for run_id, key in assignments:
        history = client.get_metric_history(run_id, key)
        assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(count)], (run_id, key)
    assert client.store.head_position() == head_before + 8 * count
    assert verify(client.store).ok
