"""The model side of ``evstore import mlflow``: logged models, a run's inputs and outputs,
and the model registry, synced the way runs are (``mlflow_import``).

Each is folded from what earlier imports wrote (``mlflow_state``) and only the difference
is appended, with event ids that name the stream version they land at, so a second import
adds nothing and a killed one resumes to the same log as a clean one. The events are the
ones the live API writes:

- a logged model's stream (its id): [LoggedModelCreated, LoggedModelTagSet per tag,
  LoggedModelParamsLogged]; its files as one batch of ArtifactRecorded;
  LoggedModelFinalized when READY or FAILED; LoggedModelDeleted. Later: tags set, changed
  or deleted, params added, a new status, a deletion.
- a run's stream: RunInputsLogged (datasets with their tags, logged models used) and
  RunOutputsLogged (models produced), for the ones not imported yet.
- a registered model's stream (``registered-model-`` + a uuid5 of its name): [created
  with its description, tags], per version [ModelVersionCreated, its tags] at its
  creation time and a stage change or a deletion (MLflow keeps a deleted version's row)
  at its last update, in time order; then the aliases. Later:
  description, tags, versions, their descriptions, tags and stages, aliases moved.

MLflow keeps only the current state of the registry: the times it records (creation, and
a version's last update for its stage or deletion) go into the payloads and the
``occurred_at`` metadata; an alias move or a description change has no time of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from evstore.errors import EvstoreError, StoreFormatError
from evstore.events import (
    ArtifactRecorded,
    Event,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagSet,
    ModelOutput,
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionDescribed,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    RegisteredModelAliasDeleted,
    RegisteredModelAliasSet,
    RegisteredModelCreated,
    RegisteredModelDescribed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    RunInputsLogged,
    RunOutputsLogged,
)
from evstore.importers.mlflow_source import LoggedModel, ModelVersion, RegisteredModel, Run
from evstore.importers.mlflow_state import (
    LoggedModelState,
    RegisteredModelState,
    RunState,
    fold_logged_model,
    fold_registered_model,
)

_NAMESPACE = uuid.UUID("3b0c8f7e-2d4a-5e6f-8a9b-0c1d2e3f4a5b")
#: The MLflow 3 logged model ids the live API makes too.
MODEL_ID_PREFIX = "m-"


def registered_model_stream(model: RegisteredModel) -> str:
    """The stream of an imported registered model: the same for the same name (and
    MLflow workspace) on every import."""
    where = "" if model.workspace in (None, "default") else f"{model.workspace}/"
    return f"registered-model-{uuid.uuid5(_NAMESPACE, where + model.name).hex}"


class ModelsSync:
    """The model-side syncs of ``mlflow_import._Importer``."""

    store: Any
    source: Any
    summary: Any
    artifacts: Any
    artifacts_root: str | None
    _append: Callable[..., None]
    _retrying: Callable[[str, Callable[[], bool]], bool]

    # --- logged models --------------------------------------------------------------

    def logged_model(self, model: LoggedModel) -> None:
        """Sync one logged model: append what earlier imports did not bring."""
        where = f"logged model {model.model_id} ({model.name})"
        if not model.model_id.startswith(MODEL_ID_PREFIX):
            self.summary.skipped.append((where, f"its id does not start with {MODEL_ID_PREFIX!r}"))
            return
        try:
            _check_model(model)
        except EvstoreError as e:
            self.summary.skipped.append((where, str(e)))
            return
        if self._retrying(where, lambda: self._sync_logged_model(model, where)):
            self.summary.logged_models += 1

    def _sync_logged_model(self, model: LoggedModel, where: str) -> bool:
        stream = model.model_id
        state = fold_logged_model(self.store, stream)
        if state.foreign:
            self.summary.skipped.append((where, "the target store has another logged model with this id"))
            return False
        if not state.created:
            events: list[Event] = [
                LoggedModelCreated(
                    experiment_id=model.experiment_id,
                    name=model.name,
                    artifact_location=model.artifact_location,
                    creation_time=model.creation_time,
                    source_run_id=model.source_run_id,
                    model_type=model.model_type,
                )
            ]
            events += [LoggedModelTagSet(key=k, value=v) for k, v in model.tags.items()]
            if model.params:
                events.append(LoggedModelParamsLogged(params=model.params))
            self._append(stream, f"model:{stream}", state, events, model.creation_time)
        else:
            changes: list[Event] = [LoggedModelTagSet(key=k, value=v) for k, v in model.tags.items()
                                    if state.tags.get(k) != v]  # fmt: skip
            changes += [LoggedModelTagDeleted(key=k) for k in sorted(state.tags) if k not in model.tags]
            fresh = {k: v for k, v in model.params.items() if k not in state.params}
            if fresh:
                changes.append(LoggedModelParamsLogged(params=fresh))
            if changes:
                self._append(stream, f"model:{stream}", state, changes, None)
        self._sync_model_artifacts(model, state)
        if model.status in ("READY", "FAILED") and state.status != model.status:
            finalized = LoggedModelFinalized(status=model.status, status_message=model.status_message)
            self._append(stream, f"model:{stream}", state, [finalized], model.last_updated_time)
        if model.lifecycle_stage == "deleted" and not state.deleted:
            time = model.last_updated_time or model.creation_time
            self._append(stream, f"model:{stream}", state, [LoggedModelDeleted(deleted_time=time)], time)
        return True

    def _sync_model_artifacts(self, model: LoggedModel, state: LoggedModelState) -> None:
        from evstore.importers.mlflow_import import _sha256

        recorded: list[Event] = []
        for artifact in self.source.model_artifacts(model, self.artifacts_root):
            if artifact.missing:
                where = f"logged model {model.model_id} artifact {artifact.path}"
                self.summary.skipped.append((where, artifact.missing_reason or "missing"))
                continue
            local = artifact.local_path or ""
            stored = state.artifacts.get(artifact.path)
            if stored is not None and self.artifacts.has(stored) and _sha256(local) == stored:
                continue
            size, sha = self.artifacts.put_file(local)
            if sha != stored:
                recorded.append(ArtifactRecorded(path=artifact.path, size=size, sha256=sha))
        if recorded:
            stream = model.model_id
            self._append(stream, f"model:{stream}", state, recorded, model.last_updated_time)

    # --- a run's inputs and outputs --------------------------------------------------

    def _sync_run_links(self, run: Run, state: RunState) -> None:
        """Append the run's dataset and model inputs and model outputs not imported yet."""
        from evstore.tracking.inputs import dataset_input

        try:
            links = self.source.run_links(run)
        except StoreFormatError as e:
            self.summary.skipped.append((f"run {run.run_id} inputs and outputs", str(e)))
            return
        datasets = []
        held = set(state.datasets)  # as the live API: a dataset used before writes nothing
        for given in links.datasets:
            if (given.name, given.digest) in held:
                continue
            held.add((given.name, given.digest))
            fields = {f: getattr(given, f) for f in ("name", "digest", "source_type", "source",
                                                     "schema", "profile")}  # fmt: skip
            try:  # the live API's checks
                datasets.append(dataset_input({"dataset": fields, "tags": dict(given.tags)}))
            except EvstoreError as e:
                where = f"run {run.run_id} dataset input {given.name} ({given.digest})"
                self.summary.skipped.append((where, str(e)))
        models = list(dict.fromkeys(m for m in links.model_inputs if m not in state.model_inputs))
        outputs = [o for o in links.outputs if (o.model_id, o.step) not in state.outputs]
        events: list[Event] = []
        if datasets or models:
            events.append(RunInputsLogged(datasets=datasets, models=models))
        if outputs:
            events.append(RunOutputsLogged(models=[ModelOutput(model_id=o.model_id, step=o.step)
                                                   for o in outputs]))  # fmt: skip
        if events:
            self._append(run.run_id, f"run:{run.run_id}", state, events, None)
        self.summary.dataset_inputs += len(links.datasets)
        self.summary.model_inputs += len(links.model_inputs)
        self.summary.model_outputs += len(links.outputs)

    # --- the model registry ----------------------------------------------------------

    def registered_model(self, model: RegisteredModel) -> None:
        """Sync one registered model with its versions and aliases."""
        where = f"registered model {model.name}"
        try:
            _check_registered(model)
        except EvstoreError as e:
            self.summary.skipped.append((where, str(e)))
            return
        if self._retrying(where, lambda: self._sync_registered_model(model, where)):
            self.summary.registered_models += 1
            self.summary.model_versions += sum(1 for v in model.versions if not v.deleted)
            self.summary.model_aliases += len(model.aliases)
            not_ready = sum(1 for v in model.versions if v.status != "READY" and not v.deleted)
            if not_ready:
                kind = "model version statuses other than READY (imported as READY)"
                self.summary.not_imported[kind] = self.summary.not_imported.get(kind, 0) + not_ready

    def _sync_registered_model(self, model: RegisteredModel, where: str) -> bool:
        from evstore.tracking.registry import _key_of

        stream = registered_model_stream(model)
        state = fold_registered_model(self.store, stream)
        if state.foreign or state.deleted:
            why = "the target store's own events made or changed it: not the imported model"
            self.summary.skipped.append((where, why))
            return False
        held = _key_of(self.store.connection, model.name)
        if held is not None and held != stream:
            self.summary.skipped.append((where, "the target store has another registered model with this name"))
            return False
        if state.created and not self.store.connection.execute(
            "SELECT 1 FROM registered_models WHERE model_key = ?", (stream,)
        ).fetchone():
            self.summary.skipped.append((where, "it was deleted in the target store after an import"))
            return False
        key = f"registered-model:{stream}"
        append = self._append
        if not state.created:
            events: list[Event] = [RegisteredModelCreated(name=model.name, creation_time=model.creation_time or 0,
                                                          description=model.description)]  # fmt: skip
            events += [RegisteredModelTagSet(key=k, value=v) for k, v in model.tags.items()]
            append(stream, key, state, events, model.creation_time)
            state.created, state.name, state.description = True, model.name, model.description
        else:
            changes: list[Event] = []
            if model.description != state.description:
                changes.append(RegisteredModelDescribed(description=model.description))
            changes += [RegisteredModelTagSet(key=k, value=v) for k, v in model.tags.items()
                        if state.tags.get(k) != v]  # fmt: skip
            changes += [RegisteredModelTagDeleted(key=k) for k in sorted(state.tags) if k not in model.tags]
            if changes:
                append(stream, key, state, changes, None)
        # In MLflow's order as far as it recorded it: creations at their times, a stage or a
        # deletion at the version's last update.
        steps = sorted([(v.creation_time or 0, v.version, 0, v) for v in model.versions]
                       + [(max(v.last_updated_time or 0, v.creation_time or 0), v.version, 1, v)
                          for v in model.versions], key=lambda step: step[:3])  # fmt: skip
        for _, _, phase, version in steps:
            if phase == 0:
                self._sync_version(stream, key, state, version, where)
            else:
                self._sync_version_stage(stream, key, state, version)
        live = {v.version for v in model.versions if not v.deleted}
        aliases: list[Event] = [RegisteredModelAliasSet(alias=a, version_number=n)
                                for a, n in model.aliases.items() if state.aliases.get(a) != n and n in live]  # fmt: skip
        aliases += [RegisteredModelAliasDeleted(alias=a) for a in sorted(state.aliases)
                    if a not in model.aliases and state.aliases[a] in live]  # fmt: skip
        for alias, number in model.aliases.items():
            if number not in live:
                self.summary.skipped.append((f"{where} alias {alias}", f"it points at version {number}, which it does not have"))
        if aliases:
            append(stream, key, state, aliases, None)
        return True

    def _sync_version(self, stream: str, key: str, state: RegisteredModelState,
                      version: ModelVersion, where: str) -> None:  # fmt: skip
        number = version.version
        held = state.versions.get(number)
        if held is None:
            created: list[Event] = [ModelVersionCreated(
                version_number=number, source=version.source, creation_time=version.creation_time or 0,
                run_id=version.run_id, model_id=version.model_id, run_link=version.run_link,
                description=version.description, user_id=version.user_id)]  # fmt: skip
            created += [ModelVersionTagSet(version_number=number, key=k, value=v) for k, v in version.tags.items()]
            self._append(stream, key, state, created, version.creation_time)
            held = state.versions[number] = _fresh(version)
        elif held.deleted:
            if not version.deleted:
                self.summary.skipped.append((f"{where} version {number}", "it was deleted in the target store"))
            return
        else:
            changes: list[Event] = []
            if version.description != held.description and not version.deleted:
                changes.append(ModelVersionDescribed(version_number=number, description=version.description))
            changes += [ModelVersionTagSet(version_number=number, key=k, value=v)
                        for k, v in version.tags.items() if held.tags.get(k) != v]  # fmt: skip
            if not version.deleted:  # MLflow drops a deleted version's tags: the deletion says so
                changes += [ModelVersionTagDeleted(version_number=number, key=k)
                            for k in sorted(held.tags) if k not in version.tags]  # fmt: skip
            if changes:
                self._append(stream, key, state, changes, None)
            held.description, held.tags = version.description, dict(version.tags)

    def _sync_version_stage(self, stream: str, key: str, state: RegisteredModelState,
                            version: ModelVersion) -> None:  # fmt: skip
        number = version.version
        held = state.versions.get(number)
        if held is None or held.deleted:
            return
        if version.deleted:
            deleted = ModelVersionDeleted(version_number=number, deleted_time=version.last_updated_time or 0)
            self._append(stream, key, state, [deleted], version.last_updated_time)
            held.deleted = True
            state.aliases = {a: n for a, n in state.aliases.items() if n != number}
        elif version.current_stage != held.stage:
            changed = ModelVersionStageChanged(version_number=number, stage=version.current_stage)
            self._append(stream, key, state, [changed], version.last_updated_time)
            held.stage = version.current_stage


def _fresh(version: ModelVersion) -> Any:
    from evstore.importers.mlflow_state import VersionState

    return VersionState(description=version.description, tags=dict(version.tags))


def _check_model(model: LoggedModel) -> None:
    """The live API's checks on a logged model's tags and params."""
    from evstore.tracking.logged_models import _pairs

    _pairs(model.tags, "tags")
    _pairs(model.params, "params")


def _check_registered(model: RegisteredModel) -> None:
    """The live API's checks on a registered model's name, tags, stages and aliases."""
    from evstore.importers.mlflow_source import DELETED_STAGE
    from evstore.tracking.registry import _alias, _name, _stage
    from evstore.validation import tag_value, validate_key

    _name(model.name)
    for tags in [model.tags, *(v.tags for v in model.versions)]:
        for k, v in tags.items():
            tag_value(validate_key("tag", k), v)
    for version in model.versions:
        if version.current_stage != DELETED_STAGE:
            _stage(version.current_stage)
    for alias in model.aliases:
        _alias(alias)
