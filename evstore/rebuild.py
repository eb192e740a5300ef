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
    path = _sqlite_file(store)
    if getattr(store, "read_only", False):
        raise StoreError(f"{path} is open read-only: a rebuild writes its read models")
    everything = registered() if models is None else list(models)
    chosen = select(names, everything)
    with _exclusive(lock_path(path)):
        if only_stale:
            state, head = store_state(store)
            chosen = [model for model in chosen if _unreadable(model, state, head) is not None]
            if not chosen:
                return RebuildSummary([], 0, 0, head, time.perf_counter() - started)
        suffix = f"{_SHADOW_MARK}{os.urandom(3).hex()}"
        shadow = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
        try:
            for pragma in _SHADOW_PRAGMAS:
                shadow.execute(pragma)
            indexes = _create_shadow(shadow, everything, chosen, suffix)
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
            with store.transaction() as conn, _secure_delete_off(conn):
                head = store.head_position()
                target = head
                _apply_range(store, conn, plan, after, head, chunk=chunk, progress=report)
                _swap(conn, chosen, suffix, head)
            clock.lap("tail and swap")
            freed = _vacuum(shadow)
            clock.lap("vacuum")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                shadow.execute("PRAGMA busy_timeout = 2000")
                _drop_shadows(shadow, chosen, suffix)
            raise
        finally:
            shadow.close()
    return RebuildSummary(
        [model.name for model in chosen], plan.events, plan.unknown, head,
        time.perf_counter() - started, clock.phases, freed,
    )  # fmt: skip


def rebuild_lock(store: EventStore) -> contextlib.AbstractContextManager[None]:
    """The lock a rebuild holds while it runs, for another writer of read models (a
    redaction) that must not overlap a replay into shadow tables."""
    return _exclusive(lock_path(_sqlite_file(store)))


def drop_leftover_shadows(conn: sqlite3.Connection, models: Sequence[ReadModel]) -> None:
    """Drop every shadow table of ``models`` a killed rebuild left (hold ``rebuild_lock``)."""
    _drop_shadows(conn, list(models), None)


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
def _secure_delete_off(conn: sqlite3.Connection) -> Iterator[None]:
    (previous,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = OFF")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(previous)}")


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
    conn: sqlite3.Connection, everything: list[ReadModel], chosen: list[ReadModel], suffix: str
) -> list[str]:
    """Drop leftover shadows of any model, create this build's; returns deferred indexes."""
    deferred = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_STATE_DDL)
        _drop_shadows(conn, everything, None)
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


def _drop_shadows(conn: sqlite3.Connection, models: list[ReadModel], suffix: str | None) -> None:
    """Drop shadow tables: this build's (``suffix``), or every leftover (None)."""
    found = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = {name for (name,) in found}
    for model in models:
        for table in model.tables:
            for name in tables:
                ours = (name == table + suffix) if suffix else name.startswith(table + _SHADOW_MARK)
                if ours:
                    conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def _swap(conn: sqlite3.Connection, models: list[ReadModel], suffix: str, head: int) -> None:
    """Replace the live tables by the shadow ones and record versions and checkpoints."""
    for model in models:
        for table in model.retired:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        for table in model.tables:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.execute(f'ALTER TABLE "{table}{suffix}" RENAME TO "{table}"')
        conn.execute(_SET_STATE, (model.name, model.version, head, suffix, codec.now_ms()))
