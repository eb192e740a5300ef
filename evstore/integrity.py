"""Proving the log was not edited: recompute the hash chain and the sequences."""

from __future__ import annotations

import msgspec

from evstore import codec
from evstore.errors import UndecodableEvent
from evstore.events import EVENT_TYPES, Redacted
from evstore.stores.base import EventStore, RawEvent


class RedactionFound(msgspec.Struct, frozen=True):
    """A redaction ``verify`` checked: the position erased, the ``Redacted`` event that
    records it (what, why), and what the erased event's link was verified through:
    ``digest`` (form 4: the original payload's digest, kept) or ``stored hash`` (form 3:
    the link covered the payload bytes, which are gone)."""

    position: int
    redacted_by: int
    target: str
    key: str | None
    reason: str
    verified_through: str
    user: str | None = None
    recorded_at: int | None = None


class VerifyReport(msgspec.Struct, frozen=True):
    """What ``verify`` found: counts, the head, the first failure if any, and the
    redactions checked on the way."""

    ok: bool
    events: int
    head_position: int
    head_hash: str
    unknown_events: int
    first_bad_position: int | None = None
    reason: str | None = None
    redactions: list[RedactionFound] = []


def is_known(type_name: str, version: int) -> bool:
    """Whether this code can decode events of this type and version."""
    cls = EVENT_TYPES.get(type_name)
    return cls is not None and 1 <= version <= cls.version


def _undecodable(type_name: str, version: int, payload: bytes) -> str | None:
    """Why a stored event of a known type cannot be read back, or None if it can."""
    try:
        codec.decode(type_name, version, payload)
    except UndecodableEvent as e:
        return str(e)
    return None


def verify(store: EventStore, *, expect_head: str | None = None) -> VerifyReport:
    """Recompute every hash, check positions and stream versions are contiguous, and
    that every event decodes (through its upcasters) into its current type.

    ``expect_head`` is a head hash recorded earlier: the history must still contain it,
    which catches a cut-off tail or a chain rewritten from some point on. A redacted
    event's link is checked against the digest its redaction kept (form 4), or taken
    from its stored hash (form 3), and each redaction against its ``Redacted`` event.
    """
    wanted = None if expect_head is None else expect_head.strip().lower()
    seen_wanted = wanted in (None, codec.GENESIS_HASH.hex())
    previous = codec.GENESIS_HASH
    expected_position = 1
    stream_versions: dict[str, int] = {}
    count = unknown = 0
    start_hash = codec.GENESIS_HASH
    commit = start = 0  # the last event's commit (its last position) and its first position
    redactions = _Redactions(store)
    for batch in store.read_raw():
        for row in batch:
            reason = _broken(row, expected_position, stream_versions)
            if reason is None and commit >= expected_position and row.commit != commit:
                # reported at the commit's first event: the whole commit is in doubt
                return VerifyReport(
                    False, start - 1, start - 1, start_hash.hex(), unknown, start,
                    f"the commit of positions {start}..{commit} does not hold position"
                    f" {expected_position}: an event was moved into it or out of it",
                )  # fmt: skip
            if reason is None:
                original = redactions.erased(row, count, previous)
                if original is not None and row.form == 3:
                    pass  # its link covered the erased bytes: its stored hash stands for it
                else:
                    if row.form == 3:
                        covered, commit_id = row.payload, None
                    else:
                        covered = original or codec.payload_digest(row.payload)
                        commit_id = row.commit
                    canonical = codec.canonical_bytes(
                        row.stream_id, row.stream_version, row.event_id, row.type, row.version,
                        row.recorded_at, covered, row.metadata, commit_id,
                    )  # fmt: skip
                    if codec.chain_hash(previous, canonical) != row.hash:
                        reason = "hash mismatch: the event or one before it was altered"
                if reason is None:
                    reason = _undecodable(row.type, row.version, row.payload)
            if reason is None and (failed := redactions.check(row)) is not None:
                bad, reason = failed
                if bad != row.position:  # an erased event, met before: reported there
                    _, count, previous, _ = redactions.met[bad]
                    return VerifyReport(False, count, bad - 1, previous.hex(), unknown, bad, reason)
            if reason is not None:
                # the head reported is the last event that verified
                return VerifyReport(
                    False, count, expected_position - 1, previous.hex(), unknown, row.position, reason
                )
            if row.commit != commit:  # the first event of a commit
                commit, start, start_hash = row.commit, row.position, previous
            previous = row.hash
            if not seen_wanted and previous.hex() == wanted:
                seen_wanted = True
            stream_versions[row.stream_id] = row.stream_version
            expected_position += 1
            count += 1
            if not is_known(row.type, row.version):
                unknown += 1
    head = expected_position - 1
    if commit > head:
        return VerifyReport(
            False, start - 1, start - 1, start_hash.hex(), unknown, start,
            f"the log ends inside the commit of positions {start}..{commit}: its events after"
            f" position {head} were removed",
        )  # fmt: skip
    if (missing := redactions.unseen(head)) is not None:
        return VerifyReport(False, count, head, previous.hex(), unknown, None, missing)
    if not seen_wanted:
        return VerifyReport(
            False, count, head, previous.hex(), unknown, None,
            f"the expected head {wanted} is not in this history: events were removed or"
            " the chain was rewritten",
        )  # fmt: skip
    return VerifyReport(True, count, head, previous.hex(), unknown, redactions=redactions.found)


class _Redactions:
    """The store's redactions, checked as the walk meets the events they erased and then
    the ``Redacted`` events recording them."""

    def __init__(self, store: EventStore) -> None:
        rows: list[tuple[int, int, bytes]] = getattr(store, "redactions", list)()
        self.by_event = {redacted_by: (position, digest) for redacted_by, position, digest in rows}
        self.original: dict[int, bytes] = {}
        self.last: dict[int, int] = {}  # the newest redaction of each position
        for redacted_by, position, digest in rows:
            self.original.setdefault(position, digest)
            self.last[position] = redacted_by
        # per erased position met: its payload's digest now, the count and hash before it
        self.met: dict[int, tuple[bytes, int, bytes, int | None]] = {}
        self.found: list[RedactionFound] = []

    def erased(self, row: RawEvent, count: int, previous: bytes) -> bytes | None:
        """The digest the erased event at ``row`` was appended with; None if not erased."""
        original = self.original.get(row.position)
        if original is not None:
            self.met[row.position] = (codec.payload_digest(row.payload), count, previous, row.form)
        return original

    def check(self, row: RawEvent) -> tuple[int, str] | None:
        """At a ``Redacted`` event: whether it and its redactions row agree, and the erased
        payload is the one it left; else the position in doubt and why."""
        here = self.by_event.get(row.position)
        if here is None:
            if row.type == "Redacted":
                return row.position, "a Redacted event whose redactions row is missing"
            return None
        position, digest = here
        decoded = codec.decode(row.type, row.version, row.payload)
        event = decoded[0] if len(decoded) == 1 else None
        if not isinstance(event, Redacted):
            why = f"the redactions row of position {position} names this {row.type} as its record"
            return row.position, why
        if event.position != position or position not in self.met:
            why = f"the Redacted event names position {event.position}, its redactions row {position}"
            return row.position, why
        if event.original_sha256 != digest.hex() or digest != self.original[position]:
            return row.position, f"the digest kept for position {position} is not the one recorded"
        now, _, _, form = self.met[position]
        if self.last[position] == row.position and event.redacted_sha256 != now.hex():
            return position, f"the payload was changed after its redaction at position {row.position}"
        through = "stored hash" if form == 3 else "digest"
        user = codec.decode_metadata(row.metadata).get("user") if row.metadata else None
        self.found.append(
            RedactionFound(position, row.position, event.target, event.key, event.reason, through,
                           user, row.recorded_at)
        )  # fmt: skip
        return None

    def unseen(self, head: int) -> str | None:
        """Why a redaction row names no event of the log, if one does."""
        beyond = sorted(by for by in self.by_event if by > head)
        if beyond:
            return f"a redactions row names position {beyond[0]}, past the head of the log ({head})"
        return None


def _broken(row: RawEvent, position: int, versions: dict[str, int]) -> str | None:
    """What is wrong with a row's place in the log, before its link is checked."""
    if row.position != position:
        return f"position {row.position} follows {position - 1}: events are missing"
    if row.stream_version != versions.get(row.stream_id, 0) + 1:
        return (
            f"stream {row.stream_id} jumps from version {versions.get(row.stream_id, 0)}"
            f" to {row.stream_version}"
        )
    if row.form is None or row.recorded_at is None:
        return "the event's commit record is missing"
    if row.form not in (3, 4):
        return f"the event's commit names canonical form {row.form}, which does not exist"
    if row.commit < row.position:
        return f"the event names commit {row.commit}, which ended before it"
    return None
