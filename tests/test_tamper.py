"""Append-only is enforced by the database, and edits made behind its back are found.

The attacker here has the SQLite file and the ``sqlite3`` module: first they try plain
UPDATE and DELETE (the triggers refuse), then they drop the triggers and edit rows
directly, and ``verify`` must name the first position that no longer holds and why.

Storage format 4 keeps an event in five tables: ``events`` (its row), ``commits`` (the
time and metadata of the append it came in, and the canonical form of its link),
``streams`` (its stream's name), ``event_types`` (its type's name) and
``event_metadata`` (metadata, stored once). Format 5 adds ``redactions`` (what
``evstore redact`` erased, append-only too: tests/test_redact.py).
"""

from __future__ import annotations

import math
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evstore.codec import encode, encode_metadata
from evstore.errors import StoreError
from evstore.events import MetricPoint, MetricsLogged, ParamsLogged, RunRenamed, TagSet
from evstore.integrity import VerifyReport, verify
from evstore.stores import open_log

EVENTS = 12
TAMPERED = 5  # the position the edits below hit: in the middle of the chain


def fill(path: Path) -> None:
    """A small store: two streams interleaved, several event types."""
    with open_log(path) as log:
        for step in range(EVENTS // 2):
            point = MetricPoint(key="loss", value=1.0 / (step + 1), step=step, timestamp=step)
            log.append("run-a", [MetricsLogged(points=[point])])
            # a caller's ids (stored, unlike the ids made of positions for run-a)
            log.append("run-b", [TagSet(key=f"k{step}", value="v")], event_ids=[f"{step:032x}"])


def verify_file(path: Path) -> VerifyReport:
    """Open the store at ``path`` and verify it."""
    with open_log(path) as log:
        return verify(log)


@pytest.fixture
def store(db_path: Path) -> Path:
    """A filled store, verified as intact."""
    fill(db_path)
    assert verify_file(db_path).ok
    return db_path


@pytest.fixture
def attacker(store: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the store, in autocommit mode."""
    connection = sqlite3.connect(store, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


LOG_TABLES = ("events", "commits", "streams", "event_types", "event_metadata", "redactions")


def drop_triggers(connection: sqlite3.Connection) -> None:
    """Remove the append-only triggers, as someone with write access to the file can."""
    names = connection.execute(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
    ).fetchall()
    assert {table for _, table in names} == set(LOG_TABLES), names
    for name, _ in names:
        connection.execute(f"DROP TRIGGER {name}")


#: Where each stored column of one event lives: the table and the row's key for a position.
COMMIT_OF = "(SELECT coalesce(commit_id, position) FROM events WHERE position = ?)"
WHERE = {
    "events": ("events", "position = ?"),
    "commits": ("commits", f"commit_id = {COMMIT_OF}"),
}
COMMIT_COLUMNS = {"recorded_at", "metadata_key", "form"}


def column(connection: sqlite3.Connection, name: str, position: int = TAMPERED) -> object:
    """One stored column of one event (of its commit for the commit's columns)."""
    table, where = WHERE["commits" if name in COMMIT_COLUMNS else "events"]
    return connection.execute(f"SELECT {name} FROM {table} WHERE {where}", (position,)).fetchone()[0]


def edit(connection: sqlite3.Connection, name: str, value: object, position: int = TAMPERED) -> None:
    """Set one stored column of one event (of its commit for the commit's columns)."""
    table, where = WHERE["commits" if name in COMMIT_COLUMNS else "events"]
    connection.execute(f"UPDATE {table} SET {name} = ? WHERE {where}", (value, position))


def metadata_of(connection: sqlite3.Connection, position: int = TAMPERED) -> bytes:
    """The metadata bytes of an event's commit."""
    key = column(connection, "metadata_key", position)
    return connection.execute(  # type: ignore[no-any-return]
        "SELECT bytes FROM event_metadata WHERE metadata_key = ?", (key,)
    ).fetchone()[0]


# --- the triggers refuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET payload = x'00' WHERE position = 5",
        "UPDATE events SET hash = hash",
        "UPDATE events SET stream_key = 2 WHERE stream_key = 1",
        "UPDATE event_types SET name = 'RunRenamed'",
        "UPDATE OR REPLACE events SET position = 1 WHERE position = 2",
        "UPDATE streams SET name = 'other' WHERE name = 'run-a'",
        "UPDATE commits SET recorded_at = 0",
        "UPDATE event_metadata SET bytes = x'80'",
    ],
)
def test_update_is_refused(store: Path, attacker: sqlite3.Connection, sql: str) -> None:
    before = verify_file(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only; UPDATE refused"):
        attacker.execute(sql)
    assert verify_file(store) == before


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM events WHERE position = 5",
        "DELETE FROM events",
        "DELETE FROM commits WHERE commit_id = 5",
        "DELETE FROM streams",
        "DELETE FROM event_types",
        "DELETE FROM event_metadata",
    ],
)
def test_delete_is_refused(store: Path, attacker: sqlite3.Connection, sql: str) -> None:
    before = verify_file(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only; DELETE refused"):
        attacker.execute(sql)
    assert verify_file(store) == before


def test_the_store_own_connection_is_refused_too(store: Path) -> None:
    with open_log(store) as log:
        connection = log.connection  # type: ignore[attr-defined]
        with pytest.raises(sqlite3.IntegrityError, match="UPDATE refused"):
            connection.execute("UPDATE commits SET recorded_at = 0")
        with pytest.raises(sqlite3.IntegrityError, match="DELETE refused"):
            connection.execute("DELETE FROM events WHERE position = 1")
        assert verify(log).ok


@pytest.mark.parametrize(
    "collides_on",
    [
        "position = position",
        "position = position + 100, stream_version = stream_version + 100",  # event_id
        "position = position + 100, event_id = 'new-id'",  # (stream_id, stream_version)
    ],
)
def test_insert_or_replace_is_refused(
    store: Path, attacker: sqlite3.Connection, collides_on: str
) -> None:
    # REPLACE deletes the stored row it collides with, without firing DELETE triggers.
    before = verify_file(store)
    attacker.execute("CREATE TEMP TABLE copy AS SELECT * FROM events WHERE position = 6")  # run-b: its id is stored
    attacker.execute(f"UPDATE copy SET {collides_on}, payload = x'c0'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        attacker.execute("INSERT OR REPLACE INTO events SELECT * FROM copy")
    assert verify_file(store) == before


def test_insert_or_replace_behind_the_triggers_is_found(
    store: Path, attacker: sqlite3.Connection
) -> None:
    # With the triggers dropped, REPLACE rewrites an event; the chain still gives it away.
    drop_triggers(attacker)
    forged = encode(TagSet(key="k2", value="forged"))
    row = attacker.execute("SELECT * FROM events WHERE position = ?", (TAMPERED + 1,)).fetchone()
    attacker.execute(
        "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*row[:7], forged, *row[8:]),
    )
    assert column(attacker, "payload", TAMPERED + 1) == forged
    report = verify_file(store)
    assert not report.ok
    assert report.first_bad_position == TAMPERED + 1
    assert "hash mismatch" in (report.reason or "")


# --- edits behind the triggers' back are found by verify ---------------------------------------


def forge_metric_value(connection: sqlite3.Connection) -> None:
    """Rewrite a logged metric value as well-formed msgpack: the realistic forgery."""
    connection.execute(
        "UPDATE events SET payload = ? WHERE position = ?",
        (encode(MetricsLogged(points=[MetricPoint("loss", 0.99, 2, 2)])), TAMPERED),
    )


def flip_a_payload_byte(connection: sqlite3.Connection) -> None:
    payload = bytearray(column(connection, "payload"))  # type: ignore[arg-type]
    payload[-1] ^= 0x01
    connection.execute(
        "UPDATE events SET payload = ? WHERE position = ?", (bytes(payload), TAMPERED)
    )


def change_the_user(connection: sqlite3.Connection) -> None:
    # The append's metadata row is shared: the forger adds one and points the commit at it.
    metadata = msgspec.msgpack.decode(metadata_of(connection))
    metadata["user"] = "mallory"
    key = connection.execute(
        "INSERT INTO event_metadata (bytes) VALUES (?)", (encode_metadata(metadata),)
    ).lastrowid
    edit(connection, "metadata_key", key)


def rewrite_the_shared_metadata(connection: sqlite3.Connection) -> None:
    # Every commit shares the one metadata row: the edit shows at the first event.
    metadata = msgspec.msgpack.decode(metadata_of(connection))
    metadata["user"] = "mallory"
    connection.execute("UPDATE event_metadata SET bytes = ?", (encode_metadata(metadata),))


def replace_the_hash(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE events SET hash = ? WHERE position = ?", (bytes(32), TAMPERED))


def backdate(connection: sqlite3.Connection) -> None:
    edit(connection, "recorded_at", column(connection, "recorded_at") - 86400000)  # type: ignore[operator]


def change_the_type(connection: sqlite3.Connection) -> None:
    key = connection.execute("SELECT type_key FROM event_types WHERE name = 'TagSet'").fetchone()[0]
    connection.execute(
        "UPDATE events SET type_key = ?, payload = ? WHERE position = ?",
        (key, encode(TagSet(key="x", value="y")), TAMPERED),
    )


def move_to_another_stream(connection: sqlite3.Connection) -> None:
    # As the first event of a new stream, its stream version still looks right.
    key = connection.execute("INSERT INTO streams (name, kind) VALUES ('run-z', 'other')").lastrowid
    connection.execute(
        "UPDATE events SET stream_key = ?, stream_version = 1 WHERE position = ?", (key, TAMPERED)
    )


def rename_the_stream(connection: sqlite3.Connection) -> None:
    # A stream's name is one row for all its events: the edit shows at its first event.
    connection.execute(
        "UPDATE streams SET name = 'run-z' WHERE stream_key = (SELECT stream_key FROM events"
        " WHERE position = ?)", (TAMPERED,),
    )  # fmt: skip


def swap_two_payloads(connection: sqlite3.Connection) -> None:
    first, second = column(connection, "payload"), column(connection, "payload", TAMPERED + 2)
    connection.execute("UPDATE events SET payload = ? WHERE position = ?", (second, TAMPERED))
    connection.execute("UPDATE events SET payload = ? WHERE position = ?", (first, TAMPERED + 2))


@pytest.mark.parametrize(
    "edit",
    [
        forge_metric_value,
        flip_a_payload_byte,
        change_the_user,
        replace_the_hash,
        backdate,
        change_the_type,
        move_to_another_stream,
        swap_two_payloads,
    ],
)
def test_an_edited_event_is_found(
    store: Path, attacker: sqlite3.Connection, edit: Callable[[sqlite3.Connection], None]
) -> None:
    drop_triggers(attacker)
    edit(attacker)
    report = verify_file(store)
    assert not report.ok
    assert report.first_bad_position == TAMPERED
    assert report.events == TAMPERED - 1
    assert report.reason


@pytest.mark.parametrize("edit", [rewrite_the_shared_metadata, rename_the_stream])
def test_an_edit_of_a_shared_row_is_found_at_the_first_event_using_it(
    store: Path, attacker: sqlite3.Connection, edit: Callable[[sqlite3.Connection], None]
) -> None:
    drop_triggers(attacker)
    stream_key = column(attacker, "stream_key")
    first_of_stream = attacker.execute(
        "SELECT min(position) FROM events WHERE stream_key = ?", (stream_key,)
    ).fetchone()[0]
    edit(attacker)
    report = verify_file(store)
    assert not report.ok and report.reason
    first_using = 1 if edit is rewrite_the_shared_metadata else first_of_stream
    assert report.first_bad_position == first_using


def test_a_forged_metric_is_readable_until_verify_finds_it(
    store: Path, attacker: sqlite3.Connection
) -> None:
    drop_triggers(attacker)
    forge_metric_value(attacker)
    with open_log(store) as log:
        # The forgery decodes fine: only the chain shows it was not written by evstore.
        [forged] = [r for r in log.read_all() if r.position == TAMPERED]
        assert isinstance(forged.event, MetricsLogged)
        assert math.isclose(forged.event.points[0].value, 0.99)
        report = verify(log)
    assert (report.first_bad_position, report.reason) == (
        TAMPERED,
        "hash mismatch: the event or one before it was altered",
    )


def test_a_read_of_an_event_whose_stream_key_names_nothing_points_to_verify(
    store: Path, attacker: sqlite3.Connection
) -> None:
    drop_triggers(attacker)
    edit(attacker, "stream_key", 99)
    message = "an event names stream key 99, which is not stored; run `evstore verify`"
    with open_log(store) as log, pytest.raises(StoreError, match=f"^{re.escape(message)}$"):
        list(log.read_all())


def test_a_deleted_middle_event_is_found(store: Path, attacker: sqlite3.Connection) -> None:
    drop_triggers(attacker)
    attacker.execute("DELETE FROM events WHERE position = ?", (TAMPERED,))
    report = verify_file(store)
    assert not report.ok
    assert report.first_bad_position == TAMPERED + 1
    assert "missing" in (report.reason or "")


def test_a_renumbered_stream_version_is_found(store: Path, attacker: sqlite3.Connection) -> None:
    drop_triggers(attacker)
    attacker.execute(
        "UPDATE events SET stream_version = stream_version + 10 WHERE position = ?", (TAMPERED,)
    )
    report = verify_file(store)
    assert report.first_bad_position == TAMPERED
    assert "jumps" in (report.reason or "")


def test_removing_the_newest_event_shows_only_in_the_head_hash(
    store: Path, attacker: sqlite3.Connection
) -> None:
    # Removing the newest events leaves a valid chain: the guarantee is that the head
    # hash (and count) verify reports no longer match one recorded earlier.
    before = verify_file(store)
    drop_triggers(attacker)
    attacker.execute("DELETE FROM events WHERE position = ?", (EVENTS,))
    after = verify_file(store)
    assert after.ok
    assert (after.events, after.head_hash) != (before.events, before.head_hash)


# --- any single edit to any event, found at that event ----------------------------------------

#: Every stored column of an event's row and of its commit's row.
EDITABLE = [
    "stream_key", "stream_version", "event_id", "type_key", "version", "commit_id", "payload", "hash",
    "recorded_at", "metadata_key", "form",
]  # fmt: skip


def test_editable_is_every_column_of_an_event_and_its_commit(store: Path) -> None:
    with closing(sqlite3.connect(store)) as connection:
        columns = {
            name
            for table in ("events", "commits")
            for (_, name, *_) in connection.execute(f"PRAGMA table_info({table})")
        }
    assert columns - {"position"} == set(EDITABLE)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filled store, copied afresh for every hypothesis example."""
    path = tmp_path_factory.mktemp("template") / "evstore.db"
    fill(path)
    with open_log(path) as log:
        log.append("run-c", [ParamsLogged(params={"lr": "0.1", "": "ünïcode"})])
        # one append of three events: one commit holds positions 14..16
        log.append("run-c", [TagSet(key="a", value="1"), TagSet(key="b", value="2"),
                             RunRenamed(run_name="c")])  # fmt: skip
    return path


@settings(max_examples=60, deadline=None)
@given(
    position=st.integers(1, EVENTS + 4),
    name=st.sampled_from(EDITABLE),
    change=st.integers(1, 255),
    where=st.integers(0, 1_000),
)
def test_any_single_edit_is_found_at_its_position(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    position: int,
    name: str,
    change: int,
    where: int,
) -> None:
    copy = tmp_path_factory.mktemp("tampered") / "evstore.db"
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    with closing(sqlite3.connect(copy, isolation_level=None)) as connection:
        drop_triggers(connection)
        # a commit's column belongs to all its events: found at the commit's first one
        first = position if name not in COMMIT_COLUMNS else connection.execute(
            f"SELECT min(position) FROM events WHERE coalesce(commit_id, position) = {COMMIT_OF}",
            (position,),
        ).fetchone()[0]  # fmt: skip
        stored = column(connection, name, position)
        if name == "commit_id" and stored is None:  # NULL: the event's own position
            stored = position
        edited = one_change(stored, change, where)
        try:
            edit(connection, name, edited, position)
        except sqlite3.IntegrityError:  # the database's own keys refuse it: no edit to find
            assume(False)
    report = verify_file(copy)
    assert not report.ok
    assert report.first_bad_position == first


def one_change(value: object, change: int, where: int) -> object:
    """Shift an integer, flip bits in one byte of a blob, or change one character of a text;
    a NULL (an event's id made of its position, an event that is its own commit) is set."""
    if value is None:
        return change
    if isinstance(value, int):
        return value + change
    if isinstance(value, bytes):
        data = bytearray(value)
        data[where % len(data)] ^= change
        return bytes(data)
    assert isinstance(value, str) and value
    index = where % len(value)
    replacement = chr((ord(value[index]) + change) % 0x2000 + 0x20)
    if replacement == value[index]:
        replacement = chr(ord(replacement) + 1)
    return value[:index] + replacement + value[index + 1 :]


def test_expect_head_catches_a_cut_off_tail(store: Path, attacker: sqlite3.Connection) -> None:
    # A chain cannot see its own tail removed; a head hash kept elsewhere can.
    head = verify_file(store).head_hash
    middle = attacker.execute("SELECT hash FROM events WHERE position = 3").fetchone()[0].hex()
    for (name,) in attacker.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        attacker.execute(f"DROP TRIGGER {name}")
    last = attacker.execute("SELECT max(position) FROM events").fetchone()[0]
    attacker.execute("DELETE FROM events WHERE position = ?", (last,))
    with open_log(store) as log:
        assert verify(log).ok  # the shortened chain is still a valid chain
        assert verify(log, expect_head=middle).ok  # an older head is still in it
        report = verify(log, expect_head=head)
    assert not report.ok and "not in this history" in (report.reason or "")
    done = subprocess.run(
        [sys.executable, "-m", "evstore.cli", "verify", "--store", str(store), "--expect-head", head],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "FAILED the head" in done.stderr
