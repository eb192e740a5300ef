"""Proving the log was not edited: recompute the hash chain and the sequences."""

from __future__ import annotations

import msgspec

from evstore import codec
from evstore.errors import UndecodableEvent
from evstore.events import EVENT_TYPES
from evstore.stores.base import EventStore, RawEvent


class VerifyReport(msgspec.Struct, frozen=True):
    """What ``verify`` found: counts, the head, and the first failure if any."""

    ok: bool
    events: int
    head_position: int
    head_hash: str
    unknown_events: int
    first_bad_position: int | None = None
    reason: str | None = None


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
    which catches a cut-off tail or a chain rewritten from some point on.
    """
    wanted = None if expect_head is None else expect_head.strip().lower()
    seen_wanted = wanted in (None, codec.GENESIS_HASH.hex())
    previous = codec.GENESIS_HASH
    expected_position = 1
    stream_versions: dict[str, int] = {}
    count = unknown = 0
    start_hash = codec.GENESIS_HASH
    commit = start = 0  # the last event's commit (its last position) and its first position
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
                if row.form == 3:
                    covered, commit_id = row.payload, None
                else:
                    covered, commit_id = codec.payload_digest(row.payload), row.commit
                canonical = codec.canonical_bytes(
                    row.stream_id, row.stream_version, row.event_id, row.type, row.version,
                    row.recorded_at, covered, row.metadata, commit_id,
                )  # fmt: skip
                if codec.chain_hash(previous, canonical) != row.hash:
                    reason = "hash mismatch: the event or one before it was altered"
                else:
                    reason = _undecodable(row.type, row.version, row.payload)
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
    if not seen_wanted:
        return VerifyReport(
            False, count, head, previous.hex(), unknown, None,
            f"the expected head {wanted} is not in this history: events were removed or"
            " the chain was rewritten",
        )  # fmt: skip
    return VerifyReport(True, count, head, previous.hex(), unknown)


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
