"""A run's history: ``get_run(as_of=...)`` rebuilds earlier state; ``evstore history`` is the audit trail."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import close_cached_stores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evstore
from evstore import (
    Client,
    InvalidParameterValue,
    Metric,
    ResourceDoesNotExist,
    Run,
    fluent,
)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A Client over a fresh store; every event is written by user 'alice'."""
    monkeypatch.setenv("EVSTORE_USER", "alice")
    fluent._state.__dict__.clear()
    yield Client(str(tmp_path / "evstore.db"))
    close_cached_stores(tmp_path)


def comparable(run: Run) -> Any:
    """A run as plain data with NaN made comparable."""
    data = msgspec.to_builtins(run)
    data["data"]["metrics"] = {
        k: "NaN" if isinstance(v, float) and math.isnan(v) else v
        for k, v in data["data"]["metrics"].items()
    }
    return data


def _ms_boundary() -> datetime:
    """Now, with the clock moved on a few ms either side so recorded_at never ties it."""
    time.sleep(0.005)
    moment = datetime.now(UTC)
    time.sleep(0.005)
    return moment


# --- as_of ------------------------------------------------------------------------------


def test_as_of_returns_the_earlier_state_after_later_changes(client: Client) -> None:
    experiment_id = client.create_experiment("exp")
    run_id = client.create_run(experiment_id, run_name="first", tags={"stage": "dev"}).info.run_id
    client.log_param(run_id, "lr", "0.1")
    client.log_metric(run_id, "loss", 1.0, timestamp=100, step=0)
    client.set_tag(run_id, "note", "keep")
    earlier = client.get_run(run_id)
    position = client.store.head_position()
    moment = _ms_boundary()

    # later changes touch everything the earlier state shows
    client.log_param(run_id, "epochs", "10")
    client.log_metric(run_id, "loss", 0.2, timestamp=200, step=1)
    client.log_metric(run_id, "acc", 0.9, timestamp=200, step=1)
    client.set_tag(run_id, "stage", "prod")
    client.delete_tag(run_id, "note")
    client.update_run(run_id, name="renamed")
    client.set_terminated(run_id, "FAILED")
    client.delete_run(run_id)
    now = client.get_run(run_id)
    assert now != earlier
    assert now.info.lifecycle_stage == "deleted" and now.info.status == "FAILED"

    by_position = client.get_run(run_id, as_of=position)
    by_time = client.get_run(run_id, as_of=moment)
    assert by_position == earlier
    assert by_time == earlier
    assert by_position.info.status == "RUNNING" and by_position.info.run_name == "first"
    assert by_position.data.params == {"lr": "0.1"}
    assert by_position.data.metrics == {"loss": 1.0}
    assert by_position.data.tags["stage"] == "dev" and by_position.data.tags["note"] == "keep"
    # the fluent API reads back in time too, and the present is unchanged by it
    assert evstore.get_run  # the module-level function exists
    assert client.get_run(run_id) == now


def test_as_of_every_position_matches_the_state_then(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    snapshots = {client.store.head_position(): client.get_run(run_id)}
    for step in range(4):
        client.log_metric(run_id, "m", float(step), timestamp=step, step=step)
        client.set_tag(run_id, "last", str(step))
        snapshots[client.store.head_position()] = client.get_run(run_id)
    for position, snapshot in snapshots.items():
        assert client.get_run(run_id, as_of=position) == snapshot


def test_as_of_before_the_run_or_with_a_bad_value(client: Client) -> None:
    before = client.store.head_position()
    run_id = client.create_run("0").info.run_id
    with pytest.raises(ResourceDoesNotExist, match="did not exist"):
        client.get_run(run_id, as_of=before)
    with pytest.raises(ResourceDoesNotExist):
        client.get_run(run_id, as_of=datetime(2000, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidParameterValue, match="as_of"):
        client.get_run(run_id, as_of="yesterday")  # type: ignore[arg-type]
    with pytest.raises(ResourceDoesNotExist):
        client.get_run("e" * 32, as_of=10**9)
    with pytest.raises(InvalidParameterValue, match="past the head of the log"):
        client.get_run(run_id, as_of=client.store.head_position() + 1)


# A write the property test can make: (kind, arguments).
_values = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, -1.0])
_writes = st.one_of(
    st.tuples(st.just("metric"), st.sampled_from("ab"), _values, st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("param"), st.sampled_from(["p", "q", "r"]), st.sampled_from(["1", "2"])),
    st.tuples(st.just("tag"), st.sampled_from(["t", "u", "mlflow.runName"]), st.text(max_size=3)),
    st.tuples(st.just("untag"), st.sampled_from(["t", "u"])),
    st.tuples(st.just("status"), st.sampled_from(["FINISHED", "FAILED", "RUNNING"])),
    st.tuples(st.just("rename"), st.sampled_from(["x", "y"])),
    st.tuples(st.just("delete")),
    st.tuples(st.just("restore")),
)


def _apply(client: Client, run_id: str, write: tuple[Any, ...]) -> None:
    """Make one write; refused writes (changed param, deleted run, missing tag) are fine."""
    kind, *args = write
    try:
        if kind == "metric":
            key, value, step, timestamp = args
            client.log_batch(run_id, metrics=[Metric(key, value, timestamp, step)])
        elif kind == "param":
            client.log_param(run_id, *args)
        elif kind == "tag":
            client.set_tag(run_id, *args)
        elif kind == "untag":
            client.delete_tag(run_id, *args)
        elif kind == "status":
            client.update_run(run_id, status=args[0])
        elif kind == "rename":
            client.update_run(run_id, name=args[0])
        elif kind == "delete":
            client.delete_run(run_id)
        else:
            client.restore_run(run_id)
    except evstore.EvstoreError:
        pass


@pytest.mark.parametrize(
    "values",
    [[-1.0, math.nan], [math.nan, -1.0], [math.nan, 2.0], [2.0, math.nan], [0.0, math.nan]],
)
def test_as_of_picks_the_latest_metric_by_mlflows_rule(client: Client, values: list[float]) -> None:
    # same step and timestamp: the greater value wins, NaN comparing as 0 (MLflow stores
    # NaN as 0 plus a flag); on a tie the point logged first stays
    run_id = client.create_run("0").info.run_id
    for value in values:
        client.log_metric(run_id, "m", value, timestamp=5, step=1)
    live = client.get_run(run_id)
    assert comparable(client.get_run(run_id, as_of=client.store.head_position())) == comparable(live)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_writes, max_size=25))
def test_as_of_the_head_equals_the_live_read_models(client: Client, writes: list[Any]) -> None:
    run_id = client.create_run("0", run_name="start").info.run_id
    for write in writes:
        _apply(client, run_id, write)
    live = client.get_run(run_id)
    assert comparable(client.get_run(run_id, as_of=client.store.head_position())) == comparable(live)


# --- evstore history --------------------------------------------------------------------


def test_history_cli_lists_every_event(client: Client, tmp_path: Path) -> None:
    run_id = client.create_run("0", run_name="audited").info.run_id
    client.log_param(run_id, "lr", "0.01")
    client.log_metric(run_id, "acc", 0.95, step=3)
    client.set_tag(run_id, "stage", "dev")
    client.delete_tag(run_id, "stage")
    (tmp_path / "model.txt").write_bytes(b"weights")
    client.log_artifact(run_id, str(tmp_path / "model.txt"))
    client.set_terminated(run_id, "FINISHED")
    events = client.store.read_stream(run_id)

    env = {**os.environ, "COLUMNS": "250"}
    env.pop("EVSTORE_TRACKING_URI", None)
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "evstore"), "history", run_id,
         "--store", str(tmp_path / "evstore.db")],
        check=False, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    header, rows = lines[0], lines[1:]
    # "time" is when the event happened: recorded_at, or MLflow's own time for imports
    for column in ("position", "time", "type", "user", "change"):
        assert column in header
    assert len(rows) == len(events)
    for row, recorded in zip(rows, events):
        cells = row.split()
        assert cells[0] == str(recorded.position)
        stamp = datetime.fromtimestamp(recorded.recorded_at / 1000, tz=UTC).astimezone()
        assert cells[1] == stamp.isoformat(timespec="milliseconds")  # ISO 8601, local, zoned
        assert cells[2] == type(recorded.event).__name__
        assert cells[3] == "alice"
    text = done.stdout
    assert "started 'audited'" in text
    assert "lr=0.01" in text
    assert "acc[3]=0.95" in text
    assert "stage=dev" in text and "deleted tag stage" in text
    assert "model.txt (7 bytes" in text
    ended = client.get_run(run_id).info.end_time
    ended_at = datetime.fromtimestamp(ended / 1000, tz=UTC).astimezone().isoformat(timespec="milliseconds")
    assert f"status FINISHED at {ended_at}" in text  # an end time reads as a time, not epoch ms


def test_history_of_an_unknown_run_is_a_one_line_error(client: Client, tmp_path: Path) -> None:
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "evstore"), "history", "f" * 32,
         "--store", str(tmp_path / "evstore.db")],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"error: Run with id={'f' * 32} not found"]
    assert "Traceback" not in done.stderr
