"""Fixtures shared by the whole suite: a temp store path, and the log over every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evstore.stores import EventStore, open_log

#: Every backend the log contract runs against. A new backend adds its name here and a
#: branch in ``_open_backend``; the contract tests then run against it unchanged.
BACKENDS = ["sqlite"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The path of a store file that does not exist yet, in the test's temp directory."""
    return tmp_path / "evstore.db"


@pytest.fixture(params=BACKENDS)
def log(request: pytest.FixtureRequest, db_path: Path) -> Iterator[EventStore]:
    """An empty event log, once per backend."""
    store = _open_backend(request.param, db_path)
    try:
        yield store
    finally:
        store.close()


def _open_backend(backend: str, db_path: Path) -> EventStore:
    if backend == "sqlite":
        return open_log(db_path)
    raise ValueError(f"no such backend in the test suite: {backend}")
