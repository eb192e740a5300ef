"""Bad input gets a clear error and changes nothing: the local Client, fluent API and CLI.

Every refusal is checked three ways: the error is an ``InvalidParameterValue`` (or
``ResourceDoesNotExist``), the log's head did not move, and the whole log still decodes.
These cases are local only: the HTTP transport converts some arguments before sending them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstore import (
    Client,
    InvalidParameterValue,
    Metric,
    Param,
    ResourceDoesNotExist,
    RunTag,
    fluent,
)
from evstore.errors import EvstoreError

REPO = str(Path(__file__).resolve().parent.parent)
SURROGATE = "a\ud800b"


# ``client`` and ``run_id`` come from conftest.py.


def assert_refused(
    client: Client, call: Callable[[], Any], error: type[EvstoreError] = InvalidParameterValue,
    match: str | None = None,
) -> None:  # fmt: skip
    """The call raises ``error``, the head stays put and every stored event still decodes."""
    before = client.store.head_position()
    with pytest.raises(error, match=match):
        call()
    assert client.store.head_position() == before
    assert sum(1 for _ in client.store.read_all()) == before


# --- 1. times, steps, ids and names of the wrong type or out of range ------------------

BAD_TIMES = ["abc", float("nan"), float("inf"), 1.5, 10**30, -(2**63) - 1, True]


@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_times_must_be_int64(client: Client, run_id: str, bad: Any) -> None:
    experiment_id = client.get_run(run_id).info.experiment_id
    assert_refused(client, lambda: client.create_run(experiment_id, start_time=bad), match="start_time")
    assert_refused(client, lambda: client.set_terminated(run_id, end_time=bad), match="end_time")
    assert_refused(client, lambda: client.update_run(run_id, "FINISHED", end_time=bad))


@pytest.mark.parametrize(
    "write",
    [
        lambda c, r: c.log_metric(r, "m", 1.0, step=10**30),
        lambda c, r: c.log_metric(r, "m", 1.0, timestamp=2**63),
        lambda c, r: c.log_batch(r, metrics=[Metric("m", 1.0, 2**63, 0)]),
        lambda c, r: c.log_batch(r, metrics=[Metric("m", 1.0, 0, -(2**63) - 1)]),
        lambda c, r: c.log_metric(r, "m", 1.0, model_id=5),
        lambda c, r: c.log_metric(r, "m", 1.0, dataset_name=[1]),
        lambda c, r: c.log_metric(r, "m", 1.0, dataset_digest=1.5),
        lambda c, r: c.log_batch(r, metrics=[Metric("m", 1.0, 0, 0, model_id=5)]),  # type: ignore[arg-type]
        lambda c, r: c.update_run(r, name=5),
        lambda c, r: c.update_run(r, name=["a"]),
        lambda c, r: c.create_run("0", user_id=5),
        lambda c, r: c.create_run("0", run_name=5),
        lambda c, r: c.create_experiment("x", artifact_location=5),
        lambda c, r: c.set_tag(r, "k", "v", idempotency_key=5),
    ],
)
def test_wrong_types_are_refused_before_anything_is_appended(
    client: Client, run_id: str, write: Callable[[Client, str], Any]
) -> None:
    assert_refused(client, lambda: write(client, run_id))


def test_int64_bounds_themselves_are_accepted(client: Client, run_id: str) -> None:
    client.log_metric(run_id, "m", 1.0, timestamp=2**63 - 1, step=-(2**63))
    client.set_terminated(run_id, end_time=2**63 - 1)
    assert client.get_run(run_id).info.end_time == 2**63 - 1


# --- 2. caller-chosen run ids -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "../x y", "-lead", "a" * 257, "experiment-1", "experiment-0", SURROGATE, 5]
)
def test_caller_run_ids_follow_mlflows_rule(client: Client, bad: Any) -> None:
    assert_refused(client, lambda: client.create_run("0", run_id=bad))
    # experiment streams were not touched: new experiments still get created
    assert client.create_experiment("after") == "1"


def test_a_valid_caller_run_id_is_kept(client: Client) -> None:
    assert client.create_run("0", run_id="My_run-1").info.run_id == "My_run-1"


# --- 3. parents that do not exist, keys MLflow refuses ---------------------------------


def test_start_run_with_a_missing_parent_is_refused(client: Client) -> None:
    fluent.set_tracking_uri(client.tracking_uri)
    assert_refused(client, lambda: fluent.start_run(parent_run_id="nope"), ResourceDoesNotExist,
                   "Run with id=nope not found")  # fmt: skip
    assert fluent.active_run() is None


def test_start_run_under_a_deleted_parent_is_refused(client: Client, run_id: str) -> None:
    fluent.set_tracking_uri(client.tracking_uri)
    client.delete_run(run_id)
    assert_refused(client, lambda: fluent.start_run(parent_run_id=run_id), match="deleted")
    assert fluent.active_run() is None


@pytest.mark.parametrize("key", [".", "a/", "..a", "a/./b"])
def test_keys_that_resolve_to_other_names_are_refused(client: Client, run_id: str, key: str) -> None:
    for write in (
        lambda: client.set_tag(run_id, key, "v"),
        lambda: client.log_param(run_id, key, "v"),
        lambda: client.log_metric(run_id, key, 1.0),
        lambda: client.set_experiment_tag("0", key, "v"),
    ):
        assert_refused(client, write, match="resolve to")


# --- 4. search_experiments arguments ----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"page_token": "garbage"},
        {"page_token": "-1"},
        {"page_token": 5},
        {"order_by": ["bogus"]},
        {"order_by": ["name SIDEWAYS"]},
        {"order_by": "name"},
        {"order_by": [None]},
        {"view_type": 99},
        {"view_type": None},
        {"view_type": "bogus"},
        {"max_results": "5"},
        {"max_results": -1},
        {"max_results": 0},
        {"filter_string": 5},
    ],
    ids=repr,
)
def test_search_experiments_refuses_bad_arguments(client: Client, kwargs: dict[str, Any]) -> None:
    assert_refused(client, lambda: client.search_experiments(**kwargs))


def test_search_experiments_orders_and_pages(client: Client) -> None:
    for name in ("b", "a", "c"):
        client.create_experiment(name)
    names = [e.name for e in client.search_experiments(order_by=["name DESC"])]
    assert names == ["c", "b", "a", "Default"]
    first = client.search_experiments(max_results=2, order_by=["attributes.experiment_id"])
    assert [e.experiment_id for e in first] == ["0", "1"]
    rest = client.search_experiments(max_results=2, order_by=["experiment_id"], page_token=first.token)
    assert [e.experiment_id for e in rest] == ["2", "3"] and rest.token is None


# --- 5. lone surrogates -----------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c, r: c.create_experiment(SURROGATE),
        lambda c, r: c.get_experiment_by_name(SURROGATE),
        lambda c, r: c.rename_experiment("0", SURROGATE),
        lambda c, r: c.set_experiment_tag("0", "k", SURROGATE),
        lambda c, r: c.set_experiment_tag("0", SURROGATE, "v"),
        lambda c, r: c.create_run("0", user_id=SURROGATE),
        lambda c, r: c.create_run("0", tags={"k": SURROGATE}),
        lambda c, r: c.create_run("0", run_name=SURROGATE),
        lambda c, r: c.get_run(SURROGATE),
        lambda c, r: c.log_param(r, "a", SURROGATE),
        lambda c, r: c.log_batch(r, params=[Param("a", SURROGATE)], tags=[RunTag("t", SURROGATE)]),
        lambda c, r: c.update_run(r, name=SURROGATE),
        lambda c, r: c.record_artifact_bytes(r, SURROGATE, io.BytesIO(b"x")),
        lambda c, r: c.delete_run(SURROGATE),
    ],
)
def test_lone_surrogates_are_refused(client: Client, run_id: str, call: Callable[..., Any]) -> None:
    assert_refused(client, lambda: call(client, run_id))


def test_fluent_surrogates_are_refused(client: Client) -> None:
    fluent.set_tracking_uri(client.tracking_uri)
    assert_refused(client, lambda: fluent.set_experiment(SURROGATE))
    with fluent.start_run():
        assert_refused(client, lambda: fluent.log_text(SURROGATE, "f.txt"))


# exclude_categories=() lets lone surrogates (category Cs) in, which st.text() leaves out.
TEXT = st.text(st.characters(exclude_categories=()), max_size=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=TEXT, value=TEXT)
def test_any_text_is_stored_or_refused_cleanly(client: Client, run_id: str, name: str, value: str) -> None:
    """Any text as an experiment name, a tag value or a run name: works, or changes nothing."""
    for write in (
        lambda: client.create_experiment(name),
        lambda: client.set_tag(run_id, "k", value),
        lambda: client.update_run(run_id, name=name),
    ):
        before = client.store.head_position()
        try:
            write()
        except InvalidParameterValue:
            assert client.store.head_position() == before
        except EvstoreError:  # a name already taken: refused, and nothing appended
            assert client.store.head_position() == before
    assert sum(1 for _ in client.store.read_all()) == client.store.head_position()


# --- 6. artifacts: refused writes copy no bytes -----------------------------------------


def _objects(client: Client) -> list[str]:
    root = os.path.join(client.artifact_root, "objects")
    return sorted(f for _, _, files in os.walk(root) for f in files)


def test_refused_artifact_writes_leave_no_bytes(client: Client, run_id: str, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("payload")
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "ok.txt").write_text("fine")
    for target in ("nope", run_id):  # an unknown run, then a deleted one
        assert_refused(client, lambda t=target: client.record_artifact_bytes(t, "x", io.BytesIO(b"orphan")),
                       (ResourceDoesNotExist, InvalidParameterValue, EvstoreError))  # fmt: skip
        assert_refused(client, lambda t=target: client.log_artifact(t, str(source)), EvstoreError)
        assert_refused(client, lambda t=target: client.log_artifacts(t, str(directory)), EvstoreError)
        client.delete_run(run_id)
    assert _objects(client) == []


def test_a_dangling_symlink_fails_before_anything_is_copied(
    client: Client, run_id: str, tmp_path: Path
) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "a.txt").write_text("fine")
    os.symlink(tmp_path / "missing", directory / "zz-dangling")
    assert_refused(client, lambda: client.log_artifacts(run_id, str(directory)), match="zz-dangling")
    assert _objects(client) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c, r, p: c.log_artifact(r, None),
        lambda c, r, p: c.log_artifact(r, 5),
        lambda c, r, p: c.log_artifact(r, p, 5),
        lambda c, r, p: c.log_artifacts(r, None),
        lambda c, r, p: c.list_artifacts(r, 5),
        lambda c, r, p: c.download_artifacts(r, 5),
        lambda c, r, p: c.download_artifacts(r, "a.txt", 5),
        lambda c, r, p: c.download_artifacts(r, "a.txt", p),  # dst is an existing file
        lambda c, r, p: c.download_artifacts(r, "a.txt", "/proc/no/such/place"),
        lambda c, r, p: c.record_artifact_bytes(r, "x", io.StringIO("text, not bytes")),
    ],
)
def test_artifact_arguments_of_the_wrong_kind(
    client: Client, run_id: str, tmp_path: Path, call: Callable[..., Any]
) -> None:
    source = tmp_path / "a.txt"
    source.write_text("payload")
    client.log_artifact(run_id, str(source))
    assert_refused(client, lambda: call(client, run_id, str(source)))


# --- 7. times out of range in history, and the CLI's numbers ----------------------------


def test_get_run_as_of_a_time_before_the_epoch_range(client: Client, run_id: str) -> None:
    assert_refused(client, lambda: client.get_run(run_id, as_of=datetime(1, 1, 1)))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("EVSTORE_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "evstore.cli", *args], check=False,
                          capture_output=True, text=True, env=env, timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["show", "RUN", "--as-of", "0001-01-01"],
        ["log", "--after", "99999999999999999999"],
        ["server", "--port", "99999"],
        ["server", "--max-json-mb", "-1"],
        ["server", "--max-artifact-mb", "0"],
    ],
)
def test_cli_numbers_out_of_range_are_one_line(client: Client, run_id: str, args: list[str]) -> None:
    args = [run_id if a == "RUN" else a for a in args]
    result = _cli(*args, "--store", client.tracking_uri)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- 8. containers of the wrong type ------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c, r: c.create_experiment("x", tags=[("a", "b")]),
        lambda c, r: c.create_run("0", tags=["a"]),
        lambda c, r: c.get_run([1]),
        lambda c, r: c.get_experiment_by_name([1]),
        lambda c, r: c.delete_run([1]),
        lambda c, r: c.delete_tag(r, ["x"]),
        lambda c, r: c.get_metric_history(r, ["x"]),
        lambda c, r: c.create_run("0", run_id=5),
        lambda c, r: c.log_batch(r, metrics=None),
        lambda c, r: c.log_batch(r, metrics=[{"key": "m"}]),
        lambda c, r: c.log_batch(r, params=[("a", "b")]),
        lambda c, r: c.log_batch(r, tags=[("a", "b")]),
        lambda c, r: c.search_runs(None),
        lambda c, r: c.search_runs({"0": 1}),
        lambda c, r: c.search_runs(["0"], 5),
        lambda c, r: Client(5),
    ],
)
def test_wrong_containers_are_refused(client: Client, run_id: str, call: Callable[..., Any]) -> None:
    assert_refused(client, lambda: call(client, run_id))


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize(
    "call",
    [
        lambda: fluent.log_params(None),
        lambda: fluent.log_params([("a", 1)]),
        lambda: fluent.log_metrics(None),
        lambda: fluent.set_tags(None),
        lambda: fluent.log_text(5, "f.txt"),
        lambda: fluent.log_text(b"abc", "f.txt"),
        lambda: fluent.log_dict(_circular(), "f.json"),  # MLflow stores str(object()) as is
        lambda: fluent.set_tracking_uri(5),
    ],
)
def test_fluent_wrong_containers_start_no_run(client: Client, call: Callable[[], Any]) -> None:
    fluent.set_tracking_uri(client.tracking_uri)
    assert_refused(client, call)
    assert fluent.active_run() is None
    assert fluent.get_tracking_uri() == client.tracking_uri
