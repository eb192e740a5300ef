"""Append-only is the database's own rule, for every column of every append-only table.

The columns are read from the schema itself, so a column a later storage format adds is
covered without touching this file; a table a later format adds must be named below as
append-only or not, or the first test fails. Each backend gives raw access to its
tables (what anyone holding the file or the database login has) through one small
class; the tests then run unchanged against every backend in ``conftest.BACKENDS``.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS

from evstore.events import MetricPoint, MetricsLogged, TagSet
from evstore.integrity import verify
from evstore.redaction import redact
from evstore.stores import open_log

#: Per backend: the tables of a new store whose rows may never change (the log and what
#: its rows point at), and the others (the store's own facts: its id and creation time,
#: outside the hash chain). Written out here, not read from the store's own list.
APPEND_ONLY = {"sqlite": {"events", "commits", "streams", "event_types", "event_metadata", "redactions"}}
NOT_GUARDED = {"sqlite": {"evstore_meta"}}

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


RAW = {"sqlite": SQLiteTables}
#: The stores each backend is checked in: a new one, and (SQLite) those written at an
#: older storage format and migrated on open.
ORIGINS = [(backend, "new") for backend in BACKENDS] + [("sqlite", name) for name in OLDER_FORMATS]


def fill(path: Path) -> None:
    """Append events of two streams, one and two to a commit, with and without ids (on a
    golden store: after its own)."""
    with open_log(path) as log:
        for step in range(3):
            point = MetricPoint(key="loss", value=1.0 / (step + 1), step=step, timestamp=step)
            log.append("run-a", [MetricsLogged(points=[point])])
            log.append(
                "run-b",
                [TagSet(key=f"k{step}", value="v"), TagSet(key=f"j{step}", value="w")],
                event_ids=[uuid.uuid4().hex, f"given-{step}"],
            )
        # a redaction: its record lands in the redactions table
        redact(log, reason="test", run_id="run-b", tag="k0")


@pytest.fixture(params=ORIGINS, ids=lambda origin: "-".join(origin))
def raw(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Any]:
    """Raw access to a store holding events, once per backend and origin."""
    backend, origin = request.param
    if origin != "new":
        shutil.copy(OLDER_FORMATS[origin], db_path)
    fill(db_path)
    tables = RAW[backend](db_path)
    tables.backend = backend
    tables.path = db_path
    try:
        yield tables
    finally:
        tables.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_table_of_a_new_store_is_named_append_only_or_not(
    backend: str, db_path: Path
) -> None:
    open_log(db_path).close()
    tables = RAW[backend](db_path)
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
