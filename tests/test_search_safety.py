"""Searches that cannot hurt the store: a time budget, and reads that never hold the write
path (in process and through the server). No test here measures time: a search is held
midway by a SQL function that waits on an Event, and a budget of 0 stops any statement
that reaches SQLite's progress handler."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import close_cached_stores, history_points
from waiting import wait_until

from evstore import Client, search
from evstore.entities import Param
from evstore.errors import InvalidParameterValue, SearchTimeout
from evstore.server.gate import StoreGate

API = "/api/2.0/mlflow"
#: Only a guard against a hang if the code under test regressed; no test measures time.
GUARD = 60


def finishes(function: Callable[[], Any]) -> Any:
    """Run ``function`` on its own thread and return its result; fail if it never ends
    (it waits on something the test holds)."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(function()), daemon=True)
    worker.start()
    worker.join(GUARD)
    assert not worker.is_alive(), "the call waited on the held read"
    assert result, "the call raised"
    return result[0]


class HeldSearch:
    """Makes the next ILIKE on a fresh connection wait midway until ``release()``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        real = search._sql_ilike

        def held(value: Any, pattern: Any) -> int | None:
            self.entered.set()
            self.released.wait(2 * GUARD)  # longer than ``finishes`` waits for the others
            return real(value, pattern)

        # Connections register the function on first use: fresh threads get this one.
        monkeypatch.setattr(search, "_sql_ilike", held)

    def wait_entered(self) -> None:
        assert self.entered.wait(GUARD), "the search never reached its filter"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def filled(client: Client, monkeypatch: pytest.MonkeyPatch) -> Client:
    """A store with 300 runs, each with a param p; budgets looked at every 100 SQLite
    steps (not 10,000), so that searching 300 runs reaches the progress handler."""
    monkeypatch.setattr(search, "_BUDGET_STEPS", 100)
    for i in range(300):
        run_id = client.create_run("0").info.run_id
        client.log_batch(run_id, params=[Param("p", f"value {i}")])
    return client


# --- time budget -------------------------------------------------------------------------


def test_a_search_past_its_budget_is_stopped(filled: Client) -> None:
    with filled.reading() as conn:
        found, _ = search.search_run_ids(
            conn, "params.p LIKE '%9%'", experiment_ids=["0"], max_results=None
        )
        assert len(found) == 57  # 9, 19, ..., 299: the same search within its budget
        with pytest.raises(SearchTimeout, match="time budget of 0 s") as caught:
            search.search_run_ids(
                conn, "params.p LIKE '%9%'", experiment_ids=["0"], max_results=None, timeout=0
            )
        assert caught.value.error_code == "DEADLINE_EXCEEDED"
        # The budget is gone with the search: the connection runs long statements again.
        assert conn.execute("SELECT count(*) FROM params").fetchone()[0] == 300


def test_the_budget_comes_from_the_environment(
    filled: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(300):
        filled.create_experiment(f"experiment {i}")
    monkeypatch.setenv("EVSTORE_SEARCH_TIMEOUT", "0")
    with pytest.raises(SearchTimeout):
        filled.search_runs(["0"], "params.p ILIKE '%9%'")
    with pytest.raises(SearchTimeout):
        filled.search_experiments(filter_string="name LIKE '%9%'")
    monkeypatch.setenv("EVSTORE_SEARCH_TIMEOUT", "inf")
    assert len(filled.search_runs(["0"], "params.p ILIKE '%9%'")) == 57
    assert len(filled.search_experiments(filter_string="name LIKE '%9%'")) == 57
    filled.log_metric(filled.search_runs(["0"], max_results=1)[0].info.run_id, "m", 1.0)


@pytest.mark.parametrize("bad", ["-1", "soon", "nan"])
def test_a_bad_budget_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("EVSTORE_SEARCH_TIMEOUT", bad)
    with pytest.raises(InvalidParameterValue, match="EVSTORE_SEARCH_TIMEOUT"):
        search.search_timeout()


def test_the_default_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVSTORE_SEARCH_TIMEOUT", raising=False)
    assert search.search_timeout() == search.DEFAULT_SEARCH_TIMEOUT == 10.0
    monkeypatch.setenv("EVSTORE_SEARCH_TIMEOUT", "2.5")
    assert search.search_timeout() == 2.5


# --- reads never hold the write path (in process) ----------------------------------------


def test_an_open_read_does_not_delay_an_append(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    client.log_metric(run_id, "m", 1.0, step=0)
    opened, done = threading.Event(), threading.Event()
    seen: list[int] = []

    def long_read() -> None:
        with client.reading() as conn:
            seen.append(len(history_points(conn, run_id)))
            opened.set()
            done.wait(GUARD)
            seen.append(len(history_points(conn, run_id)))

    reader = threading.Thread(target=long_read, daemon=True)
    reader.start()
    try:
        assert opened.wait(GUARD)
        finishes(lambda: client.log_metric(run_id, "m", 2.0, step=1))
        assert [m.value for m in client.get_metric_history(run_id, "m")] == [1.0, 2.0]
    finally:
        done.set()
        reader.join(GUARD)
    assert seen == [1, 1]  # the open read kept its snapshot


def test_a_search_held_midway_does_not_delay_appends(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = client.create_run("0").info.run_id
    client.log_batch(before, params=[Param("p", "x")])
    held = HeldSearch(monkeypatch)
    results: list[Any] = []
    searcher = threading.Thread(
        target=lambda: results.append(client.search_runs(["0"], "params.p ILIKE 'X'")),
        daemon=True,
    )
    searcher.start()
    try:
        held.wait_entered()
        during = finishes(lambda: client.create_run("0").info.run_id)
        finishes(lambda: client.log_batch(during, params=[Param("p", "x")]))
        finishes(lambda: client.log_metric(before, "m", 1.0))
    finally:
        held.release()
        searcher.join(GUARD)
    # The search read one snapshot: the run logged while it ran is not in it.
    assert [run.info.run_id for run in results[0]] == [before]
    assert {r.info.run_id for r in client.search_runs(["0"], "params.p = 'x'")} == {before, during}


def test_reads_use_a_connection_per_thread_that_is_closed_with_the_store(client: Client) -> None:
    store = client.store
    with store.reading() as first, store.reading() as nested:
        assert nested is first and first is not store.connection
    other: list[Any] = []
    worker = threading.Thread(target=lambda: other.append(store.read_connection()))
    worker.start()
    worker.join(GUARD)
    assert other[0] is not first
    with store.transaction() as conn, store.reading() as inside:
        assert inside is conn  # inside its own write a thread reads what it wrote
    # A thread that ended leaves its connection to be closed by the next one opened.
    finishes(store.read_connection)
    with pytest.raises(Exception, match="closed"):
        other[0].execute("SELECT 1")


# --- reads never hold the write path (the server) ----------------------------------------


def test_the_gate_runs_a_quick_call_while_a_slow_one_waits() -> None:
    gate = StoreGate()
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        return "slow" if release.wait(GUARD) else "never released"

    async def both() -> tuple[str, str]:
        pending = asyncio.ensure_future(gate.slow(slow))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, GUARD)
        quick = await gate.quick(lambda: "quick")
        queued = await gate.slow(lambda: "another slow")  # the pool has room too
        release.set()
        assert queued == "another slow"
        return quick, await pending

    try:
        assert asyncio.run(both()) == ("quick", "slow")
    finally:
        release.set()
        gate.shutdown()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """The real server (uvicorn) in this process, on a free port, over a fresh store; an
    httpx client to it."""
    import httpx
    import uvicorn

    from evstore.server import ServerSettings, create_app

    app = create_app(ServerSettings(store=str(tmp_path / "server.db")))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:

        def started() -> bool:
            assert thread.is_alive(), "the server did not start"
            return bool(server.started)

        wait_until(started, "uvicorn starting in a thread")
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=GUARD) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(GUARD)
        close_cached_stores(tmp_path)


def _post(http: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"{API}/{path}", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_search_held_midway_on_the_server_does_not_delay_appends(
    served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _post(served, "runs/create", {"experiment_id": "0"})["run"]["info"]["run_id"]
    _post(served, "runs/log-parameter", {"run_id": before, "key": "p", "value": "x"})
    held = HeldSearch(monkeypatch)
    body = {"experiment_ids": ["0"], "filter": "params.p ILIKE 'X'"}
    answers: list[Any] = []
    searcher = threading.Thread(
        target=lambda: answers.append(served.post(f"{API}/runs/search", json=body)), daemon=True
    )
    searcher.start()
    try:
        held.wait_entered()
        during = finishes(lambda: _post(served, "runs/create", {"experiment_id": "0"}))
        during_id = during["run"]["info"]["run_id"]
        point = {"run_id": before, "key": "m", "value": 1.0, "timestamp": 5, "step": 0}
        finishes(lambda: _post(served, "runs/log-metric", point))
        finishes(lambda: _post(served, "runs/log-parameter", {"run_id": during_id, "key": "p", "value": "x"}))
        history = finishes(
            lambda: served.get(f"{API}/metrics/get-history", params={"run_id": before, "metric_key": "m"})
        )
        assert [m["value"] for m in history.json()["metrics"]] == [1.0]
    finally:
        held.release()
        searcher.join(GUARD)
    assert answers[0].status_code == 200
    assert [run["info"]["run_id"] for run in answers[0].json()["runs"]] == [before]


def test_a_search_past_its_budget_answers_deadline_exceeded(
    served: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "_BUDGET_STEPS", 100)  # as in ``filled``
    local = Client(str(tmp_path / "server.db"))  # the server's own store, in this process
    for i in range(300):
        local.log_batch(local.create_run("0").info.run_id, params=[Param("p", f"value {i}")])
    monkeypatch.setenv("EVSTORE_SEARCH_TIMEOUT", "0")
    body = {"experiment_ids": ["0"], "filter": "params.p ILIKE '%9%'"}
    response = served.post(f"{API}/runs/search", json=body)
    assert response.status_code == 400
    assert response.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert "time budget" in response.json()["message"]
    monkeypatch.delenv("EVSTORE_SEARCH_TIMEOUT")
    assert len(_post(served, "runs/search", body)["runs"]) == 57
