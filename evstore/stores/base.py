"""What every event store backend provides: the log contract.

A backend stores events in one append-only table, assigns positions inside the write
transaction, keeps stream versions contiguous, chains hashes, and runs the inline
projection hook in the same transaction as the append. ``tests/test_log_contract.py``
runs the same suite against every backend.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Self

import msgspec

from evstore import codec
from evstore.errors import EventIdConflict, InvalidParameterValue
from evstore.events import ErasedEvent, Event, UnknownEvent
from evstore.identity import acting

ANY = None  # expected_version: append whatever the stream's version is
NO_STREAM = 0  # expected_version: the stream must not exist yet


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """A stored event as read back, decoded through the one decode function."""

    position: int
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    version: int
    recorded_at: int
    metadata_bytes: bytes
    event: Event | UnknownEvent | ErasedEvent

    @property
    def metadata(self) -> dict[str, Any]:
        """The event's metadata: user, host, evstore version, correlation ids."""
        return codec.decode_metadata(self.metadata_bytes)

    @property
    def occurred_at(self) -> int:
        """When it happened: the ``occurred_at`` an importer recorded (MLflow's own time),
        else when it was recorded. Read models that keep a "last updated" use this."""
        when = self.metadata.get("occurred_at")
        return self.recorded_at if when is None else int(when)


class RawEvent(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A stored row as it is on disk, for verification and export."""

    position: int
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    version: int
    recorded_at: int
    payload: bytes
    metadata: bytes
    hash: bytes
    #: The canonical form the link covers (``codec``): 4, or 3 for an event written
    #: before storage format 4; None when the event's commit record is missing.
    form: int | None = 3
    #: The commit the event belongs to: the position of the commit's last event.
    commit: int = 0


def default_metadata() -> dict[str, Any]:
    """The metadata every event carries unless the caller overrides it: the process's
    user and host, and inside a server's request the principal it authenticated and the
    client's address (``evstore.identity``)."""
    from evstore import __version__

    login, host = _process_identity()
    metadata = {
        "user": os.environ.get("EVSTORE_USER") or login,
        "host": host,
        "evstore_version": __version__,
    }
    who = acting()
    if who is not None:
        metadata["principal"] = who[0]
        if who[1]:
            metadata["client"] = who[1]
    return metadata


@functools.cache
def _process_identity() -> tuple[str, str]:
    # Looked up once per process: getpass and gethostname took ~20% of a one-event append.
    return _login(), socket.gethostname()


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name here (a bare container uid)
        return "unknown"


def check_event_ids(events: Sequence[Event], event_ids: Sequence[str] | None) -> None:
    """The caller's event ids for a batch, before any backend stores it: one per event,
    none twice."""
    if event_ids is None:
        return
    if len(event_ids) != len(events):
        raise InvalidParameterValue("event_ids must name one id per event")
    if len(set(event_ids)) != len(event_ids):
        raise EventIdConflict("an event id appears twice in one batch")


def stored_positions(
    found: dict[Any, int], streams: set[int], stream_key: int, stream_id: str,
    event_ids: Sequence[Any], stream_names: Callable[[set[int]], list[str]],
) -> list[int] | None:  # fmt: skip
    """What a backend found of a batch's ids (``found``: id -> position, ``streams``: the
    stream keys holding them) says: None for a new batch, the positions of a retry, or
    ``EventIdConflict`` for ids stored elsewhere or for part of the batch only."""
    if not found:
        return None
    if streams != {stream_key}:
        raise EventIdConflict(
            f"event ids of this batch are stored in stream {', '.join(sorted(stream_names(streams)))},"
            f" not {stream_id}: ids must be unique across the whole log"
        )
    if len(found) != len(event_ids):
        raise EventIdConflict(
            f"{len(found)} of {len(event_ids)} event ids in this batch are already stored;"
            " a retried write must resend the whole batch with the same ids"
        )
    return [found[event_id] for event_id in event_ids]


#: A redaction as stored: the position of its ``Redacted`` event, the position whose
#: payload it erased, and the digest of the payload that position was appended with.
Redaction = tuple[int, int, bytes]


class RawCommit(NamedTuple):
    """The rows of one commit, checked by ``chain_raw``, with what its commit row holds."""

    commit_id: int
    recorded_at: int
    metadata: bytes
    form: int
    rows: list[RawEvent]


def chain_raw(
    rows: Sequence[RawEvent],
    head: int,
    head_hash: bytes,
    stream_version: Callable[[str], int],
    redactions: Sequence[Redaction] = (),
) -> list[RawCommit]:
    """Check that ``rows`` (another log's, as stored) continue a log whose newest event is
    at ``head`` with hash ``head_hash``: whole commits right after the head, each stream's
    versions contiguous from ``stream_version(stream)``, and every link recomputed and
    equal to the row's hash (an erased payload's from the digest its redaction in
    ``redactions`` kept). Returns the rows by commit; the first that fails is an
    ``InvalidParameterValue`` naming its position."""
    originals: dict[int, bytes] = {}
    for redacted_by, position, digest in redactions:
        inside = bool(rows) and rows[0].position <= position <= rows[-1].position
        if not inside or position >= redacted_by:
            raise InvalidParameterValue(
                f"the redaction recorded at position {redacted_by} names position {position},"
                " which is not among the rows given, or not before it"
            )
        originals.setdefault(position, digest)
    versions: dict[str, int] = {}
    commits: list[RawCommit] = []
    previous = head_hash
    for expected, row in enumerate(rows, start=head + 1):
        where = f"position {row.position}"
        if row.position != expected:
            raise InvalidParameterValue(f"{where} does not follow position {expected - 1}")
        version = versions.get(row.stream_id)
        if version is None:
            version = stream_version(row.stream_id)
        if row.stream_version != version + 1:
            raise InvalidParameterValue(
                f"{where}: stream {row.stream_id} is at version {version}, the row is"
                f" version {row.stream_version}"
            )
        versions[row.stream_id] = row.stream_version
        _add_to_commit(commits, row, where)
        original = originals.get(row.position)
        if not (original is not None and row.form == 3):  # else its stored hash stands for it
            four = row.form == 4
            covered = (original or codec.payload_digest(row.payload)) if four else row.payload
            canonical = codec.canonical_bytes(
                row.stream_id, row.stream_version, row.event_id, row.type, row.version,
                row.recorded_at, covered, row.metadata, row.commit if four else None,
            )  # fmt: skip
            if codec.chain_hash(previous, canonical) != row.hash:
                raise InvalidParameterValue(
                    f"{where}: its link does not verify against this log's chain (hash"
                    " mismatch): the event, or one before it, was altered"
                )
        previous = row.hash
    if commits and commits[-1].commit_id != rows[-1].position:
        raise InvalidParameterValue(
            f"the rows end inside the commit of positions {commits[-1].rows[0].position}.."
            f"{commits[-1].commit_id}: give whole commits"
        )
    return commits


def _add_to_commit(commits: list[RawCommit], row: RawEvent, where: str) -> None:
    """Put ``row`` in the commit it names: the one open, or a new one."""
    if row.form not in (3, 4):
        raise InvalidParameterValue(f"{where}: its commit record is missing or of no known form")
    if row.commit < row.position or (row.form == 3 and row.commit != row.position):
        raise InvalidParameterValue(f"{where} names commit {row.commit}, which it cannot be in")
    current = commits[-1] if commits else None
    if current is not None and current.commit_id > current.rows[-1].position:  # open
        if row.commit != current.commit_id or (row.recorded_at, row.metadata, row.form) != (
            current.recorded_at, current.metadata, current.form
        ):
            raise InvalidParameterValue(
                f"{where} is not in the commit of positions {current.rows[0].position}.."
                f"{current.commit_id}, which it falls in"
            )
        current.rows.append(row)
        return
    commits.append(RawCommit(row.commit, row.recorded_at, row.metadata, row.form, [row]))


#: Called inside the append transaction with the backend's connection and the new events.
AppendHook = Callable[[Any, Sequence[RecordedEvent]], None]


class EventStore(ABC):
    """The event log: append, read a stream, read everything, head, raw rows."""

    uri: str
    append_hooks: list[AppendHook]

    @abstractmethod
    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None = ANY,
        event_ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[int]:
        """Append events to a stream in one transaction; returns their positions."""

    @abstractmethod
    def append_raw(self, rows: Sequence[RawEvent], redactions: Sequence[Redaction] = ()) -> None:
        """Store another log's rows as they are, in one transaction (a copy): whole
        commits right after the head, each link checked against this log's chain first
        (``chain_raw``), with the ``redactions`` rows of the payloads among them. Rows
        keep their event ids, times, metadata and commits; no append hook runs."""

    @abstractmethod
    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """Every event of one stream after ``after_version``, in order."""

    def stream_positions(self, stream_id: str) -> list[tuple[int, int]]:
        """(position, recorded_at) of every event of one stream, in order, nothing decoded."""
        return [(e.position, e.recorded_at) for e in self.read_stream(stream_id)]

    @abstractmethod
    def read_all(
        self, after_position: int = 0, batch_size: int = 1000, *, until_position: int | None = None
    ) -> Iterator[RecordedEvent]:
        """Every event after ``after_position``, streamed in batches."""

    @abstractmethod
    def read_raw(
        self, after_position: int = 0, batch_size: int = 5000
    ) -> Iterator[list[RawEvent]]:
        """Stored rows as they are on disk, in position order, in batches."""

    @abstractmethod
    def read_stream_raw(
        self, stream_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RawEvent]:
        """Stored rows of one stream after ``after_version``, undecoded, at most ``limit``."""

    @abstractmethod
    def head_position(self) -> int:
        """The position of the newest event, 0 for an empty store."""

    @abstractmethod
    def head_hash(self) -> str:
        """The hex hash of the newest event: the value that pins the whole history."""

    @abstractmethod
    def count_by_type(self) -> dict[tuple[str, int], int]:
        """How many events of each stored (type, version)."""

    @abstractmethod
    def stream_version(self, stream_id: str) -> int:
        """The version of a stream, 0 when it has no events."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction; appends inside it join it. Yields the connection."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Any]:
        """One consistent read (a single snapshot); yields the connection."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
