"""``evstore server`` on PostgreSQL, with the real ``mlflow`` client: one server, then
several server processes (``--workers`` and separate servers) on one database.

Afterwards the database is read with ``evstore.Client`` and verified: nothing the clients
logged is lost or stored twice, and the hash chain holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PostgresDatabase, close_cached_stores
from servers import ServerProcess
from test_server_mlflow_client import (
    CAPTURE_SCRIPT,
    CONFIG_BYTES,
    log_together,
    run_mlflow,
)
from typer.testing import CliRunner

import evstore
from evstore.cli import app
from evstore.integrity import verify


@pytest.fixture
def store_uri(postgres_database: PostgresDatabase) -> str:
    """A new, empty PostgreSQL store."""
    return postgres_database.new_store_uri()


@pytest.fixture
def evstore_client(store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Makes an evstore.Client on the database (after the servers are stopped)."""
    monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    yield lambda: evstore.Client(store_uri)
    close_cached_stores(store_uri)


def test_the_mlflow_client_against_a_server_on_postgresql(
    store_uri: str, evstore_client: Any, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path, store=store_uri)
    try:
        stdout = run_mlflow(server, CAPTURE_SCRIPT, tmp_path)
    finally:
        server.stop()
    out = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    parent_id, child_id, failed_id = out["ids"]
    # What the mlflow client saw.
    assert out["found"] == [parent_id]
    assert out["loss_history"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    assert out["parent"]["metrics"] == {"accuracy": 0.95, "loss": 1 / 3, "precision": 0.9, "recall": 0.8}
    assert out["child_parent_tag"] == parent_id
    assert (out["failed_status"], out["failed_stage"]) == ("FAILED", "deleted")
    assert out["downloaded"] == CONFIG_BYTES.decode()
    assert out["missing_run"] == "RESOURCE_DOES_NOT_EXIST"
    # What the database holds, read by evstore itself.
    client = evstore_client()
    parent = client.get_run(parent_id)
    assert parent.data.params == out["parent"]["params"]
    assert parent.data.metrics == out["parent"]["metrics"]
    assert client.get_run(child_id).data.params == {f"p{i}": str(i) for i in range(101)}
    assert client.get_run(failed_id).info.lifecycle_stage == "deleted"
    assert verify(client.store).ok


def test_two_servers_one_with_two_workers_share_one_database(
    store_uri: str, evstore_client: Any, tmp_path: Path
) -> None:
    # Server A runs two worker processes, server B one: three processes append to one log.
    count = 60
    servers = [ServerProcess(tmp_path / "a", "--workers", "2", store=store_uri),
               ServerProcess(tmp_path / "b", store=store_uri)]  # fmt: skip
    try:
        with httpx.Client(base_url=servers[0].url) as http:
            experiment_id = http.post(
                "/api/2.0/mlflow/experiments/create", json={"name": "shared"}
            ).json()["experiment_id"]
            runs = [
                http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id})
                .json()["run"]["info"]["run_id"]
                for _ in range(3)
            ]
            head_before = http.get("/api/evstore/info").json()["head_position"]
        # Each server sees the other's writes at once: they read one database.
        with httpx.Client(base_url=servers[1].url) as http:
            found = http.get("/api/2.0/mlflow/runs/get", params={"run_id": runs[0]})
            assert found.status_code == 200, found.text
        # Four mlflow clients, two per server: two share a run, two log to runs of their own.
        assignments = [(runs[0], "shared0", 0), (runs[0], "shared1", 1),
                       (runs[1], "own", 0), (runs[2], "own", 1)]  # fmt: skip
        (tmp_path / "model_config.txt").write_bytes(CONFIG_BYTES)
        log_together([(server, [(r, k) for r, k, which in assignments if which == i])
                      for i, server in enumerate(servers)], count, tmp_path)  # fmt: skip
    finally:
        for server in servers:
            server.stop()

    client = evstore_client()
    for run_id, key, _ in assignments:
        history = client.get_metric_history(run_id, key)
        assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(count)]
    assert client.store.head_position() == head_before + len(assignments) * count
    report = verify(client.store)
    assert report.ok and report.head_position == client.store.head_position()


def test_more_than_one_worker_needs_a_postgresql_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["server", "--store", str(tmp_path / "x.db"), "--workers", "2"]
    )
    assert result.exit_code != 0
    assert "--workers above 1 needs a PostgreSQL store" in str(result.exception or result.output)


def test_workers_and_periodic_checkpoints_are_refused_together(tmp_path: Path) -> None:
    # Each worker process would write checkpoints of its own into one folder.
    result = CliRunner().invoke(app, [
        "server", "--store", "postgresql://postgres@127.0.0.1:5432/unused", "--workers", "2",
        "--checkpoint-every", "5", "--checkpoint-key", str(tmp_path / "k"), "--checkpoint-dir", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code != 0
    assert "--checkpoint-every takes one server process" in str(result.exception or result.output)
    assert not list(tmp_path.iterdir())  # refused before anything was opened or written
