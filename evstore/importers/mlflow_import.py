"""``evstore import mlflow``: an MLflow store's whole history as evstore events, as a sync.

Each import is a deterministic sync. For every experiment and run it folds what earlier
imports wrote into the target (``mlflow_state``), then appends only the difference
between the source and that state, in the order and grouping a clean import uses; a clean
import is the same sync against an empty state. So importing an unchanged source adds
nothing, a source that changed since brings exactly its changes (points logged since,
tags set, changed or deleted, params added, artifacts added or changed, a new status, a
run or experiment deleted or restored, an experiment renamed), and an import killed
midway and run again ends byte-identical to a clean one.

A run's stream gets, as needed: [RunStarted, TagSet per tag, ParamsLogged] when it is not
started; else one batch of [TagSet for new or changed values, TagDeleted for imported tags
no longer in the source, ParamsLogged for new keys]; [RunInputsLogged, RunOutputsLogged]
for inputs and outputs not imported yet; MetricsLogged batches; one batch of
ArtifactRecorded; RunStatusChanged; RunDeleted or RunRestored. An experiment's stream
gets ExperimentCreated (with its tags) or one batch of [ExperimentRenamed, tags set,
tags deleted]; then ExperimentDeleted or ExperimentRestored. An experiment's logged
models are synced before its runs, and the model registry after all experiments
(``mlflow_models``).

Metric points. MLflow's histories only grow, and within one key a source lists points in
the order they were logged (SQL: by timestamp, step, value; file store: line order), so
the N points of a key imported earlier are the source's first N points of that key. New
points are the rest, in source order, cut into batches on the METRICS_PER_EVENT grid of
the run's imported count (the first one fills up to the next multiple), so a resumed
import appends exactly the batches an uninterrupted one would. The assumption is checked
per key, order-free: the source's first N points must hash (a sum of per-point hashes)
to what the N imported points hash to. A key where it fails (a point logged with an
earlier timestamp than the last import's, or history rewritten) is matched point by point
against a multiset of that key's imported points (memory proportional to that key's
history, in that case only); imported points the source no longer has are reported,
never removed. Either way the new points are the source's minus the imported ones, in
source order. Checking costs one more pass over an imported run's source points and
stream, nothing for a fresh import.

Event ids are uuid5 of (run or experiment id, the stream version the event lands at,
what it is: a metric batch's point range, else the type and a digest of the payload).
Every append passes ``expected_version``, the version folded: a retried append is stored
once, and a concurrent writer makes the append fail with ConcurrencyError instead of
interleaving; the importer then folds again and retries once, else reports the run.

Imported events carry MLflow's original times in their payloads, and provenance in their
metadata: the source URI, MLflow's schema revision, the import time, and when the event
happened in MLflow (``occurred_at``, where MLflow records it), which ``evstore history``
shows.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from typing import Any

import msgspec

from evstore import codec, reads
from evstore.artifacts import ArtifactRepository
from evstore.errors import ConcurrencyError, EventIdConflict, InvalidParameterValue
from evstore.events import (
    ArtifactRecorded,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    MetricPoint,
    MetricsLogged,
    ParamsLogged,
    RunDeleted,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagDeleted,
    TagSet,
)
from evstore.importers.mlflow_models import ModelsSync
from evstore.importers.mlflow_source import Experiment, MlflowSource, Run, open_source
from evstore.importers.mlflow_state import (
    ExperimentState,
    RunState,
    fold_experiment,
    fold_run,
    imported_points,
    point_identity,
)

_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-5c9d-9e0f-1a2b3c4d5e6f")
METRICS_PER_EVENT = 5_000
_RETRIED = (ConcurrencyError, EventIdConflict)


class ImportSummary(msgspec.Struct):
    """What the source holds (now all in the target), and what was skipped with the reason."""

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
    #: Runs whose artifact folder was found nowhere: runs that never logged an artifact
    #: (MLflow makes the folder on the first upload), or whose artifacts moved or are lost.
    runs_without_artifacts: int = 0
    logged_models: int = 0
    dataset_inputs: int = 0
    model_inputs: int = 0
    model_outputs: int = 0
    registered_models: int = 0
    #: Versions MLflow has not deleted (a deleted one is imported too, as deleted).
    model_versions: int = 0
    model_aliases: int = 0
    #: What the source holds that evstore does not import, by kind.
    not_imported: dict[str, int] = {}


def event_id(key: str, version: int, what: str) -> str:
    """The id of the event of ``key``'s stream that lands at ``version``, being ``what``."""
    return uuid.uuid5(_NAMESPACE, f"{key}@{version}:{what}").hex


def _what(event: Event) -> str:
    digest = hashlib.blake2b(codec.encode(event), digest_size=8).hexdigest()
    return f"{type(event).__name__}:{digest}"


class _Importer(ModelsSync):
    def __init__(self, store: Any, source: MlflowSource, artifacts: ArtifactRepository,
                 artifacts_root: str | None, progress: Callable[[str, int], None] | None) -> None:  # fmt: skip
        self.store = store
        self.source = source
        self.artifacts = artifacts
        self.artifacts_root = artifacts_root
        self.progress = progress or (lambda what, n: None)
        self.summary = ImportSummary(source.uri, source.schema_revision)
        self.imported_at = codec.now_ms()

    def _append(self, stream: str, key: str, state: Any, events: list[Event],
                occurred_at: int | None, whats: list[str] | None = None) -> None:  # fmt: skip
        """Append one batch at the folded version; ids name where each event lands."""
        metadata: dict[str, Any] = {
            "source_uri": self.source.uri,
            "mlflow_schema_revision": self.source.schema_revision,
            "imported_at": self.imported_at,
        }
        if occurred_at is not None:
            metadata["occurred_at"] = occurred_at
        whats = whats or [_what(event) for event in events]
        ids = [event_id(key, state.version + n, what) for n, what in enumerate(whats, start=1)]
        before = self.store.head_position()
        self.store.append(stream, events, expected_version=state.version, event_ids=ids,
                          metadata=metadata)  # fmt: skip
        self.summary.events_appended += self.store.head_position() - before
        state.version += len(events)

    def _retrying(self, what: str, sync: Callable[[], bool]) -> bool:
        """Run a fold-and-sync; on a concurrent writer, fold again and retry once."""
        reported, without = len(self.summary.skipped), self.summary.runs_without_artifacts
        links = (self.summary.dataset_inputs, self.summary.model_inputs, self.summary.model_outputs)
        try:
            return sync()
        except _RETRIED:
            del self.summary.skipped[reported:]  # the retry reports them again
            self.summary.runs_without_artifacts = without
            self.summary.dataset_inputs, self.summary.model_inputs, self.summary.model_outputs = links
        try:
            return sync()
        except _RETRIED as e:
            self.summary.skipped.append(
                (what, f"another writer appended to it during the import ({e}); import again"))
            return False

    # --- experiments ------------------------------------------------------------------

    def experiment(self, experiment: Experiment) -> bool:
        """Sync one experiment; False when it is skipped (then so are its runs)."""
        where = f"experiment {experiment.experiment_id} ({experiment.name})"
        if self._retrying(where, lambda: self._sync_experiment(experiment)):
            self.summary.experiments += 1
            return True
        return False

    def _sync_experiment(self, experiment: Experiment) -> bool:
        experiment_id = experiment.experiment_id
        stream, key = f"experiment-{experiment_id}", f"experiment:{experiment_id}"
        where = f"experiment {experiment_id} ({experiment.name})"
        state = fold_experiment(self.store, stream)
        if state.foreign:
            # The target made its own experiment with this id.
            first = state.first
            if isinstance(first, ExperimentCreated) and first.name == experiment.name:
                return True  # the same experiment (e.g. "Default"): its runs join it
            self.summary.skipped.append(
                (where, "the target store has another experiment with this id"))  # fmt: skip
            return False
        if state.created and state.creation_time != (experiment.creation_time or 0):
            self.summary.skipped.append((where, (
                f"the target store's experiment {experiment_id} was imported from another MLflow"
                f" experiment ({state.name!r}, created at {state.creation_time})")))  # fmt: skip
            return False
        if not state.created:
            clash = self._name_clash(experiment)
            if clash is not None:
                # Names are unique: appending it would fail in the read model mid-import.
                self.summary.skipped.append(
                    (where, f"the target store's experiment {clash} has this name"))  # fmt: skip
                return False
            created = ExperimentCreated(
                experiment_id=experiment_id,
                name=experiment.name,
                artifact_location=experiment.artifact_location,
                creation_time=experiment.creation_time or 0,
                tags=experiment.tags,
            )
            self._append(stream, key, state, [created], experiment.creation_time)
        else:
            changes = self._experiment_changes(experiment, state, where)
            if changes:
                self._append(stream, key, state, changes, None)
        deleted = experiment.lifecycle_stage == "deleted"
        if deleted and not state.deleted:
            time = experiment.deleted_time or experiment.creation_time or 0
            event: Event = ExperimentDeleted(experiment_id=experiment_id, deleted_time=time)
            self._append(stream, key, state, [event], experiment.deleted_time)
        elif not deleted and state.deleted:
            # MLflow sets last_update_time when it restores an experiment.
            time = experiment.last_update_time or self.imported_at
            event = ExperimentRestored(experiment_id=experiment_id, restored_time=time)
            self._append(stream, key, state, [event], experiment.last_update_time)
        return True

    def _name_clash(self, experiment: Experiment) -> str | None:
        """The id of another target experiment that has this experiment's name, if any."""
        named = reads.experiment_by_name(self.store.connection, experiment.name)
        if named is None or named.experiment_id == experiment.experiment_id:
            return None
        return str(named.experiment_id)

    def _experiment_changes(
        self, experiment: Experiment, state: ExperimentState, where: str
    ) -> list[Event]:
        """[renamed, tags set or changed, tags deleted]: what MLflow changed since."""
        experiment_id = experiment.experiment_id
        changes: list[Event] = []
        if experiment.name != state.name:
            clash = self._name_clash(experiment)
            if clash is None:
                changes.append(ExperimentRenamed(experiment_id=experiment_id, name=experiment.name))
            else:
                self.summary.skipped.append((f"{where} rename from {state.name!r}",
                                             f"the target store's experiment {clash} has this name"))
        changes += [ExperimentTagSet(experiment_id=experiment_id, key=k, value=v)
                    for k, v in experiment.tags.items() if state.tags.get(k) != v]  # fmt: skip
        changes += [ExperimentTagDeleted(experiment_id=experiment_id, key=k)
                    for k in sorted(state.tags) if k not in experiment.tags]  # fmt: skip
        return changes

    # --- runs ---------------------------------------------------------------------------

    def run(self, run: Run) -> None:
        """Sync one run: append what the source has that earlier imports did not bring."""
        counts: list[int] = []
        if self._retrying(f"run {run.run_id}", lambda: self._sync_run(run, counts)):
            self.summary.metric_points += counts[0]
            self.summary.artifacts += counts[1]
            self.summary.tags += len(run.tags)
            self.summary.params += len(run.params)
            self.summary.runs += 1
        self.progress("runs", 1)

    def _sync_run(self, run: Run, counts: list[int]) -> bool:
        stream, key = run.run_id, f"run:{run.run_id}"
        state = fold_run(self.store, run.run_id)
        if state.foreign:
            self.summary.skipped.append(
                (f"run {run.run_id}", "the target store has another run with this id, not imported"))
            return False
        if not state.started:
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
            self._append(stream, key, state, started, run.start_time)
        else:
            changes = _run_changes(run, state)
            if changes:
                self._append(stream, key, state, changes, None)
        self._sync_run_links(run, state)
        counts[:] = [self._sync_metrics(run, state, key), self._sync_artifacts(run, state, key)]
        # As the runs read model: a status change without an end time keeps the old one.
        new_end = run.end_time is not None and run.end_time != state.end_time
        if run.status != state.status or new_end:
            ended = RunStatusChanged(status=run.status, end_time=run.end_time)
            self._append(stream, key, state, [ended], run.end_time)
        deleted = run.lifecycle_stage == "deleted"
        if deleted and not state.deleted:
            time = run.deleted_time or run.end_time or 0
            self._append(stream, key, state, [RunDeleted(deleted_time=time)], run.deleted_time)
        elif not deleted and state.deleted:
            # MLflow keeps no time for a restore: the import's time stands in.
            self._append(stream, key, state, [RunRestored(restored_time=self.imported_at)], None)
        return True

    # --- metrics ------------------------------------------------------------------------

    def _append_points(self, run: Run, state: RunState, key: str, points: list[MetricPoint]) -> None:
        """One MetricsLogged; its id names the points' place in the run's imported history."""
        batch: list[Event] = [MetricsLogged(points=points)]
        what = f"MetricsLogged:{state.points}+{len(points)}"
        self._append(run.run_id, key, state, batch, points[0].timestamp, [what])
        state.points += len(points)

    def _sync_metrics(self, run: Run, state: RunState, key: str) -> int:
        """Append the points earlier imports did not bring; returns the source's count."""
        if not state.points:  # nothing imported yet: the source's own batches, as they come
            total = 0
            with closing(self.source.metric_batches(run, METRICS_PER_EVENT)) as batches:
                for points in batches:
                    self._append_points(run, state, key, points)
                    total += len(points)
                    self.progress("metric_points", len(points))
            return total
        total, new, rewritten = self._check_prefixes(run, state)
        if not new and not rewritten:
            return total
        known = imported_points(self.store, run.run_id, rewritten) if rewritten else Counter()
        with closing(self._new_points(run, state, rewritten, known)) as fresh:
            for points in _on_grid(fresh, state.points, METRICS_PER_EVENT):
                self._append_points(run, state, key, points)
        self._report_vanished(run, known)
        return total

    def _report_vanished(self, run: Run, known: Counter[bytes]) -> None:
        """Imported points the source no longer has (left in ``known``), one line per key."""
        vanished: dict[str, tuple[int, MetricPoint]] = {}
        for identity, left in sorted(known.items()):
            if left > 0:
                point = msgspec.msgpack.decode(identity, type=MetricPoint)
                count, example = vanished.get(point.key, (0, point))
                vanished[point.key] = (count + left, example)
        for metric, (count, p) in sorted(vanished.items()):
            reason = (f"{count} point(s) imported earlier are no longer in the MLflow store"
                      f" (e.g. step {p.step}, timestamp {p.timestamp}); kept in evstore")
            self.summary.skipped.append((f"run {run.run_id} metric {metric!r}", reason))

    def _check_prefixes(self, run: Run, state: RunState) -> tuple[int, int, set[str]]:
        """One pass over the source: (its points, points beyond the imported prefixes,
        keys whose source prefix is not, as a multiset, the points imported)."""
        left = dict(state.points_per_key)
        hashes: dict[str, int] = {}
        to_pass = state.points
        total = new = 0
        with closing(self.source.metric_batches(run, METRICS_PER_EVENT)) as batches:
            for batch in batches:
                total += len(batch)
                self.progress("metric_points", len(batch))
                if not to_pass:
                    new += len(batch)
                    continue
                for point in batch:
                    count = left.get(point.key, 0)
                    if not count:
                        new += 1
                        continue
                    left[point.key] = count - 1
                    to_pass -= 1
                    hashes[point.key] = hashes.get(point.key, 0) + hash(point_identity(point))
        rewritten = {k for k, count in left.items() if count}  # fewer points than imported
        rewritten.update(k for k, h in state.hash_per_key.items() if hashes.get(k, 0) != h)
        return total, new, rewritten

    def _new_points(self, run: Run, state: RunState, rewritten: set[str],
                    known: Counter[bytes]) -> Generator[list[MetricPoint], None, None]:  # fmt: skip
        """The source's points not imported yet, in source order, in lists."""
        left = {k: n for k, n in state.points_per_key.items() if k not in rewritten}
        to_pass = sum(left.values()) + sum(known.values())
        with closing(self.source.metric_batches(run, METRICS_PER_EVENT)) as batches:
            for batch in batches:
                if not to_pass:
                    yield batch
                    continue
                fresh = []
                for point in batch:
                    if point.key in rewritten:
                        identity = point_identity(point)
                        if known.get(identity):
                            known[identity] -= 1
                            to_pass -= 1
                            continue
                    else:
                        count = left.get(point.key, 0)
                        if count:
                            left[point.key] = count - 1
                            to_pass -= 1
                            continue
                    fresh.append(point)
                if fresh:
                    yield fresh

    # --- artifacts ----------------------------------------------------------------------

    def _sync_artifacts(self, run: Run, state: RunState, key: str) -> int:
        """Record new and changed artifact files; returns how many the source has."""
        recorded: list[Event] = []
        found = 0
        for artifact in self.source.artifacts(run, self.artifacts_root):
            if artifact.missing:
                if artifact.path:
                    where = f"run {run.run_id} artifact {artifact.path}"
                    self.summary.skipped.append((where, artifact.missing_reason or "missing"))
                else:  # the whole location: MLflow makes it on a run's first upload
                    self.summary.runs_without_artifacts += 1
                continue
            found += 1
            local = artifact.local_path or ""
            stored = state.artifacts.get(artifact.path)
            if stored is not None and self.artifacts.has(stored) and _sha256(local) == stored:
                continue  # imported before, unchanged, its bytes kept
            size, sha = self.artifacts.put_file(local)
            if sha != stored:
                recorded.append(ArtifactRecorded(path=artifact.path, size=size, sha256=sha))
        if recorded:
            self._append(run.run_id, key, state, recorded, run.end_time)
        return found


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _run_changes(run: Run, state: RunState) -> list[Event]:
    """[tags set or changed, imported tags deleted, params added]: what MLflow changed since.
    A value redacted here (``evstore redact``) counts as the same: importing it again
    would undo the erasure."""
    kept = (codec.REDACTED,)
    changes: list[Event] = [TagSet(key=k, value=v) for k, v in run.tags.items()
                            if state.tags.get(k) not in (v, *kept)]  # fmt: skip
    changes += [TagDeleted(key=k) for k in sorted(state.tags) if k not in run.tags]
    new_params = {k: v for k, v in run.params.items() if state.params.get(k) not in (v, *kept)}
    if new_params:
        changes.append(ParamsLogged(params=new_params))
    return changes


def _on_grid(
    chunks: Iterable[list[MetricPoint]], start: int, size: int
) -> Iterator[list[MetricPoint]]:
    """Re-cut lists of points into batches that end on multiples of ``size`` (counted from
    0), the first starting at ``start``: it fills up to the next multiple."""
    room = size - start % size
    batch: list[MetricPoint] = []
    for chunk in chunks:
        offset = 0
        while offset < len(chunk):
            piece = chunk[offset : offset + room - len(batch)]
            offset += len(piece)
            batch.extend(piece)
            if len(batch) == room:
                yield batch
                batch, room = [], size
    if batch:
        yield batch


def import_mlflow(
    target: str,
    source: str,
    *,
    artifacts_root: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ImportSummary:
    """Sync an MLflow store (``mlruns/``, ``file:`` or ``sqlite:///``) into ``target``."""
    from evstore.client import artifact_root_for, open_tracking_store

    if artifacts_root is not None and not os.path.isdir(artifacts_root):
        raise InvalidParameterValue(
            f"artifacts root {artifacts_root} is not a directory; nothing was imported"
        )
    with open_source(source) as mlflow_store:
        runner = open_tracking_store(target)
        importer = _Importer(
            runner.store, mlflow_store, ArtifactRepository(artifact_root_for(target)),
            None if artifacts_root is None else os.path.abspath(artifacts_root), progress,
        )  # fmt: skip
        for experiment in mlflow_store.experiments():
            if importer.experiment(experiment):
                for model in mlflow_store.logged_models(experiment):
                    importer.logged_model(model)
                for run in mlflow_store.runs(experiment):
                    importer.run(run)
        for registered in mlflow_store.registered_models():
            importer.registered_model(registered)
        importer.summary.skipped.extend(mlflow_store.skipped)
        importer.summary.not_imported.update(mlflow_store.not_imported())
    return importer.summary
