"""The upcaster chain: an old payload read today equals the current event written today.

For every step with a direct equivalent, hypothesis writes random payloads of the old
version (as msgpack, the way the old code stored them) and checks that decoding them
through the chain gives exactly what writing the current events directly gives.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from conftest import nan_safe
from hypothesis import given
from hypothesis import strategies as st

from evstore import codec
from evstore.events import (
    EVENT_TYPES,
    RUN_STATUSES,
    MetricPoint,
    MetricsLogged,
    RunStarted,
    TagSet,
    UnknownEvent,
)
from evstore.stores import open_log

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=20)  # any unicode, surrogates excluded (msgpack str is UTF-8)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def same_events(got: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    """Equal classes and equal values, NaN equal to NaN, -0.0 not equal to 0.0."""
    return [type(e) for e in got] == [type(e) for e in want] and all(
        codec.encode(a) == codec.encode(b)
        and nan_safe(msgspec.to_builtins(a)) == nan_safe(msgspec.to_builtins(b))
        for a, b in zip(got, want, strict=True)
    )


def written_directly(*events: Any) -> tuple[Any, ...]:
    """What current events read back as when today's code writes them."""
    out: list[Any] = []
    for event in events:
        out.extend(codec.decode(type(event).__name__, event.version, codec.encode(event)))
    return tuple(out)


# --- MetricsLogged v1 -> v2 ---------------------------------------------------------

V1_POINTS = st.lists(st.tuples(TEXT, FLOATS, INT64, INT64), max_size=12)


@given(V1_POINTS)
def test_metrics_logged_v1_reads_as_v2_without_context(
    points: list[tuple[str, float, int, int]],
) -> None:
    # The v1 code stored {"points": [[key, value, step, timestamp], ...]}.
    stored_v1 = msgspec.msgpack.encode({"points": [list(p) for p in points]})

    through_chain = codec.decode("MetricsLogged", 1, stored_v1)

    direct = written_directly(
        MetricsLogged(points=[MetricPoint(k, v, s, t, None, None, None) for k, v, s, t in points])
    )
    assert same_events(through_chain, direct), (through_chain, direct)


def test_metrics_logged_v1_keeps_nan_and_infinities_bit_for_bit() -> None:
    stored_v1 = msgspec.msgpack.encode(
        {
            "points": [
                ["a", math.nan, 0, 1],
                ["b", math.inf, -1, 2],
                ["c", -math.inf, 2, 3],
                ["d", -0.0, 0, 4],
            ]
        }
    )
    (event,) = codec.decode("MetricsLogged", 1, stored_v1)
    values = [p.value for p in event.points]  # type: ignore[attr-defined]
    assert math.isnan(values[0]) and values[1:3] == [math.inf, -math.inf]
    assert math.copysign(1.0, values[3]) == -1.0


# --- RunStarted v1 -> v2 + TagSet... ------------------------------------------------

V1_RUN_STARTED = st.fixed_dictionaries(
    {
        "experiment_id": TEXT,
        "run_name": TEXT,
        "user_id": TEXT,
        "start_time": INT64,
    },
    optional={  # v1 fields with defaults: old writers may have left them out
        "parent_run_id": st.none() | st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
        "artifact_uri": TEXT,
        "status": st.sampled_from(RUN_STATUSES),
        "tags": st.dictionaries(TEXT, TEXT, max_size=8),
    },
)


@given(V1_RUN_STARTED)
def test_run_started_v1_splits_into_run_started_and_its_tags(payload: dict[str, Any]) -> None:
    stored_v1 = msgspec.msgpack.encode(payload)

    through_chain = codec.decode("RunStarted", 1, stored_v1)

    fields = {k: v for k, v in payload.items() if k != "tags"}
    direct = written_directly(
        RunStarted(**fields),
        *(TagSet(key=k, value=v) for k, v in payload.get("tags", {}).items()),
    )
    assert same_events(through_chain, direct), (through_chain, direct)


# --- the steps themselves -------------------------------------------------------------


@given(V1_POINTS, V1_RUN_STARTED)
def test_steps_are_pure(points: list[tuple[str, float, int, int]], started: dict[str, Any]) -> None:
    steps = codec.upcaster_steps()
    for key, payload in (
        (("MetricsLogged", 1), {"points": [list(p) for p in points]}),
        (("RunStarted", 1), started),
    ):
        before = copy.deepcopy(payload)
        steps[key](payload)
        steps[key](payload)
        assert nan_safe(payload) == nan_safe(before), f"{steps[key].__name__} changed its input"


def test_steps_are_named_for_what_they_convert() -> None:
    for (name, version), step in codec.upcaster_steps().items():
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
        assert step.__name__ == f"{snake}_v{version}_to_v{version + 1}"


def fake_type(name: str, version: int, fields: list[tuple[str, type]]) -> Any:
    """A throwaway event class (not an Event subclass, so never registered by itself)."""
    return msgspec.defstruct(
        name, fields, namespace={"version": version}, frozen=True, kw_only=True
    )


def test_chain_walks_1_to_1_steps_splits_and_the_parts_own_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Alpha v1 -(rename a->b)-> v2 -(split)-> Alpha v3 + Beta v1 -(Beta step)-> Beta v2.
    # Gamma is at v3 but nobody wrote its v1 -> v2 step.
    alpha = fake_type("Alpha", 3, [("b", int)])
    beta = fake_type("Beta", 2, [("note", str), ("n", int)])
    gamma = fake_type("Gamma", 3, [("x", int)])

    def alpha_v1_to_v2(p: dict[str, Any]) -> dict[str, Any]:
        return {"b": p["a"]}

    def alpha_v2_to_v3(p: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
        return [("Alpha", 3, {"b": p["b"]}), ("Beta", 1, {"note": "split"}),
                ("Beta", 2, {"note": "already current", "n": 0})]  # fmt: skip

    def beta_v1_to_v2(p: dict[str, Any]) -> dict[str, Any]:
        return {**p, "n": 1}

    def gamma_v2_to_v3(p: dict[str, Any]) -> dict[str, Any]:
        return p

    for cls in (alpha, beta, gamma):
        monkeypatch.setitem(EVENT_TYPES, cls.__name__, cls)
    steps = {
        ("Alpha", 1): alpha_v1_to_v2,
        ("Alpha", 2): alpha_v2_to_v3,
        ("Beta", 1): beta_v1_to_v2,
        ("Gamma", 2): gamma_v2_to_v3,
    }
    monkeypatch.setattr(codec, "_steps", steps)
    for cache in ("_chains", "_current_decoders"):  # fresh caches, restored afterwards
        if hasattr(codec, cache):
            monkeypatch.setattr(codec, cache, {})

    split = (alpha(b=7), beta(note="split", n=1), beta(note="already current", n=0))
    assert codec.decode("Alpha", 1, msgspec.msgpack.encode({"a": 7})) == split
    assert codec.decode("Alpha", 2, msgspec.msgpack.encode({"b": 7})) == split
    assert codec.decode("Alpha", 3, msgspec.msgpack.encode({"b": 7})) == (alpha(b=7),)
    assert codec.upcast_payload("Alpha", 1, {"a": 7}) == [
        ("Alpha", {"b": 7}), ("Beta", {"note": "split", "n": 1}),
        ("Beta", {"note": "already current", "n": 0}),
    ]  # fmt: skip

    # A missing step makes the event unknown (kept raw), not an error; the rest still reads.
    gamma_v1 = msgspec.msgpack.encode({"x": 1})
    assert codec.decode("Gamma", 1, gamma_v1) == (UnknownEvent("Gamma", 1, gamma_v1),)
    assert codec.decode("Gamma", 2, gamma_v1) == (gamma(x=1),)
    assert codec.upcast_payload("Gamma", 1, {"x": 1}) is None

    # A split into a type this code does not know leaves the whole stored event unknown.
    def alpha_into_the_unknown(p: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
        return [("Alpha", 3, {"b": 1}), ("Delta", 1, {})]

    steps[("Alpha", 2)] = alpha_into_the_unknown
    if hasattr(codec, "_chains"):
        codec._chains.clear()
    alpha_v2 = msgspec.msgpack.encode({"b": 1})
    assert codec.decode("Alpha", 2, alpha_v2) == (UnknownEvent("Alpha", 2, alpha_v2),)


# --- through a store ------------------------------------------------------------------


class RunStartedV1(msgspec.Struct, frozen=True, kw_only=True):
    """RunStarted as the v1 code wrote it (initial tags inside); stored under that name."""

    version: ClassVar[int] = 1

    experiment_id: str
    run_name: str
    user_id: str
    start_time: int
    parent_run_id: str | None = None
    artifact_uri: str = ""
    status: str = "RUNNING"
    tags: dict[str, str] = {}


RunStartedV1.__name__ = "RunStarted"  # the stored type name; this class is not registered


def test_a_stored_v1_event_reads_as_several_at_one_position(tmp_path: Path) -> None:
    run_id = "d" * 32
    with open_log(tmp_path / "store.db") as log:
        # The v1 writer's event, through the real append path (hash chain and all).
        v1 = RunStartedV1(experiment_id="1", run_name="r", user_id="u", start_time=5,
                          tags={"mlflow.runName": "r", "team": "core"})  # fmt: skip
        log.append(run_id, [v1])  # type: ignore[list-item]
        log.append(run_id, [TagSet(key="later", value="x")])

        read = list(log.read_all())
        assert [type(r.event).__name__ for r in read] == [
            "RunStarted",
            "TagSet",
            "TagSet",
            "TagSet",
        ]
        # The split events share the stored event's position, stream version and envelope.
        assert [(r.position, r.stream_version, r.type, r.version) for r in read] == [
            (1, 1, "RunStarted", 1), (1, 1, "RunStarted", 1), (1, 1, "RunStarted", 1),
            (2, 2, "TagSet", 1),
        ]  # fmt: skip
        assert [r.event for r in read[1:3]] == [
            TagSet(key="mlflow.runName", value="r"),
            TagSet(key="team", value="core"),
        ]
        assert [r.event for r in log.read_stream(run_id)] == [r.event for r in read]
