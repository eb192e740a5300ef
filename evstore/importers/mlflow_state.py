"""What earlier imports wrote into the target: the state ``evstore import mlflow`` syncs from.

An import folds the events that EARLIER IMPORTS appended to a run's or an experiment's
stream (those whose metadata carries ``imported_at`` and ``source_uri``), then appends only
the difference between the MLflow source and that state. Events the target's own users
wrote to an imported run count toward the stream's version but not toward the state, so
an import never undoes them.

A stream is read in pages, and a run's metric history is folded into the number of points
imported per key and an order-free hash of them (the sum of ``hash(point_identity(p))``,
comparable within one process only), so memory stays bounded however long the history. The log is the truth here, not the read models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from evstore import codec
from evstore.errors import StoreError, UndecodableEvent
from evstore.events import (
    ArtifactRecorded,
    ErasedEvent,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagSet,
    MetricPoint,
    MetricsLogged,
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionDescribed,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    ParamsLogged,
    RegisteredModelAliasDeleted,
    RegisteredModelAliasSet,
    RegisteredModelCreated,
    RegisteredModelDeleted,
    RegisteredModelDescribed,
    RegisteredModelRenamed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    RunDeleted,
    RunInputsLogged,
    RunOutputsLogged,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagDeleted,
    TagSet,
    UnknownEvent,
)

#: Events read per query while folding: a page of MetricsLogged is at most ~32 x 5,000 points.
PAGE_SIZE = 32
_encode_point = msgspec.msgpack.Encoder().encode


def point_identity(point: MetricPoint) -> bytes:
    """A point's exact identity: its encoded bytes (NaN and -0.0 compare by their bits)."""
    return _encode_point(point)


def is_import(metadata: bytes) -> bool:
    """Whether an event's metadata says an import wrote it."""
    meta = codec.decode_metadata(metadata)
    return isinstance(meta, dict) and "imported_at" in meta and "source_uri" in meta


def stream_events(
    store: Any, stream_id: str, *, foreign_too: bool = False
) -> Iterator[tuple[int, bool, tuple[Event | UnknownEvent | ErasedEvent, ...]]]:
    """(stream version, written by an import, events) of a stream, read page by page.

    Events not written by an import are yielded with no events unless ``foreign_too``:
    their version counts, their content is not decoded.
    """
    after = 0
    while rows := store.read_stream_raw(stream_id, after, PAGE_SIZE):
        for row in rows:
            stream_version, type_name, version = row.stream_version, row.type, row.version
            payload, metadata = row.payload, row.metadata
            imported = is_import(metadata)
            try:
                decoded = (
                    codec.decode(type_name, version, payload) if imported or foreign_too else ()
                )
            except UndecodableEvent as e:  # as the store's own read path: name it
                raise StoreError(
                    f"event {stream_version} of stream {stream_id} ({type_name} v{version})"
                    f" cannot be decoded: {e.cause}; run `evstore verify`"
                ) from e
            yield stream_version, imported, decoded
        after = rows[-1].stream_version


@dataclass
class RunState:
    """A run as earlier imports left it; ``version`` is its stream's (every writer's)."""

    version: int = 0
    started: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    points: int = 0
    points_per_key: dict[str, int] = field(default_factory=dict)
    hash_per_key: dict[str, int] = field(default_factory=dict)  # sum of hash(point_identity)
    artifacts: dict[str, str] = field(default_factory=dict)  # path -> sha256
    status: str = "RUNNING"
    end_time: int | None = None
    deleted: bool = False
    datasets: set[tuple[str, str]] = field(default_factory=set)  # (name, digest)
    model_inputs: set[str] = field(default_factory=set)
    outputs: set[tuple[str, int]] = field(default_factory=set)  # (model id, step)

    @property
    def foreign(self) -> bool:
        """The stream exists but no import started it: the target's own run has this id."""
        return self.version > 0 and not self.started


def fold_run(store: Any, run_id: str) -> RunState:
    """What earlier imports wrote to a run's stream."""
    state = RunState()
    for version, imported, events in stream_events(store, run_id):
        state.version = version
        if imported:
            for event in events:
                _apply_run(state, event)
    return state


def _apply_run(state: RunState, event: Event | UnknownEvent | ErasedEvent) -> None:
    if isinstance(event, MetricsLogged):
        points = event.points
        state.points += len(points)
        counts, hashes = state.points_per_key, state.hash_per_key
        for point, identity in zip(points, map(_encode_point, points)):
            key = point.key
            counts[key] = counts.get(key, 0) + 1
            hashes[key] = hashes.get(key, 0) + hash(identity)
    elif isinstance(event, RunStarted):
        state.started, state.status = True, event.status
    elif isinstance(event, TagSet):
        state.tags[event.key] = event.value
    elif isinstance(event, TagDeleted):
        state.tags.pop(event.key, None)
    elif isinstance(event, ParamsLogged):
        state.params.update(event.params)
    elif isinstance(event, ArtifactRecorded):
        state.artifacts[event.path] = event.sha256
    elif isinstance(event, RunStatusChanged):
        state.status = event.status
        if event.end_time is not None:  # as the runs read model: no end time keeps the old one
            state.end_time = event.end_time
    elif isinstance(event, RunDeleted):
        state.deleted = True
    elif isinstance(event, RunRestored):
        state.deleted = False
    elif isinstance(event, RunInputsLogged):
        state.datasets.update((d.name, d.digest) for d in event.datasets)
        state.model_inputs.update(event.models)
    elif isinstance(event, RunOutputsLogged):
        state.outputs.update((m.model_id, m.step) for m in event.models)


def imported_points(store: Any, run_id: str, keys: Iterable[str]) -> Counter[bytes]:
    """The multiset of a run's imported points of some keys, by ``point_identity``."""
    wanted = set(keys)
    found: Counter[bytes] = Counter()
    for _, imported, events in stream_events(store, run_id):
        for event in events if imported else ():
            if isinstance(event, MetricsLogged):
                found.update(point_identity(p) for p in event.points if p.key in wanted)
    return found


@dataclass
class ExperimentState:
    """An experiment as earlier imports left it, and who wrote its stream's first event."""

    version: int = 0
    first: Event | UnknownEvent | ErasedEvent | None = None
    first_imported: bool = False
    name: str = ""
    creation_time: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    deleted: bool = False

    @property
    def created(self) -> bool:
        """An import created this experiment (its first event is an imported ExperimentCreated)."""
        return self.first_imported and isinstance(self.first, ExperimentCreated)

    @property
    def foreign(self) -> bool:
        """The stream exists but no import created it: the target made its own experiment."""
        return self.version > 0 and not self.created


def fold_experiment(store: Any, stream_id: str) -> ExperimentState:
    """What earlier imports wrote to an experiment's stream (and its first event)."""
    state = ExperimentState()
    for version, imported, events in stream_events(store, stream_id, foreign_too=True):
        if state.version == 0 and events:
            state.first, state.first_imported = events[0], imported
        state.version = version
        for event in events if imported else ():
            _apply_experiment(state, event)
    return state


def _apply_experiment(state: ExperimentState, event: Event | UnknownEvent | ErasedEvent) -> None:
    if isinstance(event, ExperimentCreated):
        state.name, state.creation_time = event.name, event.creation_time
        state.tags = dict(event.tags)
    elif isinstance(event, ExperimentRenamed):
        state.name = event.name
    elif isinstance(event, ExperimentTagSet):
        state.tags[event.key] = event.value
    elif isinstance(event, ExperimentTagDeleted):
        state.tags.pop(event.key, None)
    elif isinstance(event, ExperimentDeleted):
        state.deleted = True
    elif isinstance(event, ExperimentRestored):
        state.deleted = False


@dataclass
class LoggedModelState:
    """A logged model as earlier imports left it."""

    version: int = 0
    created: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    status: str = "PENDING"
    deleted: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)  # path -> sha256

    @property
    def foreign(self) -> bool:
        """The stream exists but no import created it: the target's own model has this id."""
        return self.version > 0 and not self.created


def fold_logged_model(store: Any, model_id: str) -> LoggedModelState:
    """What earlier imports wrote to a logged model's stream."""
    state = LoggedModelState()
    for version, imported, events in stream_events(store, model_id):
        state.version = version
        for event in events if imported else ():
            if isinstance(event, LoggedModelCreated):
                state.created = True
            elif isinstance(event, LoggedModelTagSet):
                state.tags[event.key] = event.value
            elif isinstance(event, LoggedModelTagDeleted):
                state.tags.pop(event.key, None)
            elif isinstance(event, LoggedModelParamsLogged):
                state.params = {**event.params, **state.params}  # a key's first value stays
            elif isinstance(event, LoggedModelFinalized):
                state.status = event.status
            elif isinstance(event, LoggedModelDeleted):
                state.deleted = True
            elif isinstance(event, ArtifactRecorded):
                state.artifacts[event.path] = event.sha256
    return state


@dataclass
class VersionState:
    """One version of a registered model as earlier imports left it."""

    stage: str = "None"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class RegisteredModelState:
    """A registered model as earlier imports left it (its stream holds its versions and
    aliases too)."""

    version: int = 0
    created: bool = False
    name: str = ""
    description: str = ""
    deleted: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    versions: dict[int, VersionState] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)

    @property
    def foreign(self) -> bool:
        """The stream exists but no import created it."""
        return self.version > 0 and not self.created


def fold_registered_model(store: Any, stream_id: str) -> RegisteredModelState:
    """What earlier imports wrote to a registered model's stream."""
    state = RegisteredModelState()
    for version, imported, events in stream_events(store, stream_id):
        state.version = version
        for event in events if imported else ():
            _apply_registered(state, event)
    return state


def _apply_registered(state: RegisteredModelState, event: Event | UnknownEvent | ErasedEvent) -> None:
    if isinstance(event, RegisteredModelCreated):
        state.created, state.name, state.description = True, event.name, event.description
    elif isinstance(event, RegisteredModelRenamed):
        state.name = event.name
    elif isinstance(event, RegisteredModelDescribed):
        state.description = event.description
    elif isinstance(event, RegisteredModelTagSet):
        state.tags[event.key] = event.value
    elif isinstance(event, RegisteredModelTagDeleted):
        state.tags.pop(event.key, None)
    elif isinstance(event, RegisteredModelDeleted):
        state.deleted = True
    elif isinstance(event, RegisteredModelAliasSet):
        state.aliases[event.alias] = event.version_number
    elif isinstance(event, RegisteredModelAliasDeleted):
        state.aliases.pop(event.alias, None)
    elif isinstance(event, ModelVersionCreated):
        state.versions[event.version_number] = VersionState(description=event.description)
    elif isinstance(event, ModelVersionDeleted):
        _version(state, event.version_number).deleted = True
        state.aliases = {a: v for a, v in state.aliases.items() if v != event.version_number}
    elif isinstance(event, ModelVersionDescribed):
        _version(state, event.version_number).description = event.description
    elif isinstance(event, ModelVersionStageChanged):
        _version(state, event.version_number).stage = event.stage
    elif isinstance(event, ModelVersionTagSet):
        _version(state, event.version_number).tags[event.key] = event.value
    elif isinstance(event, ModelVersionTagDeleted):
        _version(state, event.version_number).tags.pop(event.key, None)


def _version(state: RegisteredModelState, number: int) -> VersionState:
    return state.versions.setdefault(number, VersionState())
