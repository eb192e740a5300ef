"""Append-only is the database's own rule, for every column of every append-only table.

The columns are read from the schema itself, so a column a later storage format adds is
covered without touching this file; a table a later format adds must be named below as
append-only or not, or the first test fails. Each backend gives raw access to its
tables (what anyone holding the file or the database login has) through one small
class; the tests then run unchanged against every backend in ``conftest.BACKENDS``.

PostgreSQL also has TRUNCATE, which fires no DELETE trigger: its own trigger refuses it.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import BACKENDS

from evstore import codec
from evstore.events import MetricPoint, MetricsLogged, Redacted, TagSet
from evstore.integrity import verify
from evstore.redaction import redact
from evstore.stores import EventStore, open_log

#: Per backend: the tables of a new store whose rows may never change (the log and what
#: its rows point at), and the others (the store's own facts: its id and creation time,
#: outside the hash chain). Written out here, not read from the store's own list.
APPEND_ONLY = {
    "sqlite": {"events", "commits", "streams", "event_types", "event_metadata", "redactions"},
    "postgres": {"events", "commits", "streams", "event_types", "event_metadata", "redactions"},
}
NOT_GUARDED = {"sqlite": {"evstore_meta"}, "postgres": {"evstore_meta"}}

GOLDEN = Path(__file__).parent / "fixtures" / "stores"
#: Stores written at an older storage format, migrated when opened.
OLDER_FORMATS = {
    "migrated from format 1": GOLDEN / "v1-before-metric-context" / "store.db",
    "migrated from format 3": GOLDEN / "v3-before-format-4" / "store.db",
}


class SQLiteTables:
    """A plain sqlite3 connection to the store file, in autocommit mode."""

    refused = sqlite3.IntegrityError

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)

    def tables(self) -> set[str]:
        rows = self.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return {name for (name,) in rows}

    def columns(self, table: str) -> dict[str, str]:
        """Each column's name and declared type, from the schema."""
        rows = self.connection.execute(f"PRAGMA table_info({table})").fetchall()
        return {row[1]: row[2].upper() for row in rows}

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()

    def last_row(self, table: str) -> str:
        """A WHERE clause naming the table's newest row."""
        return f"rowid = (SELECT max(rowid) FROM {table})"

    def changed(self, column: str, declared: str) -> str:
        """An expression for a different value of the column's type, clashing with no
        unique key when set on the newest row."""
        if "INT" in declared:
            return f"{column} + 1"
        if "BLOB" in declared:
            return "x'00'"
        return f"{column} || '-changed'"

    def execute(self, sql: str) -> None:
        self.connection.execute(sql)

    def close(self) -> None:
        self.connection.close()


class PostgresTables:
    """A plain psycopg connection to the store's schema, in autocommit mode."""

    def __init__(self, uri: str) -> None:
        import psycopg

        self.refused = psycopg.errors.RestrictViolation
        self.connection = psycopg.connect(uri, autocommit=True)

    def tables(self) -> set[str]:
        rows = self.connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        return {name for (name,) in rows}

    def columns(self, table: str) -> dict[str, str]:
        """Each column's name and declared type, from the schema."""
        rows = self.connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
        return {name: declared.upper() for name, declared in rows}

    def key(self, table: str) -> str:
        """The table's primary key column (each log table has a one-column key)."""
        (column,) = self.connection.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (table,),
        ).fetchone()
        return column  # type: ignore[no-any-return]

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.connection.execute(f"SELECT * FROM {table} ORDER BY {self.key(table)}").fetchall()

    def last_row(self, table: str) -> str:
        """A WHERE clause naming the table's newest row."""
        key = self.key(table)
        return f"{key} = (SELECT max({key}) FROM {table})"

    def changed(self, column: str, declared: str) -> str:
        """An expression for a different value of the column's type, clashing with no
        unique key when set on the newest row."""
        if "INT" in declared:
            return f"{column} + 1"
        if declared == "BYTEA":
            return "'\\x00'::bytea"
        return f"{column} || '-changed'"

    def execute(self, sql: str) -> None:
        self.connection.execute(sql)

    def close(self) -> None:
        self.connection.close()


RAW = {"sqlite": SQLiteTables, "postgres": PostgresTables}
#: The stores each backend is checked in: a new one, and (SQLite) those written at an
#: older storage format and migrated on open.
ORIGINS = [(backend, "new") for backend in BACKENDS] + [("sqlite", name) for name in OLDER_FORMATS]


def fill(uri: str | Path) -> None:
    """Append events of two streams, one and two to a commit, with and without ids (on a
    golden store: after its own)."""
    with open_log(uri) as log:
        for step in range(3):
            point = MetricPoint(key="loss", value=1.0 / (step + 1), step=step, timestamp=step)
            log.append("run-a", [MetricsLogged(points=[point])])
            log.append(
                "run-b",
                [TagSet(key=f"k{step}", value="v"), TagSet(key=f"j{step}", value="w")],
                event_ids=[uuid.uuid4().hex, f"given-{step}"],
            )
        # a redaction: its record lands in the redactions table
        if hasattr(log, "purge"):
            redact(log, reason="test", run_id="run-b", tag="k0")
        else:
            erase_tag_value(log, "run-b", "k0")


def erase_tag_value(log: EventStore, run_id: str, key: str) -> None:
    """What ``redact`` does to the log itself, for a store that keeps no read models yet
    (PostgreSQL): a Redacted event, its redactions row and the new payload, in one write."""
    [row] = [r for r in log.read_stream_raw(run_id) if r.type == "TagSet"
             and msgspec.msgpack.decode(r.payload)["key"] == key]  # fmt: skip
    payload = codec.encode(TagSet(key=key, value=codec.REDACTED))
    original = codec.payload_digest(row.payload)
    with log.erasing() as _:  # type: ignore[attr-defined]
        event = Redacted(position=row.position, target="tag", key=key, reason="test",
                         original_sha256=original.hex(),
                         redacted_sha256=codec.payload_digest(payload).hex())  # fmt: skip
        [by] = log.append(run_id, [event])
        log.erase_payload(row.position, payload, original, by)  # type: ignore[attr-defined]


@pytest.fixture(params=ORIGINS, ids=lambda origin: "-".join(origin))
def raw(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Any]:
    """Raw access to a store holding events, once per backend and origin."""
    backend, origin = request.param
    uri: str | Path = db_path
    if origin != "new":
        shutil.copy(OLDER_FORMATS[origin], db_path)
    if backend == "postgres":
        uri = request.getfixturevalue("postgres_database").new_store_uri()
    fill(uri)
    tables = RAW[backend](uri)
    tables.backend = backend
    tables.path = uri
    try:
        yield tables
    finally:
        tables.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_table_of_a_new_store_is_named_append_only_or_not(
    backend: str, store_uri: str
) -> None:
    open_log(store_uri).close()
    tables = RAW[backend](store_uri)
    try:
        found = tables.tables()
    finally:
        tables.close()
    assert found == APPEND_ONLY[backend] | NOT_GUARDED[backend], (
        "a table was added or removed: say in APPEND_ONLY or NOT_GUARDED whether its rows"
        " may change"
    )


def test_an_update_of_any_column_is_refused(raw: Any) -> None:
    for table in APPEND_ONLY[raw.backend]:
        before = raw.rows(table)
        columns = raw.columns(table)
        assert columns and before, f"{table}: no columns or no rows to try"
        let_through = []
        for column, declared in columns.items():
            # A new value on the newest row, then the same value on every row: a write
            # that changes nothing is refused as well.
            one_row = f"WHERE {raw.last_row(table)}"
            for sql in (
                f"UPDATE {table} SET {column} = {raw.changed(column, declared)} {one_row}",
                f"UPDATE {table} SET {column} = {column}",
            ):
                try:
                    raw.execute(sql)
                except raw.refused as e:
                    assert "append-only; UPDATE refused" in str(e), (sql, e)
                else:
                    let_through.append(sql)
        assert not let_through, f"UPDATEs that were not refused: {let_through}"
        assert raw.rows(table) == before


def test_a_delete_is_refused(raw: Any) -> None:
    for table in APPEND_ONLY[raw.backend]:
        before = raw.rows(table)
        for sql in (f"DELETE FROM {table} WHERE {raw.last_row(table)}", f"DELETE FROM {table}"):
            with pytest.raises(raw.refused, match="append-only; DELETE refused"):
                raw.execute(sql)
        assert raw.rows(table) == before
    with open_log(raw.path) as log:
        assert verify(log).ok


@pytest.mark.parametrize("raw", [("postgres", "new")], ids=["postgres-new"], indirect=True)
def test_a_truncate_and_an_upsert_are_refused(raw: Any) -> None:
    # SQLite has no TRUNCATE (its DELETE without WHERE is refused above) and its INSERT
    # OR REPLACE is covered by tests/test_tamper.py.
    for table in APPEND_ONLY[raw.backend]:
        before = raw.rows(table)
        with pytest.raises(raw.refused, match="append-only; TRUNCATE refused"):
            raw.execute(f"TRUNCATE {table}")
        # an upsert's UPDATE is refused too, even where it would change nothing
        with pytest.raises(raw.refused, match="append-only; UPDATE refused"):
            key = raw.key(table)
            raw.execute(f"INSERT INTO {table} SELECT * FROM {table} ON CONFLICT ({key})"
                        f" DO UPDATE SET {key} = EXCLUDED.{key}")  # fmt: skip
        assert raw.rows(table) == before
    with open_log(raw.path) as log:
        assert verify(log).ok
