"""Read-only views of a store for people: facts, event listings, the schema registry."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import msgspec

from evstore import codec
from evstore.events import EVENT_TYPES, ErasedEvent, UnknownEvent
from evstore.integrity import is_known
from evstore.stores.base import EventStore, RecordedEvent


def store_info(store: EventStore) -> dict[str, Any]:
    """Counts, head position and hash, storage format and versions."""
    from evstore import __version__

    counts = store.count_by_type()
    facts: dict[str, Any] = {
        "store": store.uri,
        "events": sum(counts.values()),
        "head_position": store.head_position(),
        "head_hash": store.head_hash(),
        "unknown_events": sum(n for (t, v), n in counts.items() if not is_known(t, v)),
        "evstore_version": __version__,
    }
    format_version = getattr(store, "format_version", None)
    if format_version is not None:
        from evstore.stores.sqlite import FORMAT_VERSION

        facts["storage_format"] = f"{format_version()} (this evstore writes {FORMAT_VERSION})"
    connection = getattr(store, "connection", None)
    if connection is not None:
        from evstore.rebuild import leftovers

        facts["projections_behind"] = projections_behind(connection, facts["head_position"])
        facts["rebuild_leftovers"] = leftovers(store)
        facts["tables"] = table_counts(connection)
    elif hasattr(store, "rebuild_support"):  # a database server's store: one snapshot
        from evstore.rebuild import leftovers

        with store.reading() as conn:  # type: ignore[attr-defined]
            facts["projections_behind"] = projections_behind(conn, facts["head_position"])
            names = store.rebuild_support().tables(conn)  # type: ignore[attr-defined]
            facts["tables"] = {
                name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                for name in sorted(names)
                if name != "events" and "__" not in name
            }
        facts["rebuild_leftovers"] = leftovers(store)
    facts["events_by_type"] = {f"{t} v{v}": n for (t, v), n in sorted(counts.items())}
    return facts


def projections_behind(connection: Any, head: int) -> str:
    """Read models whose checkpoint is short of the head, and by how many events: stale
    ones, or ones a writer that does not keep them left behind (reads refuse them)."""
    has_table = getattr(connection, "has_table", None)
    if has_table is not None and not has_table("projection_state"):
        return "no read models"
    try:
        rows = connection.execute("SELECT name, checkpoint FROM projection_state").fetchall()
    except sqlite3.OperationalError:  # no read model was ever built here
        return "no read models"
    behind = [f"{name} by {head - n}" for name, n in sorted(rows) if n < head]
    if not behind:
        return "none"
    return ", ".join(behind) + (
        " events (`evstore rebuild` applies them; for a model at this evstore's version, so"
        " does the next write through evstore)"
    )


def table_counts(connection: Any) -> dict[str, int]:
    """Row counts of the store's read-model tables (shadow tables of a rebuild excluded)."""
    # Plain SQL: importing sqlite_utils also imports pandas when it is installed, seconds
    # that `evstore info` and the server's info endpoint would pay for a count.
    names = [name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")]  # fmt: skip
    return {
        name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        for name in names
        if name != "events" and "__" not in name and not name.startswith("sqlite_")
    }


def event_to_dict(recorded: RecordedEvent) -> dict[str, Any]:
    """One event as plain JSON-safe data (NaN and infinities as strings)."""
    event = recorded.event
    if isinstance(event, UnknownEvent):
        data: Any = {"unknown": True, "payload_hex": event.payload.hex()}
        type_name = event.type
    elif isinstance(event, ErasedEvent):  # redacted whole: its Redacted event says why
        data, type_name = {"erased": True}, event.type
    else:
        data = json_safe(msgspec.to_builtins(event))
        type_name = type(event).__name__
    meta = recorded.metadata
    return {
        "position": recorded.position,
        "stream_id": recorded.stream_id,
        "stream_version": recorded.stream_version,
        "event_id": recorded.event_id,
        "type": type_name,
        "version": recorded.version,
        "recorded_at": recorded.recorded_at,
        "user": meta.get("user"),
        "metadata": json_safe(meta),
        "data": data,
    }


def event_lines(
    store: EventStore,
    *,
    stream: str | None = None,
    types: list[str] | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Events as dicts, filtered by stream and (decoded) type, at most ``limit``."""
    source = store.read_stream(stream) if stream else store.read_all(after_position=after)
    wanted = set(types or ())
    lines = []
    for recorded in source:
        if recorded.position <= after:
            continue
        line = event_to_dict(recorded)
        if wanted and line["type"] not in wanted:
            continue
        lines.append(line)
        if len(lines) >= limit:
            break
    return lines


def schema_table() -> list[dict[str, Any]]:
    """Every event type with its current version, fingerprint and upcaster chain."""
    steps = codec.upcaster_steps()
    rows = []
    for name, cls in sorted(EVENT_TYPES.items()):
        chain = [
            {"from": version, "to": version + 1, "name": steps[(name, version)].__name__}
            for version in range(1, cls.version)
            if (name, version) in steps
        ]
        rows.append(
            {
                "type": name,
                "version": cls.version,
                "fingerprint": codec.schema_fingerprint(cls),
                "chain": chain,
            }
        )
    return rows


def json_number(value: Any) -> Any:
    """A number for JSON: NaN and infinities as the strings MLflow's protobuf JSON uses."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def json_safe(value: Any) -> Any:
    """Plain data made JSON-safe: NaN and infinities as strings, bytes as hex."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value
