"""Fixtures shared by the whole suite: a temp store path, the log over every backend, and a
Client over a fresh store (with a run), closed afterwards."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from evstore import Client, fluent
from evstore.stores import EventStore, open_log
from evstore.tracking import service as client_module

# No Hypothesis test has a per-example deadline (its default is 200 ms): the tests check
# behaviour, and on a loaded machine a time limit fails them by chance. Loaded before
# any test module, so each test's own @settings inherits it.
settings.register_profile("evstore", deadline=None)
settings.load_profile("evstore")

#: Every backend the log contract runs against. A new backend adds its name here and a
#: branch in ``backend_uri``; the contract and crash tests then run against it unchanged,
#: and the append-only and durability tests ask for its raw tables and settings.
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


def backend_uri(backend: str, db_path: Path) -> str:
    """The URI ``open_log`` takes for a store of ``backend`` (SQLite: the temp file), also
    from another process."""
    if backend == "sqlite":
        return str(db_path)
    raise ValueError(f"no such backend in the test suite: {backend}")


def _open_backend(backend: str, db_path: Path) -> EventStore:
    return open_log(backend_uri(backend, db_path))


def close_cached_stores(directory: Path) -> None:
    """Close and forget the stores evstore.Client cached for files under ``directory``."""
    for path in [p for p in client_module._stores if p.startswith(str(directory))]:
        runner = client_module._stores.pop(path)
        runner.detach()
        runner.store.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    """A Client over a fresh store file; the cached store is closed afterwards."""
    fluent._state.__dict__.clear()
    yield Client(str(tmp_path / "evstore.db"))
    fluent._state.__dict__.clear()
    close_cached_stores(tmp_path)


@pytest.fixture
def run_id(client: Client) -> str:
    """A RUNNING run in a fresh experiment."""
    return client.create_run(client.create_experiment("exp")).info.run_id


# --- references the tests compare against ------------------------------------------------


def nan_safe(value: Any) -> Any:
    """The value with NaN replaced by a marker, so == compares NaN as equal to NaN."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, dict):
        return {k: nan_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_safe(v) for v in value]
    return value


def like_reference(value: str, pattern: str, flags: int = 0) -> bool:
    """SQL LIKE by a backtracking regex, escapes turned into literals by hand."""
    parts, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            parts.append(re.escape(pattern[i + 1] if i + 1 < len(pattern) else "\\"))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(parts), value, flags | re.DOTALL) is not None


def history_points(db: Any, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """Every point the metric history holds, as (run_id, key, step, timestamp, value): by
    run and key, each series in the order its points were logged. ``db`` is a store or a
    connection."""
    from evstore.reads import series_points

    conn = getattr(db, "connection", db)
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
    series = conn.execute(
        f"SELECT series_id, run_id, key FROM metric_series {where} ORDER BY run_id, key", args
    ).fetchall()
    points: list[tuple[Any, ...]] = []
    for series_id, run, key in series:
        steps, stamps, values = series_points(conn, series_id)
        points += [(run, key, s, t, v) for s, t, v in zip(steps, stamps, values)]
    return points
