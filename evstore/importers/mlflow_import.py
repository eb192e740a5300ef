"""``evstore import mlflow``: an MLflow store's whole history as evstore events.

Every event id is derived from MLflow's own ids (uuid5 of the experiment or run id, what
the event is and its batch number), so importing twice, or resuming an interrupted
import, appends nothing that is already stored, wherever the source file now lives.
Imported events carry MLflow's original times in their payloads, and provenance in their
metadata: the source URI, MLflow's schema revision, the import time, and when the event
happened in MLflow (``occurred_at``), which ``evstore history`` shows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from evstore import codec, reads
from evstore.artifacts import ArtifactRepository
from evstore.events import (
    ArtifactRecorded,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    MetricsLogged,
    ParamsLogged,
    RunDeleted,
    RunStarted,
    RunStatusChanged,
    TagSet,
)
from evstore.importers.mlflow_source import Experiment, MlflowSource, Run, open_source

_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-5c9d-9e0f-1a2b3c4d5e6f")
METRICS_PER_EVENT = 5_000


class ImportSummary(msgspec.Struct):
    """What an import brought over, and what it skipped with the reason."""

    source: str
    schema_revision: str
    experiments: int = 0
    runs: int = 0
    metric_points: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    events_appended: int = 0
    skipped: list[tuple[str, str]] = []


def _ids(key: str, count: int) -> list[str]:
    return [uuid.uuid5(_NAMESPACE, f"{key}#{i}").hex for i in range(count)]


class _Importer:
    def __init__(self, store: Any, source: MlflowSource, artifacts: ArtifactRepository,
                 artifacts_root: str | None, progress: Callable[[str, int], None] | None) -> None:  # fmt: skip
        self.store = store
        self.source = source
        self.artifacts = artifacts
        self.artifacts_root = artifacts_root
        self.progress = progress or (lambda what, n: None)
        self.summary = ImportSummary(source.uri, source.schema_revision)
        self.imported_at = codec.now_ms()

    def _append(self, stream: str, key: str, events: list[Event], occurred_at: int | None) -> None:
        metadata = {
            "source_uri": self.source.uri,
            "mlflow_schema_revision": self.source.schema_revision,
            "imported_at": self.imported_at,
        }
        if occurred_at is not None:
            metadata["occurred_at"] = occurred_at
        before = self.store.head_position()
        self.store.append(stream, events, event_ids=_ids(key, len(events)), metadata=metadata)
        self.summary.events_appended += self.store.head_position() - before

    def experiment(self, experiment: Experiment) -> bool:
        stream = f"experiment-{experiment.experiment_id}"
        key = f"experiment:{experiment.experiment_id}"
        existing = self.store.read_stream(stream, 0)[:1]
        if existing and existing[0].event_id != _ids(key, 1)[0]:
            # Not from an earlier import of this experiment: the target made its own.
            first = existing[0].event
            if isinstance(first, ExperimentCreated) and first.name == experiment.name:
                self.summary.experiments += 1
                return True  # the same experiment (e.g. "Default"): its runs join it
            self.summary.skipped.append(
                (f"experiment {experiment.experiment_id} ({experiment.name})",
                 "the target store has another experiment with this id"))  # fmt: skip
            return False
        named = reads.experiment_by_name(self.store.connection, experiment.name)
        if named is not None and named.experiment_id != experiment.experiment_id:
            # Names are unique: appending it would fail in the read model mid-import.
            self.summary.skipped.append(
                (f"experiment {experiment.experiment_id} ({experiment.name})",
                 f"the target store's experiment {named.experiment_id} has this name"))  # fmt: skip
            return False
        created = ExperimentCreated(
            experiment_id=experiment.experiment_id,
            name=experiment.name,
            artifact_location=experiment.artifact_location,
            creation_time=experiment.creation_time or 0,
            tags=experiment.tags,
        )
        self._append(stream, key, [created], experiment.creation_time)
        if experiment.lifecycle_stage == "deleted":
            deleted = ExperimentDeleted(
                experiment_id=experiment.experiment_id,
                deleted_time=experiment.deleted_time or experiment.creation_time or 0,
            )
            self._append(stream, key + ":deleted", [deleted], experiment.deleted_time)
        self.summary.experiments += 1
        return True

    def run(self, run: Run) -> None:
        key = f"run:{run.run_id}"
        started: list[Event] = [
            RunStarted(
                experiment_id=run.experiment_id,
                run_name=run.run_name,
                user_id=run.user_id,
                start_time=run.start_time or 0,
                parent_run_id=run.parent_run_id,
                artifact_uri=run.artifact_uri,
            )
        ]
        started += [TagSet(key=k, value=v) for k, v in run.tags.items()]
        if run.params:
            started.append(ParamsLogged(params=run.params))
        self._append(run.run_id, key + ":started", started, run.start_time)
        self.summary.tags += len(run.tags)
        self.summary.params += len(run.params)
        for number, points in enumerate(self.source.metric_batches(run, METRICS_PER_EVENT)):
            self._append(run.run_id, f"{key}:metrics:{number}", [MetricsLogged(points=points)],
                         points[0].timestamp)  # fmt: skip
            self.summary.metric_points += len(points)
            self.progress("metric_points", len(points))
        self._artifacts(run, key)
        if run.status != "RUNNING" or run.end_time is not None:
            ended = RunStatusChanged(status=run.status, end_time=run.end_time)
            self._append(run.run_id, key + ":status", [ended], run.end_time)
        if run.lifecycle_stage == "deleted":
            deleted = RunDeleted(deleted_time=run.deleted_time or run.end_time or 0)
            self._append(run.run_id, key + ":deleted", [deleted], run.deleted_time)
        self.summary.runs += 1
        self.progress("runs", 1)

    def _artifacts(self, run: Run, key: str) -> None:
        recorded: list[Event] = []
        for artifact in self.source.artifacts(run, self.artifacts_root):
            if artifact.missing:
                where = f"run {run.run_id} artifact {artifact.path or '(all)'}"
                self.summary.skipped.append((where, artifact.missing_reason or "missing"))
                continue
            size, sha = self.artifacts.put_file(artifact.local_path)  # type: ignore[arg-type]
            recorded.append(ArtifactRecorded(path=artifact.path, size=size, sha256=sha))
        if recorded:
            self._append(run.run_id, key + ":artifacts", recorded, run.end_time)
            self.summary.artifacts += len(recorded)


def import_mlflow(
    target: str,
    source: str,
    *,
    artifacts_root: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ImportSummary:
    """Import an MLflow store (``mlruns/``, ``file:`` or ``sqlite:///``) into ``target``."""
    from evstore.client import artifact_root_for, open_tracking_store

    with open_source(source) as mlflow_store:
        runner = open_tracking_store(target)
        importer = _Importer(
            runner.store, mlflow_store, ArtifactRepository(artifact_root_for(target)),
            None if artifacts_root is None else os.path.abspath(artifacts_root), progress,
        )  # fmt: skip
        for experiment in mlflow_store.experiments():
            if importer.experiment(experiment):
                for run in mlflow_store.runs(experiment):
                    importer.run(run)
        importer.summary.skipped.extend(mlflow_store.skipped)
    return importer.summary
