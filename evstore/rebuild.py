"""``evstore rebuild``: read models rebuilt blue/green while writers go on.

Shadow tables ``<table>__b<token>`` are filled from the log on a second connection
without the write lock, in rounds that chase the head; their indexes are built once at
the end. Then, under the write lock and in one transaction, the tail is applied and the
shadow tables are swapped in with their checkpoints. Shadow tables are never read; a
killed rebuild leaves the old tables serving, and its leftovers are dropped by the next.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from evstore import codec
from evstore.errors import StoreError
from evstore.projection import (
    _SET_STATE,
    _STATE_DDL,
    Progress,
    ReadModel,
    _apply_range,
    _Plan,
    _unreadable,
    registered,
    select,
    store_state,
)
from evstore.stores.base import EventStore

_SHADOW_MARK = "__b"
#: At most this many replay rounds without the write lock before the locked tail.
_CATCH_UP_ROUNDS = 8


class RebuildSummary(msgspec.Struct, frozen=True):
    """What a rebuild did: which read models, events replayed and skipped, time."""

    projections: list[str]
    events: int
    unknown_skipped: int
    head_position: int
    seconds: float
    #: Seconds per phase: ``replay`` (the bulk, without the lock), ``indexes``, then
    #: ``tail and swap`` (under the write lock), then ``vacuum``.
    phases: dict[str, float] = {}
    #: Bytes of free pages (the old tables') given back to the file system by VACUUM.
    freed_bytes: int = 0


def rebuild(
    store: EventStore,
    names: Iterable[str] | None = None,
    *,
    progress: Progress | None = None,
    chunk: int = 5000,
    near_head: int = 5000,
    only_stale: bool = False,
    models: Sequence[ReadModel] | None = None,
) -> RebuildSummary:
    """Rebuild read models blue/green; old tables serve until one swap transaction.

    ``progress(done, total)`` is called with positions after every chunk.
    """
    started = time.perf_counter()
    backend = _backend(store)
    if getattr(store, "read_only", False):
        raise StoreError(f"{backend.where} is open read-only: a rebuild writes its read models")
    everything = registered() if models is None else list(models)
    chosen = select(names, everything)
    with backend.exclusive():
        if only_stale:
            state, head = store_state(store)
            chosen = [model for model in chosen if _unreadable(model, state, head) is not None]
            if not chosen:
                return RebuildSummary([], 0, 0, head, time.perf_counter() - started)
        suffix = f"{_SHADOW_MARK}{os.urandom(3).hex()}"
        with backend.shadow_connection() as shadow:
            summary = _rebuild_into(
                store, backend, shadow, everything, chosen, suffix, progress, chunk, near_head
            )
    return msgspec.structs.replace(summary, seconds=time.perf_counter() - started)


def _rebuild_into(
    store: EventStore, backend: Any, shadow: Any, everything: list[ReadModel],
    chosen: list[ReadModel], suffix: str, progress: Progress | None, chunk: int, near_head: int,
) -> RebuildSummary:  # fmt: skip
    """Fill the shadow tables from the log, then swap them in under the write lock."""
    try:
        backend.prepare_shadow(shadow)
        indexes = _create_shadow(shadow, backend, everything, chosen, suffix)
        plan = _Plan(chosen, suffix)
        target = store.head_position()

        def report(done: int) -> None:
            if progress is not None:
                progress(done, max(target, done))

        # 1. replay the bulk of the log into the shadow tables, without the write lock
        clock = _PhaseClock()
        after = 0
        gap: int | None = None
        with _cyclic_gc_paused():
            for _ in range(_CATCH_UP_ROUNDS):
                after = _apply_range(store, shadow, plan, after, target, standalone=True,
                                     chunk=chunk, progress=report)  # fmt: skip
                target = store.head_position()
                # Stop chasing once near the head, or when writers append faster than
                # the replay catches up: the rest is applied under the write lock, so a
                # rebuild always finishes (writers wait for that tail only).
                if target - after <= near_head or (gap is not None and target - after >= gap):
                    break
                gap = target - after
        clock.lap("replay")
        for sql in indexes:
            shadow.execute(sql)
        clock.lap("indexes")
        # 2-4. under the write lock: the tail, then the swap, in one transaction
        with store.transaction() as conn, backend.swapping(conn):
            head = store.head_position()
            target = head
            _apply_range(store, conn, plan, after, head, chunk=chunk, progress=report)
            _swap(conn, chosen, suffix, head)
        clock.lap("tail and swap")
        freed = backend.vacuum(shadow)
        clock.lap("vacuum")
    except BaseException:
        with contextlib.suppress(Exception):
            backend.before_cleanup(shadow)
            _drop_shadows(shadow, backend, chosen, suffix)
        raise
    return RebuildSummary(
        [model.name for model in chosen], plan.events, plan.unknown, head, 0.0, clock.phases,
        freed,
    )  # fmt: skip


def rebuild_lock(store: EventStore) -> contextlib.AbstractContextManager[None]:
    """The lock a rebuild holds while it runs, for another writer of read models (a
    redaction) that must not overlap a replay into shadow tables."""
    return _backend(store).exclusive()  # type: ignore[no-any-return]


def drop_leftover_shadows(conn: Any, models: Sequence[ReadModel]) -> None:
    """Drop every shadow table of ``models`` a killed rebuild left (hold ``rebuild_lock``)."""
    backend = _SQLiteRebuild if isinstance(conn, sqlite3.Connection) else _postgres_backend()
    _drop_shadows(conn, backend, list(models), None)


def _postgres_backend() -> Any:
    from evstore.stores.postgres_readmodels import PostgresRebuild

    return PostgresRebuild


class _SQLiteRebuild:
    """What a blue/green rebuild needs of SQLite: a second connection to the file for the
    shadow tables, a lock file held while it runs, the file's tables, VACUUM."""

    def __init__(self, path: str) -> None:
        self.path = self.where = path

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """One rebuild at a time per store: a lock on a file beside it."""
        return _exclusive(lock_path(self.path))

    @contextlib.contextmanager
    def shadow_connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of the rebuild's own to the file, in autocommit."""
        shadow = sqlite3.connect(
            self.path, isolation_level=None, timeout=60, check_same_thread=False
        )
        try:
            yield shadow
        finally:
            shadow.close()

    @staticmethod
    def prepare_shadow(conn: sqlite3.Connection) -> None:
        """Settings that make the replay cheaper (``_SHADOW_PRAGMAS``)."""
        for pragma in _SHADOW_PRAGMAS:
            conn.execute(pragma)

    @staticmethod
    def before_cleanup(conn: sqlite3.Connection) -> None:
        """Wait a little for a busy file before dropping a failed build's tables."""
        conn.execute("PRAGMA busy_timeout = 2000")

    @staticmethod
    def tables(conn: Any) -> list[str]:
        """Every table in the file."""
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

    @staticmethod
    def vacuum(conn: sqlite3.Connection) -> int:
        """Give the replaced tables' pages back (``_vacuum``)."""
        return _vacuum(conn)

    @staticmethod
    def swapping(conn: sqlite3.Connection) -> contextlib.AbstractContextManager[None]:
        """The swap's settings (``_swap_settings``)."""
        return _swap_settings(conn)


def _backend(store: EventStore) -> Any:
    support = getattr(store, "rebuild_support", None)
    if support is not None:
        return support()
    return _SQLiteRebuild(_sqlite_file(store))


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector held off while the log is replayed: the replay makes
    millions of short-lived objects and no cycles, which reference counting frees, and
    the collector would only walk them again and again (about a tenth of a rebuild)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def lock_path(path: str) -> str:
    """The file a rebuild of the store at ``path`` holds locked while it runs."""
    return f"{path}.rebuild-lock"


def _vacuum(conn: sqlite3.Connection) -> int:
    """Give the pages of the replaced tables back to the file system; returns the bytes.

    A busy store (a long reader in another process) keeps them for later: SQLite reuses
    free pages for new rows anyway.
    """
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (page,) = conn.execute("PRAGMA page_size").fetchone()
    if not free:
        return 0
    conn.execute("PRAGMA busy_timeout = 2000")
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError:
        return 0
    (left,) = conn.execute("PRAGMA freelist_count").fetchone()
    return int((free - left) * page)


class _PhaseClock:
    """Seconds spent in each named phase of a rebuild, in order."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """End the current phase, naming it."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now


# Read models are derived from the log, which keeps every byte anyway: zeroing the pages
# of dropped read-model tables (secure_delete, on in some SQLite builds) is pure cost.
# Checkpoints every 64 MiB rather than 4 MiB write each rewritten page back fewer times.
_SHADOW_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA cache_size = -65536",
    "PRAGMA secure_delete = OFF",
    "PRAGMA wal_autocheckpoint = 16384",
)


@contextlib.contextmanager
def _swap_settings(conn: sqlite3.Connection) -> Iterator[None]:
    """Dropped pages are not zeroed, and a table is renamed the legacy way: SQLite's
    default rename parses every CREATE in the file again, to rewrite the triggers and views
    that name the table (none names a read-model table), and so took half a full rebuild."""
    (secure,) = conn.execute("PRAGMA secure_delete").fetchone()
    (legacy,) = conn.execute("PRAGMA legacy_alter_table").fetchone()
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("PRAGMA legacy_alter_table = ON")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure)}")
        conn.execute(f"PRAGMA legacy_alter_table = {int(legacy)}")


def _sqlite_file(store: EventStore) -> str:
    path = getattr(store, "path", None)
    if not isinstance(path, str):
        raise StoreError(f"rebuild needs a SQLite store; {store.uri} is not one")
    return path


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """One rebuild at a time per store; the OS releases the lock if the process dies, and
    the file is removed when the rebuild ends (a killed one leaves it: ``info`` says so)."""
    import fcntl

    while True:
        handle = open(path, "a")  # noqa: SIM115 - closed below, after the unlink
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:  # the rebuild before ours removed it while we waited
            same = False
        if same:
            break
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        handle.close()  # releases the lock


def leftovers(store: EventStore) -> list[str]:
    """What a killed rebuild left behind: its shadow tables and its lock file (none while
    a rebuild is running: then they are its own)."""
    import fcntl

    backend = _backend(store)
    if not isinstance(backend, _SQLiteRebuild):  # its lock ends with the rebuild's session
        with store.reading() as conn:  # type: ignore[attr-defined]
            return [f"shadow table {name}" for name in backend.tables(conn) if _SHADOW_MARK in name]
    path = _sqlite_file(store)
    found: list[str] = []
    if os.path.exists(lock_path(path)):
        try:
            with open(lock_path(path)) as handle:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # a rebuild holds it
        except OSError:
            pass
        found.append(f"lock file {lock_path(path)}")
    tables = store.query("SELECT name FROM sqlite_master WHERE type = 'table'")  # type: ignore[attr-defined]
    found += [f"shadow table {name}" for (name,) in tables if _SHADOW_MARK in name]
    return found


def _create_shadow(
    conn: Any, backend: Any, everything: list[ReadModel], chosen: list[ReadModel], suffix: str
) -> list[str]:
    """Drop leftover shadows of any model, create this build's; returns deferred indexes."""
    deferred = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_STATE_DDL)
        _drop_shadows(conn, backend, everything, None)
        for model in chosen:
            for sql in model.ddl(suffix):
                if sql.lstrip().upper().startswith("CREATE INDEX"):
                    deferred.append(sql)  # built once at the end: faster than row by row
                else:
                    conn.execute(sql)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return deferred


def _drop_shadows(
    conn: Any, backend: Any, models: list[ReadModel], suffix: str | None
) -> None:
    """Drop shadow tables: this build's (``suffix``), or every leftover (None)."""
    tables = set(backend.tables(conn))
    for model in models:
        for table in model.tables:
            for name in tables:
                ours = (name == table + suffix) if suffix else name.startswith(table + _SHADOW_MARK)
                if ours:
                    conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def _swap(conn: sqlite3.Connection, models: list[ReadModel], suffix: str, head: int) -> None:
    """Replace the live tables by the shadow ones and record versions and checkpoints.
    Every replaced table goes before any shadow is renamed: each rename then reads a
    smaller schema."""
    for model in models:
        for table in (*model.retired, *model.tables):
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    for model in models:
        for table in model.tables:
            conn.execute(f'ALTER TABLE "{table}{suffix}" RENAME TO "{table}"')
        conn.execute(_SET_STATE, (model.name, model.version, head, suffix, codec.now_ms()))
