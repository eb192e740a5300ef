"""The fluent API (``import evstore as mlflow``): store selection, runs as context managers, logging.

The fluent API keeps module state (the tracking URI, the active-run stack, the active
experiment); the ``tracking`` fixture points it at a fresh store file and clears it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import close_cached_stores, history_points

import evstore as mlflow
from evstore import Client, InvalidParameterValue, ResourceDoesNotExist, fluent
from evstore.tracking import service as client_module


def _reset() -> None:
    fluent.reset()


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fluent API pointed at ``tmp_path/evstore.db`` with no active run or experiment."""
    monkeypatch.delenv("EVSTORE_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("EVSTORE_EXPERIMENT_ID", raising=False)
    _reset()
    path = tmp_path / "evstore.db"
    mlflow.set_tracking_uri(str(path))
    yield path
    _reset()
    close_cached_stores(tmp_path)


def client(path: Path) -> Client:
    """A Client over the same store the fluent API writes."""
    return Client(str(path))


# --- store selection --------------------------------------------------------------------


def test_tracking_uri_path_sqlite_env_and_default(
    tracking: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mlflow.get_tracking_uri() == str(tracking)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    mlflow.set_experiment("in-other")
    assert (tmp_path / "other.db").exists()
    assert client(tmp_path / "other.db").get_experiment_by_name("in-other") is not None
    mlflow.set_tracking_uri(tmp_path / "pathlike.db")  # an os.PathLike works too
    assert mlflow.get_tracking_uri() == str(tmp_path / "pathlike.db")
    fluent.set_tracking_uri(None)
    monkeypatch.setenv("EVSTORE_TRACKING_URI", str(tmp_path / "env.db"))
    assert mlflow.get_tracking_uri() == str(tmp_path / "env.db")
    monkeypatch.delenv("EVSTORE_TRACKING_URI")
    assert mlflow.get_tracking_uri() == "./evstore.db"


def test_set_experiment_creates_once(tracking: Path) -> None:
    first = mlflow.set_experiment("exp")
    again = mlflow.set_experiment("exp")
    assert first.experiment_id == again.experiment_id and first.name == "exp"
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == first.experiment_id
    by_id = mlflow.set_experiment(experiment_id=first.experiment_id)
    assert by_id.name == "exp"
    with pytest.raises(InvalidParameterValue):
        mlflow.set_experiment()


def test_set_experiment_refuses_a_deleted_one(tracking: Path) -> None:
    experiment_id = mlflow.create_experiment("gone")
    mlflow.delete_experiment(experiment_id)
    with pytest.raises(InvalidParameterValue, match="deleted"):
        mlflow.set_experiment("gone")


def test_runs_go_to_the_default_experiment_without_set_experiment(tracking: Path) -> None:
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == "0"


# --- start_run as a context manager ---------------------------------------------------


def test_clean_exit_ends_finished(tracking: Path) -> None:
    mlflow.set_experiment("exp")
    with mlflow.start_run(run_name="clean", tags={"team": "a"}, description="notes") as run:
        assert mlflow.active_run() is run
        assert run.info.status == "RUNNING"
        mlflow.log_param("lr", 0.1)
    assert mlflow.active_run() is None
    stored = mlflow.get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.end_time is not None and stored.info.end_time >= stored.info.start_time
    assert stored.info.run_name == "clean"
    tags = stored.data.tags
    assert tags["team"] == "a" and tags["mlflow.note.content"] == "notes"
    assert tags["mlflow.runName"] == "clean" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] == stored.info.user_id


def test_a_run_left_active_ends_finished_when_the_process_exits(tmp_path: Path) -> None:
    # As in MLflow: a script that never ends its run still leaves it FINISHED, and the
    # file at rest holds every table whole.
    path = tmp_path / "exit.db"
    script = (
        "import evstore as mlflow\n"
        f"mlflow.set_tracking_uri({str(path)!r})\n"
        "run = mlflow.start_run()\n"
        "for step in range(3):\n"
        "    mlflow.log_metric('m', step, step=step)\n"
        "print(run.info.run_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVSTORE_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    run_id = done.stdout.strip()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone() == (
            "FINISHED",
        )
        assert len(history_points(raw)) == 3
        head = raw.execute("SELECT max(position) FROM events").fetchone()[0]
        assert raw.execute("SELECT DISTINCT checkpoint FROM projection_state").fetchall() == [(head,)]
    raw.close()


def test_exception_ends_failed_and_propagates(tracking: Path) -> None:
    with pytest.raises(ZeroDivisionError), mlflow.start_run() as run:
        mlflow.log_metric("before", 1.0)
        1 / 0  # noqa: B018
    assert mlflow.active_run() is None
    stored = mlflow.get_run(run.info.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.metrics == {"before": 1.0}


def test_keyboard_interrupt_ends_killed(tracking: Path) -> None:
    with pytest.raises(KeyboardInterrupt), mlflow.start_run() as run:
        raise KeyboardInterrupt
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_run_id_resumes_an_existing_run(tracking: Path) -> None:
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 1.0, step=0)
    run_id = run.info.run_id
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    with mlflow.start_run(run_id=run_id) as resumed:
        assert resumed.info.run_id == run_id
        assert mlflow.get_run(run_id).info.status == "RUNNING"
        mlflow.log_metric("loss", 0.5, step=1)
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    assert [m.value for m in mlflow.get_metric_history(run_id, "loss")] == [1.0, 0.5]
    with pytest.raises(ResourceDoesNotExist):
        mlflow.start_run(run_id="0" * 32)
    assert mlflow.active_run() is None


def test_a_deleted_run_cannot_be_resumed(tracking: Path) -> None:
    with mlflow.start_run() as run:
        pass
    mlflow.delete_run(run.info.run_id)
    with pytest.raises(InvalidParameterValue, match="deleted"):
        mlflow.start_run(run_id=run.info.run_id)
    assert mlflow.active_run() is None


def test_nested_runs_record_their_parent(tracking: Path) -> None:
    mlflow.set_experiment("sweep")
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            assert mlflow.active_run() is child
            with mlflow.start_run(nested=True) as grandchild:
                pass
        assert mlflow.active_run() is parent
    parent_id, child_id = parent.info.run_id, child.info.run_id
    assert mlflow.get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    assert mlflow.get_run(grandchild.info.run_id).data.tags["mlflow.parentRunId"] == child_id
    assert "mlflow.parentRunId" not in mlflow.get_run(parent_id).data.tags
    # parent_run_id is recorded on the RunStarted event and in the runs read model
    store = client(tracking).store
    assert store.read_stream(child_id)[0].event.parent_run_id == parent_id
    assert store.read_stream(parent_id)[0].event.parent_run_id is None
    row = store.connection.execute(
        "SELECT parent_run_id FROM runs WHERE run_id = ?", (child_id,)
    ).fetchone()
    assert row == (parent_id,)
    found = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert found["run_id"].tolist() == [child_id]
    assert all(mlflow.get_run(r).info.status == "FINISHED" for r in (parent_id, child_id))


def test_a_run_ended_inside_its_block_leaves_the_parent_active(tracking: Path) -> None:
    # MLflow's ActiveRun.__exit__ ends the run only if it is still active
    with mlflow.start_run() as parent:
        with mlflow.start_run(nested=True) as child:
            mlflow.end_run(status="KILLED")
        assert mlflow.active_run() is parent
        assert mlflow.get_run(parent.info.run_id).info.status == "RUNNING"
    assert mlflow.get_run(child.info.run_id).info.status == "KILLED"
    assert mlflow.get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_second_non_nested_run_is_refused(tracking: Path) -> None:
    with mlflow.start_run() as run:
        before = client(tracking).store.head_position()
        with pytest.raises(InvalidParameterValue, match=f"{run.info.run_id} is already active"):
            mlflow.start_run()
        assert client(tracking).store.head_position() == before
        assert mlflow.active_run() is run
    assert mlflow.active_run() is None


def test_active_run_and_end_run_with_status(tracking: Path) -> None:
    assert mlflow.active_run() is None
    mlflow.end_run()  # nothing active: a no-op, as in MLflow
    run = mlflow.start_run()
    assert mlflow.active_run() is run
    mlflow.end_run(status="KILLED")
    assert mlflow.active_run() is None
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"
    assert mlflow.last_active_run().info.run_id == run.info.run_id  # type: ignore[union-attr]


def test_logging_without_a_run_starts_one(tracking: Path) -> None:
    mlflow.log_param("p", 1)
    run = mlflow.active_run()
    assert run is not None
    mlflow.end_run()
    assert mlflow.get_run(run.info.run_id).data.params == {"p": "1"}


# --- logging ----------------------------------------------------------------------------


def test_logging_functions(tracking: Path, tmp_path: Path) -> None:
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"opt": "adam", "layers": 3})
        mlflow.log_metric("acc", 0.9, step=2, timestamp=1_700_000_000_000)
        mlflow.log_metrics({"loss": 0.1, "f1": math.nan}, step=3)
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"a": 1, "b": "two"})
        mlflow.delete_tag("a")
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_dict({"k": [1, 2]}, "config.json")
        source = tmp_path / "weights.bin"
        source.write_bytes(b"\x00\x01")
        mlflow.log_artifact(str(source), artifact_path="model")
        (tmp_path / "dir" / "sub").mkdir(parents=True)
        (tmp_path / "dir" / "sub" / "x.txt").write_text("x")
        mlflow.log_artifacts(str(tmp_path / "dir"), artifact_path="tree")
    run_id = run.info.run_id
    data = mlflow.get_run(run_id).data
    assert data.params == {"lr": "0.01", "opt": "adam", "layers": "3"}
    assert data.metrics["acc"] == 0.9 and data.metrics["loss"] == 0.1
    assert math.isnan(data.metrics["f1"])
    assert data.tags["stage"] == "dev" and data.tags["b"] == "two" and "a" not in data.tags
    (acc,) = mlflow.get_metric_history(run_id, "acc")
    assert (acc.step, acc.timestamp) == (2, 1_700_000_000_000)
    assert mlflow.get_metric_history(run_id, "loss")[0].step == 3
    paths = {f.path for f in mlflow.list_artifacts(run_id)}
    assert paths == {"notes", "config.json", "model", "tree"}
    local = mlflow.download_artifacts(run_id, "", str(tmp_path / "out"))
    assert json.loads(Path(local, "config.json").read_text()) == {"k": [1, 2]}
    assert Path(local, "notes", "hello.txt").read_text() == "hello"
    assert Path(local, "model", "weights.bin").read_bytes() == b"\x00\x01"
    assert Path(local, "tree", "sub", "x.txt").read_text() == "x"


def test_fluent_errors_are_mlflows(tracking: Path) -> None:
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        with pytest.raises(InvalidParameterValue, match="Changing param values is not allowed"):
            mlflow.log_param("lr", 0.2)
        with pytest.raises(InvalidParameterValue, match="Changing param values is not allowed"):
            mlflow.log_params({"new": 1, "lr": 0.3})
        with pytest.raises(ResourceDoesNotExist):
            mlflow.delete_tag("missing")
    assert mlflow.get_run(run.info.run_id).data.params == {"lr": "0.1"}


# --- reads ------------------------------------------------------------------------------


def test_reads(tracking: Path) -> None:
    experiment = mlflow.set_experiment("exp")
    assert mlflow.get_experiment_by_name("exp").experiment_id == experiment.experiment_id  # type: ignore[union-attr]
    assert mlflow.get_experiment(experiment.experiment_id).name == "exp"
    assert mlflow.get_experiment_by_name("nope") is None
    found = mlflow.search_experiments()
    assert {e.name for e in found} == {"exp", "Default"}
    assert [e.creation_time for e in found] == sorted((e.creation_time for e in found), reverse=True)


def test_search_runs_returns_a_pyarrow_table_when_asked(tracking: Path) -> None:
    import pyarrow as pa

    mlflow.set_experiment("sweep")
    for lr, acc in (("0.1", 0.7), ("0.01", 0.9)):
        with mlflow.start_run(run_name=f"lr={lr}"):
            mlflow.log_param("lr", lr)
            mlflow.log_metric("acc", acc)
            mlflow.set_tag("kind", "grid")
    with mlflow.start_run(run_name="bare"):
        mlflow.log_param("other", "x")
    table = mlflow.search_runs(order_by=["attributes.run_name ASC"], output_format="arrow")
    assert isinstance(table, pa.Table)
    assert table.num_rows == 3
    columns = table.column_names
    for info in ("run_id", "experiment_id", "run_name", "user_id", "status", "start_time",
                 "end_time", "lifecycle_stage", "artifact_uri"):  # fmt: skip
        assert info in columns
    assert {"params.lr", "params.other", "metrics.acc", "tags.kind", "tags.mlflow.runName"} <= set(columns)
    assert table.schema.field("metrics.acc").type == pa.float64()
    assert table.schema.field("start_time").type == pa.int64()
    rows = table.to_pylist()
    assert [r["run_name"] for r in rows] == ["bare", "lr=0.01", "lr=0.1"]
    assert [r["metrics.acc"] for r in rows] == [None, 0.9, 0.7]
    assert [r["params.lr"] for r in rows] == [None, "0.01", "0.1"]
    assert [r["status"] for r in rows] == ["FINISHED"] * 3
    arrow = {"output_format": "arrow"}
    filtered = mlflow.search_runs(filter_string="metrics.acc > 0.8", **arrow)
    assert filtered.column("run_name").to_pylist() == ["lr=0.01"]
    assert mlflow.search_runs(experiment_names=["sweep"], max_results=2, **arrow).num_rows == 2
    unknown = mlflow.search_runs(experiment_names=["no such experiment"], **arrow)  # empty, as MLflow
    assert unknown.num_rows == 0 and "run_id" in unknown.column_names
    assert mlflow.search_runs(experiment_ids=["0"], **arrow).num_rows == 0
    assert mlflow.search_runs(search_all_experiments=True, **arrow).num_rows == 3


def test_default_store_is_evstore_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVSTORE_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    _reset()
    try:
        with mlflow.start_run() as run:
            mlflow.log_metric("m", 1.0)
        assert (tmp_path / "evstore.db").exists()
        assert Client(str(tmp_path / "evstore.db")).get_run(run.info.run_id).data.metrics == {"m": 1.0}
    finally:
        _reset()
        path = os.path.abspath(tmp_path / "evstore.db")
        runner = client_module._stores.pop(path, None)
        if runner is not None:
            runner.detach()
            runner.store.close()
