"""Read models: kept inline with every append, fed by ``subscribe``, rebuilt blue/green.

A read model (``ReadModel``) declares a name, a version, its tables as DDL templates
(``{runs}`` stands for the table's name, so the same DDL builds a shadow copy), named
SQL statements over those tables, and one handler per event type. A handler never runs
SQL: it adds rows to a statement (``out.add("upsert", row)``) and the runner executes
consecutive rows of one statement with ``executemany``, table by table, in order, and
``INSERT ... VALUES (?, ...)`` statements many rows to a statement. A statement may
have a ``prepare`` function: it turns a run of queued items into the rows to execute,
so a handler can queue one item per event and the model expand or compact them in one
tight loop (every point of a batch; only the greatest point per metric). It may return
the rows laid end to end (``FlatRows``): the runner then hands SQLite slices of that one
list, without building a tuple per row. A model may
``collect`` an event type for such a statement instead of handling it: the recorded
events are queued as they are, with no handler call per event.

Lifecycle of a read model in a store (``projection_state`` holds its version and
checkpoint, the last position applied):

- **inline**: ``attach(store)`` installs a hook that applies each append's events, and
  moves the checkpoints, inside the append's transaction: every model is in step with the
  log at each commit. A read model whose recorded version differs from the code's is
  *stale*: appends go on, it is not updated and its checkpoint stays behind;
  ``check_fresh`` raises ``StaleProjectionError`` for it.
- **behind**: a model at the code's version whose checkpoint is short of the head, which
  only a writer that does not keep it leaves (the log opened bare, an older evstore).
  The next append through a runner applies what it lacks, in that append's transaction
  (a writer holds the write lock anyway). A read never does: ``check_fresh`` refuses it,
  naming ``evstore rebuild`` (see ``check_fresh`` for why).
- **new**: a read model never built in this store is built when the store is opened if
  the log holds at most ``BUILD_ON_OPEN_LIMIT`` events (always true of a new store);
  on a bigger log it waits for ``evstore rebuild`` (or ``auto_rebuild=True``).
- **rebuild**: blue/green, in :mod:`evstore.rebuild`.

    runner = open_store("runs.db")          # or attach(open_log(...), auto_rebuild=True)
    runner.store.append(run_id, events)     # the read models follow, in the same transaction
    with runner.store.reading() as conn:    # one snapshot, never the write lock
        runner.check_fresh(["runs", "params"], conn)  # before reading those tables
    rebuild(runner.store, ["runs"], progress=lambda done, total: ...)  # evstore.rebuild
    for recorded in subscribe(runner.store, after_position=checkpoint, idle_timeout=None): ...
"""

from __future__ import annotations

import importlib
import os
import re
import sqlite3
import string
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import msgspec

from evstore import codec
from evstore.errors import (
    InvalidParameterValue,
    ProjectionError,
    StaleProjectionError,
    StoreError,
)
from evstore.events import Event, UnknownEvent
from evstore.stores.base import EventStore, RecordedEvent

#: A read model never built in a store is built on open when the log is at most this long.
BUILD_ON_OPEN_LIMIT = 20_000

_STATE_DDL = (
    "CREATE TABLE IF NOT EXISTS projection_state (name TEXT PRIMARY KEY,"
    " version INTEGER NOT NULL, checkpoint INTEGER NOT NULL,"
    " table_suffix TEXT NOT NULL, built_at INTEGER NOT NULL)"
)
_SET_STATE = "INSERT OR REPLACE INTO projection_state VALUES (?, ?, ?, ?, ?)"

Handler = Callable[[RecordedEvent, "Ops"], None]


class FlatRows(NamedTuple):
    """Rows laid end to end, ``width`` values each: what a ``prepare`` may return."""

    values: list[Any]
    width: int


Prepare = Callable[[list[Any]], "list[Any] | FlatRows"]
Progress = Callable[[int, int], None]
#: What a writer does with the events collected for it: write them into its tables.
Write = Callable[[sqlite3.Connection, list[RecordedEvent]], None]
#: Makes a writer for the given table names (``{table: name in this build}``).
Writer = Callable[[dict[str, str]], Write]


@dataclass
class ReadModel:
    """A read model: name, version, tables (DDL templates), statements, handlers."""

    name: str
    version: int
    tables: dict[str, tuple[str, ...]]
    statements: dict[str, str]
    handlers: dict[type[Event], Handler] = field(default_factory=dict)
    prepare: dict[str, Prepare] = field(default_factory=dict)
    #: Event types queued as they are (the ``RecordedEvent``) for a statement, without a
    #: handler call: the statement's ``prepare`` turns them into rows. Such a statement
    #: must be the only one on its table (so nothing else needs ordering against it).
    #: Or for a writer (``writers``), by its name.
    collect: dict[type[Event], str] = field(default_factory=dict)
    #: Writers by name: for a model whose rows depend on what its tables already hold
    #: (points packed per series, kept once). At each flush the writer gets the events
    #: collected for it, in log order, and the connection of the append (or of the
    #: rebuild), and runs its own SQL over the model's tables. What it writes must be a
    #: function of the log alone, however the events were split into appends.
    writers: dict[str, Writer] = field(default_factory=dict)
    #: Tables of earlier versions of this model, dropped when this version is built.
    retired: tuple[str, ...] = ()

    def ddl(self, suffix: str = "") -> list[str]:
        """The DDL that creates this model's tables, each named ``<table><suffix>``."""
        names = {table: table + suffix for table in self.tables}
        return [template.format_map(names) for ddl in self.tables.values() for template in ddl]


class Ops:
    """The rows handlers produce for one model, queued per table in order."""

    __slots__ = (
        "_collected", "_many", "_prepare", "_queue_for", "_queues", "_sql", "_writes", "lists",
    )

    def __init__(self, model: ReadModel, suffix: str = "") -> None:
        names = {table: table + suffix for table in model.tables}
        self._sql = {key: sql.format_map(names) for key, sql in model.statements.items()}
        self._many = {key: _many_rows(sql) for key, sql in self._sql.items()}
        self._prepare = model.prepare
        self._queues: dict[str, list[tuple[str, list[Any]]]] = {t: [] for t in model.tables}
        self._queue_for = {
            key: self._queues[_first_table(sql, model)] for key, sql in model.statements.items()
        }
        self._collected: dict[str, list[Any]] = {}
        self._writes = {name: make(names) for name, make in model.writers.items()}
        for statement in model.collect.values():
            if statement in self._writes:
                self._collected[statement] = []
                continue
            table = _first_table(model.statements[statement], model)
            shared = [k for k, sql in model.statements.items()
                      if k != statement and _first_table(sql, model) == table]  # fmt: skip
            if statement not in model.prepare or shared:
                raise ValueError(
                    f"read model {model.name}: collected statement {statement!r} needs a prepare"
                    " and a table of its own"
                )
            self._collected[statement] = []
        #: Every list rows are queued in, all empty when there is nothing to flush: an
        #: inline append touches one or two models of seven, and the rest must cost next
        #: to nothing to flush.
        self.lists = [*self._queues.values(), *self._collected.values()]

    def collector(self, statement: str) -> list[Any]:
        """The list a ``collect``ed statement's events are appended to."""
        return self._collected[statement]

    def add(self, statement: str, row: Any) -> None:
        """Queue one row (or one item for the statement's ``prepare``)."""
        queue = self._queue_for[statement]
        if queue and queue[-1][0] == statement:
            queue[-1][1].append(row)
        else:
            queue.append((statement, [row]))

    def extend(self, statement: str, rows: list[Any]) -> None:
        """Queue several rows for the named statement."""
        if not rows:
            return
        queue = self._queue_for[statement]
        if queue and queue[-1][0] == statement:
            queue[-1][1].extend(rows)
        else:
            queue.append((statement, list(rows)))

    def flush(self, conn: sqlite3.Connection) -> None:
        """Run the queued rows, in order, consecutive rows of one statement together."""
        if not any(self.lists):
            return
        for queue in self._queues.values():
            for statement, items in queue:
                make = self._prepare.get(statement)
                self._execute(conn, statement, items if make is None else make(items))
            queue.clear()
        for statement, items in self._collected.items():
            if not items:
                continue
            write = self._writes.get(statement)
            if write is not None:
                try:
                    write(conn, items)
                finally:
                    items.clear()
                continue
            rows = self._prepare[statement](items)
            items.clear()
            self._execute(conn, statement, rows)

    def _execute(
        self, conn: sqlite3.Connection, statement: str, rows: list[Any] | FlatRows
    ) -> None:
        many, step = self._many[statement], _ROWS_PER_INSERT
        if isinstance(rows, FlatRows):
            values, width = rows
            size = width * step
            done = 0 if many is None else len(values) - len(values) % size
            if many is not None and done:
                conn.executemany(many, [values[i : i + size] for i in range(0, done, size)])
            if done < len(values):
                rest = range(done, len(values), width)
                conn.executemany(self._sql[statement], [values[i : i + width] for i in rest])
            return
        if len(rows) == 1:  # a per-call write's one row
            conn.execute(self._sql[statement], rows[0])
            return
        done = 0 if many is None else len(rows) - len(rows) % step
        if many is not None and done:
            flat = chain.from_iterable
            conn.executemany(many, [tuple(flat(rows[i : i + step])) for i in range(0, done, step)])
        if done < len(rows):
            conn.executemany(self._sql[statement], rows[done:] if done else rows)

    def clear(self) -> None:
        """Forget the queued rows."""
        for queue in self._queues.values():
            queue.clear()
        for items in self._collected.values():
            items.clear()


# One INSERT of many rows costs SQLite and the driver less than as many single-row ones.
_ROWS_PER_INSERT = 50
_VALUES = re.compile(
    r"^(.*?\bVALUES\s*)(\(\s*\?(?:\s*,\s*\?)*\s*\))(.*)$", re.IGNORECASE | re.DOTALL
)


def _many_rows(sql: str) -> str | None:
    """``INSERT ... VALUES (?, ?) <rest>`` as one statement of many rows, if it is one."""
    match = _VALUES.match(sql)
    if match is None or not sql.lstrip().upper().startswith(("INSERT", "REPLACE")):
        return None
    head, row, rest = match.groups()
    return head + ", ".join([row] * _ROWS_PER_INSERT) + rest


def _first_table(sql: str, model: ReadModel) -> str:
    for _, field_name, _, _ in string.Formatter().parse(sql):
        if field_name in model.tables:
            return field_name
    raise ValueError(f"read model {model.name}: statement names none of its tables: {sql}")


class _FlushFailed(Exception):
    """A statement failed while running queued rows (which event is not known yet)."""


class _Plan:
    """Handlers of several models, dispatching by event type, writing to one suffix."""

    def __init__(self, models: Sequence[ReadModel], suffix: str = "") -> None:
        self.models = list(models)
        self.ops = [Ops(model, suffix) for model in models]
        appends: dict[type, list[Callable[[RecordedEvent], None]]] = {}
        dispatch: dict[type, list[tuple[Handler, Ops]]] = {}
        for model, ops in zip(self.models, self.ops):
            for event_type, statement in model.collect.items():
                appends.setdefault(event_type, []).append(ops.collector(statement).append)
            for event_type, handler in model.handlers.items():
                dispatch.setdefault(event_type, []).append((handler, ops))
        self.dispatch = {
            event_type: (tuple(appends.get(event_type, ())), tuple(dispatch.get(event_type, ())))
            for event_type in appends.keys() | dispatch.keys()
        }
        #: The models (their Ops, in order) an event type can queue rows for: an append of
        #: one event flushes those alone, not every model.
        self.touched = {
            event_type: tuple(ops for model, ops in zip(self.models, self.ops)
                              if event_type in model.collect or event_type in model.handlers)
            for event_type in self.dispatch
        }  # fmt: skip
        self.events = 0
        self.unknown = 0

    def feed(self, events: Iterable[RecordedEvent]) -> int:
        """Run the handlers over events; returns the last position seen (0 if none)."""
        get = self.dispatch.get
        rec: RecordedEvent | None = None
        count = unknown = 0
        try:
            for rec in events:
                count += 1
                found = get(rec.event.__class__)
                if found is None:
                    if rec.event.__class__ is UnknownEvent:
                        unknown += 1
                    continue
                appends, pairs = found
                for append in appends:
                    append(rec)
                for handler, ops in pairs:
                    handler(rec, ops)
        except Exception as e:
            for ops in self.ops:
                ops.clear()  # nothing of a failed batch may reach a later flush
            if isinstance(e, StoreError) or rec is None:
                raise  # reading the log failed (it names the event), not a handler
            raise ProjectionError(
                f"projection handler failed at position {rec.position} ({rec.type}"
                f" v{rec.version}, stream {rec.stream_id}): {type(e).__name__}: {e}"
            ) from e
        finally:
            self.events += count
            self.unknown += unknown
        return 0 if rec is None else rec.position

    def flush(self, conn: sqlite3.Connection, only: Sequence[Ops] | None = None) -> None:
        """Run every queued row (of the ``only`` models, when the caller knows that no
        other model has any); raises ``_FlushFailed`` on a database error."""
        try:
            for ops in self.ops if only is None else only:
                if any(ops.lists):  # no call for a model the events did not touch
                    ops.flush(conn)
            # a connection that sends statements ahead of their results (PostgreSQL's
            # pipeline) reports a failed one here, where it is known as the projection's
            getattr(conn, "sync", _nothing)()
        except Exception as e:
            # OverflowError: an int beyond 64 bits; a backend's connection says which of
            # its driver's errors a bad row causes (rather than a failed connection).
            if not isinstance(e, (sqlite3.Error, OverflowError)) and not getattr(
                conn, "is_statement_error", _never
            )(e):
                raise
            for ops in self.ops:
                ops.clear()
            if getattr(conn, "cannot_hold", _never)(e):
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InvalidParameterValue(f"the store cannot hold this value: {first}") from e
            raise _FlushFailed(f"{type(e).__name__}: {e}") from e


def _never(_: BaseException) -> bool:
    return False


def _nothing() -> None:
    pass


def _apply_range(
    store: EventStore,
    conn: sqlite3.Connection,
    plan: _Plan,
    after: int,
    until: int,
    *,
    standalone: bool = False,
    chunk: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Apply events in (after, until] in position-aligned chunks; returns ``until``.

    ``standalone``: each chunk is its own ``BEGIN IMMEDIATE`` transaction (the shadow
    build); otherwise each chunk is a savepoint inside the caller's transaction.
    """
    restart: tuple[str, ...]
    undo: tuple[str, ...]
    if standalone:
        begin, done = "BEGIN IMMEDIATE", "COMMIT"
        restart, undo = ("ROLLBACK", "BEGIN IMMEDIATE"), ("ROLLBACK",)
    else:
        begin, done = "SAVEPOINT evstore_chunk", "RELEASE evstore_chunk"
        restart = ("ROLLBACK TO evstore_chunk",)
        undo = ("ROLLBACK TO evstore_chunk", "RELEASE evstore_chunk")
    while after < until:
        end = min(after + chunk, until)
        plan.feed(store.read_all(after, chunk, until_position=end))
        conn.execute(begin)
        try:
            try:
                plan.flush(conn)
            except _FlushFailed as e:
                for sql in restart:
                    conn.execute(sql)
                _locate_failure(store, conn, plan, after, end, e)
        except BaseException:
            for sql in undo:
                conn.execute(sql)
            raise
        conn.execute(done)
        after = end
        if progress is not None:
            progress(after)
    return after


def _locate_failure(
    store: EventStore, conn: sqlite3.Connection, plan: _Plan, after: int, end: int, e: Exception
) -> None:
    """Re-apply (after, end] one position at a time to name the event that fails."""
    for position in range(after + 1, end + 1):
        events = list(store.read_all(position - 1, 10, until_position=position))
        plan.feed(events)
        try:
            plan.flush(conn)
        except _FlushFailed as failure:
            kinds = ", ".join(sorted({f"{rec.type} v{rec.version}" for rec in events}))
            raise ProjectionError(
                f"projection failed at position {position} ({kinds}): {failure}"
            ) from failure
    raise ProjectionError(f"projection failed on positions {after + 1}..{end}: {e}") from e


# --- the registry and the recorded state -------------------------------------------


def registered() -> list[ReadModel]:
    """Every read model of the packages named in ``evstore.registry``."""
    from evstore.registry import PROJECTION_PACKAGES

    models: list[ReadModel] = []
    for package in PROJECTION_PACKAGES:
        models.extend(importlib.import_module(package).PROJECTIONS)
    names = [model.name for model in models]
    tables = [table for model in models for table in model.tables]
    if len(set(names)) != len(names) or len(set(tables)) != len(tables):
        raise StoreError(f"read models must have distinct names and tables: {names}")
    return models


def select(
    names: Iterable[str] | None, models: Sequence[ReadModel] | None = None
) -> list[ReadModel]:
    """The models named (by model or table name), all when ``names`` is None."""
    models = registered() if models is None else list(models)
    if names is None:
        return models
    wanted = set(names)
    chosen = [m for m in models if m.name in wanted or wanted.intersection(m.tables)]
    known = {m.name for m in models} | {t for m in models for t in m.tables}
    if unknown := wanted - known:
        raise InvalidParameterValue(
            f"no projection named {', '.join(sorted(unknown))}; known: "
            + ", ".join(m.name for m in models)
        )
    return chosen


class ProjectionState(msgspec.Struct, frozen=True):
    """What a store records about one read model."""

    name: str
    version: int
    checkpoint: int
    table_suffix: str
    built_at: int


def read_state(conn: sqlite3.Connection) -> dict[str, ProjectionState]:
    """The recorded state of every read model built in this store."""
    if not _may_hold_state(conn):
        return {}
    try:
        rows = conn.execute("SELECT * FROM projection_state").fetchall()
    except sqlite3.OperationalError:  # no read model was ever built here
        return {}
    return {row[0]: ProjectionState(*row) for row in rows}


def stale_message(model: ReadModel, state: ProjectionState | None) -> str:
    """One line saying why a read model cannot be read and what to run."""
    fix = f"run `evstore rebuild --projection {model.name}`"
    if state is None:
        return (
            f"projection {model.name!r} (version {model.version}) is not built in this store: {fix}"
        )
    return (
        f"projection {model.name!r} was built at version {state.version} but this evstore has"
        f" version {model.version}: {fix}"
    )


_STATE_AND_HEAD = (
    "SELECT *, (SELECT coalesce(max(position), 0) FROM events) FROM projection_state"
)


def store_state(store: EventStore) -> tuple[dict[str, ProjectionState], int]:
    """The recorded state of every read model, and the head position, in one query."""
    if not _may_hold_state(store):
        return {}, store.head_position()
    try:
        rows = _query(store)(_STATE_AND_HEAD)
    except sqlite3.OperationalError:
        return {}, store.head_position()
    if not rows:
        return {}, store.head_position()
    return _state_and_head(rows)


def _may_hold_state(where: Any) -> bool:
    """False when a store (or connection) that says which tables it has lacks the state
    table: a failed statement would end a PostgreSQL transaction, so it is not tried."""
    has_table = getattr(where, "has_table", None)
    return has_table is None or bool(has_table("projection_state"))


def _state_and_head(rows: list[tuple[Any, ...]]) -> tuple[dict[str, ProjectionState], int]:
    return {row[0]: ProjectionState(*row[:5]) for row in rows}, rows[0][5]


def _query(store: EventStore) -> Callable[[str], list[tuple[Any, ...]]]:
    query = getattr(store, "query", None)
    if query is None:
        raise StoreError(f"projections need a SQL store; {store.uri} has no query()")
    return query  # type: ignore[no-any-return]


def _is_fresh(model: ReadModel, state: dict[str, ProjectionState]) -> bool:
    found = state.get(model.name)
    return found is not None and found.version == model.version


def _state_of(conn: Any) -> tuple[dict[str, ProjectionState], int]:
    """The recorded state of every read model and the head, as ``conn`` sees them."""
    try:
        rows = conn.execute(_STATE_AND_HEAD).fetchall()  # (attach made it on PostgreSQL)
    except sqlite3.OperationalError:  # no read model was ever built here
        rows = []
    if not rows:
        return {}, conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    return _state_and_head(rows)


def _unreadable(model: ReadModel, state: dict[str, ProjectionState], head: int) -> str | None:
    """Why a read model cannot be read (one line naming the fix), or None if it can."""
    found = state.get(model.name)
    if found is None or found.version != model.version:
        return stale_message(model, found)
    if found.checkpoint < head:
        return (
            f"projection {model.name!r} holds the log up to position {found.checkpoint} but"
            f" the log's head is {head}: the rest was appended by a writer that does not keep"
            f" it (an older evstore, or the log opened without its read models); run"
            f" `evstore rebuild --projection {model.name}` (any write through this evstore"
            " also applies it)"
        )
    return None


# --- inline ------------------------------------------------------------------------


_VERSIONS_AND_CHECKPOINTS = "SELECT name, version, checkpoint FROM projection_state"
_MOVE_ALL_CHECKPOINTS = "UPDATE projection_state SET checkpoint = ?"


class ProjectionRunner:
    """Keeps read models inline with a store's appends; the hook in ``append_hooks``."""

    def __init__(self, store: EventStore, models: Sequence[ReadModel] | None = None) -> None:
        self.store = store
        self.models = list(models) if models is not None else registered()
        names = [model.name for model in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"read model names must be unique: {', '.join(sorted(names))}")
        self._plans: dict[tuple[str, ...], tuple[_Plan, str]] = {}
        #: The rows of projection_state the last append through this runner left, when
        #: it moved every model (all fresh), and its plan: an append finding them as left
        #: has the same models fresh, none behind, without working it out again.
        self._left: tuple[list[tuple[Any, ...]], _Plan] | None = None

    def __call__(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply freshly appended events to every fresh read model (inside the append)."""
        if not events:
            return
        first, last = events[0].position, events[-1].position
        try:  # on every append: the two columns needed, without a ProjectionState each
            rows = conn.execute(_VERSIONS_AND_CHECKPOINTS).fetchall()
        except sqlite3.OperationalError:  # no read model was ever built here
            return
        left = self._left
        if left is not None and rows == left[0] and rows[0][2] == first - 1:
            self._apply(conn, left[1], events, first, last)
            conn.execute(_MOVE_ALL_CHECKPOINTS, (last,))
            self._left = ([(name, version, last) for name, version, _ in rows], left[1])
            return
        self._left = None
        state = {name: (version, checkpoint) for name, version, checkpoint in rows}
        fresh: list[ReadModel] = []
        behind: dict[int, list[ReadModel]] = {}
        for model in self.models:
            found = state.get(model.name)
            if found is None or found[0] != model.version or found[1] >= last:
                continue  # stale or not built: left behind for rebuild
            if found[1] < first - 1:  # appended by a writer that does not keep it
                behind.setdefault(found[1], []).append(model)
            fresh.append(model)
        if not fresh:
            return
        for checkpoint, models in behind.items():
            _apply_range(self.store, conn, _Plan(models), checkpoint, first - 1)
        plan, move_checkpoints = self._plan(fresh)
        self._apply(conn, plan, events, first, last)
        if len(fresh) == len(state):
            # Every recorded model moves (fresh names are distinct names of recorded rows,
            # so equal counts mean the same set), and the write lock keeps the table as
            # read: no IN list, which costs SQLite 6x the statement.
            conn.execute(_MOVE_ALL_CHECKPOINTS, (last,))
            if not behind:
                self._left = ([(name, version, last) for name, version, _ in rows], plan)
        else:
            conn.execute(move_checkpoints, (last, *(model.name for model in fresh)))

    @staticmethod
    def _apply(
        conn: sqlite3.Connection, plan: _Plan, events: Sequence[RecordedEvent], first: int, last: int
    ) -> None:
        plan.feed(events)
        try:
            # One event (a per-call write) can have queued rows only for the models of its type.
            plan.flush(conn, plan.touched.get(events[0].event.__class__, ()) if len(events) == 1 else None)
        except _FlushFailed as e:
            kinds = ", ".join(sorted({rec.type for rec in events}))
            where = f"position {first}" if first == last else f"positions {first}..{last}"
            raise ProjectionError(f"projection failed at {where} ({kinds}): {e}") from e

    def _plan(self, models: list[ReadModel]) -> tuple[_Plan, str]:
        key = tuple(model.name for model in models)
        found = self._plans.get(key)
        if found is None:
            marks = ", ".join("?" * len(key))
            sql = f"UPDATE projection_state SET checkpoint = ? WHERE name IN ({marks})"
            found = self._plans[key] = (_Plan(models), sql)
        return found

    @property
    def unknown_skipped(self) -> int:
        """Events of unknown types the inline path skipped since this runner started."""
        return sum(plan.unknown for plan, _ in self._plans.values())

    def build_new(self, limit: int | None = None) -> list[str]:
        """Build read models never built here, if the log holds at most ``limit`` events."""
        limit = BUILD_ON_OPEN_LIMIT if limit is None else limit
        state, head = store_state(self.store)
        if all(model.name in state for model in self.models) or head > limit:
            return []
        with self.store.transaction() as conn:
            conn.execute(_STATE_DDL)
            state = read_state(conn)
            missing = [model for model in self.models if model.name not in state]
            head = self.store.head_position()
            if not missing or head > limit:
                return []
            for model in missing:
                for table in (*model.retired, *model.tables):
                    conn.execute(f'DROP TABLE IF EXISTS "{table}"')
                for sql in model.ddl():
                    conn.execute(sql)
            _apply_range(self.store, conn, _Plan(missing), 0, head)
            for model in missing:
                conn.execute(_SET_STATE, (model.name, model.version, head, "", codec.now_ms()))
        return [model.name for model in missing]

    def stale(self, names: Iterable[str] | None = None) -> list[str]:
        """Names of the (selected) read models a read would refuse: not built at the
        code's version, or behind the log (what ``evstore rebuild`` brings up to date)."""
        state, head = store_state(self.store)
        return [m.name for m in self._select(names) if _unreadable(m, state, head) is not None]

    def check_fresh(self, names: Iterable[str] | None = None, conn: Any = None) -> None:
        """Raise ``StaleProjectionError`` unless the named read models can be read in the
        snapshot ``conn`` reads (by default a snapshot of its own).

        A model behind the log is refused, not caught up. Catching up writes, so it
        would take the write lock, and a read must never wait for it nor take it; and
        reading the model as it was at its checkpoint would show a store older than the
        other models beside it (a run without the metrics it logged), silently. Only a
        writer that does not keep the model leaves it behind, so the error says how to
        fix it: ``evstore rebuild``, or any write through this evstore.
        """
        models = self._select(names)
        if conn is None:
            with self.store.reading() as own:
                state, head = _state_of(own)
        else:
            state, head = _state_of(conn)
        for model in models:
            problem = _unreadable(model, state, head)
            if problem is not None:
                raise StaleProjectionError(problem)

    def _select(self, names: Iterable[str] | None) -> list[ReadModel]:
        return select(names, self.models)

    def detach(self) -> None:
        """Stop applying appends inline."""
        if self in self.store.append_hooks:
            self.store.append_hooks.remove(self)


def attach(
    store: EventStore, *, auto_rebuild: bool = False, models: Sequence[ReadModel] | None = None
) -> ProjectionRunner:
    """Keep the read models inline with ``store``: build new ones, install the hook."""
    runner = ProjectionRunner(store, models)
    prepare = getattr(store, "prepare_read_side", None)
    if prepare is not None:  # a backend whose appends cannot survive a failed statement
        prepare(_STATE_DDL)
    runner.build_new()
    if auto_rebuild and (stale := runner.stale()):
        from evstore.rebuild import rebuild

        rebuild(store, stale, only_stale=True, models=runner.models)
    store.append_hooks.append(runner)
    return runner


def open_store(
    uri: str | os.PathLike[str] | None = None,
    *,
    auto_rebuild: bool = False,
    durability: str = "normal",
) -> ProjectionRunner:
    """Open the log at ``uri`` with its read models kept inline; ``.store`` is the log."""
    from evstore.stores import DEFAULT_URI, open_log

    store = open_log(DEFAULT_URI if uri is None else uri, durability=durability)
    try:
        return attach(store, auto_rebuild=auto_rebuild)
    except BaseException:
        store.close()
        raise


def project(
    conn: sqlite3.Connection, models: Sequence[ReadModel], events: Iterable[RecordedEvent]
) -> int:
    """Apply events to the models' live tables (no checkpoint); returns the last position."""
    plan = _Plan(models)
    last = plan.feed(events)
    try:
        plan.flush(conn)
    except _FlushFailed as e:
        raise ProjectionError(f"projection failed on events up to position {last}: {e}") from e
    return last


# --- catch-up ----------------------------------------------------------------------


def subscribe(
    store: EventStore,
    after_position: int = 0,
    *,
    batch_size: int = 1000,
    poll_interval: float = 0.2,
    idle_timeout: float | None = 0.0,
    stop: Callable[[], bool] | None = None,
) -> Iterator[RecordedEvent]:
    """Every event after ``after_position`` to the head, then new ones as they come.

    Polls every ``poll_interval`` seconds once caught up; ends after ``idle_timeout``
    seconds without a new event (0: at the head; None: never) or when ``stop()`` is true.
    """
    position = after_position
    idle_since = time.monotonic()
    while stop is None or not stop():
        seen = False
        for rec in store.read_all(position, batch_size):
            seen = True
            position = rec.position
            yield rec
        if seen:
            idle_since = time.monotonic()
        elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
            return
        else:
            time.sleep(poll_interval)


def __getattr__(name: str) -> Any:
    """``rebuild`` and ``RebuildSummary`` lived here before :mod:`evstore.rebuild`."""
    if name in ("rebuild", "RebuildSummary"):
        from evstore import rebuild as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
