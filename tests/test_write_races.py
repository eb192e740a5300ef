"""Processes racing to write the same key of one run keep the tracking rules.

Each writer is its own OS process with its own connection to one real store file. A
barrier holds every writer at the door of its write transaction, after whatever it
read before that, so they all enter it together: a rule checked on a read taken
outside the write transaction (a check-then-write race) lets every writer through,
and these tests see it every time, not by luck of scheduling.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from waiting import PATIENCE

from evstore import Client
from evstore.errors import EvstoreError, InvalidParameterValue
from evstore.events import ParamsLogged, TagSet

WRITERS = 4


def write_at_the_barrier(
    path: str, run_id: str, call: str, key: str, value: str, barrier: Any, results: Any
) -> None:
    """In a writer process: ``client.<call>(run_id, key, value)``, entering its write
    transaction only when every writer is at that door; puts what happened on ``results``."""
    try:
        client = Client(path)
        store = client.store
        enter = store.transaction
        first = [True]

        @contextmanager
        def transaction_after_the_barrier() -> Iterator[Any]:
            if first:  # the call's first write transaction waits for all the writers
                first.clear()
                barrier.wait(PATIENCE)
            with enter() as conn:
                yield conn

        store.transaction = transaction_after_the_barrier
        try:
            getattr(client, call)(run_id, key, value)
            outcome: tuple[str, ...] = (value, "stored")
        except EvstoreError as e:
            outcome = (value, type(e).__name__, e.error_code, str(e))
        results.put(outcome)
    except BaseException as e:  # anything else is the test's own failure: report it
        results.put((value, "crashed", repr(e)))
        raise


def race(path: Path, run_id: str, call: str, key: str, values: list[str]) -> list[tuple[str, ...]]:
    """Run one writer process per value, all calling ``call`` for ``key`` at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(values))
    results = context.Queue()
    writers = [
        context.Process(
            target=write_at_the_barrier,
            args=(str(path), run_id, call, key, value, barrier, results),
        )
        for value in values
    ]
    for writer in writers:
        writer.start()
    try:
        outcomes = []
        for _ in writers:
            try:
                outcomes.append(results.get(timeout=PATIENCE))
            except queue.Empty:
                raise AssertionError(f"a writer reported nothing within {PATIENCE:g} s") from None
        for writer in writers:
            writer.join(PATIENCE)
            assert writer.exitcode == 0, f"a writer exited with {writer.exitcode}: {outcomes}"
    finally:
        for writer in writers:
            if writer.is_alive():
                writer.kill()
                writer.join()
    crashed = [outcome for outcome in outcomes if outcome[1] == "crashed"]
    assert not crashed, crashed
    return outcomes


def test_processes_logging_one_param_differently_store_exactly_one(client: Client) -> None:
    experiment_id = client.create_experiment("race")
    run_id = client.create_run(experiment_id).info.run_id
    values = [f"value-{i}" for i in range(WRITERS)]

    outcomes = race(Path(client.tracking_uri), run_id, "log_param", "lr", values)

    # Exactly one writer stored its value; every other got the error the Client raises
    # for changing a param (MLflow's INVALID_PARAMETER_VALUE), naming the stored value.
    stored = [value for value, what, *_ in outcomes if what == "stored"]
    assert len(stored) == 1, outcomes
    (winner,) = stored
    refused = [outcome for outcome in outcomes if outcome[1] != "stored"]
    assert len(refused) == WRITERS - 1
    for value, name, code, message in refused:
        assert (name, code) == (InvalidParameterValue.__name__, "INVALID_PARAMETER_VALUE")
        assert "Changing param values is not allowed" in message
        assert f"already logged with value='{winner}'" in message
        assert f"Attempted logging new value '{value}'" in message

    # The log holds one ParamsLogged carrying the key, with the winner's value; the run
    # reads it back.
    logged = [
        r.event.params["lr"]
        for r in client.store.read_stream(run_id)
        if isinstance(r.event, ParamsLogged) and "lr" in r.event.params
    ]
    assert logged == [winner]
    assert client.get_run(run_id).data.params == {"lr": winner}


def test_processes_setting_one_tag_leave_the_last_value_in_log_order(client: Client) -> None:
    experiment_id = client.create_experiment("race")
    run_id = client.create_run(experiment_id).info.run_id
    values = [f"value-{i}" for i in range(WRITERS)]

    outcomes = race(Path(client.tracking_uri), run_id, "set_tag", "stage", values)

    # Tags may change: every writer stored its value, one TagSet each...
    assert sorted(outcomes) == [(value, "stored") for value in values]
    written = [
        r.event.value
        for r in client.store.read_stream(run_id)
        if isinstance(r.event, TagSet) and r.event.key == "stage"
    ]
    assert sorted(written) == values
    # ...and the value left is the last one in log order, whichever process that was.
    assert client.get_run(run_id).data.tags["stage"] == written[-1]
