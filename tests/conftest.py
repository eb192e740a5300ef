"""Fixtures shared by the whole suite: a temp store path, the log over every backend, and a
Client over a fresh store (with a run), closed afterwards.

PostgreSQL: the tests use ``$EVSTORE_TEST_POSTGRES_URL``, else
postgresql://postgres@127.0.0.1:5432/test, to create a database of their own (one per
test run, per xdist worker) that they drop at the end; each store gets a schema of its
own in it. Where no server answers, the PostgreSQL tests skip, all with one reason;
under ``CI=true`` that is a failure instead: CI never goes green without them.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import typer.main
import typer.testing
from hypothesis import settings

# This process and every Python process the suite starts (servers, the CLI, scripts) keep
# their compiled modules, even where the environment asks not to (PYTHONDONTWRITEBYTECODE):
# otherwise each of those processes compiles evstore from its source again.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

from servers import ThreadServer

from evstore import Client, cli, fluent
from evstore.stores import EventStore, open_log
from evstore.tracking import service as client_module

# No Hypothesis test has a per-example deadline (its default is 200 ms): the tests check
# behaviour, and on a loaded machine a time limit fails them by chance. Loaded before
# any test module, so each test's own @settings inherits it.
settings.register_profile("evstore", deadline=None)
settings.load_profile("evstore")

# Every httpx.Client (and so every httpx.get or httpx.post) builds an SSL context from
# certifi's bundle: 20 to 50 ms of CPU, for servers the tests reach over plain HTTP, hundreds
# of times a run (a third of the time of the permission and user tests). They share one.
# (Where HTTPTransport looks the function up is httpx's own module: an httpx that moved it
# is left as it is, and the tests only run slower.)
_httpx_ssl_context = httpx.create_ssl_context()
_httpx_transports: Any = getattr(getattr(httpx, "_transports", None), "default", None)
_make_ssl_context = getattr(_httpx_transports, "create_ssl_context", None)


def _shared_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
    if verify is True and cert is None and trust_env:
        return _httpx_ssl_context
    return _make_ssl_context(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[misc]


if _make_ssl_context is not None:
    _httpx_transports.create_ssl_context = _shared_ssl_context

# Typer builds the click command of ``evstore`` again on every call, reading the signature
# of every command (3% of the suite's CPU, for the hundreds of in-process CLI runs): the
# tests build it once. (A typer that no longer looks it up there is left as it is.)
_build_command: Any = getattr(typer.main, "get_command", None)
_evstore_command: list[Any] = []


def _command_built_once(typer_instance: Any) -> Any:
    if typer_instance is not cli.app:
        return _build_command(typer_instance)
    if not _evstore_command:
        _evstore_command.append(_build_command(typer_instance))
    return _evstore_command[0]


if _build_command is not None and getattr(typer.testing, "_get_command", None) is _build_command:
    typer.main.get_command = typer.testing._get_command = _command_built_once  # type: ignore[attr-defined]

# psycopg_pool draws its reconnection jitter from the global ``random`` in the pool's own
# worker threads, so a connection made in the background can land in the middle of a
# Hypothesis draw, which Hypothesis rightly refuses ("do not use the random module inside
# strategies"). The pool works as before with a private generator.
try:
    import psycopg_pool.base
except ImportError:  # PostgreSQL tests then skip (or fail under CI=true)
    pass
else:
    psycopg_pool.base.random = random.Random().random  # type: ignore[attr-defined]

#: Every backend the log contract runs against. A new backend adds its name here and a
#: branch in ``store_uri``; the contract and crash tests then run against it unchanged,
#: and the append-only and durability tests ask for its raw tables and settings.
BACKENDS = ["sqlite", "postgres"]
POSTGRES_URL = os.environ.get(
    "EVSTORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The path of a store file that does not exist yet, in the test's temp directory."""
    return tmp_path / "evstore.db"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn (a test may parametrize ``backend`` itself instead)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store_uri(backend: str, request: pytest.FixtureRequest, db_path: Path) -> str:
    """The URI ``open_log`` takes for a new, empty store of ``backend``, also from another
    process: SQLite's temp file, or a fresh schema of the run's PostgreSQL database."""
    return new_uri_of(backend, request, db_path)


@pytest.fixture
def new_store_uri(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Makes the URI of a further new, empty store of ``backend`` (``name``: its file name
    on SQLite)."""

    def make(name: str) -> str:
        return new_uri_of(backend, request, tmp_path / name)

    return make


def new_uri_of(backend: str, request: pytest.FixtureRequest, path: Path) -> str:
    """The URI of a new, empty store of ``backend``: the file ``path`` on SQLite."""
    if backend == "sqlite":
        return str(path)
    if backend == "postgres":
        database: PostgresDatabase = request.getfixturevalue("postgres_database")
        return database.new_store_uri()
    raise ValueError(f"no such backend in the test suite: {backend}")


@pytest.fixture
def log(store_uri: str) -> Iterator[EventStore]:
    """An empty event log, once per backend."""
    store = open_log(store_uri)
    try:
        yield store
    finally:
        store.close()


class PostgresDatabase:
    """The test run's own database: a schema in it per store."""

    def __init__(self, admin: Any, url: str) -> None:
        self.admin, self.url = admin, url
        self._numbers = itertools.count(1)

    def new_store_uri(self) -> str:
        """A URI whose connections make and find their tables in a new, empty schema."""
        schema = f"store_{next(self._numbers)}"
        self.admin.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options=-csearch_path%3D{schema}"

    def connect(self) -> Any:
        """A plain psycopg connection to the database, in autocommit mode."""
        import psycopg

        return psycopg.connect(self.url, autocommit=True)


def postgres_unavailable(why: str) -> NoReturn:
    """Skip a PostgreSQL test for ``why`` (fail it under CI=true, which must run them)."""
    reason = f"PostgreSQL tests need a server: {why} (set EVSTORE_TEST_POSTGRES_URL)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true they may not be skipped", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database(worker_id: str) -> Iterator[PostgresDatabase]:
    """A database made for this test run (this xdist worker), dropped at the end."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        postgres_unavailable("psycopg is not installed (pip install -e '.[test]')")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        server = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        postgres_unavailable(f"none answers at {POSTGRES_URL} ({str(e).strip().splitlines()[0]})")
    name = f"evstore_test_{worker_id}_{uuid.uuid4().hex[:12]}"
    with server:
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = _with_database(POSTGRES_URL, name)
            assert conninfo_to_dict(make_conninfo(url))["dbname"] == name
            with psycopg.connect(url, autocommit=True) as admin:
                yield PostgresDatabase(admin, url)
        finally:
            drop_database_later(name)


#: Drops database argv[2] of server argv[1]; run by ``drop_database_later``.
_DROP = """
import os, sys, psycopg
from psycopg import sql
os.setsid()  # a session of its own: the end of the test run's session does not end it
with psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=10) as server:
    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(sys.argv[2])))
"""


def drop_database_later(name: str) -> None:
    """Drop the run's database ``name`` in a process of its own that the suite does not
    wait for. PostgreSQL 15 takes a checkpoint on every DROP DATABASE (seconds at the end
    of a run, while the other worker's drop waits for it); nothing after needs it gone."""
    # sh starts it in the background and ends at once: no child of ours is left running.
    subprocess.run(
        ["sh", "-c", '"$0" -c "$1" "$2" "$3" </dev/null >/dev/null 2>&1 &',
         sys.executable, _DROP, POSTGRES_URL, name],
        check=True,
    )  # fmt: skip


def _with_database(url: str, name: str) -> str:
    """The URL naming database ``name`` instead of its own."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def close_cached_stores(directory: Path | str) -> None:
    """Close and forget the stores evstore.Client cached for files under ``directory`` (or
    for that PostgreSQL URI)."""
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
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    """``evstore server``'s app on a thread of this process, with a fresh store and artifact
    root in ``tmp_path``; stopped after the test, and its store closed here too."""
    running = ThreadServer(tmp_path)
    try:
        yield running
    finally:
        running.stop()
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

    if hasattr(db, "append"):  # a store: its writing connection, or one snapshot
        if not hasattr(db, "connection"):
            with db.reading() as conn:
                return history_points(conn, run_id)
        db = db.connection
    conn = db
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
    series = conn.execute(
        f"SELECT series_id, run_id, key FROM metric_series {where} ORDER BY run_id, key", args
    ).fetchall()
    points: list[tuple[Any, ...]] = []
    for series_id, run, key in series:
        steps, stamps, values = series_points(conn, series_id)
        points += [(run, key, s, t, v) for s, t, v in zip(steps, stamps, values)]
    return points
