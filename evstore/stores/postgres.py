"""The shared store: the event log in a PostgreSQL database (psycopg 3, with a pool).

One database holds one log for a whole team: several processes and machines append to
it at once. The layout is SQLite's storage format 5 (``evstore.stores.sqlite``): the
log is ``events`` with its ``commits`` (time, metadata and canonical form of each
append) and the names they point at (``streams``, ``event_types``,
``event_metadata``), beside ``redactions`` and ``evstore_meta``. Each link is the
canonical form 4 of ``evstore.codec``, so a head hash means the same on both backends.
The one difference: an event id a caller gave is kept as text (SQLite packs one of 32
hex digits into 16 bytes; PostgreSQL has no column type that holds both forms).

**Positions are gapless and in commit order.** Every write transaction first takes one
transaction-scoped advisory lock (``pg_advisory_xact_lock``, keyed by the ``events``
table), then reads the head position, head hash and stream version, and writes the
positions after them. The next writer gets the lock only once this one has committed or
rolled back, and in READ COMMITTED (set on every connection, whatever the server's
default) its next statement sees that commit. So a position is never used by a
rolled-back append, and a reader that has seen position N has seen every position
before it: a catching-up reader never skips an event that commits late (a bare sequence
would: positions taken in one order and committed in another). The append hook (inline
read models) runs inside the same transaction, under the same lock.

**Append-only, enforced twice.** Triggers refuse UPDATE, DELETE and TRUNCATE on the
log's tables (also ``INSERT ... ON CONFLICT DO UPDATE``), for every role, the owner's
too; the one UPDATE let through is a redaction's: the payload alone, of an event that
has a ``redactions`` row. And the role a server uses need hold no such privilege:
opening the store with ``create`` makes the tables (as their owner), and a role made
like this (:func:`least_privilege_sql`) then appends, reads and verifies, and can do
nothing else (README, "PostgreSQL")::

    CREATE ROLE evstore_app LOGIN;
    GRANT CONNECT ON DATABASE evstore TO evstore_app;
    GRANT USAGE ON SCHEMA public TO evstore_app;
    GRANT SELECT, INSERT ON events, commits, streams, event_types, event_metadata,
        redactions TO evstore_app;
    GRANT SELECT ON evstore_meta TO evstore_app;

(A role that runs ``evstore redact`` also needs ``GRANT UPDATE (payload) ON events``.)

The read side (read models kept in the append's transaction, reads, search, rebuild,
redaction) runs on the same connections: ``transaction``, ``reading`` and the append hook
hand out a ``postgres_readmodels.ReadSideConnection``, which runs the read side's SQL in
PostgreSQL's dialect. The role above keeps the read models once the owner has made them
(``evstore init`` prints its grant of their tables); ``evstore rebuild`` runs as the owner.

Durability: ``normal`` commits with ``synchronous_commit = local`` (the commit returns
once the server's WAL is flushed to its disk), ``full`` with ``on`` (also waits for any
synchronous standby the server has). Both keep every write that returned through a
crash of this process or of the server; what survives a power loss is the server's own
``fsync`` setting.

Driver errors become evstore errors here (``evstore.errors``): a refused change is
``AppendOnlyViolation``, a server that does not answer or a connection cut mid-write is
``StoreError`` (the server rolls the transaction back; only a connection lost after
its COMMIT was sent leaves the outcome unknown, and a retry with the same event ids
then stores it once either way), a value PostgreSQL cannot
hold (a NUL character in a text) is ``InvalidParameterValue``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from evstore import codec
from evstore.errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    EventIdConflict,
    InvalidParameterValue,
    StoreError,
    StoreFormatError,
    UndecodableEvent,
)
from evstore.events import Event
from evstore.stores.base import (
    ANY,
    EventStore,
    RawEvent,
    RecordedEvent,
    Redaction,
    chain_raw,
    check_event_ids,
    default_metadata,
    stored_positions,
)
from evstore.stores.sqlite import stream_kind

#: The storage layout: SQLite's format of the same number (tests check they move together).
FORMAT_VERSION = 5
#: The canonical form of the links this code writes (``codec``: the payload's digest).
FORM = 4
DURABILITY = {"normal": "local", "full": "on"}
#: The high half of the advisory lock key every append takes; the low half is the
#: ``events`` table's oid, so two stores in one database (two schemas) do not share it.
_LOCK_CLASS = 0x65767374  # "evst"
#: Seconds a pooled connection may sit idle and be handed out without a check.
_RECHECK_AFTER = 1.0
#: The log's tables: each refuses UPDATE, DELETE and TRUNCATE.
LOG_TABLES = ("events", "commits", "streams", "event_types", "event_metadata", "redactions")

_SCHEMA = (
    "CREATE TABLE evstore_meta (key text PRIMARY KEY, value text NOT NULL)",
    (
        "CREATE TABLE streams (stream_key bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " name text NOT NULL UNIQUE, kind text NOT NULL)"
    ),
    # metadata can be long: its uniqueness is kept on its digest (a B-tree entry is small)
    (
        "CREATE TABLE event_metadata (metadata_key bigint GENERATED BY DEFAULT AS IDENTITY"
        " PRIMARY KEY, bytes bytea NOT NULL)"
    ),
    "CREATE UNIQUE INDEX event_metadata_by_digest ON event_metadata (sha256(bytes))",
    (
        "CREATE TABLE event_types (type_key bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " name text NOT NULL UNIQUE)"
    ),
    # commit_id is the position of the commit's last event; form the canonical form.
    (
        "CREATE TABLE commits (commit_id bigint PRIMARY KEY, recorded_at bigint NOT NULL,"
        " metadata_key bigint NOT NULL, form integer NOT NULL)"
    ),
    # event_id: NULL for an event appended without an id (its id is this store's id
    # prefix and its position); commit_id: NULL when the commit is the event alone.
    (
        "CREATE TABLE events (position bigint PRIMARY KEY, stream_key bigint NOT NULL,"
        " stream_version bigint NOT NULL, event_id text, type_key bigint NOT NULL,"
        " version integer NOT NULL, commit_id bigint, payload bytea NOT NULL,"
        " hash bytea NOT NULL, UNIQUE (stream_key, stream_version))"
    ),
    "CREATE UNIQUE INDEX events_by_id ON events (event_id) WHERE event_id IS NOT NULL",
    (
        "CREATE TABLE redactions (redacted_by bigint PRIMARY KEY, position bigint NOT NULL,"
        " original_digest bytea NOT NULL)"
    ),
    "CREATE INDEX redactions_by_position ON redactions (position)",
    # search_path FROM CURRENT: the functions find the store's tables whatever the
    # search_path of the session whose write fires them.
    """
    CREATE FUNCTION evstore_refuse_change() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        RAISE EXCEPTION 'evstore: the event log is append-only; % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    # Every column but payload must stay as it is, and the event must have a redactions
    # row; a column added to events by a later format must be added here too.
    """
    CREATE FUNCTION evstore_refuse_event_update() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        IF (NEW.position, NEW.stream_key, NEW.stream_version, NEW.event_id, NEW.type_key,
            NEW.version, NEW.commit_id, NEW.hash)
           IS NOT DISTINCT FROM
           (OLD.position, OLD.stream_key, OLD.stream_version, OLD.event_id, OLD.type_key,
            OLD.version, OLD.commit_id, OLD.hash)
           AND EXISTS (SELECT 1 FROM redactions WHERE position = OLD.position) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'evstore: the event log is append-only; UPDATE refused'
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
)


def _guards() -> tuple[str, ...]:
    statements = []
    for table in LOG_TABLES:
        for action in (
            ("DELETE", "TRUNCATE") if table == "events" else ("UPDATE", "DELETE", "TRUNCATE")
        ):
            statements.append(
                f"CREATE TRIGGER {table}_refuse_{action.lower()} BEFORE {action} ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION evstore_refuse_change()"
            )
    statements.append(
        "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events"
        " FOR EACH ROW EXECUTE FUNCTION evstore_refuse_event_update()"
    )
    return tuple(statements)


_GUARDS = _guards()

_EVENT_COLUMNS = (
    "e.position, e.stream_key, s.name, e.stream_version, e.event_id, e.type_key, t.name,"
    " e.version, c.recorded_at, e.payload, c.metadata_key, m.bytes"
)
_FROM = (
    "FROM events e LEFT JOIN streams s ON s.stream_key = e.stream_key"
    " LEFT JOIN event_types t ON t.type_key = e.type_key"
    " LEFT JOIN commits c ON c.commit_id = coalesce(e.commit_id, e.position)"
    " LEFT JOIN event_metadata m ON m.metadata_key = c.metadata_key"
)
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} {_FROM}"
_SELECT_RAW = f"SELECT {_EVENT_COLUMNS}, e.hash, coalesce(e.commit_id, e.position), c.form {_FROM}"
_STREAM_IS = "e.stream_key = (SELECT stream_key FROM streams WHERE name = %s)"
# One round trip for everything an append must know, read after the lock is taken.
_APPEND_STATE = (
    "SELECT (SELECT max(stream_version) FROM events WHERE stream_key = %s),"
    " (SELECT max(position) FROM events),"
    " (SELECT hash FROM events ORDER BY position DESC LIMIT 1)"
)
_INSERT = "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
_INSERT_COMMIT = "INSERT INTO commits VALUES (%s, %s, %s, %s)"
_HEX_DIGITS = frozenset("0123456789abcdef")


def least_privilege_sql(
    role: str, database: str, schema: str = "public", read_side: Sequence[str] = ()
) -> list[str]:
    """The statements that make ``role``: it may append to and read the log in
    ``schema`` of ``database``, and holds no UPDATE, DELETE or TRUNCATE on any of it;
    and it may keep the read-model tables named in ``read_side`` (a server does), not
    create, drop or alter them (``evstore rebuild`` runs as the owner)."""
    from psycopg import sql

    def text(statement: str, **names: str) -> str:
        identifiers = {key: sql.Identifier(value) for key, value in names.items()}
        return sql.SQL(statement).format(**identifiers).as_string(None)

    return [
        text("CREATE ROLE {role} LOGIN", role=role),
        text("GRANT CONNECT ON DATABASE {db} TO {role}", db=database, role=role),
        text("GRANT USAGE ON SCHEMA {schema} TO {role}", schema=schema, role=role),
        text(
            "GRANT SELECT, INSERT ON "
            + ", ".join(f"{{schema}}.{table}" for table in LOG_TABLES)
            + " TO {role}",
            schema=schema,
            role=role,
        ),
        text("GRANT SELECT ON {schema}.evstore_meta TO {role}", schema=schema, role=role),
        *(
            [text(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON "
                + ", ".join(f"{{schema}}.{{t{i}}}" for i in range(len(read_side)))
                + " TO {role}",
                schema=schema, role=role, **{f"t{i}": t for i, t in enumerate(read_side)},
            )]
            if read_side else []
        ),
    ]


def redacted_uri(uri: str) -> str:
    """The URI without its password, for messages."""
    try:
        parts = urlsplit(uri)
        password, port = parts.password, parts.port
    except ValueError as e:
        raise InvalidParameterValue(f"the PostgreSQL store URI does not parse: {e}") from None
    if password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresEventStore(EventStore):
    """The event log in a PostgreSQL database, in the connection's current schema."""

    def __init__(
        self,
        uri: str,
        *,
        durability: str = "normal",
        create: bool = True,
        read_only: bool = False,
        max_connections: int = 8,
    ) -> None:
        if durability not in DURABILITY:
            raise InvalidParameterValue(
                f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}"
            )
        self.uri = uri
        self.where = redacted_uri(uri)
        self.durability = durability
        self.read_only = read_only
        self.append_hooks = []
        self._local = threading.local()  # this thread's write transaction, if any
        #: Committed rows of the small tables, by value: they never change once written.
        self._keys: dict[str, dict[Any, int]] = {
            "streams": {},
            "event_types": {},
            "event_metadata": {},
        }
        self._pool: ConnectionPool | None = None
        #: When each pooled connection last came back, for ``_check``.
        self._returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        #: The read side's statements in PostgreSQL's dialect, by their SQLite text.
        self._statements: dict[str, Any] = {}
        #: Statements the append hooks run first, sent ahead with the append's own read.
        self._ahead: tuple[str, ...] = ()
        with self._boundary("cannot open the store"):
            # a server that does not answer is an error within 30 s, unless the URI says
            wait: dict[str, Any] = (
                {} if "connect_timeout" in conninfo_to_dict(uri) else {"connect_timeout": 30}
            )
            try:
                first = psycopg.connect(uri, autocommit=True, **wait)
            except psycopg.OperationalError as e:
                raise StoreError(f"cannot connect to {self.where}: {_first_line(e)}") from e
            with first:
                self._prepare(first, create)
            self._pool = ConnectionPool(
                uri,
                min_size=1,
                max_size=max_connections,
                kwargs={"autocommit": True},
                configure=self._configure,
                check=self._check,
                reset=self._returned,
                open=True,
                name="evstore",
            )

    # --- the schema -------------------------------------------------------------

    def _prepare(self, conn: psycopg.Connection[Any], create: bool) -> None:
        """Check the store's format, creating the schema first when it is missing (and
        ``create``); two processes creating one store at once make it once."""
        conn.execute(
            "SELECT pg_advisory_lock(%s, hashtext(coalesce(current_schema(), '')))", (_LOCK_CLASS,)
        )
        try:
            found = self._found_format(conn)
            if found is None:
                if not create:
                    raise StoreError(
                        f"no store at {self.where}; `evstore init --store {self.where}` creates one"
                    )
                if self.read_only:
                    raise StoreError(f"no store at {self.where}, and it is opened read-only")
                self._create(conn)
                found = FORMAT_VERSION
            if found > FORMAT_VERSION:
                raise StoreFormatError(
                    f"{self.where} has storage format {found}, written by a newer evstore;"
                    f" this evstore reads formats up to {FORMAT_VERSION}. Upgrade evstore."
                )
            if found < FORMAT_VERSION:  # no older PostgreSQL layout exists yet
                raise StoreFormatError(
                    f"{self.where} has storage format {found}, which never existed"
                )
            (oid,) = conn.execute("SELECT 'events'::regclass::oid::bigint").fetchone()  # type: ignore[misc]
            self._lock_key = (_LOCK_CLASS << 32) | int(oid)
            meta = dict(conn.execute("SELECT key, value FROM evstore_meta").fetchall())
            self._id_prefix = bytes.fromhex(meta["store_id"])[:8].hex()
        finally:
            conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(coalesce(current_schema(), '')))",
                (_LOCK_CLASS,),
            )

    def _found_format(self, conn: psycopg.Connection[Any]) -> int | None:
        """The format recorded in the schema; None when there is no store; refused when
        the schema holds tables of the log's names but is no evstore store."""
        tables = {
            name for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = "
                "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
                " AND c.relkind IN ('r', 'p', 'v') AND c.relname = ANY(%s)",
                (["evstore_meta", *LOG_TABLES],),
            ).fetchall()
        }  # fmt: skip
        if "evstore_meta" not in tables:
            if tables:
                raise StoreFormatError(
                    f"{self.where} holds tables named {', '.join(sorted(tables))} but is not an"
                    " evstore store"
                )
            return None
        row = conn.execute("SELECT value FROM evstore_meta WHERE key = 'format'").fetchone()
        if row is None:
            raise StoreFormatError(f"{self.where} is not an evstore store (no format recorded)")
        return int(row[0])

    def _create(self, conn: psycopg.Connection[Any]) -> None:
        """Every table, index and trigger of the current format, in one transaction."""
        with conn.transaction():
            for sql in (*_SCHEMA, *_GUARDS):
                conn.execute(sql)
            conn.execute(
                "INSERT INTO evstore_meta VALUES ('created_at', %s), ('store_id', %s), ('format', %s)",
                (str(codec.now_ms()), os.urandom(16).hex(), str(FORMAT_VERSION)),
            )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Every pooled connection: READ COMMITTED (the append order needs each statement
        to see what committed before the lock was granted) and the durability level."""
        conn.execute(
            "SELECT set_config('synchronous_commit', %s, false),"
            " set_config('default_transaction_isolation', 'read committed', false),"
            " set_config('default_transaction_read_only', %s, false)",
            (DURABILITY[self.durability], "on" if self.read_only else "off"),
        )

    def _returned(self, conn: psycopg.Connection[Any]) -> None:
        """A connection back in the pool (idle, its transaction ended): note when."""
        self._returned_at[conn] = time.monotonic()

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """Before a pooled connection is handed out: one that sat idle a while is asked
        whether the server still answers (an empty query: a round trip), so a server
        restart or an idle timeout costs no caller an error; one back within the last
        second is handed out as it is (a write on it that finds it gone is a StoreError,
        rolled back, and the pool drops it)."""
        if time.monotonic() - self._returned_at.get(conn, -_RECHECK_AFTER) >= _RECHECK_AFTER:
            ConnectionPool.check_connection(conn)

    def format_version(self) -> int:
        """The storage layout version recorded in the store."""
        return int(self.meta()["format"])

    def meta_database(self) -> tuple[str, str]:
        """The database and schema the store's tables are in."""
        with self._connection() as conn:
            return conn.execute("SELECT current_database(), current_schema()").fetchone()  # type: ignore[return-value]

    def meta(self) -> dict[str, str]:
        """The store's own facts: when it was created, its id, its format."""
        with self._connection() as conn:
            return dict(conn.execute("SELECT key, value FROM evstore_meta").fetchall())

    # --- connections and errors -----------------------------------------------

    @contextmanager
    def _boundary(self, doing: str) -> Iterator[None]:
        """Driver errors raised inside become evstore errors, once, here."""
        try:
            yield
        except psycopg.Error as e:
            raise self._translated(e, doing) from e
        except PoolTimeout as e:
            raise StoreError(f"{self.where}: {doing}: no connection to the server: {e}") from e

    def _translated(self, e: psycopg.Error, doing: str) -> Exception:
        message = _first_line(e)
        if isinstance(e, pg_errors.RestrictViolation) and "append-only" in message:
            return AppendOnlyViolation(message)
        if isinstance(e, pg_errors.UniqueViolation):
            return ConcurrencyError(f"{doing}: another writer stored the same keys: {message}")
        if isinstance(e, psycopg.DataError):
            return InvalidParameterValue(f"{doing}: PostgreSQL cannot hold this value: {message}")
        if isinstance(e, pg_errors.ReadOnlySqlTransaction):
            return StoreError(f"{self.where} is open read-only: it cannot be written")
        if isinstance(e, psycopg.OperationalError):
            return StoreError(
                f"{self.where}: {doing}: the connection failed ({message}); a write in"
                " progress was rolled back (or committed, if its COMMIT had reached the"
                " server): retrying it with the same event ids stores it once"
            )
        return StoreError(f"{self.where}: {doing}: {message}")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's write connection inside its transaction, else one from the pool."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        if self._pool is None:
            raise StoreError(f"{self.where}: the store is closed")
        with self._boundary("reading"), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction holding the append lock; appends inside it join it.
        Yields the connection the read side runs its SQL on (``ReadSideConnection``)."""
        with self._writing() as conn:
            yield self._read_side(conn)

    def _read_side(
        self, conn: psycopg.Connection[Any], ahead: dict[str, Any] | None = None
    ) -> Any:
        from evstore.stores.postgres_readmodels import ReadSideConnection

        # this thread's write, if it is on that connection: its pipeline, if any
        local = self._local
        pipeline = getattr(local, "pipeline", None) if getattr(local, "conn", None) is conn else None
        return ReadSideConnection(conn, self._statements, ahead, pipeline)

    @contextmanager
    def _read_side_connection(self) -> Iterator[Any]:
        """A pooled connection of its own (not this thread's write), for the read side."""
        if self._pool is None:
            raise StoreError(f"{self.where}: the store is closed")
        with self._boundary("reading"), self._pool.connection() as conn:
            yield self._read_side(conn)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query against the store's tables (projections, events)."""
        with self.reading() as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[no-any-return]

    def has_table(self, name: str) -> bool:
        """Whether the store's schema holds a table of that name."""
        with self.reading() as conn:
            return conn.has_table(name)  # type: ignore[no-any-return]

    def prepare_read_side(self, ddl: str) -> None:
        """Create the read side's bookkeeping table (``ddl``) if missing, so that no
        statement of an append's transaction can fail on it (one failing aborts it)."""
        if self.read_only:
            return
        with self.transaction() as conn:
            if not conn.has_table("projection_state"):  # (a role that may not create)
                conn.execute(ddl)
        # The runner's first statement in every append, from now on sent with the
        # append's own read of the head (one round trip for both).
        from evstore.projection import _VERSIONS_AND_CHECKPOINTS

        self._ahead = (_VERSIONS_AND_CHECKPOINTS,)

    def rebuild_support(self) -> Any:
        """What a blue/green rebuild needs of this backend."""
        from evstore.stores.postgres_readmodels import PostgresRebuild

        return PostgresRebuild(self)

    @contextmanager
    def _writing(self, pipelined: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """The write transaction on the psycopg connection itself, in pipeline mode
        unless ``pipelined`` is False (COPY needs it off)."""
        local = self._local
        if getattr(local, "conn", None) is not None:
            yield local.conn
            return
        if self.read_only:
            raise StoreError(f"{self.where} is open read-only: it cannot be written")
        if self._pool is None:
            raise StoreError(f"{self.where}: the store is closed")
        with (
            self._boundary("the write failed and was rolled back"),
            self._pool.connection() as conn,
        ):
            local.pending = []
            try:
                with conn.pipeline() if pipelined else nullcontext() as pipeline:
                    # In pipeline mode a statement whose result nobody reads (BEGIN, the
                    # lock, the INSERTs, COMMIT) costs no round trip of its own: it goes
                    # with the next one that is read, or with the pipeline's last sync.
                    # (BEGIN and COMMIT by hand: psycopg's transaction() syncs on entry.)
                    conn.execute("BEGIN")
                    try:
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                        local.conn, local.pipeline = conn, pipeline
                        try:
                            yield conn
                        finally:
                            local.conn = local.pipeline = None
                        conn.execute("COMMIT")
                    except BaseException:
                        _roll_back(conn, pipeline)
                        raise
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    _roll_back(conn)  # a statement the pipeline's last sync found failing
                    raise StoreError(f"{self.where}: the write failed and was rolled back")
                for table, value, key in local.pending:  # committed: keep them
                    self._keys[table][value] = key
            finally:
                local.pending = []

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """One consistent read: a REPEATABLE READ, read-only transaction (one snapshot);
        inside this thread's write it is the write's connection. Yields the connection
        the read side runs its SQL on (``ReadSideConnection``)."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield self._read_side(current)
            return
        with self._connection() as conn:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                yield self._read_side(conn)
                return
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield self._read_side(conn)
            finally:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.UNKNOWN:
                    conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close every pooled connection."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # --- writes -----------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None = ANY,
        event_ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[int]:
        """Append events to one stream in one transaction; returns their positions."""
        if not events:
            return []
        check_event_ids(events, event_ids)
        with self._writing() as conn, self._boundary(f"append to {stream_id}"):
            return self._append_locked(
                conn, stream_id, events, expected_version, event_ids, metadata
            )

    def _append_locked(
        self,
        conn: psycopg.Connection[Any],
        stream_id: str,
        events: Sequence[Event],
        expected_version: int | None,
        event_ids: Sequence[str] | None,
        metadata: dict[str, Any] | None,
    ) -> list[int]:
        stream_key = self._key(conn, "streams", stream_id)
        if event_ids is not None:
            stored = self._stored_positions(conn, stream_key, stream_id, event_ids)
            if stored is not None:
                return stored
        ahead = None
        if self.append_hooks and self._ahead:  # pipelined: their results come with the next
            ahead = {sql: conn.execute(sql) for sql in self._ahead}
        version, head, previous = conn.execute(_APPEND_STATE, (stream_key,)).fetchone()  # type: ignore[misc]
        version = version or 0
        if expected_version is not None and expected_version != version:
            raise ConcurrencyError(
                f"stream {stream_id} is at version {version}, expected {expected_version}:"
                " another writer appended first"
            )
        head = head or 0
        previous = previous or codec.GENESIS_HASH
        made = event_ids is None
        if event_ids is None:
            ids = [self._made_id(head + n) for n in range(1, len(events) + 1)]
        else:
            ids = list(event_ids)
        meta = codec.encode_metadata({**default_metadata(), **(metadata or {})})
        meta_key = self._key(conn, "event_metadata", meta)
        recorded_at = codec.now_ms()
        commit_id = head + len(events)
        rows = []
        for offset, event in enumerate(events, start=1):
            type_name = type(event).__name__
            payload = codec.encode_checked(event)
            canonical = codec.canonical_bytes(
                stream_id, version + offset, ids[offset - 1], type_name, event.version,
                recorded_at, codec.payload_digest(payload), meta, commit_id,
            )  # fmt: skip
            previous = codec.chain_hash(previous, canonical)
            rows.append(
                (head + offset, stream_key, version + offset, None if made else ids[offset - 1],
                 self._key(conn, "event_types", type_name), event.version,
                 None if len(events) == 1 else commit_id, payload, previous)
            )  # fmt: skip
        conn.execute(_INSERT_COMMIT, (commit_id, recorded_at, meta_key, FORM))
        if len(rows) == 1:  # executemany's pipeline costs a single row a round trip
            conn.execute(_INSERT, rows[0])
        else:
            with conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        positions = list(range(head + 1, head + 1 + len(rows)))
        if self.append_hooks:
            recorded = [
                RecordedEvent(pos, stream_id, row[2], event_id, type(ev).__name__, row[5],
                              recorded_at, meta, ev)
                for pos, row, event_id, ev in zip(positions, rows, ids, events)
            ]  # fmt: skip
            hooked = self._read_side(conn, ahead)
            for hook in self.append_hooks:
                hook(hooked, recorded)
        return positions

    def _made_id(self, position: int) -> str:
        """The id of an event appended without one: this store's id prefix, its position."""
        return self._id_prefix + position.to_bytes(8, "big").hex()

    def _key(self, conn: psycopg.Connection[Any], table: str, value: Any) -> int:
        """The key of a stream name, event type or metadata, added on first use (under
        the append lock, so no other writer adds the same value meanwhile)."""
        key = self._keys[table].get(value)
        if key is not None:
            return key
        pending: list[tuple[str, Any, int]] = self._local.pending
        for pending_table, pending_value, pending_key in pending:
            if pending_table == table and pending_value == value:
                return pending_key
        column, match = _INTERNED[table]
        row = conn.execute(f"SELECT {column} FROM {table} WHERE {match}", {"v": value}).fetchone()
        if row is not None:
            self._keys[table][value] = row[0]
            return row[0]  # type: ignore[no-any-return]
        args: tuple[Any, ...] = (value,)
        if table == "streams":
            sql, args = (
                "INSERT INTO streams (name, kind) VALUES (%s, %s)",
                (value, stream_kind(value)),
            )
        else:
            sql = f"INSERT INTO {table} ({_VALUE[table]}) VALUES (%s)"
        (key,) = conn.execute(f"{sql} RETURNING {column}", args).fetchone()  # type: ignore[misc]
        pending.append((table, value, key))
        return key  # type: ignore[no-any-return]

    def _stored_positions(
        self,
        conn: psycopg.Connection[Any],
        stream_key: int,
        stream_id: str,
        event_ids: Sequence[str],
    ) -> list[int] | None:
        """Positions of a batch already stored (a retried write), or None if it is new."""
        found: dict[str, int] = {}
        streams: set[int] = set()
        for event_id in event_ids:  # an id this store made of a position: that position's
            if (
                len(event_id) == 32
                and _HEX_DIGITS.issuperset(event_id)
                and event_id.startswith(self._id_prefix)
            ):
                position = int(event_id[16:], 16)
                row = conn.execute(
                    "SELECT stream_key FROM events WHERE position = %s AND event_id IS NULL",
                    (position,),
                ).fetchone()
                if row is None:
                    raise EventIdConflict(
                        f"event id {event_id} is of the form this store gives events appended"
                        " without an id, and no such event is stored: choose another id"
                    )
                found[event_id] = position
                streams.add(row[0])
        for event_id, position, stored_stream in conn.execute(
            "SELECT event_id, position, stream_key FROM events WHERE event_id = ANY(%s)",
            (list(event_ids),),
        ).fetchall():
            found[event_id] = position
            streams.add(stored_stream)
        return stored_positions(
            found, streams, stream_key, stream_id, event_ids,
            lambda keys: [name for (name,) in conn.execute(
                "SELECT name FROM streams WHERE stream_key = ANY(%s)", (sorted(keys),)
            ).fetchall()],
        )  # fmt: skip

    # --- copies -----------------------------------------------------------------

    def append_raw(self, rows: Sequence[RawEvent], redactions: Sequence[Redaction] = ()) -> None:
        """Store another log's rows as they are, in one transaction, each link checked
        against this log's chain first (``chain_raw``); no append hook runs."""
        if not rows:
            return
        with self._writing(pipelined=False) as raw, self._boundary("copy rows in"):
            conn = self._read_side(raw)
            _, head, previous = conn.execute(_APPEND_STATE, (None,)).fetchone()  # type: ignore[misc]
            commits = chain_raw(
                rows, head or 0, previous or codec.GENESIS_HASH,
                lambda stream: conn.execute(  # type: ignore[index]
                    f"SELECT coalesce(max(e.stream_version), 0) FROM events e WHERE {_STREAM_IS}",
                    (stream,),
                ).fetchone()[0],
                redactions,
            )  # fmt: skip
            commit_rows, events = [], []
            for commit in commits:
                meta_key = self._key(conn, "event_metadata", commit.metadata)
                alone = len(commit.rows) == 1
                commit_rows.append((commit.commit_id, commit.recorded_at, meta_key, commit.form))
                for row in commit.rows:
                    made = row.event_id == self._made_id(row.position)
                    events.append(
                        (row.position, self._key(conn, "streams", row.stream_id), row.stream_version,
                         None if made else row.event_id, self._key(conn, "event_types", row.type),
                         row.version, None if alone else commit.commit_id, row.payload, row.hash)
                    )  # fmt: skip
            with conn.cursor() as cursor:
                # COPY inserts too (the triggers refuse UPDATE, DELETE and TRUNCATE only),
                # one round trip a table: several times executemany's rows/s; inside a
                # pipelined write (no COPY there), executemany, pipelined too
                for table, values in (("commits", commit_rows), ("events", events)):
                    if conn.pipeline is not None:
                        marks = ", ".join(["%s"] * (4 if table == "commits" else 9))
                        cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
                        continue
                    with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                        for value in values:
                            copy.write_row(value)
                if redactions:
                    cursor.executemany("INSERT INTO redactions VALUES (%s, %s, %s)", redactions)

    # --- erasure (the store's part of it: what verify reads, what a redaction writes) ---

    def erasing(self) -> Any:
        """The write transaction a redaction's changes are made in."""
        return self.transaction()

    def erase_payload(
        self, position: int, payload: bytes, original_digest: bytes, redacted_by: int
    ) -> None:
        """Replace the stored payload of the event at ``position``, recording the digest
        its link covers and the ``Redacted`` event at ``redacted_by``; inside ``erasing``."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raise StoreError("a payload is erased only inside the redaction's write transaction")
        with self._boundary(f"erase position {position}"):
            conn.execute(
                "INSERT INTO redactions VALUES (%s, %s, %s)",
                (redacted_by, position, original_digest),
            )
            conn.execute("UPDATE events SET payload = %s WHERE position = %s", (payload, position))

    def purge(self, wait_seconds: float = 5.0) -> str | None:
        """Rewrite every table of the store's schema (``VACUUM FULL``), so their files no
        longer hold the old row versions an erasure left. Returns None when done, else
        why not: another session held a table past ``wait_seconds``. What the server's
        WAL, its archive and backups hold is beyond a client's reach."""
        if self.read_only:
            raise StoreError(f"{self.where} is open read-only: it cannot be written")
        if self._pool is None:
            raise StoreError(f"{self.where}: the store is closed")
        with self._boundary("purge"), self._pool.connection() as conn:
            tables = [name for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()]  # fmt: skip
            conn.execute(f"SET lock_timeout = {max(1, int(wait_seconds * 1000))}")
            try:
                for table in tables:
                    conn.execute(f'VACUUM FULL "{table}"')
            except (pg_errors.LockNotAvailable, pg_errors.InsufficientPrivilege) as e:
                return f"the tables could not be rewritten (VACUUM FULL: {_first_line(e)})"
            finally:
                conn.execute("SET lock_timeout = 0")
        return None

    def redactions(self) -> list[tuple[int, int, bytes]]:
        """Every redaction as (position of its Redacted event, position it erased, the
        digest of the payload that position was appended with), in log order."""
        with self._connection() as conn:
            return conn.execute(  # type: ignore[return-value]
                "SELECT redacted_by, position, original_digest FROM redactions ORDER BY redacted_by"
            ).fetchall()

    # --- reads ------------------------------------------------------------------

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """Every event of one stream after ``after_version``, in order."""
        with self._connection() as conn:
            rows = conn.execute(
                f"{_SELECT_EVENTS} WHERE {_STREAM_IS} AND e.stream_version > %s"
                " ORDER BY e.stream_version",
                (stream_id, after_version),
            ).fetchall()
        return list(self._decode_rows(rows))

    def read_stream_raw(
        self, stream_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RawEvent]:
        """Stored rows of one stream after ``after_version``, undecoded, at most ``limit``."""
        with self._connection() as conn:
            rows = conn.execute(
                f"{_SELECT_RAW} WHERE {_STREAM_IS} AND e.stream_version > %s"
                " ORDER BY e.stream_version LIMIT %s",
                (stream_id, after_version, limit),
            ).fetchall()
        return self._raw_rows(rows)

    def stream_positions(self, stream_id: str) -> list[tuple[int, int]]:
        """(position, recorded_at) of every event of one stream, in order, nothing decoded."""
        with self._connection() as conn:
            return conn.execute(  # type: ignore[return-value]
                "SELECT e.position, c.recorded_at FROM events e LEFT JOIN commits c"
                f" ON c.commit_id = coalesce(e.commit_id, e.position) WHERE {_STREAM_IS}"
                " ORDER BY e.stream_version",
                (stream_id,),
            ).fetchall()

    def read_all(
        self, after_position: int = 0, batch_size: int = 1000, *, until_position: int | None = None
    ) -> Iterator[RecordedEvent]:
        """Every event after ``after_position`` (up to ``until_position``), in batches;
        each batch is one statement, and no connection is held between batches."""
        for rows in self._batches(_SELECT_EVENTS, after_position, batch_size, until_position):
            yield from self._decode_rows(rows)

    def read_raw(self, after_position: int = 0, batch_size: int = 5000) -> Iterator[list[RawEvent]]:
        """Stored rows as they are on disk, in position order, in batches."""
        for rows in self._batches(_SELECT_RAW, after_position, batch_size, None):
            yield self._raw_rows(rows)

    def _batches(
        self, select: str, after: int, batch_size: int, until: int | None
    ) -> Iterator[list[tuple[Any, ...]]]:
        bound = "" if until is None else f" AND e.position <= {int(until)}"
        sql = f"{select} WHERE e.position > %s{bound} ORDER BY e.position LIMIT %s"
        while True:
            with self._connection() as conn:
                rows = conn.execute(sql, (after, batch_size)).fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def _decode_rows(self, rows: list[tuple[Any, ...]]) -> Iterator[RecordedEvent]:
        for row in rows:
            position, _, stream_id, stream_version, event_id, _, type_name = row[:7]
            version, at, payload, meta_key, metadata = row[7:12]
            if (
                stream_id is None
                or type_name is None
                or (meta_key is not None and metadata is None)
            ):
                raise StoreError(
                    f"the event at position {position} names a stream, event type or metadata"
                    " key that is not stored; run `evstore verify`"
                )
            try:
                events = codec.decode(type_name, version, payload)
            except UndecodableEvent as e:
                raise StoreError(
                    f"the event at position {position} ({type_name} v{version}) cannot be"
                    f" decoded: {e.cause}; run `evstore verify`"
                ) from e
            ident = self._made_id(position) if event_id is None else event_id
            for event in events:
                yield RecordedEvent(
                    position, stream_id, stream_version, ident, type_name, version, at,
                    metadata if metadata is not None else b"", event,
                )  # fmt: skip

    def _raw_rows(self, rows: list[tuple[Any, ...]]) -> list[RawEvent]:
        """Rows as stored, for verify: a key that names nothing (an edited row) reads as
        a stand-in that no link matches, never as an error."""
        raw = []
        for row in rows:
            position, stream_key, stream_id, stream_version, event_id, type_key, type_name = row[:7]
            version, at, payload, _, metadata, hash_, commit_id, form = row[7:]
            raw.append(
                RawEvent(
                    position,
                    f"<no stream {stream_key!r}>" if stream_id is None else stream_id,
                    stream_version,
                    self._made_id(position) if event_id is None else event_id,
                    f"<no event type {type_key!r}>" if type_name is None else type_name,
                    version, at, payload, b"" if metadata is None else metadata, hash_, form,
                    commit_id,
                )
            )  # fmt: skip
        return raw

    def head_position(self) -> int:
        """The position of the newest event, 0 for an empty store."""
        with self._connection() as conn:
            return conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]  # type: ignore[index,no-any-return]

    def head_hash(self) -> str:
        """The hex hash of the newest event: the value that pins the whole history."""
        with self._connection() as conn:
            row = conn.execute("SELECT hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
        return (row[0] if row else codec.GENESIS_HASH).hex()

    def count_by_type(self) -> dict[tuple[str, int], int]:
        """How many events of each stored (type, version)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT t.name, e.version, count(*) FROM events e"
                " JOIN event_types t ON t.type_key = e.type_key GROUP BY t.name, e.version"
            ).fetchall()
        return {(name, version): count for name, version, count in rows}

    def stream_version(self, stream_id: str) -> int:
        """The version of a stream, 0 when it has no events."""
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT coalesce(max(e.stream_version), 0) FROM events e WHERE {_STREAM_IS}",
                (stream_id,),
            ).fetchone()
        return row[0]  # type: ignore[index,no-any-return]


#: Per interned table: its key column, and how a value is found (metadata by its digest,
#: which its unique index is on).
_INTERNED = {
    "streams": ("stream_key", "name = %(v)s"),
    "event_types": ("type_key", "name = %(v)s"),
    "event_metadata": ("metadata_key", "sha256(bytes) = sha256(%(v)s) AND bytes = %(v)s"),
}
_VALUE = {"event_types": "name", "event_metadata": "bytes"}


def _roll_back(conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline | None = None) -> None:
    """End a failed write's transaction (a pipeline's aborted state first); a connection
    that is gone needs none (the server rolled it back) and leaves the pool."""
    try:
        if pipeline is not None:
            pipeline.sync()
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
