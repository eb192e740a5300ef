"""Erasure that keeps the proof: ``evstore redact``.

A redaction replaces the stored payload of earlier events and appends a ``Redacted``
event per payload replaced (who and when are its commit's; what, why, and the digests of
the payload before and after are its fields). What it erases:

- ``param KEY`` of a run: the value in every ``ParamsLogged`` of the run that holds the
  key; the other params of the same batch keep their values.
- ``tag KEY`` of a run: the value of every ``TagSet`` of that key, of the initial tags
  of a ``RunStarted`` v1 and, for ``mlflow.runName`` (which is the run's name), the name
  in ``RunStarted`` and ``RunRenamed``.
- ``event`` at a position: the whole payload becomes ``codec.ERASED_PAYLOAD``; the event
  decodes to an ``ErasedEvent``, which read models skip: they read as if it had not been
  appended. The event that starts a run or an experiment cannot be erased whole (the
  rest of its stream would belong to nothing), nor a ``Redacted`` event (it is the proof).

An erased value reads as ``[redacted]``: the event still decodes to its type. Everything
happens in one write transaction: the ``Redacted`` events, the ``redactions`` rows, the
payloads, and every read model that reads those events rebuilt in place from the log, so
it equals a rebuild. Then the file is rewritten and the WAL emptied (``purge``), so the
erased bytes are in neither. The link of an erased form-4 event still verifies, from the
digest kept in ``redactions``; a form-3 event's link covers its payload bytes, so it then
verifies through its stored hash only (``verify`` says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from evstore import codec
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist, StoreError
from evstore.events import EVENT_TYPES, Redacted
from evstore.stores.base import EventStore, RawEvent, RecordedEvent

RUN_NAME_TAG = "mlflow.runName"
#: Events that cannot be erased whole, and why.
_KEPT_WHOLE = {
    "RunStarted": "it starts its run: the run's other events would belong to nothing;"
    " erase its values instead (--tag mlflow.runName for its name)",
    "ExperimentCreated": "it creates its experiment: the experiment's other events would"
    " belong to nothing",
    "Redacted": "it is the record of a redaction",
}

_decode_any = msgspec.msgpack.Decoder().decode
_encode = msgspec.msgpack.Encoder().encode


class RedactionReport(msgspec.Struct, frozen=True):
    """What a redaction did: the positions erased now and their ``Redacted`` events,
    those found already erased, the read models rebuilt, and whether the purge of the
    file and WAL finished (``purge_problem`` says why not)."""

    target: str
    key: str | None
    stream_id: str
    erased: list[int]
    redacted_by: list[int]
    already_erased: list[int]
    rebuilt: list[str]
    purge_problem: str | None = None


def redact(
    store: EventStore,
    *,
    reason: str,
    run_id: str | None = None,
    param: str | None = None,
    tag: str | None = None,
    position: int | None = None,
    metadata: dict[str, Any] | None = None,
    purge_wait: float = 5.0,
) -> RedactionReport:
    """Erase a run's param or tag value, or a whole event, keeping the chain verifiable.

    Redacting what is already erased appends nothing (the purge still runs, so a second
    run finishes one whose purge a reader blocked).
    """
    from evstore.rebuild import rebuild_lock

    target, key = _target(run_id, param, tag, position)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidParameterValue("a redaction needs a reason (--reason TEXT): nothing was changed")
    for method in ("erasing", "erase_payload", "redactions", "purge"):
        if not hasattr(store, method):
            raise StoreError(f"{store.uri} cannot erase: its backend keeps no redactions")
    with rebuild_lock(store), store.erasing() as conn:  # type: ignore[attr-defined]
        if target == "event":
            assert position is not None
            row = _row_at(store, position)
            if run_id is not None and row.stream_id != run_id:
                raise InvalidParameterValue(
                    f"position {position} is an event of stream {row.stream_id}, not of run"
                    f" {run_id}: nothing was changed"
                )
            stream, edits, already = row.stream_id, *_erase_whole(row)
        else:
            assert run_id is not None and key is not None
            stream, (edits, already) = run_id, _erase_values(store, run_id, target, key)
        redacted_by: list[int] = []
        rebuilt: list[str] = []
        if edits:
            originals: dict[int, bytes] = {}
            for _, erased, digest in store.redactions():  # type: ignore[attr-defined]
                originals.setdefault(erased, digest)  # the first: what the link covers
            digest = codec.payload_digest
            events = [
                Redacted(
                    position=row.position, target=target, key=key, reason=reason.strip(),
                    original_sha256=originals.get(row.position, digest(row.payload)).hex(),
                    redacted_sha256=digest(payload).hex(),
                )
                for row, payload in edits
            ]
            redacted_by = store.append(stream, events, metadata=metadata)
            touched: set[type] = set()
            for (row, payload), by, event in zip(edits, redacted_by, events):
                touched.update(type(e) for e in codec.decode(row.type, row.version, row.payload))
                store.erase_payload(  # type: ignore[attr-defined]
                    row.position, payload, bytes.fromhex(event.original_sha256), by
                )
            rebuilt = _rebuild_in_place(store, conn, touched)
    problem = store.purge(purge_wait)  # type: ignore[attr-defined]
    return RedactionReport(
        target, key, stream, [row.position for row, _ in edits], redacted_by, already, rebuilt,
        problem,
    )  # fmt: skip


def _target(
    run_id: str | None, param: str | None, tag: str | None, position: int | None
) -> tuple[str, str | None]:
    """What to erase: ('param', key), ('tag', key) or ('event', None)."""
    chosen = [name for name, value in (("param", param), ("tag", tag), ("position", position))
              if value is not None]  # fmt: skip
    if len(chosen) != 1:
        raise InvalidParameterValue(
            "say what to redact: --param KEY or --tag KEY (with --run RUN_ID), or --position N"
        )
    if position is not None:
        if isinstance(position, bool) or not isinstance(position, int) or position < 1:
            raise InvalidParameterValue(f"--position must be a position of the log (1 or more), not {position}")
        return "event", None
    if run_id is None:
        raise InvalidParameterValue(f"--{chosen[0]} needs the run it belongs to: --run RUN_ID")
    key = param if param is not None else tag
    assert key is not None
    return chosen[0], key


def _row_at(store: EventStore, position: int) -> RawEvent:
    for batch in store.read_raw(position - 1, 1):
        if batch and batch[0].position == position:
            return batch[0]
        break
    raise ResourceDoesNotExist(
        f"no event at position {position} (the log's head is {store.head_position()})"
    )


def _erase_whole(row: RawEvent) -> tuple[list[tuple[RawEvent, bytes]], list[int]]:
    if row.payload == codec.ERASED_PAYLOAD:
        return [], [row.position]
    why = _KEPT_WHOLE.get(row.type)
    if why is not None:
        raise InvalidParameterValue(
            f"the {row.type} at position {row.position} cannot be erased whole: {why}"
        )
    return [(row, codec.ERASED_PAYLOAD)], []


def _erase_values(
    store: EventStore, run_id: str, target: str, key: str
) -> tuple[list[tuple[RawEvent, bytes]], list[int]]:
    """The payloads of a run's events holding the key's value, with the value replaced;
    and the positions that hold it already replaced."""
    edits: list[tuple[RawEvent, bytes]] = []
    already: list[int] = []
    seen = False
    for row in _stream_rows(store, run_id):
        seen = True
        editor = _EDITORS[target].get(row.type)
        if editor is None or row.payload == codec.ERASED_PAYLOAD:
            continue
        data = _decode_any(row.payload)
        if not isinstance(data, dict):
            continue
        found = editor(data, key)
        if found == _CHANGED:
            payload = _encode(data)
            codec.decode(row.type, row.version, payload)  # still its type: raises if not
            edits.append((row, payload))
        elif found == _ALREADY:
            already.append(row.position)
    if not seen:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    if not edits and not already:
        raise ResourceDoesNotExist(f"run {run_id} has no {target} {key!r}: nothing was changed")
    return edits, already


def _stream_rows(store: EventStore, stream_id: str) -> Iterator[RawEvent]:
    after = 0
    while rows := store.read_stream_raw(stream_id, after, 1000):
        yield from rows
        after = rows[-1].stream_version


# What an editor found: nothing, the value (now replaced), or the value already replaced.
_ABSENT, _CHANGED, _ALREADY = 0, 1, 2


def _replace(mapping: Any, key: str) -> int:
    if not isinstance(mapping, dict) or key not in mapping:
        return _ABSENT
    if mapping[key] == codec.REDACTED:
        return _ALREADY
    mapping[key] = codec.REDACTED
    return _CHANGED


def _params_logged(data: dict[str, Any], key: str) -> int:
    return _replace(data.get("params"), key)


def _tag_set(data: dict[str, Any], key: str) -> int:
    return _replace(data, "value") if data.get("key") == key else _ABSENT


def _run_started(data: dict[str, Any], key: str) -> int:
    found = _replace(data.get("tags"), key)  # v1 held the initial tags
    if key == RUN_NAME_TAG and data.get("run_name"):
        found = max(found, _replace(data, "run_name"))
    return found


def _run_renamed(data: dict[str, Any], key: str) -> int:
    return _replace(data, "run_name") if key == RUN_NAME_TAG else _ABSENT


#: Per target, per stored event type: the function that replaces the key's value in a
#: stored payload (as a dict, at any stored version of the type).
_EDITORS = {
    "param": {"ParamsLogged": _params_logged},
    "tag": {"TagSet": _tag_set, "RunStarted": _run_started, "RunRenamed": _run_renamed},
}


def _rebuild_in_place(store: EventStore, conn: Any, touched: set[type]) -> list[str]:
    """Rebuild, inside the redaction's transaction, every read model built in this store
    that reads one of the ``touched`` event types, from the log as it now is."""
    from evstore.projection import project, read_state, registered
    from evstore.rebuild import drop_leftover_shadows

    everything = registered()
    drop_leftover_shadows(conn, everything)  # a killed rebuild's copies hold old values
    state = read_state(conn)
    models = [m for m in everything
              if m.name in state and touched & {*m.handlers, *m.collect}]  # fmt: skip
    if not models:
        return []
    for model in models:
        for table in model.tables:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        for sql in model.ddl():
            conn.execute(sql)
    read = {cls.__name__ for model in models for cls in (*model.handlers, *model.collect)}
    head = 0
    for batch in store.read_raw():
        events = []
        for row in batch:
            cls = EVENT_TYPES.get(row.type)
            # an event stored at its type's current version decodes to that type only
            if cls is None or (row.version == cls.version and row.type not in read):
                continue
            for event in codec.decode(row.type, row.version, row.payload):
                events.append(
                    RecordedEvent(row.position, row.stream_id, row.stream_version, row.event_id,
                                  row.type, row.version, row.recorded_at, row.metadata, event)
                )  # fmt: skip
        project(conn, models, events)
        head = batch[-1].position
    conn.executemany(
        "UPDATE projection_state SET version = ?, checkpoint = ?, table_suffix = '',"
        " built_at = ? WHERE name = ?",
        [(model.version, head, codec.now_ms(), model.name) for model in models],
    )
    return [model.name for model in models]
