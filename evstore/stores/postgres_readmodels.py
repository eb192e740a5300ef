"""The read side on PostgreSQL: read models, reads, search and rebuild over a psycopg connection.

The mechanism (``evstore.projection``, ``evstore.reads``, ``evstore.rebuild``) writes its
SQL once, in SQLite's dialect, and runs it on the connection a store hands out
(``reading``, ``transaction``, the append hook). On PostgreSQL that connection is a
``ReadSideConnection``: it rewrites each statement once (cached by its text) into
PostgreSQL's dialect, and runs it on the psycopg connection underneath. What it rewrites:

- ``?`` placeholders become ``%s`` (a literal ``%`` doubles);
- ``INSERT OR IGNORE`` becomes ``INSERT ... ON CONFLICT DO NOTHING``;
- ``INSERT OR REPLACE`` becomes ``INSERT ... ON CONFLICT (<primary key>) DO UPDATE``, the
  key and columns read from the catalog; a bare column in an upsert's ``WHERE`` is
  qualified (PostgreSQL finds it ambiguous with ``excluded``); an upsert of many rows in
  one statement runs row by row, in order (PostgreSQL refuses one statement that updates
  a row twice, which SQLite's ``OR REPLACE`` does in order);
- in ``CREATE TABLE``: ``INTEGER`` is ``bigint``, ``REAL`` ``double precision``, ``BLOB``
  ``bytea``, ``WITHOUT ROWID`` goes;
- ``json_group_object`` is ``json_object_agg`` (as text, ``{}`` for no rows), ``CAST(x AS
  INTEGER)`` of a text keeps digits only (SQLite reads anything else as 0), ``BEGIN
  IMMEDIATE`` is ``BEGIN``, the scalar ``max(a, b)`` and ``min(a, b)`` are ``GREATEST``
  and ``LEAST`` (which skip a NULL where SQLite's give NULL: the read models pass none).

Values bind as SQLite would store them: a NaN float is NULL (a SQLite ``REAL`` column
keeps NaN as NULL, and the read models' rules count on it). Search compiles through
``POSTGRES_SEARCH`` (``evstore.search.SearchDialect``); a search's time budget is the
transaction's ``statement_timeout``. A rebuild runs through ``PostgresRebuild``: shadow
tables filled on a connection of their own, one rebuild at a time under an advisory lock.
Driver errors a statement raises stay psycopg's here; the store's boundary translates
them (``PostgresEventStore._boundary``), and ``is_statement_error`` tells the projection
runner which ones a bad row caused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from math import isnan
from typing import Any, NamedTuple

import psycopg
from psycopg import errors as pg_errors

from evstore.errors import SearchTimeout
from evstore.search import SearchDialect, like_items_escaped

_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|%")
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\s+(\w+)\s+", re.IGNORECASE)
_OR_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s+", re.IGNORECASE)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s", re.IGNORECASE)
_ROW = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_DO_UPDATE = re.compile(r"\bDO\s+UPDATE\s+SET\b(.*?)(?:\bWHERE\b(.*))?$",
                        re.IGNORECASE | re.DOTALL)  # fmt: skip
_JSON_GROUP_OBJECT = re.compile(r"json_group_object\(([^()]*)\)", re.IGNORECASE)
_CAST_INTEGER = re.compile(r"CAST\((\w+) AS INTEGER\)", re.IGNORECASE)
#: SQLite's scalar max and min of two values (the one-argument forms are aggregates).
_SCALAR_MAX_MIN = re.compile(r"\b(max|min)\(([^(),]+),([^(),]+)\)", re.IGNORECASE)
_DDL_TYPES = (
    (re.compile(r"\bINTEGER\b", re.IGNORECASE), "bigint"),
    (re.compile(r"\bREAL\b", re.IGNORECASE), "double precision"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "bytea"),
    (re.compile(r"\s*\bWITHOUT\s+ROWID\b", re.IGNORECASE), ""),
)
_COLUMNS = (
    "SELECT a.attname, coalesce(a.attnum = ANY(i.indkey::int2[]), false) FROM pg_attribute a"
    " LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary"
    " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum"
)


class Statement(NamedTuple):
    """A statement in PostgreSQL's dialect; ``row`` is set when it runs row by row."""

    text: str
    row: str | None = None
    width: int = 0
    #: The text with ``$1``-numbered placeholders, for a statement of more parameters
    #: than psycopg keeps its parsing of (a projection's many-row INSERT): run through a
    #: ``RawCursor``, which parses nothing, rather than split again on every call.
    numbered: str | None = None


#: psycopg caches how it parses a query of at most this many parameters.
_PARSED_PARAMS_CACHED = 50
_MARKS = re.compile(r"%%|%s")


def _numbered(text: str) -> str:
    """``text`` (psycopg's ``%s`` placeholders) with ``$1``, ``$2``... instead."""
    numbers = iter(range(1, text.count("%s") + 1))
    return _MARKS.sub(lambda m: "%" if m[0] == "%%" else f"${next(numbers)}", text)


def _placeholders(sql: str) -> str:
    if "?" not in sql:  # PostgreSQL's own SQL (``%s``), or none: as it is
        return sql
    # a literal keeps its '?', and psycopg reads a '%' anywhere, a literal's too, doubled
    return _TOKENS.sub(
        lambda m: "%s" if m[0] == "?" else "%%" if m[0] == "%" else m[0].replace("%", "%%"), sql
    )


def translate(sql: str, columns: Any) -> Statement:
    """``sql`` (SQLite's dialect) in PostgreSQL's; ``columns(table)`` gives a table's
    [(column, is_key)] from the catalog."""
    text = sql
    head = text.lstrip()[:12].upper()
    if head.startswith("CREATE TABLE"):
        for pattern, replacement in _DDL_TYPES:
            text = pattern.sub(replacement, text)
    elif head.startswith("BEGIN IMMED"):
        return Statement("BEGIN")
    text = _JSON_GROUP_OBJECT.sub(r"coalesce(json_object_agg(\1), '{}')::text", text)
    text = _SCALAR_MAX_MIN.sub(
        lambda m: f"{'GREATEST' if m[1].lower() == 'max' else 'LEAST'}({m[2]},{m[3]})", text
    )
    text = _CAST_INTEGER.sub(
        r"CAST(CASE WHEN \1 ~ '^-?[0-9]{1,18}$' THEN \1 END AS bigint)", text
    )
    table = None
    ignored = _OR_IGNORE.match(text)
    if ignored is not None:
        table = ignored[1]
        text = f"INSERT INTO {table} {text[ignored.end():]} ON CONFLICT DO NOTHING"
    replaced = _OR_REPLACE.match(text)
    if replaced is not None:
        table = replaced[1]
        found = columns(table)
        keys = [name for name, is_key in found if is_key]
        others = [name for name, is_key in found if not is_key]
        action = (
            "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in others)
            if others else "DO NOTHING"
        )  # fmt: skip
        text = f"INSERT INTO {table} {text[replaced.end():]} ON CONFLICT ({', '.join(keys)}) {action}"
    elif (inserted := _INSERT_INTO.match(text)) is not None and "ON CONFLICT" in text.upper():
        table = inserted[1]
        update = _DO_UPDATE.search(text)
        if update is not None:  # a bare column there is ambiguous with excluded's
            names = [name for name, _ in columns(table)]
            assignments = _qualified(update[1], table, names, skip_assigned=True)
            condition = "" if update[2] is None else " WHERE" + _qualified(update[2], table, names)
            text = text[: update.start(1)] + assignments.rstrip() + condition
    if table is not None:
        rows = _ROW.findall(text)
        if len(rows) > 1:  # an upsert of many rows: row by row, in order
            first = _ROW.search(text)
            assert first is not None
            values = re.compile(r"\bVALUES\s*", re.IGNORECASE).search(text)
            assert values is not None
            rest = text[first.end():]
            while (following := re.match(r"\s*,\s*" + _ROW.pattern, rest)) is not None:
                rest = rest[following.end():]
            one = text[: first.end()] + rest
            return Statement(_placeholders(text), _placeholders(one), first[0].count("?"))
    return Statement(_placeholders(text))


def _qualified(sql: str, table: str, names: list[str], skip_assigned: bool = False) -> str:
    """``sql`` with each bare column of ``table`` qualified by its name (not a column
    assigned to, which PostgreSQL takes bare)."""
    assigned = r"(?!\s*=(?!=))" if skip_assigned else ""
    for name in names:
        sql = re.sub(rf"(?<![\w.]){name}(?![\w(]){assigned}", f"{table}.{name}", sql)
    return sql


def _stored(params: Any) -> Any:
    """Parameters as SQLite stores them: NaN floats as NULL."""
    if isinstance(params, dict):
        return params
    for value in params:
        if value.__class__ is float and isnan(value):
            return [None if v.__class__ is float and isnan(v) else v for v in params]
    return params


_IN_WRITE = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.ACTIVE)


class ReadSideConnection:
    """A psycopg connection that runs the read side's SQLite-dialect SQL (``translate``);
    everything else is the psycopg connection's own."""

    search_dialect: SearchDialect

    def __init__(
        self,
        raw: psycopg.Connection[Any],
        cache: dict[str, Statement],
        ahead: dict[str, psycopg.Cursor[Any]] | None = None,
        pipeline: psycopg.Pipeline | None = None,
    ) -> None:
        self.raw = raw
        #: The pipeline of the write this connection is in, if it sends statements ahead.
        self.pipeline = pipeline
        self._cache = cache
        #: Statements already sent, by their text: the first ``execute`` of one takes
        #: its cursor instead of running it again (the store read them ahead, in the
        #: same transaction, under the append lock, with nothing written to them since).
        self._ahead = ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def _statement(self, sql: str) -> Statement:
        found = self._cache.get(sql)
        if found is None:
            found = translate(sql, self._columns)
            if found.row is None and found.text.count("%s") > _PARSED_PARAMS_CACHED:
                found = found._replace(numbered=_numbered(found.text))
            self._cache[sql] = found
        return found

    def _columns(self, table: str) -> list[tuple[str, bool]]:
        return self.raw.execute(_COLUMNS, (table,)).fetchall()

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor[Any]:
        """Run one statement (SQLite's dialect, ``?`` placeholders)."""
        if self._ahead and not params and (sent := self._ahead.pop(sql, None)) is not None:
            return sent
        statement = self._statement(sql)
        if statement.row is not None:
            self.executemany(sql, [params])
            return self.raw.cursor()
        if not params:
            return self.raw.execute(statement.text)
        if statement.numbered is not None:
            cursor = psycopg.RawCursor(self.raw)
            return cursor.execute(statement.numbered, _stored(params))  # type: ignore[return-value]
        return self.raw.execute(statement.text, _stored(params))

    def executemany(self, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement once per row of parameters."""
        statement = self._statement(sql)
        if statement.row is not None:
            width = statement.width
            split = [flat[i : i + width] for flat in rows for i in range(0, len(flat), width)]
            text, rows = statement.row, split
        else:
            text = statement.text
        rows = [_stored(row) for row in rows]
        if statement.numbered is not None:
            with psycopg.RawCursor(self.raw) as raw_cursor:
                raw_cursor.executemany(statement.numbered, rows)
            return
        if len(rows) == 1:
            self.raw.execute(text, rows[0])
            return
        with self.raw.cursor() as cursor:
            cursor.executemany(text, rows)

    def sync(self) -> None:
        """Wait for every statement sent so far (in a pipelined write), raising a failed
        one's error; outside a pipeline each statement was waited for already."""
        if self.pipeline is not None:
            self.pipeline.sync()

    def has_table(self, name: str) -> bool:
        """Whether the store's schema holds a table of that name."""
        row = self.raw.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        return bool(row and row[0])

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    @contextmanager
    def time_budget(self, seconds: float) -> Iterator[None]:
        """Statements inside stop after ``seconds`` (``SearchTimeout``)."""
        if seconds == math.inf:
            yield
            return
        milliseconds = max(1, int(seconds * 1000))
        local = self.in_transaction
        self.raw.execute(f"SET {'LOCAL ' if local else ''}statement_timeout = {milliseconds}")
        try:
            yield
        except pg_errors.QueryCanceled as e:
            raise SearchTimeout(
                f"The search ran past its time budget of {seconds:g} s and was stopped: narrow"
                " the filter (fewer experiments, fewer LIKE/ILIKE clauses), or raise"
                " EVSTORE_SEARCH_TIMEOUT on the server."
            ) from e
        finally:
            status = self.raw.info.transaction_status
            if not local:
                self.raw.execute("SET statement_timeout = 0")
            elif status in _IN_WRITE:  # the rest of a write (ACTIVE: a pipelined one)
                self.raw.execute("SET LOCAL statement_timeout = 0")

    @staticmethod
    def is_statement_error(error: BaseException) -> bool:
        """Whether ``error`` is a statement refused for its values or shape (a bad row),
        rather than a connection that failed."""
        return isinstance(
            error, (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)
        )

    @staticmethod
    def cannot_hold(error: BaseException) -> bool:
        """Whether ``error`` is a text PostgreSQL cannot store (one holding a NUL, which
        psycopg refuses before sending it): the caller's input, refused as such. Numbers
        beyond a column's range stay a failed projection, as on SQLite."""
        return isinstance(error, psycopg.DataError) and "NUL" in str(error)


class _PostgresSearch(SearchDialect):
    """Search in PostgreSQL's dialect: LIKE as it is, long lists bound as one JSON array,
    byte order for text (SQLite's), missing values sorted last."""

    name = "postgres"
    unindexed = ""
    probe_alias = " AS probe"
    no_limit = None
    empty_list = "(SELECT NULL WHERE FALSE)"

    def like(self, column: str, pattern: str, params: list[Any], ignore_case: bool) -> str:
        if "\x00" in pattern:  # PostgreSQL's text holds no NUL: no value can match
            return "FALSE"
        params.append(like_items_escaped(pattern))
        return f"{column} {'ILIKE' if ignore_case else 'LIKE'} ?"

    def long_list(self, params: list[Any], encoded: str) -> str:
        params.append(encoded)
        return "(SELECT jsonb_array_elements_text(CAST(? AS jsonb)))"

    def order_metric(self, found: str, ascending: bool) -> str:
        value = "o.value" if ascending else "-o.value"
        return found.format(value=f"coalesce({value}, CAST('NaN' AS double precision))") + (
            " NULLS LAST"
        )

    def order_text(self, found: str, ascending: bool) -> str:
        return found.format(value='o.value COLLATE "C"') + (
            " NULLS LAST" if ascending else " DESC NULLS LAST"
        )

    def text_column(self, column: str) -> str:
        return f'{column} COLLATE "C"'


POSTGRES_SEARCH = _PostgresSearch()
ReadSideConnection.search_dialect = POSTGRES_SEARCH


# --- rebuild ------------------------------------------------------------------------

_SHADOW_LOCK_CLASS = 0x65767362  # "evsb": one rebuild at a time per store


class PostgresRebuild:
    """What a blue/green rebuild needs of PostgreSQL: a connection of its own for the
    shadow tables, a lock held while it runs, and the tables a schema holds."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One rebuild at a time per store (the server ends the lock with the session)."""
        with self.store._read_side_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (self._key(),))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(),))

    def _key(self) -> int:
        return (_SHADOW_LOCK_CLASS << 32) | (self.store._lock_key & 0xFFFFFFFF)

    @contextmanager
    def shadow_connection(self) -> Iterator[ReadSideConnection]:
        """A connection of the rebuild's own, in autocommit (it begins its transactions)."""
        with self.store._read_side_connection() as conn:
            yield conn

    @staticmethod
    def tables(conn: Any) -> list[str]:
        """Every table in the store's schema."""
        rows = conn.raw.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        return [name for (name,) in rows]

    @staticmethod
    def vacuum(conn: Any) -> int:
        """Nothing to give back by hand: PostgreSQL's autovacuum reclaims dropped tables."""
        return 0

    @contextmanager
    def swapping(self, conn: Any) -> Iterator[None]:
        """Nothing to set for the swap."""
        yield

    def prepare_shadow(self, conn: Any) -> None:
        """Nothing to set on the shadow connection."""

    @staticmethod
    def before_cleanup(conn: Any) -> None:
        """End a failed build's transaction before its tables are dropped."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")
