"""Every event type survives encode -> decode, whatever its fields hold.

The strategies are derived from each Struct's own field types (``msgspec.inspect``), so
a schema change (a new optional field, a removed one) needs no edit here.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evstore.codec import decode, encode
from evstore.events import EVENT_TYPES, Event, UnknownEvent

INT64 = (-(2**63), 2**63 - 1)

# Text that reaches the corners: empty, non-ASCII, astral planes, NUL and controls.
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20) | st.sampled_from(
    ["", "ünïcødé ∂", "日本語", "🚀", "\x00", "a b\tc\n"]
)
# Every float, with the ones JSON would lose drawn often.
FLOATS = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324])


def strategy_for(info: mi.Type) -> st.SearchStrategy[Any]:
    """Values of one msgspec type, built from its inspected description."""
    if isinstance(info, mi.StrType):
        return TEXT
    if isinstance(info, mi.FloatType):
        return FLOATS
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else INT64[0]
        high = info.le if info.le is not None else INT64[1]
        return st.integers(low, high)
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.UnionType):
        return st.one_of([strategy_for(member) for member in info.types])
    if isinstance(info, mi.DictType):
        keys, values = strategy_for(info.key_type), strategy_for(info.value_type)
        return st.dictionaries(keys, values, max_size=5)
    if isinstance(info, (mi.ListType, mi.TupleType, mi.VarTupleType)):
        item = info.item_type  # type: ignore[union-attr]
        return st.lists(strategy_for(item), max_size=5)
    if isinstance(info, mi.StructType):
        return struct_strategy(info)
    raise NotImplementedError(f"no strategy for field type {info!r}: add one to test_codec.py")


def struct_strategy(info: mi.StructType) -> st.SearchStrategy[Any]:
    """Instances of a Struct: required fields always set, optional ones sometimes left out."""
    required = {f.name: strategy_for(f.type) for f in info.fields if f.required}
    optional = {f.name: strategy_for(f.type) for f in info.fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: info.cls(**kw))


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Instances of one event type."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return struct_strategy(info)


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and -0.0 differs from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, msgspec.Struct):
        return type(a) is type(b) and all(
            same(getattr(a, name), getattr(b, name)) for name in a.__struct_fields__
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


EVENT_CLASSES = sorted(EVENT_TYPES.values(), key=lambda cls: cls.__name__)


def test_every_event_type_is_registered_under_its_class_name() -> None:
    assert EVENT_TYPES
    for name, cls in EVENT_TYPES.items():
        assert cls.__name__ == name
        assert isinstance(cls.version, int) and cls.version >= 1
        assert cls.__struct_config__.frozen


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_event_type_round_trips(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(events_of(cls))
    decoded = decode(cls.__name__, cls.version, encode(event))
    assert len(decoded) == 1
    assert same(decoded[0], event), (decoded[0], event)


def test_same_is_strict_about_floats() -> None:
    # The comparison the round trip relies on must itself tell NaN, 0.0 and -0.0 apart.
    assert same(math.nan, math.nan)
    assert not same(math.nan, 1.0)
    assert not same(0.0, -0.0)
    assert same([{"a": math.inf}], [{"a": math.inf}])
    assert not same([math.inf], [-math.inf])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.0])
def test_special_floats_survive_every_float_field(value: float) -> None:
    # Find each event type with a float somewhere and put the special value in it.
    found = 0
    for cls in EVENT_CLASSES:
        event = with_every_float(mi.type_info(cls), value)
        if event is None:
            continue
        found += 1
        [decoded] = decode(cls.__name__, cls.version, encode(event))
        assert same(decoded, event)
    assert found, "no event type has a float field any more"


def with_every_float(info: mi.Type, value: float) -> Any:
    """A minimal value of ``info`` whose floats are all ``value``; None if it has none."""
    if isinstance(info, mi.FloatType):
        return value
    if isinstance(info, mi.ListType):
        item = with_every_float(info.item_type, value)
        return None if item is None else [item]
    if isinstance(info, mi.StructType):
        fields = {f.name: with_every_float(f.type, value) for f in info.fields}
        if all(v is None for v in fields.values()):
            return None
        for f in info.fields:
            if fields[f.name] is None and f.required:
                fields[f.name] = FILLERS[type(f.type)]
        return info.cls(**{k: v for k, v in fields.items() if v is not None})
    return None


#: A valid value for each required field type that holds no float.
FILLERS: dict[type, Any] = {
    mi.StrType: "",
    mi.IntType: 0,
    mi.BoolType: False,
    mi.DictType: {},
    mi.ListType: [],
    mi.NoneType: None,
    mi.UnionType: None,
}


# --- what this code cannot decode ----------------------------------------------------------


def test_an_unknown_type_decodes_to_unknown_event() -> None:
    payload = msgspec.msgpack.encode({"from": "the future", "value": math.nan})
    [decoded] = decode("ModelPromoted", 1, payload)
    assert decoded == UnknownEvent("ModelPromoted", 1, payload)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_a_newer_version_decodes_to_unknown_event(cls: type[Event]) -> None:
    payload = msgspec.msgpack.encode({"a_field_from": "a newer evstore"})
    [decoded] = decode(cls.__name__, cls.version + 1, payload)
    assert isinstance(decoded, UnknownEvent)
    assert decoded == UnknownEvent(cls.__name__, cls.version + 1, payload)


@pytest.mark.parametrize("version", [0, -1])
def test_a_version_below_one_decodes_to_unknown_event(version: int) -> None:
    payload = b"\x80"
    [decoded] = decode("TagSet", version, payload)
    assert decoded == UnknownEvent("TagSet", version, payload)
