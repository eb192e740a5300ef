"""Each durability level is applied where it counts: read back from the writing connection.

What each level survives is stated in the README ("Durability"); here the setting that
gives it is checked as the database reports it, not as the code meant to set it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS, close_cached_stores

from evstore import Client
from evstore.errors import InvalidParameterValue
from evstore.events import TagSet
from evstore.projection import open_store
from evstore.stores import open_log
from evstore.stores import sqlite as sqlite_store

#: Per backend and level, the settings the writing connection must report. SQLite's
#: ``PRAGMA synchronous`` reads back as a number: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
#: PostgreSQL's write transaction: its commit's wait, and READ COMMITTED (which the
#: append order needs: each statement sees what committed before the lock was granted).
EXPECTED = {
    "sqlite": {
        "normal": {"journal_mode": "wal", "synchronous": 1},
        "full": {"journal_mode": "wal", "synchronous": 2},
    },
    "postgres": {
        "normal": {"synchronous_commit": "local", "transaction_isolation": "read committed"},
        "full": {"synchronous_commit": "on", "transaction_isolation": "read committed"},
    },
}
LEVELS = [(backend, level) for backend in BACKENDS for level in EXPECTED[backend]]
#: The backends whose stores keep the read models (and so a Client) so far.
WITH_READ_MODELS = ["sqlite"]


def offered(backend: str) -> set[str]:
    """The levels the backend's store takes."""
    if backend == "postgres":
        from evstore.stores import postgres

        return set(postgres.DURABILITY)
    return set(sqlite_store.DURABILITY)


def read_back(backend: str, store: Any) -> dict[str, Any]:
    """The durability settings of the store's writing connection, as the database says."""
    if backend == "sqlite":
        conn: sqlite3.Connection = store.connection
        return {
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
        }
    if backend == "postgres":
        with store.transaction() as conn:
            return {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("synchronous_commit", "transaction_isolation")
            }
    raise ValueError(f"no such backend in the test suite: {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_level_the_store_offers_is_checked_here(backend: str) -> None:
    assert offered(backend) == set(EXPECTED[backend])


@pytest.mark.parametrize(("backend", "level"), LEVELS)
def test_each_level_is_the_setting_read_back(backend: str, level: str, store_uri: str) -> None:
    with open_log(store_uri, durability=level) as log:
        assert read_back(backend, log) == EXPECTED[backend][level]
        # still so after a write: the setting belongs to the connection, not one statement
        log.append("run", [TagSet(key="k", value="v")])
        assert read_back(backend, log) == EXPECTED[backend][level]


@pytest.mark.parametrize(("backend", "level"), LEVELS)
def test_a_reopened_store_runs_at_the_level_asked_now(
    backend: str, level: str, store_uri: str
) -> None:
    # The level is the opener's choice, not the file's: open at the other one first.
    other = next(name for name in EXPECTED[backend] if name != level)
    open_log(store_uri, durability=other).close()
    with open_log(store_uri, durability=level) as log:
        assert read_back(backend, log) == EXPECTED[backend][level]


@pytest.mark.parametrize(("backend", "level"), [(b, level) for b, level in LEVELS if b in WITH_READ_MODELS])
def test_a_store_opened_with_its_read_models_runs_at_the_level_asked(
    backend: str, level: str, db_path: Path
) -> None:
    runner = open_store(db_path, durability=level)
    try:
        assert read_back(backend, runner.store) == EXPECTED[backend][level]
    finally:
        runner.store.close()


@pytest.mark.parametrize("backend", WITH_READ_MODELS)
def test_the_tracking_client_writes_at_the_default_level(backend: str, tmp_path: Path) -> None:
    client = Client(str(tmp_path / "evstore.db"))
    try:
        assert read_back(backend, client.store) == EXPECTED[backend]["normal"]
    finally:
        close_cached_stores(tmp_path)


def test_an_unknown_level_is_refused_naming_the_levels_and_creates_nothing(db_path: Path) -> None:
    with pytest.raises(
        InvalidParameterValue, match="durability must be one of normal, full, not 'off'"
    ):
        open_log(db_path, durability="off")
    assert not db_path.exists()
