"""The rest of MLflow's module API on evstore: the tracking URI (config), system metrics,
experiment tags, artifact URIs and readers, search_runs' output formats, exceptions."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import close_cached_stores

import evstore as mlflow
from evstore import (
    Client,
    EvstoreError,
    InvalidParameterValue,
    InvalidState,
    fluent,
    system_metrics,
)
from evstore import config as config_module


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fluent API on a fresh store, with no tracking or system-metrics settings."""
    for name in ("EVSTORE_TRACKING_URI", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                 "EVSTORE_EXPERIMENT_ID", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
                 "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
                 "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    fluent.reset()
    path = tmp_path / "evstore.db"
    mlflow.set_tracking_uri(str(path))
    yield path
    fluent.reset()
    close_cached_stores(tmp_path)


# --- the tracking URI ---------------------------------------------------------------------


def test_mlflow_tracking_uri_is_honoured_when_evstore_tracking_uri_is_unset(
    tracking: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'from-mlflow.db'}")
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'from-mlflow.db'}"
    monkeypatch.setenv("EVSTORE_TRACKING_URI", str(tmp_path / "from-evstore.db"))
    assert mlflow.get_tracking_uri() == str(tmp_path / "from-evstore.db")
    mlflow.set_tracking_uri(tmp_path / "set.db")
    assert mlflow.get_tracking_uri() == str(tmp_path / "set.db")


@pytest.mark.parametrize("uri", ["file:./mlruns", "file:///srv/mlruns", "./mlruns", "mlruns/",
                                 "file:/some/dir"])  # fmt: skip
def test_an_mlflow_file_store_is_refused_with_the_import_command(
    tracking: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidParameterValue, match="evstore import mlflow") as refused:
        mlflow.set_tracking_uri(uri)
    assert "\n" not in str(refused.value)
    assert mlflow.get_tracking_uri() == str(tracking)  # unchanged
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(InvalidParameterValue, match="evstore import mlflow"):
        mlflow.start_run()
    assert not (tmp_path / "mlruns").exists()


def test_a_directory_is_refused_and_an_evstore_file_uri_is_not(tracking: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterValue, match="MLflow file store"):
        mlflow.set_tracking_uri(str(tmp_path))
    mlflow.set_tracking_uri(f"file:{tmp_path / 'named.db'}")
    mlflow.set_experiment("via-file-uri")
    assert Client(str(tmp_path / "named.db")).get_experiment_by_name("via-file-uri") is not None
    assert config_module.is_set()


# --- system metrics -----------------------------------------------------------------------

SYSTEM_METRICS = {
    "system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage", "system/disk_usage_percentage",
    "system/disk_usage_megabytes", "system/disk_available_megabytes",
    "system/network_receive_megabytes", "system/network_transmit_megabytes",
}  # fmt: skip


def test_a_monitor_logs_mlflows_system_metric_names_at_successive_steps(tracking: Path) -> None:
    pytest.importorskip("psutil")
    client = Client(str(tracking))
    run_id = client.create_run("0").info.run_id
    monitor = system_metrics.SystemMetricsMonitor(client, run_id)
    assert monitor.interval == system_metrics.DEFAULT_SAMPLING_INTERVAL == 10.0
    first = monitor.log_once()
    monitor.log_once()
    assert set(first) == SYSTEM_METRICS
    assert set(client.get_run(run_id).data.metrics) == SYSTEM_METRICS
    history = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in history] == [0, 1]
    resumed = system_metrics.SystemMetricsMonitor(client, run_id, resume=True)
    assert resumed.step == 2


def test_start_run_samples_on_a_thread_that_end_run_stops(tracking: Path) -> None:
    pytest.importorskip("psutil")
    run = mlflow.start_run(log_system_metrics=True)
    monitor = fluent._monitors()[run.info.run_id]
    assert monitor.running
    mlflow.end_run()
    assert not monitor.running and run.info.run_id not in fluent._monitors()
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"


def test_enable_and_disable_system_metrics_logging(tracking: Path) -> None:
    pytest.importorskip("psutil")
    mlflow.enable_system_metrics_logging()
    try:
        with mlflow.start_run() as run:
            assert run.info.run_id in fluent._monitors()
        with mlflow.start_run(log_system_metrics=False) as run:
            assert run.info.run_id not in fluent._monitors()
    finally:
        mlflow.disable_system_metrics_logging()
    with mlflow.start_run() as run:
        assert run.info.run_id not in fluent._monitors()
    with pytest.raises(InvalidParameterValue, match="positive number"):
        mlflow.set_system_metrics_sampling_interval(0)


def test_system_metrics_without_psutil_are_refused_before_the_run_starts(
    tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)
    with pytest.raises(InvalidState, match=r"evstore\[system-metrics\]"):
        mlflow.start_run(log_system_metrics=True)
    assert mlflow.active_run() is None
    assert mlflow.search_runs(output_format="list") == []


# --- experiment tags, artifact URIs, inputs ----------------------------------------------


def test_experiment_tags_of_the_active_experiment(tracking: Path) -> None:
    experiment = mlflow.set_experiment("tags")
    mlflow.set_experiment_tag("team", "evstore")
    mlflow.set_experiment_tags({"stage": "dev", "drop": 1})
    mlflow.delete_experiment_tag("drop")
    assert mlflow.get_experiment(experiment.experiment_id).tags == {"team": "evstore", "stage": "dev"}
    with pytest.raises(mlflow.ResourceDoesNotExist):
        mlflow.delete_experiment_tag("drop")


def test_artifact_uris_name_what_the_readers_read(tracking: Path, tmp_path: Path) -> None:
    with mlflow.start_run() as run:
        mlflow.log_text("hi", "a/b.txt")
        mlflow.log_dict({"x": 1}, "d.json")
        root = mlflow.get_artifact_uri()
        assert root == run.info.artifact_uri and root.endswith(f"/{run.info.run_id}/artifacts")
        assert mlflow.get_artifact_uri("a/b.txt") == root + "/a/b.txt"
        assert mlflow.artifacts.load_text(mlflow.get_artifact_uri("a/b.txt")) == "hi"
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/a/b.txt") == "hi"
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/d.json") == {"x": 1}
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="a", dst_path=str(tmp_path / "out"))
    assert Path(local, "b.txt").read_text() == "hi"
    with pytest.raises(InvalidParameterValue, match="Exactly one of `run_id` or `artifact_uri`"):
        mlflow.artifacts.download_artifacts("runs:/x/y", run_id=run.info.run_id)
    with pytest.raises(InvalidParameterValue, match="Cannot tell which run"):
        mlflow.artifacts.load_text("/nowhere/artifacts/b.txt")


def test_log_input_says_datasets_are_not_supported_yet(tracking: Path) -> None:
    with mlflow.start_run() as run, pytest.raises(mlflow.exceptions.MlflowException, match="log_input"):
        mlflow.log_input(object(), context="training")
    assert mlflow.get_run(run.info.run_id).data.tags.keys() >= {"mlflow.runName"}


def test_mlflow_exception_catches_evstore_errors_with_mlflows_codes(tracking: Path) -> None:
    from evstore.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        mlflow.get_run("no-such-run")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert MlflowException is EvstoreError
    # MLflow code raises it too: MlflowException(message, error_code=...) and .message
    raised = MlflowException("bad input", error_code="INVALID_PARAMETER_VALUE")
    assert (raised.message, raised.error_code, str(raised)) == (
        "bad input", "INVALID_PARAMETER_VALUE", "bad input")
    assert MlflowException("plain").error_code == "INTERNAL_ERROR"


# --- search_runs and MLflow's leniencies --------------------------------------------------


def test_search_runs_output_formats(tracking: Path) -> None:
    pd = pytest.importorskip("pandas")
    with mlflow.start_run(run_name="r") as run:
        mlflow.log_metric("m", 1.0)
    frame = mlflow.search_runs()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[:6]) == list(fluent.FRAME_INFO_COLUMNS)
    assert str(frame["start_time"].dtype) == "datetime64[us, UTC]"
    assert frame["start_time"][0].value // 1000 == run.info.start_time * 1000
    assert [r.info.run_id for r in mlflow.search_runs(output_format="list")] == [run.info.run_id]
    assert mlflow.search_runs(output_format="arrow").column("run_id").to_pylist() == [run.info.run_id]
    with pytest.raises(InvalidParameterValue, match="Unsupported output format"):
        mlflow.search_runs(output_format="csv")
    for bad in (-1, 0):  # MLflow's fluent search_runs silently returns no runs for these
        with pytest.raises(InvalidParameterValue, match="positive integer"):
            mlflow.search_runs(max_results=bad)


def test_search_runs_without_pandas_names_the_other_formats(
    tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mlflow.start_run():
        pass
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(InvalidState, match="output_format='list'"):
        mlflow.search_runs()


def test_search_runs_as_a_list_does_not_import_pandas(tracking: Path) -> None:
    code = (
        "import sys, evstore as mlflow\n"
        f"mlflow.set_tracking_uri({str(tracking)!r})\n"
        "mlflow.start_run(); mlflow.end_run()\n"
        "assert len(mlflow.search_runs(output_format='list')) == 1\n"
        "print('pandas' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVSTORE_"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_mlflow_leniencies_evstore_keeps(tracking: Path) -> None:
    with mlflow.start_run() as run:
        mlflow.set_tag("maybe", None)  # MLflow stores the string "None"
        mlflow.log_metric("m", 1.0, step=2.0)  # an integral float step is that step
        with pytest.raises(InvalidParameterValue, match="step for metric 'm'"):
            mlflow.log_metric("m", 1.0, step=1.5)  # MLflow's SQLite store keeps 1.5; its REST API cannot
    assert mlflow.get_run(run.info.run_id).data.tags["maybe"] == "None"
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "m")] == [2]


def test_load_table_concatenates_the_runs_tables(tracking: Path) -> None:
    pytest.importorskip("pandas")
    mlflow.set_experiment("tables")
    for i in range(2):
        with mlflow.start_run():
            mlflow.log_table({"i": [i]}, "t.json")
    with mlflow.start_run():
        mlflow.log_text("not a table", "t.json")
    table = mlflow.load_table("t.json", extra_columns=["run_id"])
    assert sorted(table["i"].tolist()) == [0, 1] and table["run_id"].nunique() == 2
    with pytest.raises(mlflow.ResourceDoesNotExist):
        mlflow.load_table("missing.json")
