"""Encoding events, the one decode function, and the hash chain's canonical bytes.

Payloads are msgpack (msgspec), which keeps NaN and the infinities exactly; JSON would
not. Every read path turns stored bytes into events through :func:`decode`:

- fast path: the stored version is the class's current version, so the bytes decode
  straight into the Struct;
- otherwise: bytes -> dict -> the upcaster chain -> Struct. A step may split one old
  event into several current ones, so ``decode`` returns a tuple;
- a type or version this code does not know (a newer evstore wrote it) decodes to an
  :class:`~evstore.events.UnknownEvent` instead of failing.

The hash of an event (its link) is ``sha256(previous_hash + canonical)``, where
``canonical`` is the msgpack array ``[stream_id, stream_version, event_id, type,
version, recorded_at, digest, metadata, commit]``: the stream's name, the event id as
text, ``digest`` is ``sha256(payload)`` (32 bytes, msgpack bin), ``metadata`` the
msgpack bytes of the commit's metadata (bin), and ``commit`` the position of the last
event appended together with this one (events of one append share it). The first
event's previous hash is 32 zero bytes. Because a link covers the payload's digest and
not its bytes, a payload can be erased and its link still verified from the digest
kept in its place. This is canonical form 4. Events written before storage format 4
keep the links they were written with, canonical form 3: the array without ``commit``,
with the payload bytes themselves where the digest stands. Neither form depends on how the rows are laid out on disk;
anyone with the events can recompute the chain.

Erasure (``evstore redact``) replaces a stored payload and keeps the digest its link
covers beside it. A value erased from a payload reads as ``[redacted]`` (the event
still decodes to its type); a payload erased whole is :data:`ERASED_PAYLOAD`, the
msgpack string ``"[redacted]"``, which no event's payload (a msgpack map) can be, and it
decodes to an :class:`~evstore.events.ErasedEvent` that read models skip.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import Callable
from typing import Any

import msgspec

from evstore.errors import InvalidParameterValue, UndecodableEvent
from evstore.events import EVENT_TYPES, ErasedEvent, Event, UnknownEvent

GENESIS_HASH = bytes(32)
#: What an erased value reads as.
REDACTED = "[redacted]"
#: The stored payload of an event erased whole: a msgpack string, never a map.
ERASED_PAYLOAD = msgspec.msgpack.encode(REDACTED)

# A step takes the old payload and returns the next version's payload (same type), or a
# list of (type, version, payload) triples when one old event becomes several.
Step = Callable[[dict[str, Any]], "dict[str, Any] | list[tuple[str, int, dict[str, Any]]]"]

_encode = msgspec.msgpack.Encoder().encode
_decode_any = msgspec.msgpack.Decoder().decode
_current_decoders: dict[str, tuple[int, Callable[[bytes], Any]]] = {}
_steps: dict[tuple[str, int], Step] | None = None
_chains: dict[tuple[str, int], tuple[type[Event], tuple[Step, ...]] | None] = {}


def encode(event: Event) -> bytes:
    """Encode an event's payload to the bytes that are stored."""
    return _encode(event)


def encode_checked(event: Event) -> bytes:
    """Encode an event and prove the bytes decode back into its type.

    msgspec checks types when it decodes, not when a Struct is made, so an event built
    with a wrong type (an end time of "x") would encode fine and then fail every read of
    the log forever. The store appends only bytes that pass this check.
    """
    name = type(event).__name__
    try:
        payload = _encode(event)
        decode(name, event.version, payload)  # the one decode function, as every read
    except (UndecodableEvent, TypeError, ValueError, OverflowError) as e:
        # a wrong type, an int beyond 64 bits, a lone surrogate in a string, ...
        cause = e.__cause__ if isinstance(e, UndecodableEvent) else e
        raise InvalidParameterValue(f"{name} cannot be stored: {cause}; nothing was stored") from None
    return payload


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """Encode an event's metadata to the bytes that are stored."""
    return _encode(metadata)


def decode_metadata(data: bytes) -> dict[str, Any]:
    """Decode stored metadata bytes."""
    return _decode_any(data)


def canonical_bytes(
    stream_id: str,
    stream_version: int,
    event_id: str,
    type_name: str,
    version: int,
    recorded_at: int,
    payload: bytes,
    metadata: bytes,
    commit: int | None = None,
) -> bytes:
    """The bytes the hash chain covers for one event: canonical form 4 when ``commit``
    is given (``payload`` is then the payload's digest), form 3 when it is not."""
    if commit is None:
        return _encode(
            (stream_id, stream_version, event_id, type_name, version, recorded_at, payload, metadata)
        )
    return _encode(
        (stream_id, stream_version, event_id, type_name, version, recorded_at, payload, metadata,
         commit)
    )  # fmt: skip


def payload_digest(payload: bytes) -> bytes:
    """What a form-4 link covers of a payload: its sha256."""
    return hashlib.sha256(payload).digest()


def chain_hash(previous: bytes, canonical: bytes) -> bytes:
    """The hash of an event: sha256 over the previous hash plus its canonical bytes."""
    return hashlib.sha256(previous + canonical).digest()


def decode(
    type_name: str, version: int, payload: bytes
) -> tuple[Event | UnknownEvent | ErasedEvent, ...]:
    """Turn one stored event into current events. Every read path calls this.

    Raises :class:`~evstore.errors.UndecodableEvent` when the payload, or an upcaster,
    does not give the current type; callers add where the event is stored.
    """
    try:
        current = _current_decoders.get(type_name)
        if current is None:
            current = _register_decoder(type_name)
        if current[0] == version:
            return (current[1](payload),)
        return _decode_through_chain(type_name, version, payload)
    except Exception as e:  # a bad payload, or whatever an upcaster raises
        if payload == ERASED_PAYLOAD:  # looked at only here: the fast path pays nothing
            return (ErasedEvent(type_name, version),)
        raise UndecodableEvent(type_name, version, e) from e


def _register_decoder(type_name: str) -> tuple[int, Callable[[bytes], Any]]:
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        return (-1, _decode_any)
    entry = (cls.version, msgspec.msgpack.Decoder(cls).decode)
    _current_decoders[type_name] = entry
    return entry


def _decode_through_chain(
    type_name: str, version: int, payload: bytes
) -> tuple[Event | UnknownEvent | ErasedEvent, ...]:
    if payload == ERASED_PAYLOAD:
        return (ErasedEvent(type_name, version),)
    chain = _chain(type_name, version)
    if chain is None:
        return (UnknownEvent(type_name, version, payload),)
    data = _decode_any(payload)
    for step in chain[1]:
        result = step(data)
        if not isinstance(result, dict):  # a split: each part walks on to its current version
            parts = _upcast_split(list(result), upcaster_steps())
            if parts is None:
                return (UnknownEvent(type_name, version, payload),)
            return tuple([msgspec.convert(part, EVENT_TYPES[name]) for name, part in parts])
        data = result
    return (msgspec.convert(data, chain[0]),)


def _chain(type_name: str, version: int) -> tuple[type[Event], tuple[Step, ...]] | None:
    """The class and the steps from (type, version) to current; ``None`` if not all known."""
    key = (type_name, version)
    try:
        return _chains[key]
    except KeyError:
        pass
    cls = EVENT_TYPES.get(type_name)
    if cls is None or not 1 <= version <= cls.version:
        return None  # not cached: a type or version registered later must still be found
    steps = upcaster_steps()
    found: list[Step] = []
    for from_version in range(version, cls.version):
        step = steps.get((type_name, from_version))
        if step is None:
            _chains[key] = None
            return None
        found.append(step)
    chain = _chains[key] = (cls, tuple(found))
    return chain


def upcast_payload(
    type_name: str, version: int, data: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]] | None:
    """Walk the chain from (type, version) to current; ``None`` where a step is missing."""
    chain = _chain(type_name, version)
    if chain is None:
        return None
    for step in chain[1]:
        result = step(data)
        if not isinstance(result, dict):
            return _upcast_split(list(result), upcaster_steps())
        data = result
    return [(type_name, data)]


def _upcast_split(
    pending: list[tuple[str, int, dict[str, Any]]], steps: dict[tuple[str, int], Step]
) -> list[tuple[str, dict[str, Any]]] | None:
    """Walk every part of a split event to its current version, in order."""
    done: list[tuple[str, dict[str, Any]]] = []
    while pending:
        name, ver, payload = pending.pop(0)
        cls = EVENT_TYPES.get(name)
        if cls is None:
            return None
        if ver == cls.version:
            done.append((name, payload))
            continue
        step = steps.get((name, ver))
        if step is None:
            return None
        result = step(payload)
        if isinstance(result, dict):
            pending.insert(0, (name, ver + 1, result))
        else:
            pending[0:0] = result
    return done


def upcaster_steps() -> dict[tuple[str, int], Step]:
    """Every registered step, keyed by (type name, version it converts from)."""
    global _steps
    if _steps is None:
        from evstore.registry import UPCASTER_PACKAGES

        _steps = {}
        for package in UPCASTER_PACKAGES:
            _steps.update(importlib.import_module(package).STEPS)
    return _steps


def upcaster(type_name: str, from_version: int) -> Callable[[Step], Step]:
    """Mark a function as the step converting ``type_name`` from ``from_version``."""

    def mark(func: Step) -> Step:
        func.__evstore_step__ = (type_name, from_version)  # type: ignore[attr-defined]
        return func

    return mark


def now_ms() -> int:
    """Milliseconds since the epoch, as MLflow records times."""
    return time.time_ns() // 1_000_000


def schema_fingerprint(cls: type[Event], *, descriptions: bool = False) -> str:
    """A sha256 of the event class's msgspec JSON schema: changes when its shape does.

    Docstrings, which msgspec puts in the schema as ``description``, are left out:
    rewording one changes nothing that is stored. (``descriptions=True`` gives the first
    form of the fingerprint, kept in the ``v<N>.schema.sha256`` golden files.)
    """
    schema = msgspec.json.schema(cls)
    if not descriptions:
        schema = _without_descriptions(schema)
    return hashlib.sha256(msgspec.json.encode(schema, order="sorted")).hexdigest()


def _without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    return value
