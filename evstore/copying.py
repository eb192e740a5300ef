"""``evstore copy SRC DST``: one store's log and artifact files into another, on any backend.

The destination ends up with the source's rows as they are (positions, event ids, times,
metadata, commits, erased payloads and their ``redactions`` rows), so both verify to the
same head hash. It takes them through ``EventStore.append_raw``, which checks every link
against its own chain before it inserts: the destination never trusts the source.

A copy is resumable: each batch of whole commits is one destination transaction, and a
destination that holds a prefix of the source (its head hash is the source's hash at
that position) is continued from its head. Any other non-empty destination is refused,
and left as it was. A transaction that takes in an erased payload stays open until the
``Redacted`` event recording its erasure is in, so every state a copy commits verifies.
A redaction the source made after an earlier copy took the event is made again in the
destination (its payload replaced, its ``redactions`` row added), as ``evstore redact``
made it in the source.

Artifact files are content-addressed: each one an ``ArtifactRecorded`` event names is
copied unless the destination holds it whole already, checked on the way and renamed into
place. A SQLite store's files are beside it (``evstore-artifacts/``) or in
``$EVSTORE_ARTIFACT_ROOT``; a PostgreSQL store has no folder of its own, so its side is
named (``source_artifacts``/``destination_artifacts``, ``--src-artifacts``/
``--dst-artifacts``) or ``$EVSTORE_ARTIFACT_ROOT``.

Then a SQLite destination's read models are rebuilt (``evstore rebuild``, those behind
only). A PostgreSQL destination gets the log and the artifacts: read models do not run
on PostgreSQL yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec

from evstore import codec
from evstore.artifacts import ArtifactRepository
from evstore.errors import InvalidParameterValue, InvalidState
from evstore.events import ArtifactRecorded
from evstore.stores import EventStore, is_postgres_uri, open_log, sqlite_path
from evstore.stores.base import RawEvent, Redaction


class CopySummary(msgspec.Struct, frozen=True):
    """What a copy did: the events copied (positions ``first..last``, none when
    ``events`` is 0), the destination's head, the artifact files copied and those it
    held already, those missing from the source, the redactions made again in the
    destination, and its read models rebuilt (or why none were)."""

    source: str
    destination: str
    events: int
    first: int
    last: int
    head_position: int
    head_hash: str
    artifact_files: int
    artifact_files_present: int
    artifacts_missing: list[str] = []
    redactions_applied: int = 0
    read_models: list[str] = []
    read_models_note: str | None = None


class LogCopy(msgspec.Struct, frozen=True):
    """What ``copy_log`` did: the events copied (positions ``first..last``, both 0 when
    none were) and the redactions it made again in the destination."""

    events: int
    first: int
    last: int
    redactions_applied: int


def copy_store(
    source: str,
    destination: str,
    *,
    source_artifacts: str | None = None,
    destination_artifacts: str | None = None,
    batch_size: int = 1000,
    until_position: int | None = None,
) -> CopySummary:
    """Copy the log at ``source`` into ``destination`` (created if missing; else it must
    hold a prefix of the source), then the artifact files, then rebuild the destination's
    read models. ``until_position`` stops at the last commit ending there."""
    _check_batch_size(batch_size)
    with open_log(source, create=False, read_only=True) as src:
        src_root = artifact_root(source, source_artifacts)
        dst_root = artifact_root(destination, destination_artifacts)
        records = any(name == "ArtifactRecorded" for name, _ in src.count_by_type())
        if records:
            _check_artifact_roots(source, src_root, destination, dst_root)
        with open_log(destination) as dst:
            log = copy_log(src, dst, batch_size=batch_size, until_position=until_position)
            head = dst.head_position()
            artifacts: tuple[int, int, list[str]] = (0, 0, [])
            if records and src_root and dst_root and not _same_folder(src_root, dst_root):
                artifacts = _copy_artifacts(src, head, src_root, dst_root)
            models, note = _read_models(dst)
            return CopySummary(
                _shown(source), _shown(destination), log.events, log.first, log.last, head, dst.head_hash(),
                *artifacts, log.redactions_applied, models, note,
            )  # fmt: skip


def copy_log(
    src: EventStore, dst: EventStore, *, batch_size: int = 1000, until_position: int | None = None
) -> LogCopy:
    """Copy the events of ``src`` that ``dst`` lacks, ``dst`` being empty or holding a
    prefix of ``src`` (else ``InvalidState``, and nothing changes), in transactions of
    about ``batch_size`` events; ``until_position`` stops at the last commit ending there."""
    _check_batch_size(batch_size)
    if _same_store(src, dst):
        raise InvalidParameterValue(
            f"{_name(src)} and {_name(dst)} are the same store: nothing to copy"
        )
    target = src.head_position() if until_position is None else until_position
    head = _check_prefix(src, dst)
    redactions = _redactions(src)
    target = _before_unrecorded_erasures(redactions, head, target)
    copier = _Copier(src, dst, [r for r in redactions if r[0] <= target], head)
    copier.run(_whole_commits(src, head, target, batch_size))
    return LogCopy(copier.events, head + 1 if copier.events else 0, copier.last, copier.applied)


def _before_unrecorded_erasures(redactions: list[Redaction], head: int, target: int) -> int:
    """``target``, or the position before the first event up to it that is erased by a
    redaction recorded after it: a copy never commits an erased payload without its
    ``Redacted`` event (the stop moves back until no such event is left before it)."""
    while True:
        erased = [p for by, p, _ in redactions if head < p <= target < by]
        if not erased:
            return target
        target = min(erased) - 1


def _name(store: EventStore) -> str:
    """The store as messages name it: its file, or its URI without a password."""
    return str(getattr(store, "where", None) or getattr(store, "path", store.uri))


def artifact_root(uri: str, given: str | None) -> str | None:
    """Where a store's artifact files are: ``given``, else $EVSTORE_ARTIFACT_ROOT, else
    beside a SQLite file; None for a PostgreSQL store without either."""
    if given:
        return given
    if os.environ.get("EVSTORE_ARTIFACT_ROOT"):
        return os.environ["EVSTORE_ARTIFACT_ROOT"]
    if is_postgres_uri(uri):
        return None
    return os.path.join(os.path.dirname(os.path.abspath(sqlite_path(uri))), "evstore-artifacts")


def _shown(uri: str) -> str:
    """A store's URI for messages: without its password."""
    if not is_postgres_uri(uri):
        return uri
    from evstore.stores.postgres import redacted_uri

    return redacted_uri(uri)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidParameterValue(f"the batch size must be 1 or more, not {batch_size}")


def _check_artifact_roots(
    source: str, src_root: str | None, destination: str, dst_root: str | None
) -> None:
    """A store whose log records artifacts needs a folder on each side, named before
    anything is written; the source's must exist."""
    for uri, root, option in (
        (source, src_root, "--src-artifacts"),
        (destination, dst_root, "--dst-artifacts"),
    ):
        if root is None:
            raise InvalidParameterValue(
                f"the source records artifact files, and {_shown(uri)} is a PostgreSQL store, which"
                f" has no artifact folder of its own: name one with {option} DIR (or"
                " $EVSTORE_ARTIFACT_ROOT); nothing was copied"
            )
    assert src_root is not None
    if not os.path.isdir(src_root):
        raise InvalidParameterValue(
            f"the source records artifact files, and its artifact folder {src_root} does not"
            " exist: name it with --src-artifacts DIR; nothing was copied"
        )


def _same_store(src: EventStore, dst: EventStore) -> bool:
    """Whether both open the same store: the same file, or the same id in the same
    database and schema (a file copied with ``cp`` keeps its id, and is another store)."""
    src_path, dst_path = getattr(src, "path", None), getattr(dst, "path", None)
    if src_path is not None and dst_path is not None:
        return os.path.samefile(src_path, dst_path)
    if src_path is not None or dst_path is not None:
        return False
    return bool(
        src.meta()["store_id"] == dst.meta()["store_id"]  # type: ignore[attr-defined]
        and src.meta_database() == dst.meta_database()  # type: ignore[attr-defined]
    )


def _check_prefix(src: EventStore, dst: EventStore) -> int:
    """The destination's head, once it is known to be the source's at that position."""
    head = dst.head_position()
    if head == 0:
        return 0
    destination = _name(dst)
    row = _row_at(src, head)
    unchanged = "; nothing was changed. Copy into a new store (a path that does not exist, or an empty schema)"
    if row is None:
        raise InvalidState(
            f"{destination} holds {head} events, the source {src.head_position()}: it is not"
            f" a copy of the source{unchanged}"
        )
    if row.hash.hex() != dst.head_hash():
        raise InvalidState(
            f"{destination} holds a different history: its event at position {head} has hash"
            f" {dst.head_hash()}, the source's {row.hash.hex()}{unchanged}"
        )
    if row.commit != head:
        raise InvalidState(
            f"{destination} ends inside the source's commit of positions ..{row.commit}:"
            f" it is not a copy made by evstore copy{unchanged}"
        )
    return head


def _row_at(store: EventStore, position: int) -> RawEvent | None:
    for batch in store.read_raw(position - 1, 1):
        return batch[0] if batch and batch[0].position == position else None
    return None


def _redactions(store: EventStore) -> list[Redaction]:
    return getattr(store, "redactions", list)()  # type: ignore[no-any-return]


def _rows(src: EventStore, after: int, until: int, batch_size: int) -> Iterator[list[RawEvent]]:
    """The source's rows after ``after`` up to ``until``, in batches."""
    for batch in src.read_raw(after, batch_size):
        if batch[-1].position >= until:
            yield [row for row in batch if row.position <= until]
            return
        yield batch


def _whole_commits(
    src: EventStore, after: int, until: int, batch_size: int
) -> Iterator[list[RawEvent]]:
    """The source's rows after ``after`` up to the last commit that ends by ``until``, in
    batches that end where a commit ends (a commit longer than a batch is one batch)."""
    pending: list[RawEvent] = []
    for batch in _rows(src, after, until, batch_size):
        pending += batch
        cut = _last_commit_end(pending)
        if cut:
            yield pending[:cut]
            pending = pending[cut:]


def _last_commit_end(rows: list[RawEvent]) -> int:
    """How many of ``rows`` there are up to the end of the last commit among them."""
    for index in range(len(rows) - 1, -1, -1):
        if rows[index].commit == rows[index].position:
            return index + 1
    return 0


class _Copier:
    """Appends batches to the destination, holding a transaction open while an erased
    payload in it waits for its ``Redacted`` event, and makes again in the destination
    the redactions it lacks of events it holds already."""

    def __init__(
        self, src: EventStore, dst: EventStore, redactions: list[Redaction], head: int
    ) -> None:
        self.src, self.dst = src, dst
        self.events, self.last, self.applied = 0, 0, 0
        held = {redacted_by for redacted_by, _, _ in _redactions(dst)}
        #: Redactions of events the destination holds already, by their Redacted event.
        self.erase: dict[int, list[Redaction]] = {}
        #: Redactions that travel with the events they erased.
        self.travel: list[Redaction] = []
        for redaction in redactions:
            redacted_by, position, _ = redaction
            if redacted_by in held:
                continue
            if redacted_by <= head:
                raise InvalidState(
                    f"the destination lacks the redaction recorded at its position {redacted_by}"
                    " (its redactions row): it is not a copy made by evstore copy; nothing was changed"
                )
            if position <= head:
                self.erase.setdefault(redacted_by, []).append(redaction)
            else:
                self.travel.append(redaction)

    def run(self, batches: Iterator[list[RawEvent]]) -> None:
        batch = next(batches, None)
        erasing = getattr(self.dst, "erasing", None)
        while batch is not None:
            with erasing() if self.erase and erasing is not None else self.dst.transaction():
                hold_until = 0
                while batch is not None:
                    hold_until = max(hold_until, self._append(batch))
                    batch = next(batches, None)
                    if self.last >= hold_until:
                        break
        if self.applied and hasattr(self.dst, "purge"):
            self.dst.purge()

    def _append(self, batch: list[RawEvent]) -> int:
        """Append one batch; returns the last position its redactions need in the same
        transaction."""
        first, last = batch[0].position, batch[-1].position
        travel = [r for r in self.travel if first <= r[1] <= last]
        self.dst.append_raw(batch, travel)
        for redacted_by in [by for by in self.erase if by <= last]:
            for _, position, digest in self.erase.pop(redacted_by):
                erased = _row_at(self.src, position)  # its payload as the source holds it now
                assert erased is not None
                self.dst.erase_payload(position, erased.payload, digest, redacted_by)  # type: ignore[attr-defined]
                self.applied += 1
        self.events += len(batch)
        self.last = last
        return max((redacted_by for redacted_by, _, _ in travel), default=0)


def _copy_artifacts(
    src: EventStore, until: int, src_root: str, dst_root: str
) -> tuple[int, int, list[str]]:
    """Every file an ``ArtifactRecorded`` up to ``until`` names, into ``dst_root`` unless
    it is there whole: (copied, present already, missing or corrupt in the source)."""
    wanted: dict[str, int] = {}
    for batch in _rows(src, 0, until, 5000):
        for row in batch:
            if row.type == "ArtifactRecorded" and row.payload != codec.ERASED_PAYLOAD:
                for event in codec.decode(row.type, row.version, row.payload):
                    if isinstance(event, ArtifactRecorded):
                        wanted.setdefault(event.sha256, event.size)
    source, target = ArtifactRepository(src_root), ArtifactRepository(dst_root)
    if wanted:  # made even when every file is missing: the copy's folder, for its next copy
        os.makedirs(dst_root, exist_ok=True)
    copied, present = 0, 0
    missing: list[str] = []
    for sha256, size in wanted.items():
        if target.holds(sha256, size):
            present += 1
            continue
        try:
            target.copy_from(source, sha256)
        except InvalidState:
            missing.append(sha256)
            continue
        copied += 1
    return copied, present, missing


def _same_folder(one: str, other: str) -> bool:
    return os.path.abspath(one) == os.path.abspath(other) or (
        os.path.exists(one) and os.path.exists(other) and os.path.samefile(one, other)
    )


def _read_models(dst: EventStore) -> tuple[list[str], str | None]:
    """Rebuild the destination's read models that are behind or never built."""
    from evstore.rebuild import rebuild

    return rebuild(dst, only_stale=True).projections, None
