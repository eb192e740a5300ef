"""A run's own history: its audit trail, and its state as of an earlier point."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from evstore.entities import Run
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.events import (
    ArtifactRecorded,
    ErasedEvent,
    ExperimentPermissionGranted,
    ExperimentPermissionRevoked,
    MetricsLogged,
    ParamsLogged,
    Redacted,
    RegisteredModelPermissionGranted,
    RegisteredModelPermissionRevoked,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagDeleted,
    TagSet,
    UnknownEvent,
    UserAdded,
    UserAdminChanged,
    UserDeleted,
    UserDisabled,
    UserPasswordSet,
    UserTokenRotated,
)
from evstore.stores.base import EventStore


def local_time(ms: int) -> str:
    """A time in epoch ms as ISO 8601 in local time, with its zone."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone().isoformat(timespec="milliseconds")


def as_of_cutoff(as_of: int | datetime) -> tuple[str, int]:
    """What an ``as_of`` cuts the log at: ("position", N) or ("time", ms since the epoch)."""
    if isinstance(as_of, datetime):
        try:
            return "time", int(as_of.timestamp() * 1000)
        except (ValueError, OverflowError, OSError):
            raise InvalidParameterValue(
                f"as_of {as_of.isoformat()} is out of the range of times a store can hold"
            ) from None
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        return "position", as_of
    raise InvalidParameterValue(f"as_of must be a position (int) or a datetime, not {as_of!r}")


def run_as_of(store: EventStore, run_id: str, as_of: int | datetime) -> Run:
    """The run rebuilt from its own stream, up to a position or a point in time.

    The events are replayed through the same read models the store keeps, into an
    in-memory database, so an earlier state follows exactly the rules of the live one.
    """
    import sqlite3

    from evstore import reads
    from evstore.projection import project, registered

    kind, limit = as_of_cutoff(as_of)
    stream = store.read_stream(run_id)
    if not stream:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    if kind == "position" and limit > (head := store.head_position()):
        raise InvalidParameterValue(f"as_of position {limit} is past the head of the log ({head})")
    events = [e for e in stream if (e.position if kind == "position" else e.recorded_at) <= limit]
    if not events:
        raise ResourceDoesNotExist(f"Run with id={run_id} did not exist as of {as_of}")
    models = registered()
    with sqlite3.connect(":memory:") as conn:
        for model in models:
            for ddl in model.ddl():
                conn.execute(ddl)
        project(conn, models, events)
        found = reads.load_runs(conn, [run_id])
    conn.close()
    if not found:
        raise ResourceDoesNotExist(f"Run with id={run_id} has no RunStarted event")
    return found[0]


def describe(event: Any) -> str:
    """What an event changed, in a few words, for the audit trail."""
    if isinstance(event, UnknownEvent):
        return f"(written by a newer evstore: {event.type} v{event.version})"
    if isinstance(event, RunStarted):
        # user_id is what the caller said; who started it is the event's principal or user.
        claimed = f" (claimed user {event.user_id})" if event.user_id else ""
        return f"started '{event.run_name}' in experiment {event.experiment_id}{claimed}"
    if isinstance(event, ParamsLogged):
        return ", ".join(f"{k}={v[:40]}" for k, v in event.params.items())
    if isinstance(event, MetricsLogged):
        shown = ", ".join(f"{p.key}[{p.step}]={p.value:g}" for p in event.points[:5])
        more = f" (+{len(event.points) - 5} more)" if len(event.points) > 5 else ""
        return shown + more
    if isinstance(event, TagSet):
        return f"{event.key}={event.value[:60]}"
    if isinstance(event, TagDeleted):
        return f"deleted tag {event.key}"
    if isinstance(event, ArtifactRecorded):
        return f"{event.path} ({event.size} bytes, sha256 {event.sha256[:12]})"
    if isinstance(event, RunStatusChanged):
        return f"status {event.status}" + (f" at {local_time(event.end_time)}" if event.end_time else "")
    if isinstance(event, RunRenamed):
        return f"renamed to '{event.run_name}'"
    if isinstance(event, Redacted):
        what = "the whole event" if event.target == "event" else f"{event.target} {event.key}"
        return f"erased {what} at position {event.position}: {event.reason}"
    if isinstance(event, ErasedEvent):
        return f"(erased: this {event.type}'s content was redacted)"
    return _describe_access(event) or type(event).__name__


def _describe_access(event: Any) -> str | None:
    """User and permission events (the ``users`` stream), never showing a secret's hash."""
    name = getattr(event, "name", "")
    if isinstance(event, UserAdded):
        return f"added {'admin' if event.admin else 'user'} {name}"
    if isinstance(event, UserTokenRotated):
        return f"rotated the token of {name}"
    if isinstance(event, UserDisabled):
        return f"disabled {name}"
    if isinstance(event, UserDeleted):
        return f"deleted user {name}"
    if isinstance(event, UserAdminChanged):
        return f"{name} {'is an admin now' if event.admin else 'is no longer an admin'}"
    if isinstance(event, UserPasswordSet):
        return f"set the password of {name}"
    if isinstance(event, ExperimentPermissionGranted):
        return f"granted {name} {event.permission} on experiment {event.experiment_id}"
    if isinstance(event, ExperimentPermissionRevoked):
        return f"revoked {name}'s grant on experiment {event.experiment_id}"
    if isinstance(event, RegisteredModelPermissionGranted):
        return f"granted {name} {event.permission} on registered model {event.model_name}"
    if isinstance(event, RegisteredModelPermissionRevoked):
        return f"revoked {name}'s grant on registered model {event.model_name}"
    return None


def type_name(event: Any) -> str:
    """An event's type; an erased one keeps the type it was stored as."""
    return event.type if isinstance(event, ErasedEvent) else type(event).__name__


def run_history(store: EventStore, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run: position, time, type, user and what changed."""
    events = store.read_stream(run_id)
    if not events:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    return [
        {**provenance_of(recorded, recorded.metadata), "type": type_name(recorded.event),
         "change": describe(recorded.event)}
        for recorded in events
    ]


def provenance_of(recorded: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Where and when an audit row's event comes from, and who wrote it (``meta``: its
    decoded metadata)."""
    return {
        "position": recorded.position,
        "recorded_at": recorded.recorded_at,
        # When it happened: for imported events, MLflow's own time.
        "occurred_at": meta.get("occurred_at", recorded.recorded_at),
        "user": meta.get("user"),
        # Who the server authenticated (evstore.identity); None for a local write.
        "principal": meta.get("principal"),
        "client": meta.get("client"),
        "source": meta.get("source_uri"),
    }


#: The audit trail's kinds of change, by event type (the UI filters on them).
KINDS = {
    "RunStarted": "lifecycle", "RunStatusChanged": "status", "RunRenamed": "name",
    "RunDeleted": "lifecycle", "RunRestored": "lifecycle", "ParamsLogged": "params",
    "MetricsLogged": "metrics", "TagSet": "tags", "TagDeleted": "tags",
    "ArtifactRecorded": "artifacts",
}  # fmt: skip
#: At most this many changes are listed for one event (a metric batch can hold thousands).
CHANGES_SHOWN = 20


class _Before:
    """What the run held before each event, folded as the trail is read."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def change(self, what: str, key: str, after: str | None) -> dict[str, Any]:
        before = self.values.get((what, key))
        if after is None:
            self.values.pop((what, key), None)
        else:
            self.values[(what, key)] = after
        return {"what": f"{what} {key}" if key else what, "before": before, "after": after}


def _changes(event: Any, state: _Before) -> list[dict[str, Any]]:
    if isinstance(event, RunStarted):
        return [state.change("name", "", event.run_name), state.change("status", "", event.status),
                {"what": "claimed user", "before": None, "after": event.user_id}]  # fmt: skip
    if isinstance(event, ParamsLogged):
        return [state.change("param", k, v) for k, v in event.params.items()]
    if isinstance(event, MetricsLogged):
        return [state.change("metric", p.key, f"{p.value:g} at step {p.step}") for p in event.points]
    if isinstance(event, TagSet):
        return [state.change("tag", event.key, event.value)]
    if isinstance(event, TagDeleted):
        return [state.change("tag", event.key, None)]
    if isinstance(event, ArtifactRecorded):
        return [state.change("artifact", event.path, f"{event.size} bytes, sha256 {event.sha256[:12]}")]
    if isinstance(event, RunStatusChanged):
        return [state.change("status", "", event.status)]
    if isinstance(event, RunRenamed):
        return [state.change("name", "", event.run_name)]
    if isinstance(event, RunDeleted):
        return [state.change("lifecycle", "", "deleted")]
    if isinstance(event, RunRestored):
        return [state.change("lifecycle", "", "active")]
    return [{"what": describe(event), "before": None, "after": None}]


def run_changes(store: EventStore, run_id: str) -> list[dict[str, Any]]:
    """The audit trail with what each event changed, before -> after, and its provenance."""
    events = store.read_stream(run_id)
    if not events:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    state = _Before()
    state.values[("lifecycle", "")] = "active"
    rows = []
    for recorded in events:
        meta, event = recorded.metadata, recorded.event
        stored_as = event.type if isinstance(event, UnknownEvent) else type(event).__name__
        changes = _changes(event, state)
        rows.append({
            **provenance_of(recorded, meta),
            "type": stored_as,
            "kind": KINDS.get(stored_as, "other"),
            "imported_at": meta.get("imported_at"),
            "changes": changes[:CHANGES_SHOWN],
            "more": max(0, len(changes) - CHANGES_SHOWN),
        })  # fmt: skip
    return rows
