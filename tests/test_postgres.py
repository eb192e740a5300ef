"""What the PostgreSQL store promises beyond the shared contract suites.

- Positions are gapless and in commit order: four processes append at once while a
  reader catches up with ``read_all``; it sees every position once, in order.
- A writer's connection killed in the middle of its transaction (``pg_terminate_backend``)
  leaves nothing of it, and a retry with the same event ids stores it once.
- The role a server uses holds no UPDATE, DELETE or TRUNCATE (the SQL the docs give).
- The same appends give the same head hash on SQLite and PostgreSQL.
- Edits made behind the triggers' back are found by ``verify``.

Every test here uses the run's own database (``postgres_database`` in conftest.py): they
skip where no server answers, and fail under ``CI=true``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresDatabase
from waiting import Lines

from evstore import codec
from evstore.errors import AppendOnlyViolation, StoreError
from evstore.events import MetricPoint, MetricsLogged, RunRenamed, TagSet
from evstore.integrity import verify
from evstore.stores import EventStore, RecordedEvent, open_log
from evstore.stores import sqlite as sqlite_store

pytestmark = pytest.mark.usefixtures("postgres_database")

WORKERS = 4
EVENTS_PER_WORKER = 400
NAMESPACE = uuid.UUID("3d0b6f4e-7c21-4a8e-b5f3-91c2d7e4a6b8")


@pytest.fixture
def uri(postgres_database: PostgresDatabase) -> str:
    """A new, empty PostgreSQL store's URI."""
    return postgres_database.new_store_uri()


@pytest.fixture
def pg(uri: str) -> Iterator[EventStore]:
    """An empty PostgreSQL store."""
    with open_log(uri) as log:
        yield log


def test_the_layout_is_sqlites_current_format() -> None:
    from evstore.stores import postgres

    assert postgres.FORMAT_VERSION == sqlite_store.FORMAT_VERSION, (
        "SQLite's storage format moved: give PostgreSQL the same layout change"
    )


# --- positions: gapless, in commit order, under concurrent writers ----------------------------

# Each worker: open the store, say "ready", wait for "go", append the first half of its
# events, say "half", wait for "go" again, append the rest, and print (as JSON) the
# position the store returned for each event id. Batches of 1 to 5, to its own stream
# and to a shared one in turn.
WORKER = """
import json, sys, uuid
from evstore.events import TagSet
from evstore.stores import open_log

uri, worker, total, namespace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), uuid.UUID(sys.argv[4])
log = open_log(uri)
print("ready", flush=True)
sys.stdin.readline()
returned, call = {}, 0
for start, end in ((0, total // 2), (total // 2, total)):
    if start:
        print("half", flush=True)
        sys.stdin.readline()
    index = start
    while index < end:
        size = min(1 + call % 5, end - index)
        keys = [f"w{worker}-{i:05d}" for i in range(index, index + size)]
        ids = [str(uuid.uuid5(namespace, key)) for key in keys]
        stream = f"own-{worker}" if call % 2 else "shared"
        events = [TagSet(key=key, value=str(worker)) for key in keys]
        returned.update(zip(ids, log.append(stream, events, event_ids=ids)))
        index += size
        call += 1
log.close()
print(json.dumps(returned), flush=True)
"""


class CatchingUp:
    """A reader that follows the log with ``read_all`` from the last position it saw."""

    def __init__(self, log: EventStore) -> None:
        self.log = log
        self.seen: list[RecordedEvent] = []
        self.reads_with_new_events = 0

    def read(self) -> None:
        last = self.seen[-1].position if self.seen else 0
        new = list(self.log.read_all(after_position=last, batch_size=7))
        # every read continues exactly where the last one ended: nothing skipped
        assert [r.position for r in new] == list(range(last + 1, last + 1 + len(new)))
        self.seen += new
        self.reads_with_new_events += bool(new)

    def until(self, count: int, workers: Sequence[subprocess.Popen[str]]) -> None:
        from waiting import wait_until

        def caught_up() -> bool:
            for process in workers:
                if process.poll() not in (None, 0):
                    pytest.fail(f"a worker exited with {process.returncode}")
            self.read()
            return len(self.seen) >= count

        wait_until(caught_up, f"the reader seeing {count} events")


def send(workers: Sequence[subprocess.Popen[str]], line: str) -> None:
    for process in workers:
        assert process.stdin is not None
        process.stdin.write(f"{line}\n")
        process.stdin.flush()


def test_four_writers_and_a_catching_up_reader_see_every_position_once_in_order(
    uri: str,
) -> None:
    open_log(uri).close()  # the schema exists before the writers race
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                uri,
                str(worker),
                str(EVENTS_PER_WORKER),
                str(NAMESPACE),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in range(WORKERS)
    ]
    total = WORKERS * EVENTS_PER_WORKER
    returned: dict[str, int] = {}
    try:
        with open_log(uri) as log:
            reader = CatchingUp(log)
            lines = [Lines(process.stdout, f"worker {n}") for n, process in enumerate(workers)]
            assert [line.next() for line in lines] == ["ready"] * WORKERS
            send(workers, "go")
            # the reader follows the writers as they write their first halves, until it
            # has caught up with all of them (they wait there)...
            reader.until(total // 2, workers)
            assert [line.next() for line in lines] == ["half"] * WORKERS
            reader.read()
            assert len(reader.seen) == total // 2
            send(workers, "go")
            reader.until(total, workers)  # then follows them to the end
            for line, process in zip(lines, workers):
                [out] = line.rest()
                returned.update(json.loads(out))
                assert process.wait(60) == 0
            reader.read()
            report = verify(log)
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
    seen = reader.seen
    # every position once, in order, none skipped; each where its writer was told
    assert [r.position for r in seen] == list(range(1, total + 1))
    assert {r.event_id: r.position for r in seen} == returned
    assert len(returned) == total
    # each stream's versions run 1..n, and the writers' appends interleave
    by_stream: dict[str, list[int]] = {}
    for r in seen:
        by_stream.setdefault(r.stream_id, []).append(r.stream_version)
    assert set(by_stream) == {"shared", *(f"own-{n}" for n in range(WORKERS))}
    for versions in by_stream.values():
        assert versions == list(range(1, len(versions) + 1))
    writers = [r.event.value for r in seen if isinstance(r.event, TagSet)]
    assert sum(a != b for a, b in itertools.pairwise(writers)) > WORKERS, "the writers took turns"
    assert reader.reads_with_new_events >= 2
    assert report.ok, report
    assert report.events == total


def test_threads_sharing_one_store_append_on_their_own_connections(pg: EventStore) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(4, timeout=60)

    def write(worker: int) -> None:
        barrier.wait()
        for n in range(25):
            with pg.transaction():  # two appends of one thread join its transaction
                pg.append(f"t-{worker}", [TagSet(key=f"{n}", value="a")])
                pg.append("shared", [TagSet(key=f"{worker}-{n}", value="b")])

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(write, worker) for worker in range(4)]:
            done.result(120)  # raises what the thread raised
    seen = list(pg.read_all())
    assert [r.position for r in seen] == list(range(1, 201))
    # each transaction's two events are next to each other: one transaction, one lock
    for first, second in zip(seen[::2], seen[1::2]):
        assert first.stream_id.startswith("t-") and second.stream_id == "shared"
        assert second.event.key.startswith(first.stream_id[2:] + "-")  # type: ignore[union-attr]
    assert verify(pg).ok


def test_a_read_is_one_snapshot(pg: EventStore) -> None:
    pg.append("run-1", [TagSet(key="a", value="1")])
    with pg.reading() as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        pg.append("run-1", [TagSet(key="b", value="2")])  # another connection commits
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == before == 1
    assert pg.head_position() == 2


# --- a writer's connection killed in the middle of its transaction ---------------------------


def test_a_connection_killed_mid_transaction_leaves_nothing_and_a_retry_stores_once(
    pg: EventStore, postgres_database: PostgresDatabase
) -> None:
    pg.append("run-0", [TagSet(key="before", value="v")])
    batch = [TagSet(key="a", value="1"), RunRenamed(run_name="b"),
             MetricsLogged(points=[MetricPoint("m", 1.0, 0, 5)])]  # fmt: skip
    ids = [uuid.uuid4().hex, "caller-id", str(uuid.uuid4())]
    killed: list[int] = []

    def kill_my_connection(conn: Any, recorded: Sequence[RecordedEvent]) -> None:
        # inside the append's transaction, its rows written, before COMMIT
        pid = conn.info.backend_pid
        with postgres_database.connect() as other:
            (done,) = other.execute("SELECT pg_terminate_backend(%s, 60000)", (pid,)).fetchone()
        assert done, "the backend did not end"
        killed.append(pid)

    pg.append_hooks.append(kill_my_connection)
    with pytest.raises(StoreError, match="connection failed.*rolled back.*stores it once"):
        pg.append("run-1", batch, event_ids=ids)
    assert killed
    pg.append_hooks.clear()

    # nothing of it is stored: no event, no commit, not even its new stream's name
    with postgres_database.connect() as raw:
        raw.execute("SET search_path TO " + pg.uri.rsplit("%3D", 1)[1])
        counts = [raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                  for t in ("events", "commits", "streams", "redactions")]  # fmt: skip
    assert counts == [1, 1, 1, 0]
    assert pg.head_position() == 1 and pg.read_stream("run-1") == []

    # the retry (on a new connection from the pool) stores it once, at the next positions
    assert pg.append("run-1", batch, event_ids=ids) == [2, 3, 4]
    assert pg.append("run-1", batch, event_ids=ids) == [2, 3, 4]
    assert [(r.event_id, r.event) for r in pg.read_stream("run-1")] == list(zip(ids, batch))
    assert pg.head_position() == 4
    assert verify(pg).ok


def test_a_server_that_does_not_answer_is_one_clear_error_without_the_password() -> None:
    with pytest.raises(
        StoreError, match="cannot connect to postgresql://nobody:\\*\\*\\*@127"
    ) as e:
        open_log("postgresql://nobody:s3cret@127.0.0.1:1/x?connect_timeout=5")
    assert "s3cret" not in str(e.value)


def test_a_missing_store_is_not_created_when_asked_not_to(uri: str) -> None:
    with pytest.raises(StoreError, match="no store at .*evstore init"):
        open_log(uri, create=False)
    open_log(uri).close()
    open_log(uri, create=False).close()


def test_a_read_only_store_reads_and_refuses_writes(uri: str) -> None:
    with open_log(uri) as log:
        log.append("run-1", [TagSet(key="a", value="1")])
    with open_log(uri, read_only=True) as log:
        assert [r.position for r in log.read_all()] == [1] and verify(log).ok
        with pytest.raises(StoreError, match="read-only"):
            log.append("run-1", [TagSet(key="b", value="2")])


def test_a_nul_character_is_refused_as_bad_input_and_stores_nothing(pg: EventStore) -> None:
    from evstore.errors import InvalidParameterValue

    with pytest.raises(InvalidParameterValue, match="cannot hold"):
        pg.append("run\x00x", [TagSet(key="a", value="1")])
    with pytest.raises(InvalidParameterValue, match="cannot hold"):
        pg.append("run-1", [TagSet(key="a", value="1")], event_ids=["id\x00"])
    assert pg.head_position() == 0


def test_tables_of_the_logs_names_that_are_no_store_are_refused(
    postgres_database: PostgresDatabase, uri: str
) -> None:
    from evstore.errors import StoreFormatError

    with postgres_database.connect() as conn:
        conn.execute("SET search_path TO " + uri.rsplit("%3D", 1)[1])
        conn.execute("CREATE TABLE events (id int)")
    with pytest.raises(
        StoreFormatError, match="holds tables named events but is not an evstore store"
    ):
        open_log(uri)


# --- append-only twice: triggers for everyone, and a role without the privilege -------------


def test_the_documented_role_appends_and_reads_and_may_not_change_anything(
    postgres_database: PostgresDatabase, uri: str
) -> None:
    import psycopg

    from evstore.stores.postgres import least_privilege_sql

    with open_log(uri) as owner:  # the owner makes the schema
        owner.append("run-1", [TagSet(key="a", value="1")])
    schema = uri.rsplit("%3D", 1)[1]
    role = f"evstore_app_{uuid.uuid4().hex[:8]}"
    database = postgres_database.url.rsplit("/", 1)[1]
    with postgres_database.connect() as admin:
        for statement in least_privilege_sql(role, database, schema):
            admin.execute(statement)
        try:
            as_role = uri.replace("postgresql://postgres@", f"postgresql://{role}@")
            assert as_role != uri
            with open_log(as_role) as log:
                assert log.append("run-1", [TagSet(key="b", value="2")], expected_version=1) == [2]
                assert log.append("run-2", [TagSet(key="c", value="3")], metadata={"x": "y"}) == [3]
                assert verify(log).ok
            with psycopg.connect(as_role, autocommit=True) as conn:
                for sql in ("UPDATE events SET version = version", "DELETE FROM events",
                            "TRUNCATE events", "UPDATE streams SET name = name",
                            "DELETE FROM commits", "TRUNCATE event_metadata",
                            "UPDATE evstore_meta SET value = value",
                            "DROP TABLE events", "ALTER TABLE events DISABLE TRIGGER USER"):  # fmt: skip
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(sql)
        finally:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


def test_the_owner_is_refused_too_and_sees_an_evstore_error(pg: EventStore) -> None:
    pg.append("run-1", [TagSet(key="a", value="1")])
    with (
        pytest.raises(AppendOnlyViolation, match="append-only; UPDATE refused"),
        pg.transaction() as conn,
    ):
        conn.execute("UPDATE events SET version = 2")
    assert pg.read_stream("run-1")[0].version == 1


# --- the same history, the same head hash -------------------------------------------------------


def test_the_same_appends_give_the_same_head_hash_on_both_backends(
    uri: str, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "now_ms", lambda: 1_700_000_000_000)
    fixed = {"user": "alice", "host": "h", "evstore_version": "0"}
    heads = []
    for where in (str(db_path), uri):
        with open_log(where) as log:
            log.append("run-1", [TagSet(key="a", value="1")], event_ids=["e1"], metadata=fixed)
            log.append("run-1", [TagSet(key="b", value="2"), RunRenamed(run_name="ü")],
                       event_ids=[f"{2:032x}", "e3"], metadata=fixed)  # fmt: skip
            log.append("exp-1", [MetricsLogged(points=[MetricPoint("m", float("nan"), 0, 5)])],
                       event_ids=["e4"], metadata={**fixed, "correlation_id": "c"})  # fmt: skip
            report = verify(log)
            assert report.ok
            heads.append(
                (report.head_hash, log.head_hash(), [r.hash for b in log.read_raw() for r in b])
            )
    assert heads[0] == heads[1]


# --- edits behind the triggers' back are found ---------------------------------------------------


@pytest.fixture
def tampered(pg: EventStore, postgres_database: PostgresDatabase) -> Iterator[Any]:
    """A filled store, and a superuser connection that turned its triggers off."""
    for step in range(6):
        pg.append("run-a", [TagSet(key=f"a{step}", value="v")])
        pg.append("run-b", [TagSet(key=f"b{step}", value="v"), TagSet(key=f"c{step}", value="v")])
    assert verify(pg).ok
    with postgres_database.connect() as conn:
        conn.execute("SET search_path TO " + pg.uri.rsplit("%3D", 1)[1])
        conn.execute("SET session_replication_role = replica")  # ordinary triggers do not fire
        yield conn


@pytest.mark.parametrize(
    ("sql", "position", "reason"),
    [
        (
            "UPDATE events SET payload = payload || '\\x00'::bytea WHERE position = 5",
            5,
            "hash mismatch",
        ),
        ("UPDATE events SET stream_version = stream_version + 10 WHERE position = 5", 5, "jumps"),
        ("DELETE FROM events WHERE position = 5", 6, "missing"),
        (
            "UPDATE commits SET recorded_at = recorded_at - 1 WHERE commit_id = 6",
            5,
            "hash mismatch",
        ),
        ("UPDATE event_metadata SET bytes = bytes || '\\x00'::bytea", 1, "hash mismatch"),
        ("UPDATE streams SET name = 'run-z' WHERE name = 'run-b'", 2, "hash mismatch"),
    ],
)
def test_an_edit_made_behind_the_triggers_is_found(
    pg: EventStore, tampered: Any, sql: str, position: int, reason: str
) -> None:
    tampered.execute(sql)
    report = verify(pg)
    assert not report.ok
    assert report.first_bad_position == position
    assert reason in (report.reason or "")


def test_a_cut_off_tail_is_found_with_the_head_kept_elsewhere(
    pg: EventStore, tampered: Any
) -> None:
    head = verify(pg).head_hash
    tampered.execute("DELETE FROM events WHERE position = (SELECT max(position) FROM events)")
    assert not verify(pg, expect_head=head).ok


# --- the CLI: init makes the schema and says how to make the role; verify reads it -----------


def test_init_makes_the_store_and_prints_the_role_and_verify_reads_it(uri: str) -> None:
    from typer.testing import CliRunner

    from evstore.cli import app
    from evstore.stores.postgres import LOG_TABLES

    made = CliRunner().invoke(app, ["init", "--store", uri])
    assert made.exit_code == 0, made.output
    assert "store ready" in made.output and "GRANT SELECT, INSERT ON" in made.output
    # UPDATE and DELETE are granted on the read models' tables alone, never on the log's
    changing = [line for line in made.output.splitlines() if "GRANT" in line and "UPDATE" in line]
    assert changing and all(f'."{table}"' not in line for line in changing
                            for table in (*LOG_TABLES, "evstore_meta"))  # fmt: skip
    with open_log(uri, create=False) as log:
        log.append("run-1", [TagSet(key="a", value="1")])
    checked = CliRunner().invoke(app, ["verify", "--store", uri])
    assert checked.exit_code == 0 and checked.output.startswith("ok: 1 events, head 1")
