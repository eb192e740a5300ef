"""The Client contract: every MlflowClient method evstore mirrors, with its return shapes and errors.

Each test opens a real store file in ``tmp_path`` through ``evstore.Client``. Writes that
must be refused are checked twice: the error, and that the log's head did not move.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import close_cached_stores, history_points
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ThreadServer

import evstore
from evstore import (
    Client,
    InvalidParameterValue,
    InvalidState,
    Metric,
    Param,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    RunTag,
    ViewType,
)
from evstore.errors import EvstoreError
from evstore.events import MetricsLogged

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


# Every test runs over three clients: ``local`` (the tracking service in this process, on
# a store file), ``remote`` (a real ``evstore server`` subprocess, reached over HTTP) and
# ``postgres`` (the tracking service in this process, on a PostgreSQL store).
# ``run_id`` comes from conftest.py and takes the client below.

#: Contract tests about the local store itself, which a client of a server cannot see.
LOCAL_ONLY = {
    "test_entities_take_mlflows_positional_order",  # no client involved
    "test_artifacts_are_content_addressed",  # reads the object store's files
    "test_tampered_artifact_bytes_are_refused_on_download",  # edits the object store's files
    "test_two_clients_on_one_file_see_each_other",  # two local clients on one file
    "test_reads_see_every_point_and_every_append_leaves_the_tables_whole",  # reads the file
    "test_a_read_never_takes_the_write_lock_even_with_a_model_behind",  # a bare local writer
    "test_ending_a_run_any_way_leaves_the_tables_whole",  # reads the file
    "test_key_validation_answers_the_same_every_time",  # validation's own memory
    "test_a_local_retry_without_a_timestamp_is_still_the_same_request",  # a local client
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that takes a client over the transports it can observe."""
    if "client" in metafunc.fixturenames:
        local_only = metafunc.function.__name__ in LOCAL_ONLY
        transports = ["local"] if local_only else ["local", "remote", "postgres"]
        metafunc.parametrize("transport", transports)


@pytest.fixture
def client(
    transport: str, tmp_path: Path, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Client]:  # fmt: skip
    """A Client over a fresh store: in process, or through a server of its own."""
    if transport == "local":
        yield Client(str(tmp_path / "evstore.db"))
        close_cached_stores(tmp_path)
        return
    if transport == "postgres":
        monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
        uri = request.getfixturevalue("postgres_database").new_store_uri()
        yield Client(uri)
        close_cached_stores(uri)
        return
    running = ThreadServer(tmp_path / "server-side")
    remote = Client(running.url)
    try:
        yield remote
    finally:
        remote.close()
        running.stop()


def head(client: Client) -> int:
    """The log's head position: unchanged means nothing was stored."""
    return client.store.head_position()


# --- ids, times and entity shapes ----------------------------------------------------------


def test_entities_take_mlflows_positional_order() -> None:
    metric = Metric("loss", 0.5, 1700000000000, 3)
    assert (metric.key, metric.value, metric.timestamp, metric.step) == ("loss", 0.5, 1700000000000, 3)
    assert (Param("lr", "0.1").key, Param("lr", "0.1").value) == ("lr", "0.1")
    assert (RunTag("team", "a").key, RunTag("team", "a").value) == ("team", "a")
    assert evstore.MlflowClient is Client


def test_ids_are_strings_and_times_are_int_ms(client: Client) -> None:
    experiment_id = client.create_experiment("exp")
    assert isinstance(experiment_id, str) and experiment_id.isdecimal()
    run = client.create_run(experiment_id, run_name="r")
    assert RUN_ID.match(run.info.run_id)
    assert run.info.experiment_id == experiment_id
    assert isinstance(run.info.start_time, int) and run.info.start_time > 1_600_000_000_000
    assert run.info.end_time is None
    client.set_terminated(run.info.run_id)
    ended = client.get_run(run.info.run_id).info
    assert isinstance(ended.end_time, int) and ended.end_time >= ended.start_time
    experiment = client.get_experiment(experiment_id)
    assert isinstance(experiment.creation_time, int) and experiment.creation_time > 1_600_000_000_000


# --- experiments ------------------------------------------------------------------------


def test_default_experiment_exists(client: Client) -> None:
    default = client.get_experiment("0")
    assert default.name == "Default"
    assert default.lifecycle_stage == "active"


def test_create_and_get_experiment(client: Client) -> None:
    experiment_id = client.create_experiment("exp", tags={"team": "vision", "n": 3})
    assert experiment_id == "1"  # decimal, counting from the Default experiment's 0
    assert client.create_experiment("exp2") == "2"
    experiment = client.get_experiment(experiment_id)
    assert experiment.experiment_id == "1"
    assert experiment.name == "exp"
    assert experiment.lifecycle_stage == "active"
    assert experiment.tags == {"team": "vision", "n": "3"}
    assert client.get_experiment_by_name("exp") == experiment
    assert client.get_experiment_by_name("no such") is None


def test_create_experiment_errors(client: Client) -> None:
    client.create_experiment("exp")
    before = head(client)
    with pytest.raises(ResourceAlreadyExists, match="exp"):
        client.create_experiment("exp")
    with pytest.raises(InvalidParameterValue, match="name"):
        client.create_experiment("")
    with pytest.raises(InvalidParameterValue, match="bad key"):
        client.create_experiment("other", tags={"bad key!": "x"})
    assert head(client) == before
    with pytest.raises(ResourceDoesNotExist, match="42"):
        client.get_experiment("42")


def test_search_experiments_views_and_order(client: Client) -> None:
    first = client.create_experiment("first")
    second = client.create_experiment("second")
    client.delete_experiment(first)
    listed = client.search_experiments()
    active = [e.experiment_id for e in listed]
    assert sorted(active) == ["0", second]
    # newest first, then by id, as MLflow orders them
    assert listed == sorted(listed, key=lambda e: (-(e.creation_time or 0), e.experiment_id))
    assert [e.experiment_id for e in client.search_experiments(ViewType.DELETED_ONLY)] == [first]
    every = {e.experiment_id for e in client.search_experiments(ViewType.ALL)}
    assert every == {"0", first, second}
    named = client.search_experiments(ViewType.ALL, filter_string="name LIKE 'sec%'")
    assert [e.name for e in named] == ["second"]
    page = client.search_experiments(ViewType.ALL, max_results=2)
    assert len(page) == 2 and page.token
    rest = client.search_experiments(ViewType.ALL, max_results=2, page_token=page.token)
    assert {e.experiment_id for e in [*page, *rest]} == every


def test_rename_experiment(client: Client) -> None:
    experiment_id = client.create_experiment("old")
    client.create_experiment("taken")
    client.rename_experiment(experiment_id, "new")
    assert client.get_experiment(experiment_id).name == "new"
    assert client.get_experiment_by_name("old") is None
    assert client.get_experiment_by_name("new").experiment_id == experiment_id  # type: ignore[union-attr]
    before = head(client)
    with pytest.raises(ResourceAlreadyExists, match="taken"):
        client.rename_experiment(experiment_id, "taken")
    with pytest.raises(InvalidParameterValue):
        client.rename_experiment(experiment_id, " ")
    with pytest.raises(ResourceDoesNotExist):
        client.rename_experiment("99", "x")
    client.delete_experiment(experiment_id)
    before = head(client)
    with pytest.raises(InvalidState):
        client.rename_experiment(experiment_id, "again")
    assert head(client) == before


def test_delete_and_restore_experiment(client: Client) -> None:
    experiment_id = client.create_experiment("exp")
    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    # As MLflow: deleting a deleted experiment finds no (active) experiment, and a run
    # under a deleted experiment is an invalid parameter.
    with pytest.raises(ResourceDoesNotExist):
        client.delete_experiment(experiment_id)
    with pytest.raises(InvalidParameterValue, match="must be in the 'active' state"):
        client.create_run(experiment_id)
    client.restore_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    with pytest.raises(ResourceDoesNotExist):
        client.restore_experiment(experiment_id)
    with pytest.raises(ResourceDoesNotExist):
        client.delete_experiment("77")
    with pytest.raises(ResourceDoesNotExist):
        client.restore_experiment("77")


def test_an_experiment_id_that_is_no_integer_is_an_invalid_parameter(client: Client) -> None:
    with pytest.raises(InvalidParameterValue, match="must be a valid integer"):
        client.get_experiment("not-a-number")
    with pytest.raises(ResourceDoesNotExist):
        client.get_experiment("12345")


def test_set_experiment_tag(client: Client) -> None:
    experiment_id = client.create_experiment("exp")
    client.set_experiment_tag(experiment_id, "owner", "ana")
    client.set_experiment_tag(experiment_id, "owner", "bo")
    client.set_experiment_tag(experiment_id, "count", 5)
    assert client.get_experiment(experiment_id).tags == {"owner": "bo", "count": "5"}
    with pytest.raises(ResourceDoesNotExist):
        client.set_experiment_tag("77", "owner", "x")
    with pytest.raises(InvalidParameterValue, match="bad\\|key"):
        client.set_experiment_tag(experiment_id, "bad|key", "x")


def test_experiment_tags_change_only_when_their_value_does(client: Client) -> None:
    # A tag set to the value it holds writes nothing (a retry is free); a deleted
    # experiment's tags are refused, as MLflow refuses them.
    experiment_id = client.create_experiment("exp")
    client.set_experiment_tag(experiment_id, "owner", "ana")
    before = head(client)
    client.set_experiment_tag(experiment_id, "owner", "ana")
    assert head(client) == before
    client.delete_experiment(experiment_id)
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="must be in the 'active' state"):
        client.set_experiment_tag(experiment_id, "owner", "bo")
    assert head(client) == before
    assert client.get_experiment(experiment_id).tags == {"owner": "ana"}


# --- runs -------------------------------------------------------------------------------


def test_create_and_get_run(client: Client) -> None:
    experiment_id = client.create_experiment("exp")
    run = client.create_run(
        experiment_id, tags={"team": "a", "size": 3}, run_name="first", start_time=1_700_000_000_000
    )
    info = run.info
    assert info.run_name == "first"
    assert info.status == "RUNNING"
    assert info.lifecycle_stage == "active"
    assert info.start_time == 1_700_000_000_000
    assert info.user_id
    assert info.artifact_uri.endswith(f"{info.run_id}/artifacts")
    assert run.data.tags["team"] == "a" and run.data.tags["size"] == "3"
    assert run.data.tags["mlflow.runName"] == "first"
    assert run.data.params == {} and run.data.metrics == {}
    assert client.get_run(info.run_id) == run
    unnamed = client.create_run(experiment_id, tags=[RunTag("k", "v")])
    assert unnamed.info.run_name and unnamed.data.tags["k"] == "v"


def test_reads_see_every_point_and_every_append_leaves_the_tables_whole(
    client: Client, run_id: str, tmp_path: Path
) -> None:
    # Every read model applies every append in its transaction: a reader of the file
    # (another process, plain sqlite3) sees each point as soon as it is logged.
    for step in range(5):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), timestamp=step, step=step)
        assert len(client.get_metric_history(run_id, "loss")) == step + 1
        assert client.get_run(run_id).data.metrics == {"loss": 1.0 / (step + 1)}
        with sqlite3.connect(tmp_path / "evstore.db") as raw:
            head = raw.execute("SELECT max(position) FROM events").fetchone()[0]
            assert raw.execute("SELECT DISTINCT checkpoint FROM projection_state").fetchall() == [
                (head,)
            ]
            assert len(history_points(raw)) == step + 1
        raw.close()
    client.log_metric(run_id, "loss", 9.0, timestamp=9, step=9)
    found = client.search_runs([client.get_run(run_id).info.experiment_id], "metrics.loss > 5")
    assert [run.info.run_id for run in found] == [run_id]


#: Only a guard against a hang if the code under test regressed; no test measures time.
#: Below the store's 60 s busy timeout, so a read that waited for the write lock is caught.
GUARD = 30


def test_a_read_never_takes_the_write_lock_even_with_a_model_behind(
    client: Client, run_id: str, tmp_path: Path
) -> None:
    from evstore.errors import StaleProjectionError
    from evstore.events import MetricPoint
    from evstore.stores import open_log

    path = tmp_path / "evstore.db"
    client.log_metric(run_id, "m", 1.0, timestamp=1, step=1)
    holder = sqlite3.connect(path, isolation_level=None)  # another process's write, open
    outcome: list[object] = []

    def read_while_held(read: Callable[[], object]) -> object:
        outcome.clear()
        holder.execute("BEGIN IMMEDIATE")
        try:
            worker = threading.Thread(target=lambda: outcome.append(_result_of(read)))
            worker.start()
            worker.join(GUARD)
            assert not worker.is_alive(), "the read waited for the write lock"
        finally:
            holder.execute("ROLLBACK")
        return outcome[0]

    # In step: the read answers while another connection holds the write lock.
    assert read_while_held(lambda: client.get_run(run_id).data.metrics) == {"m": 1.0}
    # A writer that does not keep the read models appends a point: they are behind the
    # log. A read neither catches them up (that would write) nor waits: it says so.
    with open_log(path) as bare:
        bare.append(run_id, [MetricsLogged(points=[MetricPoint("m", 2.0, 2, 2)])])
    head = client.store.head_position()
    refused = read_while_held(lambda: client.get_metric_history(run_id, "m"))
    assert isinstance(refused, StaleProjectionError)
    assert f"holds the log up to position {head - 1} but the log's head is {head}" in str(refused)
    assert "run `evstore rebuild --projection" in str(refused)
    # The next write through evstore applies what they lack, in its own transaction.
    client.log_metric(run_id, "m", 3.0, timestamp=3, step=3)
    assert [m.value for m in client.get_metric_history(run_id, "m")] == [1.0, 2.0, 3.0]
    holder.close()


def _result_of(call: Callable[[], object]) -> object:
    try:
        return call()
    except EvstoreError as e:  # every error evstore raises; the test checks which
        return e


def test_ending_a_run_any_way_leaves_the_tables_whole(
    client: Client, run_id: str, tmp_path: Path
) -> None:
    client.log_metric(run_id, "loss", 1.0, timestamp=1, step=1)
    client.update_run(run_id, status="KILLED")
    with sqlite3.connect(tmp_path / "evstore.db") as raw:
        head = raw.execute("SELECT max(position) FROM events").fetchone()[0]
        assert raw.execute("SELECT DISTINCT checkpoint FROM projection_state").fetchall() == [(head,)]
        assert len(history_points(raw)) == 1
    raw.close()


def test_create_run_errors(client: Client) -> None:
    before = head(client)
    with pytest.raises(ResourceDoesNotExist):
        client.create_run("55")
    with pytest.raises(InvalidParameterValue, match="bad\\*tag"):
        client.create_run("0", tags={"bad*tag": "v"})
    assert head(client) == before
    with pytest.raises(ResourceDoesNotExist, match="nope"):
        client.get_run("nope")


def test_set_terminated(client: Client, run_id: str) -> None:
    client.set_terminated(run_id, "FAILED", end_time=1_700_000_000_123)
    info = client.get_run(run_id).info
    assert (info.status, info.end_time) == ("FAILED", 1_700_000_000_123)
    client.set_terminated(run_id)
    assert client.get_run(run_id).info.status == "FINISHED"
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="DONE"):
        client.set_terminated(run_id, "DONE")
    assert head(client) == before
    with pytest.raises(ResourceDoesNotExist):
        client.set_terminated("0" * 32)


def test_delete_and_restore_run(client: Client, run_id: str) -> None:
    experiment_id = client.get_run(run_id).info.experiment_id
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == []
    deleted = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [run_id]
    client.restore_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]
    with pytest.raises(ResourceDoesNotExist):
        client.delete_run("f" * 32)
    with pytest.raises(ResourceDoesNotExist):
        client.restore_run("f" * 32)


def test_logging_to_a_deleted_run_is_refused(client: Client, run_id: str) -> None:
    client.delete_run(run_id)
    before = head(client)
    writes = [
        lambda: client.log_param(run_id, "p", "1"),
        lambda: client.log_metric(run_id, "m", 1.0),
        lambda: client.log_batch(run_id, metrics=[Metric("m", 1.0, 1, 0)]),
        lambda: client.set_tag(run_id, "t", "v"),
        lambda: client.set_terminated(run_id),
    ]
    for write in writes:  # MLflow answers INVALID_PARAMETER_VALUE
        with pytest.raises(InvalidParameterValue, match="must be in the 'active' state"):
            write()
    assert head(client) == before


# --- params -----------------------------------------------------------------------------


def test_log_param_same_value_is_fine_different_is_refused(client: Client, run_id: str) -> None:
    assert client.log_param(run_id, "lr", 0.01) == 0.01
    client.log_param(run_id, "lr", "0.01")  # the same string form: fine, and stored once
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="lr") as caught:
        client.log_param(run_id, "lr", 0.02)
    assert "0.01" in str(caught.value) and "0.02" in str(caught.value)
    assert head(client) == before
    assert client.get_run(run_id).data.params == {"lr": "0.01"}


def test_param_values_over_6000_chars_are_stored_whole(client: Client, run_id: str) -> None:
    long_value = "x" * 6000 + "y" * 4000 + "é"
    client.log_param(run_id, "long", long_value)
    assert client.get_run(run_id).data.params["long"] == long_value


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "non-empty"),
        ("a" * 251, "limit is 250"),
        ("bad!key", "may only contain"),
        ("../escape", "'\\.\\.'"),
        ("/absolute", "absolute"),
        ("a//b", "empty path segments"),
    ],
)
def test_key_validation_errors_say_what_was_wrong(
    client: Client, run_id: str, key: str, reason: str
) -> None:
    before = head(client)
    for write in (
        lambda: client.log_param(run_id, key, "v"),
        lambda: client.log_metric(run_id, key, 1.0),
        lambda: client.set_tag(run_id, key, "v"),
    ):
        with pytest.raises(InvalidParameterValue, match=reason):
            write()
    assert head(client) == before


def test_mlflow_key_characters_are_accepted(client: Client, run_id: str) -> None:
    key = "a-b_c.d e:f/g"
    client.log_param(run_id, key, 1)
    client.log_metric(run_id, key, 1.0)
    client.set_tag(run_id, key, "v")
    data = client.get_run(run_id).data
    assert (data.params[key], data.metrics[key], data.tags[key]) == ("1", 1.0, "v")


@given(st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_key_validation_answers_the_same_every_time(key: str) -> None:
    # validate_key remembers keys that passed; asking twice must give the same answer
    # (and a refused key is never remembered), also after the memory was cleared.
    from evstore import validation

    def answer() -> str | None:
        try:
            validation.validate_key("metric", key)
        except InvalidParameterValue as e:
            return str(e)
        return None

    first = answer()
    assert answer() == first
    assert (("metric", key) in validation._VALID_KEYS) == (first is None)
    validation._VALID_KEYS.clear()
    assert answer() == first


def test_an_idempotency_key_stores_a_retry_once_and_another_write_too(
    client: Client, run_id: str
) -> None:
    # A retry (same key, same call) is stored once...
    client.log_metric(run_id, "m", 1.0, timestamp=7, step=1, idempotency_key="k")
    before = head(client)
    client.log_metric(run_id, "m", 1.0, timestamp=7, step=1, idempotency_key="k")
    assert head(client) == before
    # ...and the same key on a different call stores that call instead of dropping it.
    client.log_metric(run_id, "m", 2.0, timestamp=7, step=2, idempotency_key="k")
    client.set_tag(run_id, "t", "a", idempotency_key="t")
    client.set_tag(run_id, "t", "b", idempotency_key="t")
    assert [p.value for p in client.get_metric_history(run_id, "m")] == [1.0, 2.0]
    assert client.get_run(run_id).data.tags["t"] == "b"
    batch = [Metric("b", 1.0, 5, 0)]
    client.log_batch(run_id, metrics=batch, params=[Param("p", "1")], idempotency_key="b")
    before = head(client)
    client.log_batch(run_id, metrics=batch, params=[Param("p", "1")], idempotency_key="b")
    assert head(client) == before  # the retry finds its params stored: still nothing new


@given(st.text())
def test_idempotent_event_ids_are_uuid5_of_the_key(name: str) -> None:
    # Ids of keyed writes must not change between versions: a retry after an upgrade
    # must find the events its first attempt stored. Text that is not UTF-8 never gets here.
    from evstore.tracking.service import uuid5_hex

    try:
        name.encode()
    except UnicodeEncodeError:
        return
    assert uuid5_hex(name) == uuid.uuid5(uuid.NAMESPACE_URL, name).hex


def test_a_local_retry_without_a_timestamp_is_still_the_same_request(tmp_path: Path) -> None:
    # Locally the key covers the call as asked, so the default timestamp (now, different on
    # the retry) does not make a retry a new write. (Over REST the body carries the time.)
    client = Client(str(tmp_path / "local.db"))
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    client.log_metric(run_id, "m", 1.0, step=1, idempotency_key="k")
    before = head(client)
    client.log_metric(run_id, "m", 1.0, step=1, idempotency_key="k")
    client.set_terminated(run_id, idempotency_key="end")
    client.set_terminated(run_id, idempotency_key="end")
    assert head(client) == before + 1


# --- metrics ----------------------------------------------------------------------------


def test_log_metric_and_latest_value(client: Client, run_id: str) -> None:
    client.log_metric(run_id, "acc", 0.5, timestamp=1000, step=1)
    client.log_metric(run_id, "acc", 0.9, timestamp=900, step=2)  # greater step wins
    client.log_metric(run_id, "acc", 0.1, timestamp=2000, step=0)
    assert client.get_run(run_id).data.metrics == {"acc": 0.9}
    client.log_metric(run_id, "loss", 3)  # step 0, timestamp now
    (point,) = client.get_metric_history(run_id, "loss")
    assert (point.key, point.value, point.step) == ("loss", 3.0, 0)
    assert isinstance(point.timestamp, int) and point.timestamp > 1_600_000_000_000


def test_log_metric_errors(client: Client, run_id: str) -> None:
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="must be a number"):
        client.log_metric(run_id, "m", "high")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterValue, match="timestamp"):
        client.log_metric(run_id, "m", 1.0, timestamp=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterValue, match="step"):
        client.log_metric(run_id, "m", 1.0, step="3")  # type: ignore[arg-type]
    with pytest.raises(ResourceDoesNotExist):
        client.log_metric("a" * 32, "m", 1.0)
    assert head(client) == before


def test_metric_values_convert_as_mlflow_converts_them(client: Client, run_id: str) -> None:
    # MLflow's client turns True, numpy scalars, one-element arrays and numeric strings into
    # floats (mlflow.tracking.metric_value_conversion_utils); training loops rely on it.
    import numpy as np

    accepted = {
        "bool": (True, 1.0),
        "np_float32": (np.float32(0.5), 0.5),
        "np_int64": (np.int64(3), 3.0),
        "zero_d_array": (np.array(2.5), 2.5),
        "one_element_array": (np.array([4.0]), 4.0),
        "numeric_string": ("1.5", 1.5),
    }
    for key, (value, _) in accepted.items():
        client.log_metric(run_id, key, value, timestamp=1, step=0)
    client.log_batch(
        run_id,
        metrics=[
            Metric("batch_bool", False, 1, 0),  # type: ignore[arg-type]
            Metric("batch_numpy", np.float32(0.25), np.int64(7), np.int64(3)),  # type: ignore[arg-type]
        ],
    )
    metrics = client.get_run(run_id).data.metrics
    expected = {k: v for k, (_, v) in accepted.items()}
    assert metrics == {**expected, "batch_bool": 0.0, "batch_numpy": 0.25}
    (point,) = client.get_metric_history(run_id, "batch_numpy")
    assert (point.value, point.timestamp, point.step) == (0.25, 7, 3)
    before = head(client)
    for refused in (np.array([1.0, 2.0]), None, "high", object(), 10**400):
        with pytest.raises(InvalidParameterValue, match="must be a number"):
            client.log_metric(run_id, "m", refused)  # type: ignore[arg-type]
        with pytest.raises(InvalidParameterValue, match="must be a number"):
            client.log_batch(run_id, metrics=[Metric("m", refused, 1, 0)])  # type: ignore[arg-type]
    assert head(client) == before


def test_numpy_strings_are_stored_as_plain_strings(client: Client, run_id: str) -> None:
    # MLflow turns numpy.str_ keys and values into str; msgspec cannot encode the subclass.
    import numpy as np

    client.log_param(run_id, np.str_("opt"), np.str_("adam"))
    client.set_tag(run_id, np.str_("team"), np.str_("vision"))
    data = client.get_run(run_id).data
    assert (data.params["opt"], data.tags["team"]) == ("adam", "vision")


def test_metric_history_keeps_order_nan_and_inf(client: Client, run_id: str) -> None:
    values = [1.0, math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]
    for step, value in enumerate(values):
        client.log_metric(run_id, "m", value, timestamp=10_000 - step, step=step)
    client.log_batch(run_id, metrics=[Metric("m", 7.0, 1, 0), Metric("m", math.nan, 2, 9)])
    history = client.get_metric_history(run_id, "m")
    # MLflow's order: by timestamp, then step, then value (not the order logged).
    assert [p.step for p in history] == [0, 9, *reversed(range(len(values)))]
    assert [p.timestamp for p in history][:2] == [1, 2]
    got = [p.value for p in history]
    assert math.isnan(got[1]) and math.isnan(got[7])
    assert got[5] == -math.inf and got[6] == math.inf
    assert [got[0], *got[2:5], got[8]] == [7.0, 5e-324, 1e308, -0.0, 1.0]
    assert client.get_metric_history(run_id, "other") == []
    assert client.get_metric_history("b" * 32, "m") == []  # an unknown run: none, as MLflow


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_metric_values_round_trip(client: Client, values: list[float]) -> None:
    run_id = client.create_run("0").info.run_id
    client.log_batch(run_id, metrics=[Metric("v", v, i, i) for i, v in enumerate(values)])
    got = [p.value for p in client.get_metric_history(run_id, "v")]
    assert len(got) == len(values)
    for expected, actual in zip(values, got):
        assert (math.isnan(expected) and math.isnan(actual)) or actual == expected


# --- log_batch --------------------------------------------------------------------------


def test_log_batch_stores_everything(client: Client, run_id: str) -> None:
    client.log_batch(
        run_id,
        metrics=[Metric("loss", 1.0, 100, 0), Metric("loss", 0.5, 200, 1)],
        params=[Param("lr", "0.1"), Param("opt", "adam")],
        tags=[RunTag("team", "a")],
    )
    data = client.get_run(run_id).data
    assert data.params == {"lr": "0.1", "opt": "adam"}
    assert data.metrics == {"loss": 0.5}
    assert data.tags["team"] == "a"
    assert [(m.value, m.timestamp, m.step) for m in client.get_metric_history(run_id, "loss")] == [
        (1.0, 100, 0),
        (0.5, 200, 1),
    ]


def test_identical_points_are_kept_once_as_mlflow_keeps_them(client: Client, run_id: str) -> None:
    # The same (key, value, timestamp, step) twice in one batch, and again in another call:
    # the log holds what was sent, the history lists the point once.
    twice = [Metric("m", 0.5, 10, 1), Metric("m", 0.5, 10, 1), Metric("m", math.nan, 11, 2),
             Metric("m", math.nan, 11, 2)]  # fmt: skip
    client.log_batch(run_id, metrics=twice)
    client.log_metric(run_id, "m", 0.5, timestamp=10, step=1)
    client.log_metric(run_id, "m", 0.25, timestamp=10, step=1)  # another value: another point
    history = client.get_metric_history(run_id, "m")
    assert [(p.timestamp, p.step) for p in history] == [(10, 1), (10, 1), (11, 2)]
    assert sorted(p.value for p in history[:2]) == [0.25, 0.5] and math.isnan(history[2].value)


def test_writes_mlflow_refuses_are_refused(client: Client, run_id: str) -> None:
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="Duplicate parameter keys"):
        client.log_batch(run_id, params=[Param("p", "1"), Param("p", "1")])  # even the same value
    with pytest.raises(InvalidParameterValue, match="nonnegative"):
        client.log_metric(run_id, "m", 1.0, timestamp=-1)
    with pytest.raises(InvalidParameterValue, match="nonnegative"):
        client.log_batch(run_id, metrics=[Metric("m", 1.0, -5, 0)])
    assert head(client) == before


def test_tags_change_only_when_their_value_does(client: Client, run_id: str) -> None:
    # set_tag and log_batch write a tag only when it changes; in a batch the last value of
    # a key wins, as in MLflow; update_run with what the run holds writes nothing.
    client.set_tag(run_id, "t", "1")
    before = head(client)
    client.set_tag(run_id, "t", "1")
    client.log_batch(run_id, tags=[RunTag("t", "1")])
    client.update_run(run_id, status="RUNNING", name=client.get_run(run_id).info.run_name)
    assert head(client) == before
    client.log_batch(run_id, tags=[RunTag("t", "2"), RunTag("t", "3")])
    assert client.get_run(run_id).data.tags["t"] == "3"
    client.set_tag(run_id, "t", "1")  # back to an earlier value: written
    assert client.get_run(run_id).data.tags["t"] == "1"


def test_a_run_carries_each_latest_metric_with_its_step_and_timestamp(
    client: Client, run_id: str
) -> None:
    client.log_batch(run_id, metrics=[Metric("a", 1.0, 100, 3), Metric("a", 2.0, 50, 7),
                                      Metric("b", math.inf, 7, 0)])  # fmt: skip
    latest = {m.key: m for m in client.get_run(run_id).data.latest_metrics}
    assert (latest["a"].value, latest["a"].timestamp, latest["a"].step) == (2.0, 50, 7)
    assert (latest["b"].value, latest["b"].timestamp, latest["b"].step) == (math.inf, 7, 0)
    run = client.search_runs([client.get_run(run_id).info.experiment_id])[0]
    assert {m.key: m.step for m in run.data.latest_metrics} == {"a": 7, "b": 0}
    assert "latest_metrics" not in run.to_dictionary()["data"]


@pytest.mark.parametrize(
    "batch",
    [
        {"metrics": [Metric("ok", 1.0, 1, 0), Metric("bad key!", 2.0, 1, 0)]},
        {"metrics": [Metric("ok", 1.0, 1, 0), Metric("m", "x", 1, 0)]},  # type: ignore[arg-type]
        {"metrics": [Metric("ok", 1.0, 1, 0)], "params": [Param("p", "1"), Param("p", "2")]},
        {"metrics": [Metric("ok", 1.0, 1, 0)], "params": [Param("lr", "0.2")]},  # lr is 0.1
        {"params": [Param("fine", "1")], "tags": [RunTag("../t", "v")]},
    ],
    ids=["bad-metric-key", "bad-metric-value", "duplicate-param", "changed-param", "bad-tag"],
)
def test_log_batch_with_one_bad_item_stores_nothing(
    client: Client, run_id: str, batch: dict[str, list[object]]
) -> None:
    client.log_param(run_id, "lr", "0.1")
    before_run = client.get_run(run_id)
    before = head(client)
    with pytest.raises(InvalidParameterValue):
        client.log_batch(run_id, **batch)  # type: ignore[arg-type]
    assert head(client) == before
    assert client.get_run(run_id) == before_run
    assert client.get_metric_history(run_id, "ok") == []


def test_log_batch_limits(client: Client, run_id: str) -> None:
    metrics = [Metric("m", float(i), i, i) for i in range(1000)]
    client.log_batch(run_id, metrics=metrics)  # exactly the limit is fine
    assert len(client.get_metric_history(run_id, "m")) == 1000
    before = head(client)
    too_many = [
        ({"metrics": [*metrics, Metric("m", 1.0, 1, 1)]}, "at most 1000 metrics"),
        ({"params": [Param(f"p{i}", "v") for i in range(101)]}, "at most 100 params"),
        ({"tags": [RunTag(f"t{i}", "v") for i in range(101)]}, "at most 100 tags"),
        (
            {"metrics": metrics[:950], "params": [Param(f"p{i}", "v") for i in range(51)]},
            "in total",
        ),
    ]
    for batch, message in too_many:
        with pytest.raises(InvalidParameterValue, match=message):
            client.log_batch(run_id, **batch)  # type: ignore[arg-type]
    assert head(client) == before


def test_log_batch_empty_is_a_no_op(client: Client, run_id: str) -> None:
    before = head(client)
    client.log_batch(run_id)
    assert head(client) == before


# --- tags -------------------------------------------------------------------------------


def test_set_and_delete_tag(client: Client, run_id: str) -> None:
    client.set_tag(run_id, "stage", "dev")
    client.set_tag(run_id, "stage", "prod")
    client.set_tag(run_id, "n", 7)
    tags = client.get_run(run_id).data.tags
    assert (tags["stage"], tags["n"]) == ("prod", "7")
    client.delete_tag(run_id, "stage")
    assert "stage" not in client.get_run(run_id).data.tags
    before = head(client)
    with pytest.raises(ResourceDoesNotExist, match="stage"):
        client.delete_tag(run_id, "stage")
    with pytest.raises(ResourceDoesNotExist, match="never"):
        client.delete_tag(run_id, "never")
    with pytest.raises(ResourceDoesNotExist):
        client.set_tag("c" * 32, "k", "v")
    assert head(client) == before


# --- artifacts --------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_log_artifact_list_and_download(client: Client, run_id: str, tmp_path: Path) -> None:
    source = _write(tmp_path / "in" / "config.txt", b"lr=0.01\n")
    client.log_artifact(run_id, str(source))
    client.log_artifact(run_id, str(source), artifact_path="configs/v1")
    listing = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir, f.file_size) for f in listing] == [
        ("config.txt", False, 8),
        ("configs", True, None),
    ]
    assert [(f.path, f.is_dir) for f in client.list_artifacts(run_id, "configs")] == [
        ("configs/v1", True)
    ]
    assert [(f.path, f.file_size) for f in client.list_artifacts(run_id, "configs/v1")] == [
        ("configs/v1/config.txt", 8)
    ]
    out = client.download_artifacts(run_id, "configs/v1/config.txt", str(tmp_path / "out"))
    assert out == str(tmp_path / "out" / "configs" / "v1" / "config.txt")
    assert Path(out).read_bytes() == b"lr=0.01\n"


def test_log_artifacts_keeps_nested_layout(client: Client, run_id: str, tmp_path: Path) -> None:
    tree = {
        "model/weights.bin": bytes(range(256)) * 10,
        "model/meta/info.json": b'{"a": 1}',
        "readme.md": b"# hi\n",
        "empty.txt": b"",
    }
    for name, data in tree.items():
        _write(tmp_path / "src" / name, data)
    client.log_artifacts(run_id, str(tmp_path / "src"), artifact_path="outputs")
    top = client.list_artifacts(run_id, "outputs")
    assert [(f.path, f.is_dir, f.file_size) for f in top] == [
        ("outputs/empty.txt", False, 0),
        ("outputs/model", True, None),
        ("outputs/readme.md", False, 5),
    ]
    model = client.list_artifacts(run_id, "outputs/model")
    assert [(f.path, f.is_dir, f.file_size) for f in model] == [
        ("outputs/model/meta", True, None),
        ("outputs/model/weights.bin", False, 2560),
    ]
    # a directory downloads with its layout; every file's bytes and sha256 match
    local = client.download_artifacts(run_id, "outputs", str(tmp_path / "dst"))
    assert local == str(tmp_path / "dst" / "outputs")
    for name, data in tree.items():
        copied = (Path(local) / name).read_bytes()
        assert hashlib.sha256(copied).hexdigest() == hashlib.sha256(data).hexdigest()
    # the whole run downloads into a fresh directory when dst_path is not given
    everything = client.download_artifacts(run_id)
    assert (Path(everything) / "outputs" / "model" / "weights.bin").read_bytes() == tree["model/weights.bin"]


def test_artifacts_are_content_addressed(client: Client, run_id: str, tmp_path: Path) -> None:
    data = b"same bytes"
    _write(tmp_path / "a.txt", data)
    _write(tmp_path / "b.txt", data)
    client.log_artifact(run_id, str(tmp_path / "a.txt"))
    client.log_artifact(run_id, str(tmp_path / "b.txt"))
    sha = hashlib.sha256(data).hexdigest()
    objects = [p for p in Path(client.artifact_root, "objects").rglob("*") if p.is_file()]
    assert [p.name for p in objects] == [sha]
    assert client.artifact_digest(run_id, "a.txt") == (len(data), sha)


def test_tampered_artifact_bytes_are_refused_on_download(
    client: Client, run_id: str, tmp_path: Path
) -> None:
    _write(tmp_path / "model.bin", b"the real weights")
    client.log_artifact(run_id, str(tmp_path / "model.bin"))
    sha = hashlib.sha256(b"the real weights").hexdigest()
    stored = Path(client.artifact_root, "objects", sha[:2], sha)
    stored.write_bytes(b"the fake weights")
    with pytest.raises(InvalidState, match="corrupt"):
        client.download_artifacts(run_id, "model.bin", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "model.bin").exists()
    with pytest.raises(InvalidState, match="corrupt"):
        client.read_artifact(run_id, "model.bin")
    stored.unlink()
    with pytest.raises(InvalidState, match="missing"):
        client.download_artifacts(run_id, "model.bin", str(tmp_path / "out"))


def test_artifact_errors(client: Client, run_id: str, tmp_path: Path) -> None:
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="No such file"):
        client.log_artifact(run_id, str(tmp_path / "missing.txt"))
    with pytest.raises(InvalidParameterValue, match="No such directory"):
        client.log_artifacts(run_id, str(tmp_path / "missing"))
    _write(tmp_path / "f.txt", b"x")
    with pytest.raises(InvalidParameterValue, match="'\\.\\.'"):
        client.log_artifact(run_id, str(tmp_path / "f.txt"), artifact_path="../up")
    with pytest.raises(ResourceDoesNotExist):
        client.log_artifact("d" * 32, str(tmp_path / "f.txt"))
    assert head(client) == before
    with pytest.raises(ResourceDoesNotExist, match="nothing.txt"):
        client.download_artifacts(run_id, "nothing.txt", str(tmp_path / "out"))
    with pytest.raises(ResourceDoesNotExist):
        client.list_artifacts("d" * 32)
    client.delete_run(run_id)
    with pytest.raises(InvalidParameterValue, match="active"):
        client.log_artifact(run_id, str(tmp_path / "f.txt"))


# --- search_runs ------------------------------------------------------------------------


def test_search_runs_filters_orders_and_pages(client: Client) -> None:
    experiment_id = client.create_experiment("sweep")
    other = client.create_experiment("other")
    ids = {}
    for index, lr in enumerate(["0.1", "0.01", "0.001"]):
        run = client.create_run(experiment_id, run_name=f"lr-{lr}", start_time=1000 + index)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("acc", 0.5 + index / 10, 1, 0)],
            params=[Param("lr", lr)],
            tags=[RunTag("kind", "sweep")],
        )
        ids[lr] = run.info.run_id
    client.create_run(other)
    found = client.search_runs([experiment_id], "metrics.acc > 0.55 and params.lr != '0.001'")
    assert [r.info.run_id for r in found] == [ids["0.01"]]
    assert found[0].data.params == {"lr": "0.01"} and found[0].data.metrics == {"acc": 0.6}
    ordered = client.search_runs(experiment_id, order_by=["metrics.acc DESC"])
    assert [r.info.run_id for r in ordered] == [ids["0.001"], ids["0.01"], ids["0.1"]]
    newest_first = client.search_runs([experiment_id])
    assert [r.info.run_id for r in newest_first] == [ids["0.001"], ids["0.01"], ids["0.1"]]
    first = client.search_runs([experiment_id], max_results=2, order_by=["params.lr ASC"])
    assert len(first) == 2 and first.token
    rest = client.search_runs([experiment_id], max_results=2, order_by=["params.lr ASC"],
                              page_token=first.token)  # fmt: skip
    assert rest.token is None
    assert [r.data.params["lr"] for r in [*first, *rest]] == ["0.001", "0.01", "0.1"]
    assert len(client.search_runs([experiment_id, other])) == 4


def test_search_runs_bad_filter_says_where(client: Client) -> None:
    with pytest.raises(InvalidParameterValue) as caught:
        client.search_runs(["0"], "metrics.acc >> 1")
    assert "^" in str(caught.value)


# --- one store per file, shared by clients ------------------------------------------------


def test_two_clients_on_one_file_see_each_other(client: Client, tmp_path: Path) -> None:
    other = Client(f"sqlite:///{tmp_path / 'evstore.db'}")
    experiment_id = other.create_experiment("shared")
    assert client.get_experiment_by_name("shared").experiment_id == experiment_id  # type: ignore[union-attr]
    assert os.path.exists(tmp_path / "evstore.db")


def test_metric_context_of_mlflow_3_is_kept_in_the_log(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    client.log_metric(run_id, "acc", 0.9, timestamp=1, step=0, model_id="m-1",
                      dataset_name="eval", dataset_digest="abc")  # fmt: skip
    client.log_batch(run_id, metrics=[Metric("acc", 0.8, 2, 1, "m-2", "train", "def")])
    assert [m.value for m in client.get_metric_history(run_id, "acc")] == [0.9, 0.8]
    if not hasattr(client.store, "read_stream"):
        return  # a remote client sees only the head; test_server checks the server's log
    points = [
        p for e in client.store.read_stream(run_id) if isinstance(e.event, MetricsLogged)
        for p in e.event.points
    ]  # fmt: skip
    assert [(p.model_id, p.dataset_name, p.dataset_digest) for p in points] == [
        ("m-1", "eval", "abc"), ("m-2", "train", "def"),
    ]


def test_a_client_for_an_http_uri_talks_to_a_server() -> None:
    from evstore.tracking.http import HttpTransport

    assert isinstance(Client("http://127.0.0.1:9")._transport, HttpTransport)
