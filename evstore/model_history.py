"""A registered model's history: every change to it, its versions and its aliases (who,
when, before -> after), and the model as it was at an earlier point.

MLflow overwrites an alias, a stage or a description in place; here each change is an
event of the model's stream, so "which version did ``champion`` point to on 1 March"
has an answer (``registered_model_as_of``).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from evstore.errors import InvalidParameterValue, ResourceDoesNotExist, StoreError
from evstore.events import (
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionDescribed,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    RegisteredModelAliasDeleted,
    RegisteredModelAliasSet,
    RegisteredModelCreated,
    RegisteredModelDeleted,
    RegisteredModelDescribed,
    RegisteredModelRenamed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
)
from evstore.history import as_of_cutoff, describe, provenance_of, type_name
from evstore.stores.base import EventStore


def model_stream(store: EventStore, name: str) -> str:
    """The stream of the registered model called ``name`` now, or most recently (a
    deleted or renamed one is found by the last event that gave it that name)."""
    query = getattr(store, "query", None)
    if query is not None:  # the registry read model names the live models: no scan
        try:
            rows = query("SELECT model_key FROM registered_models WHERE name = ?", (name,))
        except (sqlite3.OperationalError, StoreError):  # no such table yet (an older store): scan
            rows = []
        if rows:
            return str(rows[0][0])
    found = None
    for recorded in store.read_all():
        event = recorded.event
        if isinstance(event, (RegisteredModelCreated, RegisteredModelRenamed)) and event.name == name:
            found = recorded.stream_id
    if found is None:
        raise ResourceDoesNotExist(f"Registered Model with name={name} not found")
    return found


class _Held:
    """What the model held before each event, folded as its stream is read."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def change(self, what: str, after: str | None) -> dict[str, Any]:
        before = self.values.get(what)
        if after is None:
            self.values.pop(what, None)
        else:
            self.values[what] = after
        return {"what": what, "before": before, "after": after}


def _changes(event: Any, held: _Held) -> list[dict[str, Any]]:
    if isinstance(event, RegisteredModelCreated):
        return [held.change("name", event.name), held.change("description", event.description or None)]
    if isinstance(event, RegisteredModelRenamed):
        return [held.change("name", event.name)]
    if isinstance(event, RegisteredModelDescribed):
        return [held.change("description", event.description)]
    if isinstance(event, RegisteredModelTagSet):
        return [held.change(f"tag {event.key}", event.value)]
    if isinstance(event, RegisteredModelTagDeleted):
        return [held.change(f"tag {event.key}", None)]
    if isinstance(event, RegisteredModelDeleted):
        return [held.change("model", "deleted")]
    if isinstance(event, RegisteredModelAliasSet):
        return [held.change(f"alias {event.alias}", f"version {event.version_number}")]
    if isinstance(event, RegisteredModelAliasDeleted):
        return [held.change(f"alias {event.alias}", None)]
    if isinstance(event, ModelVersionCreated):
        origin = event.model_id or event.run_id or event.source
        return [held.change(f"version {event.version_number}", f"created from {origin}"),
                held.change(f"version {event.version_number} stage", "None")]  # fmt: skip
    if isinstance(event, ModelVersionDescribed):
        return [held.change(f"version {event.version_number} description", event.description)]
    if isinstance(event, ModelVersionStageChanged):
        return [held.change(f"version {event.version_number} stage", event.stage)]
    if isinstance(event, ModelVersionTagSet):
        return [held.change(f"version {event.version_number} tag {event.key}", event.value)]
    if isinstance(event, ModelVersionTagDeleted):
        return [held.change(f"version {event.version_number} tag {event.key}", None)]
    if isinstance(event, ModelVersionDeleted):
        changes = [held.change(f"version {event.version_number}", "deleted")]
        # aliases pointing at it went with it
        for what, value in list(held.values.items()):
            if what.startswith("alias ") and value == f"version {event.version_number}":
                changes.append(held.change(what, None))
        return changes
    return [{"what": describe(event), "before": None, "after": None}]


def model_changes(store: EventStore, name: str) -> list[dict[str, Any]]:
    """Every event of a registered model: provenance (position, time, who) and what it
    changed, before -> after."""
    held = _Held()
    rows = []
    for recorded in store.read_stream(model_stream(store, name)):
        rows.append({
            **provenance_of(recorded, recorded.metadata),
            "type": type_name(recorded.event),
            "changes": _changes(recorded.event, held),
        })  # fmt: skip
    return rows


def registered_model_as_of(store: EventStore, name: str, as_of: int | datetime) -> Any:
    """The registered model (``RegisteredModel``: tags, aliases, latest versions) as it
    was at a position or a point in time, rebuilt from its stream by the registry's own
    read model in memory. Its versions are ``.versions``."""
    from evstore.projection import project, select
    from evstore.tracking.registry import load_registered_model, load_versions

    (registry,) = select(["registry"])  # through the read-model registry, never by module

    kind, limit = as_of_cutoff(as_of)
    key = model_stream(store, name)
    if kind == "position" and limit > (head := store.head_position()):
        raise InvalidParameterValue(f"as_of position {limit} is past the head of the log ({head})")
    events = [e for e in store.read_stream(key) if (e.position if kind == "position" else e.recorded_at) <= limit]
    with sqlite3.connect(":memory:") as conn:
        for ddl in registry.ddl():
            conn.execute(ddl)
        project(conn, [registry], events)
        row = conn.execute("SELECT name FROM registered_models WHERE model_key = ?", (key,)).fetchone()
        if row is None:
            raise ResourceDoesNotExist(f"Registered Model with name={name} did not exist as of {as_of}")
        model = load_registered_model(conn, key)
        model.versions = load_versions(conn, key, row[0], None)  # type: ignore[attr-defined]
    conn.close()
    return model
