"""The log contract: every backend passes these tests unchanged (through the ``log`` fixture).

Only the ``EventStore`` API is used here; nothing in this file knows which database is
behind the store. Backend-specific checks (triggers, crash recovery, several processes on
one file) live in their own modules.
"""

from __future__ import annotations

import math
import re
import socket
import types
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evstore
from evstore.codec import now_ms
from evstore.errors import ConcurrencyError, EventIdConflict, InvalidParameterValue
from evstore.events import Event, MetricPoint, MetricsLogged, RunRenamed, TagDeleted, TagSet
from evstore.stores import ANY, NO_STREAM, EventStore, RecordedEvent, open_log


def tags(*keys: str) -> list[Event]:
    """One TagSet event per key, valued ``v-<key>``."""
    return [TagSet(key=key, value=f"v-{key}") for key in keys]


def ids(count: int) -> list[str]:
    """Fresh writer-supplied event ids."""
    return [str(uuid.uuid4()) for _ in range(count)]


def positions_of(log: EventStore) -> list[int]:
    """Every stored position, in the order read_all yields them."""
    return [recorded.position for recorded in log.read_all()]


def refused(error: type[Exception], message: str) -> Any:
    """``pytest.raises`` for ``error`` with exactly ``message``: what the writer is told."""
    return pytest.raises(error, match=f"^{re.escape(message)}$")


# --- an empty store ------------------------------------------------------------------


def test_empty_store(log: EventStore) -> None:
    assert log.head_position() == 0
    assert list(log.read_all()) == []
    assert log.read_stream("run-1") == []
    assert log.stream_version("run-1") == 0


def test_appending_no_events_stores_nothing(log: EventStore) -> None:
    assert log.append("run-1", []) == []
    assert log.head_position() == 0
    assert log.stream_version("run-1") == 0


# --- positions and stream versions ------------------------------------------------------


def test_append_returns_contiguous_positions(log: EventStore) -> None:
    assert log.append("run-1", tags("a", "b", "c")) == [1, 2, 3]
    assert log.append("run-2", tags("d")) == [4]
    assert log.append("run-1", tags("e", "f")) == [5, 6]
    assert log.head_position() == 6
    assert positions_of(log) == [1, 2, 3, 4, 5, 6]


def test_stream_versions_are_contiguous_from_one(log: EventStore) -> None:
    # Interleave two streams so global positions and stream versions diverge.
    log.append("run-1", tags("a", "b"))
    log.append("run-2", tags("c"))
    log.append("run-1", tags("d"))
    log.append("run-2", tags("e", "f"))
    assert [r.stream_version for r in log.read_stream("run-1")] == [1, 2, 3]
    assert [r.position for r in log.read_stream("run-1")] == [1, 2, 4]
    assert [r.stream_version for r in log.read_stream("run-2")] == [1, 2, 3]
    assert [r.position for r in log.read_stream("run-2")] == [3, 5, 6]
    assert log.stream_version("run-1") == 3
    assert log.stream_version("run-2") == 3


def test_stream_positions_are_the_streams_events_without_decoding(log: EventStore) -> None:
    log.append("run-a", tags("a", "b"))
    log.append("run-b", tags("c"))
    log.append("run-a", tags("d"))
    expected = [(e.position, e.recorded_at) for e in log.read_stream("run-a")]
    assert [tuple(p) for p in log.stream_positions("run-a")] == expected
    assert [p for p, _ in expected] == [1, 2, 4]
    assert list(log.stream_positions("nothing")) == []


def test_recorded_event_carries_the_envelope(log: EventStore) -> None:
    before = now_ms()
    event = RunRenamed(run_name="renamed ✓")
    [position] = log.append("run-1", [event], event_ids=["evt-1"])
    after = now_ms()
    [recorded] = log.read_stream("run-1")
    assert isinstance(recorded, RecordedEvent)
    assert recorded.position == position
    assert recorded.stream_id == "run-1"
    assert recorded.stream_version == 1
    assert recorded.event_id == "evt-1"
    assert recorded.type == "RunRenamed"
    assert recorded.version == RunRenamed.version
    assert before <= recorded.recorded_at <= after
    assert recorded.event == event


def test_generated_event_ids_are_unique(log: EventStore) -> None:
    log.append("run-1", tags(*"abcdefgh"))
    log.append("run-2", tags(*"ijkl"))
    event_ids = [r.event_id for r in log.read_all()]
    assert all(event_ids)
    assert len(set(event_ids)) == 12


def test_a_reopened_store_has_every_event(log: EventStore) -> None:
    log.append("run-1", tags("a", "b"))
    log.append("run-2", tags("c"))
    with open_log(log.uri) as again:
        assert again.head_position() == 3
        assert [r.event for r in again.read_stream("run-1")] == tags("a", "b")
        assert again.append("run-2", tags("d"), expected_version=1) == [4]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), min_size=1, max_size=12))
def test_any_interleaving_keeps_positions_and_versions_contiguous(
    log: EventStore, batches: list[tuple[int, int]]
) -> None:
    # The store outlives the examples, so each example writes to streams of its own.
    prefix = uuid.uuid4().hex
    start = log.head_position()
    expected_head = start
    for stream, size in batches:
        positions = log.append(f"{prefix}-{stream}", tags(*(str(i) for i in range(size))))
        assert positions == list(range(expected_head + 1, expected_head + size + 1))
        expected_head += size
    assert log.head_position() == expected_head
    assert [r.position for r in log.read_all(after_position=start)] == list(
        range(start + 1, expected_head + 1)
    )
    for stream in {stream for stream, _ in batches}:
        versions = [r.stream_version for r in log.read_stream(f"{prefix}-{stream}")]
        assert versions == list(range(1, len(versions) + 1))


# --- expected_version --------------------------------------------------------------------


def test_expected_version_that_matches_appends(log: EventStore) -> None:
    log.append("run-1", tags("a", "b"))
    assert log.append("run-1", tags("c"), expected_version=2) == [3]
    assert log.stream_version("run-1") == 3


@pytest.mark.parametrize("expected", [1, 3, 10])
def test_expected_version_mismatch_raises_and_stores_nothing(
    log: EventStore, expected: int
) -> None:
    log.append("run-1", tags("a", "b"))
    message = f"stream run-1 is at version 2, expected {expected}: another writer appended first"
    with refused(ConcurrencyError, message):
        log.append("run-1", tags("c", "d"), expected_version=expected)
    assert log.head_position() == 2
    assert log.stream_version("run-1") == 2
    assert [r.event for r in log.read_stream("run-1")] == tags("a", "b")


def test_a_second_writer_with_a_stale_version_loses(log: EventStore) -> None:
    log.append("run-1", tags("a"))
    with open_log(log.uri) as other:
        # Both writers read version 1; the second to append must fail.
        assert other.append("run-1", tags("b"), expected_version=1) == [2]
    with pytest.raises(ConcurrencyError):
        log.append("run-1", tags("c"), expected_version=1)
    assert log.head_position() == 2


def test_no_stream_appends_to_a_new_stream(log: EventStore) -> None:
    log.append("run-1", tags("a"))
    assert log.append("run-2", tags("b", "c"), expected_version=NO_STREAM) == [2, 3]
    assert [r.stream_version for r in log.read_stream("run-2")] == [1, 2]


def test_no_stream_refuses_an_existing_stream(log: EventStore) -> None:
    log.append("run-1", tags("a"))
    with pytest.raises(ConcurrencyError):
        log.append("run-1", tags("b"), expected_version=NO_STREAM)
    assert log.head_position() == 1


def test_any_appends_whatever_the_version(log: EventStore) -> None:
    assert log.append("run-1", tags("a"), expected_version=ANY) == [1]
    assert log.append("run-1", tags("b"), expected_version=ANY) == [2]
    assert log.stream_version("run-1") == 2


# --- event ids: retried writes ---------------------------------------------------------------


def test_reappending_the_same_event_ids_returns_the_original_positions(log: EventStore) -> None:
    log.append("run-0", tags("x"))
    batch_ids = ids(3)
    batch = tags("a", "b", "c")
    first = log.append("run-1", batch, expected_version=NO_STREAM, event_ids=batch_ids)
    log.append("run-2", tags("y"))
    # A retry of the same write (same ids, same expected version) is not stored again,
    # and does not fail even though the stream has moved on.
    again = log.append("run-1", batch, expected_version=NO_STREAM, event_ids=batch_ids)
    assert again == first == [2, 3, 4]
    assert log.head_position() == 5
    assert log.stream_version("run-1") == 3
    assert [r.event_id for r in log.read_stream("run-1")] == batch_ids


def test_reappending_one_event_id_returns_its_position(log: EventStore) -> None:
    [event_id] = ids(1)
    [position] = log.append("run-1", tags("a"), event_ids=[event_id])
    assert log.append("run-1", tags("a"), event_ids=[event_id]) == [position]
    assert log.head_position() == 1


def test_a_batch_reusing_some_event_ids_raises_and_stores_nothing(log: EventStore) -> None:
    stored_ids = ids(2)
    log.append("run-1", tags("a", "b"), event_ids=stored_ids)
    [new_id] = ids(1)
    message = (
        "1 of 2 event ids in this batch are already stored;"
        " a retried write must resend the whole batch with the same ids"
    )
    with refused(EventIdConflict, message):
        log.append("run-1", tags("b", "c"), event_ids=[stored_ids[1], new_id])
    assert log.head_position() == 2
    assert new_id not in {r.event_id for r in log.read_all()}


def test_event_ids_must_match_the_events(log: EventStore) -> None:
    with refused(InvalidParameterValue, "event_ids must name one id per event"):
        log.append("run-1", tags("a", "b"), event_ids=ids(1))
    assert log.head_position() == 0


# --- reading ---------------------------------------------------------------------------------


def test_read_stream_after_version(log: EventStore) -> None:
    log.append("run-1", tags("a", "b", "c", "d"))
    assert [r.event for r in log.read_stream("run-1", after_version=2)] == tags("c", "d")
    assert [r.stream_version for r in log.read_stream("run-1", after_version=2)] == [3, 4]
    assert log.read_stream("run-1", after_version=4) == []
    assert log.read_stream("run-1", after_version=0) == log.read_stream("run-1")


def test_read_all_streams_across_several_batches(log: EventStore) -> None:
    for key in "abcdefg":
        log.append(f"run-{key}", tags(key))
    stream = log.read_all(batch_size=2)
    # A generator reads lazily: nothing is fetched before the first next().
    assert isinstance(stream, types.GeneratorType)
    first = next(stream)
    assert first.position == 1
    rest = list(stream)
    assert [r.position for r in rest] == [2, 3, 4, 5, 6, 7]
    assert [r.event for r in [first, *rest]] == tags(*"abcdefg")


def test_read_all_after_position(log: EventStore) -> None:
    log.append("run-1", tags("a", "b", "c", "d", "e"))
    assert [r.position for r in log.read_all(after_position=3)] == [4, 5]
    assert [r.position for r in log.read_all(after_position=3, batch_size=1)] == [4, 5]
    assert list(log.read_all(after_position=5)) == []


def test_read_all_until_position(log: EventStore) -> None:
    log.append("run-1", tags("a", "b", "c", "d", "e"))
    assert [r.position for r in log.read_all(until_position=3)] == [1, 2, 3]
    assert [r.position for r in log.read_all(after_position=1, until_position=3, batch_size=1)] == [
        2,
        3,
    ]
    assert list(log.read_all(after_position=3, until_position=3)) == []


def test_read_all_until_position_ignores_appends_made_while_reading(log: EventStore) -> None:
    log.append("run-1", tags("a", "b", "c", "d"))
    head = log.head_position()
    seen = []
    for recorded in log.read_all(batch_size=1, until_position=head):
        seen.append(recorded.position)
        log.append("run-2", tags(f"late-{recorded.position}"))
    assert seen == [1, 2, 3, 4]
    assert log.head_position() == 8


def test_head_position_follows_appends(log: EventStore) -> None:
    log.append("run-1", tags("a"))
    assert log.head_position() == 1
    log.append("run-2", tags("b", "c"))
    assert log.head_position() == 3


def test_special_floats_and_unicode_survive_the_store(log: EventStore) -> None:
    points = [
        MetricPoint(key="loss", value=math.nan, step=0, timestamp=1),
        MetricPoint(key="größe ∂", value=math.inf, step=1, timestamp=2),
        MetricPoint(key="", value=-math.inf, step=2, timestamp=3),
        MetricPoint(key="zero", value=-0.0, step=-1, timestamp=0),
    ]
    log.append("run-1", [MetricsLogged(points=points)])
    [recorded] = log.read_stream("run-1")
    assert isinstance(recorded.event, MetricsLogged)
    stored = recorded.event.points
    assert math.isnan(stored[0].value)
    assert stored[1:3] == points[1:3]
    assert stored[3].key == "zero" and math.copysign(1.0, stored[3].value) == -1.0


# --- metadata --------------------------------------------------------------------------------


def test_metadata_records_user_host_and_version(
    log: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVSTORE_USER", "alice")
    log.append("run-1", tags("a"))
    [recorded] = log.read_stream("run-1")
    assert recorded.metadata["user"] == "alice"
    assert recorded.metadata["host"] == socket.gethostname()
    assert recorded.metadata["evstore_version"] == evstore.__version__


def test_correlation_and_causation_ids_round_trip(log: EventStore) -> None:
    metadata = {"correlation_id": "req-42", "causation_id": "evt-41"}
    log.append("run-1", tags("a", "b"), metadata=metadata)
    log.append("run-1", tags("c"))
    first, second, third = log.read_stream("run-1")
    for recorded in (first, second, *log.read_all(until_position=2)):
        assert recorded.metadata["correlation_id"] == "req-42"
        assert recorded.metadata["causation_id"] == "evt-41"
        assert {"user", "host", "evstore_version"} <= recorded.metadata.keys()
    assert "correlation_id" not in third.metadata


# --- append hooks and transactions --------------------------------------------------------------


def test_append_hooks_see_the_recorded_events(log: EventStore) -> None:
    seen: list[RecordedEvent] = []

    def hook(connection: Any, recorded: Sequence[RecordedEvent]) -> None:
        seen.extend(recorded)

    log.append_hooks.append(hook)
    positions = log.append("run-1", tags("a", "b"), metadata={"correlation_id": "c-1"})
    assert [r.position for r in seen] == positions
    assert [r.stream_version for r in seen] == [1, 2]
    assert [r.event for r in seen] == tags("a", "b")
    assert [r.event_id for r in seen] == [r.event_id for r in log.read_stream("run-1")]
    assert all(r.metadata["correlation_id"] == "c-1" for r in seen)


def test_a_failing_append_hook_rolls_the_append_back(log: EventStore) -> None:
    log.append("run-1", tags("a"))
    calls: list[int] = []

    def first_hook(connection: Any, recorded: Sequence[RecordedEvent]) -> None:
        calls.append(len(recorded))

    def failing_hook(connection: Any, recorded: Sequence[RecordedEvent]) -> None:
        raise RuntimeError("projection broke")

    log.append_hooks.extend([first_hook, failing_hook])
    with pytest.raises(RuntimeError, match="projection broke"):
        log.append("run-1", tags("b", "c"))
    # The hooks ran (so the rows were inserted), yet nothing is stored.
    assert calls == [2]
    assert log.head_position() == 1
    assert log.stream_version("run-1") == 1
    # The positions were not used up: the next append takes them.
    log.append_hooks.clear()
    assert log.append("run-1", tags("b"), expected_version=1) == [2]


def test_appends_in_one_transaction_commit_together(log: EventStore) -> None:
    with log.transaction():
        log.append("run-1", tags("a"))
        log.append("run-2", tags("b"))
    assert positions_of(log) == [1, 2]


def test_a_failing_transaction_rolls_back_every_append(log: EventStore) -> None:
    log.append("run-1", tags("a"))
    with pytest.raises(RuntimeError), log.transaction():
        log.append("run-1", tags("b"))
        log.append("run-2", tags("c"))
        raise RuntimeError("abort")
    assert positions_of(log) == [1]
    assert log.stream_version("run-2") == 0


def test_an_append_joining_a_transaction_keeps_its_expected_version_ids_and_metadata(
    log: EventStore,
) -> None:
    log.append("run-1", tags("a"))
    [event_id] = ids(1)
    with log.transaction():
        log.append("run-1", tags("b"), expected_version=1, event_ids=[event_id],
                   metadata={"user": "alice"})  # fmt: skip
        stale = "stream run-1 is at version 2, expected 1: another writer appended first"
        with refused(ConcurrencyError, stale):
            log.append("run-1", tags("c"), expected_version=1)
    [first, second] = log.read_stream("run-1")
    assert (second.event, second.event_id, second.metadata["user"]) == (*tags("b"), event_id, "alice")
    assert first.event_id != event_id


def test_new_names_of_every_kind_in_one_transaction_keep_apart(log: EventStore) -> None:
    # Stream names, event types and metadata first stored in one transaction are not
    # yet committed; each must still get its own key, even a stream named like a type.
    log.append("run-0", [RunRenamed(run_name="x"), *tags("a")])
    metric = MetricsLogged(points=[MetricPoint("m", 1.0, 0, 5)])
    with log.transaction():
        log.append("MetricsLogged", [metric], metadata={"user": "bob"})
        log.append("run-1", [TagDeleted(key="a")], metadata={"user": "carol"})
    assert [(r.stream_id, r.stream_version, r.event, r.metadata["user"]) for r in log.read_all()][2:] == [
        ("MetricsLogged", 1, metric, "bob"), ("run-1", 1, TagDeleted(key="a"), "carol"),
    ]  # fmt: skip


def test_names_first_stored_by_a_rolled_back_transaction_are_forgotten(log: EventStore) -> None:
    # A read inside the write sees its new stream and type; after the rollback their
    # keys are free again and go to the next new names. Both the names rolled back and
    # the names that took their keys must read and write as themselves.
    log.append("run-1", tags("a"))
    with pytest.raises(RuntimeError), log.transaction():
        log.append("ghost", [RunRenamed(run_name="x")])
        assert [r.stream_id for r in log.read_stream("ghost")] == ["ghost"]
        raise RuntimeError("abort")
    assert log.read_stream("ghost") == []
    metric = MetricsLogged(points=[MetricPoint("m", 1.0, 0, 5)])
    log.append("run-2", [metric])
    log.append("ghost", [RunRenamed(run_name="y")])
    assert [(r.stream_id, r.stream_version, r.event) for r in log.read_all()] == [
        ("run-1", 1, *tags("a")), ("run-2", 1, metric), ("ghost", 1, RunRenamed(run_name="y")),
    ]  # fmt: skip


def test_an_event_id_twice_in_one_batch_is_refused(log: EventStore) -> None:
    with refused(EventIdConflict, "an event id appears twice in one batch"):
        log.append("r1", [TagSet(key="a", value="1"), TagSet(key="b", value="2")], event_ids=["x", "x"])
    assert log.head_position() == 0


def test_stored_ids_resent_to_another_stream_are_refused(log: EventStore) -> None:
    log.append("r1", [TagSet(key="a", value="1")], event_ids=["y"])
    with pytest.raises(EventIdConflict, match="stored in stream r1, not r2"):
        log.append("r2", [TagSet(key="a", value="1")], event_ids=["y"])
    assert log.read_stream("r2") == []
    assert log.head_position() == 1


def test_ids_another_writer_stored_in_other_streams_are_refused_naming_them(
    log: EventStore,
) -> None:
    first, second = ids(2)
    with open_log(log.uri) as other:
        other.append("r1", tags("a"), event_ids=[first])
        other.append("r3", tags("b"), event_ids=[second])
    message = (
        "event ids of this batch are stored in stream r1, r3, not r2:"
        " ids must be unique across the whole log"
    )
    with refused(EventIdConflict, message):
        log.append("r2", tags("a", "b"), event_ids=[first, second])
    assert log.head_position() == 2


def test_a_retried_batch_longer_than_one_id_lookup_returns_its_positions(log: EventStore) -> None:
    # The store looks stored ids up some hundreds at a time: every part must be found.
    batch_ids = ids(1001)
    batch = tags(*(f"k{i}" for i in range(1001)))
    first = log.append("run-1", batch, event_ids=batch_ids)
    assert log.append("run-1", batch, event_ids=batch_ids) == first == list(range(1, 1002))
    assert log.head_position() == 1001


# --- nothing is stored that the log could not read back ---------------------------------

_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)  # fmt: skip


def test_an_event_with_a_wrongly_typed_field_is_refused_and_nothing_is_stored(
    log: EventStore,
) -> None:
    # msgspec checks types on decode, not on construction: a bad end time would encode
    # fine and then break every read of the log. The store proves each payload decodes.
    from evstore.events import RunStatusChanged

    log.append("s", tags("a"))
    with pytest.raises(InvalidParameterValue, match=r"RunStatusChanged cannot be stored.*end_time"):
        log.append("s", [*tags("b"), RunStatusChanged(status="FINISHED", end_time="x")])  # type: ignore[arg-type]
    assert positions_of(log) == [1]
    assert [rec.event for rec in log.read_all()] == tags("a")


@given(data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_whatever_a_writer_puts_in_an_event_every_stored_event_reads_back(
    log: EventStore, data: st.DataObject
) -> None:
    import msgspec

    from evstore.events import EVENT_TYPES

    cls = data.draw(st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.__name__)))
    values = {field.name: data.draw(_ANY_VALUE) for field in msgspec.structs.fields(cls)}
    event = cls(**values)
    before = positions_of(log)
    try:
        log.append("s", [event])
    except InvalidParameterValue:
        assert positions_of(log) == before
    else:
        assert positions_of(log) == [*before, len(before) + 1]
    assert len(list(log.read_all())) >= len(before)  # every stored event still decodes


def test_the_hook_sees_each_event_exactly_as_it_reads_back(log: EventStore) -> None:
    # What the inline read models are given is what a rebuild will read: every field.
    seen: list[RecordedEvent] = []
    log.append_hooks.append(lambda _conn, recorded: seen.extend(recorded))
    log.append("run-1", [TagSet(key="a", value="1")])
    log.append("run-1", [TagSet(key="b", value="2"), RunRenamed(run_name="x")],
               event_ids=[uuid.uuid4().hex, "caller-id"], metadata={"user": "alice"})  # fmt: skip
    log.append("run-2", [MetricsLogged(points=[MetricPoint("m", 1.0, 0, 5)])])
    assert seen == list(log.read_all())
    assert [(r.stream_id, r.stream_version, r.type, r.version) for r in seen] == [
        ("run-1", 1, "TagSet", 1), ("run-1", 2, "TagSet", 1), ("run-1", 3, "RunRenamed", 1),
        ("run-2", 1, "MetricsLogged", MetricsLogged.version),
    ]  # fmt: skip
    assert seen[1].recorded_at == seen[2].recorded_at  # one append: one commit, one time
    assert seen[1].metadata["user"] == seen[2].metadata["user"] == "alice"


def test_ids_made_for_events_appended_without_one_are_unique_hex_and_found_again(
    log: EventStore,
) -> None:
    positions = log.append("run-1", [TagSet(key=f"k{i}", value="v") for i in range(3)])
    positions += log.append("run-2", [TagSet(key="k", value="v")])
    ids = [r.event_id for r in log.read_all()]
    assert len(set(ids)) == 4 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # a retry naming an id the store made is answered with its position, storing nothing
    assert log.append("run-1", [TagSet(key="k0", value="v")], event_ids=[ids[0]]) == [positions[0]]
    assert log.head_position() == 4
    # an id of that form naming no stored event is refused, not stored
    other = format(int(ids[3], 16) + 10, "032x")
    message = (
        f"event id {other} is of the form this store gives events appended without an id,"
        " and no such event is stored: choose another id"
    )
    with refused(EventIdConflict, message):
        log.append("run-1", [TagSet(key="z", value="v")], event_ids=[other])
    assert log.head_position() == 4
