"""A run's own history: its audit trail, and its state as of an earlier point."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from evstore.entities import Run, RunData, RunInfo
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.events import (
    ArtifactRecorded,
    MetricsLogged,
    ParamsLogged,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagDeleted,
    TagSet,
    UnknownEvent,
)
from evstore.stores.base import EventStore, RecordedEvent


def _cutoff(as_of: int | datetime) -> tuple[str, int]:
    if isinstance(as_of, datetime):
        return "time", int(as_of.timestamp() * 1000)
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        return "position", as_of
    raise InvalidParameterValue(f"as_of must be a position (int) or a datetime, not {as_of!r}")


def run_as_of(store: EventStore, run_id: str, as_of: int | datetime) -> Run:
    """The run rebuilt from its own stream, up to a position or a point in time."""
    kind, limit = _cutoff(as_of)
    events = [
        e for e in store.read_stream(run_id)
        if (e.position if kind == "position" else e.recorded_at) <= limit
    ]  # fmt: skip
    if not events:
        raise ResourceDoesNotExist(f"Run with id={run_id} did not exist as of {as_of}")
    return fold_run(run_id, events)


def fold_run(run_id: str, events: list[RecordedEvent]) -> Run:
    """Apply a run's events in order to get its state, as the projections would."""
    info: dict[str, Any] = {}
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    latest: dict[str, tuple[int, int, float]] = {}
    for recorded in events:
        event = recorded.event
        if isinstance(event, RunStarted):
            info = {
                "run_id": run_id, "experiment_id": event.experiment_id,
                "run_name": event.run_name, "user_id": event.user_id, "status": event.status,
                "start_time": event.start_time, "end_time": None, "lifecycle_stage": "active",
                "artifact_uri": event.artifact_uri,
            }  # fmt: skip
        elif isinstance(event, ParamsLogged):
            params.update(event.params)
        elif isinstance(event, MetricsLogged):
            for p in event.points:
                candidate = (p.step, p.timestamp, p.value)
                if p.key not in latest or _newer(candidate, latest[p.key]):
                    latest[p.key] = candidate
        elif isinstance(event, TagSet):
            tags[event.key] = event.value
            if event.key == "mlflow.runName":
                info["run_name"] = event.value
        elif isinstance(event, TagDeleted):
            tags.pop(event.key, None)
        elif isinstance(event, RunStatusChanged):
            info["status"] = event.status
            if event.end_time is not None:
                info["end_time"] = event.end_time
        elif isinstance(event, RunRenamed):
            info["run_name"] = event.run_name
            tags["mlflow.runName"] = event.run_name
        elif isinstance(event, RunDeleted):
            info["lifecycle_stage"] = "deleted"
        elif isinstance(event, RunRestored):
            info["lifecycle_stage"] = "active"
    if not info:
        raise ResourceDoesNotExist(f"Run with id={run_id} has no RunStarted event")
    metrics = {key: value for key, (_s, _t, value) in latest.items()}
    return Run(RunInfo(**info), RunData(params, metrics, tags))


def _newer(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    """MLflow's latest-metric rule: greater (step, timestamp, value), NaN compared as 0 (as
    MLflow stores it and the latest_metrics read model compares it); the first of equals stays."""
    def key(t: tuple[int, int, float]) -> tuple[int, int, float]:
        return (t[0], t[1], 0.0 if math.isnan(t[2]) else t[2])

    return key(a) > key(b)


def describe(event: Any) -> str:
    """What an event changed, in a few words, for the audit trail."""
    if isinstance(event, UnknownEvent):
        return f"(written by a newer evstore: {event.type} v{event.version})"
    if isinstance(event, RunStarted):
        return f"started '{event.run_name}' in experiment {event.experiment_id} by {event.user_id}"
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
        return f"status {event.status}" + (f" at {event.end_time}" if event.end_time else "")
    if isinstance(event, RunRenamed):
        return f"renamed to '{event.run_name}'"
    return type(event).__name__


def run_history(store: EventStore, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run: position, time, type, user and what changed."""
    events = store.read_stream(run_id)
    if not events:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    rows = []
    for recorded in events:
        meta = recorded.metadata
        rows.append(
            {
                "position": recorded.position,
                "recorded_at": recorded.recorded_at,
                # When it happened: for imported events, MLflow's own time.
                "occurred_at": meta.get("occurred_at", recorded.recorded_at),
                "type": type(recorded.event).__name__,
                "user": meta.get("user"),
                "source": meta.get("source_uri"),
                "change": describe(recorded.event),
            }
        )
    return rows
