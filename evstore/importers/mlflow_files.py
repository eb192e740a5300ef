"""MLflow's file store (an ``mlruns/`` directory), read with the standard library.

The layout, as MLflow's ``FileStore`` writes it::

    mlruns/<experiment_id>/meta.yaml              experiment info (flat YAML)
    mlruns/<experiment_id>/tags/<key>             one file per experiment tag
    mlruns/<experiment_id>/<run_id>/meta.yaml     run info; status as an int enum
    mlruns/<experiment_id>/<run_id>/params/<key>  the value, the whole file
    mlruns/<experiment_id>/<run_id>/tags/<key>    the value, the whole file
    mlruns/<experiment_id>/<run_id>/metrics/<key> lines "timestamp value step
                                                  [dataset_name dataset_digest]"
    mlruns/<experiment_id>/<run_id>/artifacts/    the run's artifacts (default location)
    mlruns/.trash/<experiment_id>/...             deleted experiments, moved whole
    mlruns/<experiment_id>/models/<model_id>/     a logged model: meta.yaml (status an int),
                                                  params/, tags/, metrics/ (lines "timestamp
                                                  value step run_id [dataset_name digest]"),
                                                  artifacts/
    mlruns/<experiment_id>/datasets/<id>/meta.yaml a dataset
    mlruns/<experiment_id>/<run_id>/inputs/<id>/meta.yaml  an input: a DATASET or a MODEL,
                                                  with its tags (a nested mapping)
    mlruns/<experiment_id>/<run_id>/outputs/<model_id>/meta.yaml  a model the run produced
    mlruns/models/<name>/meta.yaml                a registered model; tags/, aliases/<alias>
    mlruns/models/<name>/version-<n>/meta.yaml    a version; tags/

A key with ``/`` is a nested path. Metric values are Python float reprs (``nan``,
``inf``, ``-inf`` included), so they read back exactly. A deleted run stays in place with
``lifecycle_stage: deleted`` and ``deleted_time`` in its ``meta.yaml``. Run directories
MLflow itself would ignore (no ``meta.yaml``, or ids that do not match) are skipped and
listed in ``skipped``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evstore.errors import StoreFormatError
from evstore.events import DatasetInput, MetricPoint, ModelOutput
from evstore.importers.mlflow_source import (
    FILE_STORE_REVISION,
    Experiment,
    LoggedModel,
    MlflowSource,
    ModelVersion,
    RegisteredModel,
    Run,
    RunLinks,
    model_id_of,
)
from evstore.importers.mlflow_yaml import parse_flat_yaml

TRASH_FOLDER = ".trash"
META_FILE = "meta.yaml"
#: Folders of the store root that are not experiments (the model registry's).
ROOT_RESERVED = {TRASH_FOLDER, "models"}
#: Folders of an experiment that are not runs.
EXPERIMENT_RESERVED = {"tags", "datasets", "traces", "models"}
#: The model registry's folder under the store root.
REGISTRY_FOLDER = "models"
#: MLflow's LoggedModelStatus, as the file store writes it.
LOGGED_MODEL_STATUSES = {0: "UNSPECIFIED", 1: "PENDING", 2: "READY", 3: "FAILED"}
#: MLflow's RunStatus enum, as the file store writes it.
RUN_STATUSES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}


class FileStoreSource(MlflowSource):
    """An MLflow file store: an ``mlruns/`` directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.uri = self.root.as_uri()
        self.schema_revision = FILE_STORE_REVISION
        if not any(self._experiment_dirs()):
            hint = ""
            if (self.root / "mlruns").is_dir():
                hint = f"; did you mean {self.root / 'mlruns'}?"
            raise StoreFormatError(
                f"{self.root} is not an MLflow file store (no <experiment>/{META_FILE}){hint}"
            )

    def not_imported(self) -> dict[str, int]:
        """Links of a metric point to a second logged model (evstore keeps one per point)."""
        links: Counter[tuple[str, ...]] = Counter()
        for experiment in self._experiment_dirs():
            for model in _subdirs(experiment / "models"):
                for key, path in _value_files(model / "metrics"):
                    with open(path, encoding="utf-8") as lines:
                        links.update((key, *line.split()[:4]) for line in lines if line.strip())
        extra = sum(count - 1 for count in links.values())
        return {"metric links to a second logged model": extra} if extra else {}

    # --- experiments ----------------------------------------------------------------

    def _experiment_dirs(self) -> Iterator[Path]:
        for parent, reserved in ((self.root, ROOT_RESERVED), (self.root / TRASH_FOLDER, set())):
            for entry in _subdirs(parent):
                if entry.name not in reserved and (entry / META_FILE).is_file():
                    yield entry

    def experiments(self) -> Iterator[Experiment]:
        """Every experiment, active and in ``.trash``, by id (numerically)."""
        found: dict[str, Path] = {}
        for directory in self._experiment_dirs():
            if directory.name in found:
                self.skipped.append((str(directory), f"a second experiment {directory.name}"))
            else:
                found[directory.name] = directory
        for experiment_id in sorted(found, key=_id_order):
            experiment = self._read_experiment(found[experiment_id])
            if experiment is not None:
                yield experiment

    def _read_experiment(self, directory: Path) -> Experiment | None:
        meta = _read_meta(directory / META_FILE)
        experiment_id = str(meta.get("experiment_id"))
        if experiment_id != directory.name:
            self.skipped.append((str(directory), f"its meta.yaml names experiment {experiment_id}"))
            return None
        return Experiment(
            experiment_id=experiment_id,
            name=_text(meta.get("name")),
            artifact_location=_text(meta.get("artifact_location")),
            lifecycle_stage=_text(meta.get("lifecycle_stage")) or "active",
            creation_time=_time(meta.get("creation_time")),
            last_update_time=_time(meta.get("last_update_time")),
            tags=_read_values(directory / "tags"),
            workspace=None,
        )

    def _experiment_dir(self, experiment_id: str) -> Path | None:
        for parent in (self.root, self.root / TRASH_FOLDER):
            if (parent / experiment_id / META_FILE).is_file():
                return parent / experiment_id
        return None

    # --- runs -----------------------------------------------------------------------

    def runs(self, experiment: Experiment) -> Iterator[Run]:
        """The experiment's runs by (start_time, run_id), with their tags and params."""
        directory = self._experiment_dir(experiment.experiment_id)
        if directory is None:
            return
        # First only the sort keys, so memory holds one run's params and tags at a time.
        order = []
        for entry in _subdirs(directory):
            if entry.name in EXPERIMENT_RESERVED:
                continue
            if not (entry / META_FILE).is_file():
                self.skipped.append((str(entry), f"no {META_FILE}: not a run MLflow can read"))
                continue
            start_time = _time(_read_meta(entry / META_FILE).get("start_time"))
            order.append((start_time is not None, start_time or 0, entry.name))
        for _, _, name in sorted(order):
            run = self._read_run(directory / name, experiment.experiment_id)
            if run is not None:
                yield run

    def _read_run(self, directory: Path, experiment_id: str) -> Run | None:
        meta = _read_meta(directory / META_FILE)
        run_id = _text(meta.get("run_id") or meta.get("run_uuid"))
        recorded_experiment = str(meta.get("experiment_id"))
        if run_id != directory.name or recorded_experiment != experiment_id:
            self.skipped.append(
                (
                    str(directory),
                    f"its meta.yaml names run {run_id} of experiment {recorded_experiment}",
                )
            )
            return None
        tags = _read_values(directory / "tags")
        return Run(
            run_id=run_id,
            experiment_id=experiment_id,
            run_name=_text(meta.get("run_name")) or tags.get("mlflow.runName", ""),
            user_id=_text(meta.get("user_id")),
            status=_status(meta.get("status"), directory),
            start_time=_time(meta.get("start_time")),
            end_time=_time(meta.get("end_time")),
            lifecycle_stage=_text(meta.get("lifecycle_stage")) or "active",
            artifact_uri=_text(meta.get("artifact_uri")),
            deleted_time=_time(meta.get("deleted_time")),
            tags=tags,
            params=_read_values(directory / "params"),
        )

    def _run_dir(self, run: Run) -> Path:
        directory = self._experiment_dir(run.experiment_id)
        if directory is None or not (directory / run.run_id / META_FILE).is_file():
            raise StoreFormatError(f"run {run.run_id} is not in {self.root} any more")
        return directory / run.run_id

    # --- logged models, inputs and outputs ------------------------------------------

    def logged_models(self, experiment: Experiment) -> Iterator[LoggedModel]:
        """The experiment's logged models (``models/<id>/``) by (creation time, id)."""
        directory = self._experiment_dir(experiment.experiment_id)
        found = []
        for entry in _subdirs(directory / "models") if directory is not None else []:
            meta = _read_meta(entry / META_FILE) if (entry / META_FILE).is_file() else {}
            status = meta.get("status")
            if meta.get("model_id") != entry.name or status not in LOGGED_MODEL_STATUSES:
                why = f"unknown status {status!r}" if meta else f"no {META_FILE}"
                if meta and meta.get("model_id") != entry.name:
                    why = f"its meta.yaml names model {meta.get('model_id')}"
                self.skipped.append((str(entry), why))
                continue
            found.append(LoggedModel(
                model_id=entry.name,
                experiment_id=experiment.experiment_id,
                name=_text(meta.get("name")),
                artifact_location=_text(meta.get("artifact_location")),
                creation_time=_time(meta.get("creation_timestamp")) or 0,
                last_updated_time=_time(meta.get("last_updated_timestamp")),
                status=LOGGED_MODEL_STATUSES[status],
                status_message=_text(meta.get("status_message")),
                model_type=_text(meta.get("model_type")),
                source_run_id=_text(meta.get("source_run_id")) or None,
                lifecycle_stage=_text(meta.get("lifecycle_stage")) or "active",
                tags=_read_values(entry / "tags"),
                params=_read_values(entry / "params"),
            ))  # fmt: skip
        yield from sorted(found, key=lambda m: (m.creation_time, m.model_id))

    def _local_model_dirs(self, model: LoggedModel) -> Iterable[str]:
        directory = self._experiment_dir(model.experiment_id)
        if directory is not None:
            yield str(directory / "models" / model.model_id / "artifacts")

    def run_links(self, run: Run) -> RunLinks:
        """The run's inputs (``inputs/``: datasets by name and digest, then models) and
        outputs (``outputs/``)."""
        directory = self._run_dir(run)
        datasets, models = [], []
        for entry in _subdirs(directory / "inputs"):
            meta = _read_meta(entry / META_FILE, nested=True)
            kind, source_id = meta.get("source_type"), _text(meta.get("source_id"))
            if kind == "MODEL":
                models.append(source_id)
            elif kind == "DATASET":
                dataset = self._dataset(run, source_id, meta.get("tags"))
                if dataset is not None:
                    datasets.append(dataset)
            else:
                self.skipped.append((str(entry), f"an input of unknown type {kind!r}"))
        outputs = []
        for entry in _subdirs(directory / "outputs"):
            meta = _read_meta(entry / META_FILE)
            outputs.append(ModelOutput(model_id=_text(meta.get("destination_id")) or entry.name,
                                       step=int(meta.get("step") or 0)))  # fmt: skip
        datasets.sort(key=lambda d: (d.name, d.digest))
        return RunLinks(datasets=datasets, model_inputs=sorted(set(models)),
                        outputs=sorted(set(outputs), key=lambda o: (o.model_id, o.step)))  # fmt: skip

    def _dataset(self, run: Run, dataset_id: str, tags: Any) -> DatasetInput | None:
        path = self._run_dir(run).parent / "datasets" / dataset_id / META_FILE
        if not path.is_file() or not isinstance(tags, dict):
            why = "its tags are not a mapping" if path.is_file() else f"no dataset {dataset_id}"
            self.skipped.append((f"run {run.run_id} dataset input {dataset_id}", why))
            return None
        meta = _read_meta(path)
        return DatasetInput(
            name=_text(meta.get("name")), digest=_text(meta.get("digest")),
            source_type=_text(meta.get("source_type")), source=_text(meta.get("source")),
            schema=meta.get("schema"), profile=meta.get("profile"),
            tags={str(k): _text(v) for k, v in tags.items()},
        )  # fmt: skip

    # --- the model registry -----------------------------------------------------------

    def registered_models(self) -> Iterator[RegisteredModel]:
        """Every registered model (``models/<name>/``) by name, with its versions."""
        for entry in _subdirs(self.root / REGISTRY_FOLDER):
            if not (entry / META_FILE).is_file():
                self.skipped.append((str(entry), f"no {META_FILE}: not a registered model"))
                continue
            meta = _read_meta(entry / META_FILE)
            versions = []
            for folder in _subdirs(entry):
                if folder.name.startswith("version-") and (folder / META_FILE).is_file():
                    versions.append(self._version(folder))
            aliases = {}
            for alias, value in _read_values(entry / "aliases").items():
                if value.strip().isdigit():
                    aliases[alias] = int(value.strip())
                else:
                    self.skipped.append((f"registered model {entry.name} alias {alias}",
                                         f"it names no version number ({value!r})"))
            yield RegisteredModel(
                name=_text(meta.get("name")) or entry.name,
                creation_time=_time(meta.get("creation_timestamp")),
                last_updated_time=_time(meta.get("last_updated_timestamp")),
                description=_text(meta.get("description")),
                tags=_read_values(entry / "tags"),
                aliases=aliases,
                versions=sorted(versions, key=lambda v: v.version),
                workspace=None,
            )

    def _version(self, folder: Path) -> ModelVersion:
        meta = _read_meta(folder / META_FILE)
        source = _text(meta.get("source"))
        try:
            number = int(meta.get("version") or folder.name.removeprefix("version-"))
        except ValueError as e:
            raise StoreFormatError(f"{folder / META_FILE}: no version number") from e
        return ModelVersion(
            version=number,
            creation_time=_time(meta.get("creation_timestamp")),
            last_updated_time=_time(meta.get("last_updated_timestamp")),
            description=_text(meta.get("description")),
            user_id=_text(meta.get("user_id")),
            current_stage=_text(meta.get("current_stage")) or "None",
            source=source,
            run_id=_text(meta.get("run_id")) or None,
            run_link=_text(meta.get("run_link")),
            model_id=_text(meta.get("model_id")) or model_id_of(source),
            status=_text(meta.get("status")) or "READY",
            tags=_read_values(folder / "tags"),
        )

    # --- metrics --------------------------------------------------------------------

    def metric_points(self, run: Run) -> Iterator[MetricPoint]:
        """The run's metric history: key by key (sorted), each in file (logging) order,
        with the logged model a point is linked to (from ``models/<id>/metrics``)."""
        context = self._model_metric_context(run)
        for point in self._run_metric_points(run):
            found = context.get((point.key, point.timestamp, point.step, point.value)) if context else None
            if found is not None and point.model_id is None:
                yield MetricPoint(point.key, point.value, point.step, point.timestamp, *found)
            else:
                yield point

    def _model_metric_context(self, run: Run) -> dict[tuple[str, int, int, float], tuple[str, str | None, str | None]]:
        """(key, timestamp, step, value) -> (model id, dataset name, digest) of the run's
        points that logged models list; the smallest model id where two share a point."""
        directory = self._experiment_dir(run.experiment_id)
        context: dict[tuple[str, int, int, float], tuple[str, str | None, str | None]] = {}
        for model in reversed(_subdirs(directory / "models") if directory is not None else []):
            for key, path in _value_files(model / "metrics"):
                with open(path, encoding="utf-8") as lines:
                    for line in lines:
                        fields = line.split()
                        if len(fields) in (4, 6) and fields[3] == run.run_id:
                            try:
                                point = (key, int(fields[0]), int(fields[2]), float(fields[1]))
                            except ValueError:
                                continue
                            name, digest = (fields[4], fields[5]) if len(fields) == 6 else (None, None)
                            context[point] = (model.name, name, digest)
        return context

    def _run_metric_points(self, run: Run) -> Iterator[MetricPoint]:
        metrics_dir = self._run_dir(run) / "metrics"
        for key, path in _value_files(metrics_dir):
            with open(path, encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    fields = line.strip().split(" ")
                    if len(fields) == 3:  # "timestamp value step", the usual line
                        try:
                            ts, value, step = int(fields[0]), float(fields[1]), int(fields[2])
                        except ValueError:
                            pass  # _metric_point below reports it, with the reason
                        else:
                            yield MetricPoint(key, value, step, ts)
                            continue
                    if fields != [""]:
                        yield _metric_point(key, line, path, number)

    # --- artifacts ------------------------------------------------------------------

    def _local_artifact_dirs(self, run: Run) -> Iterable[str]:
        # A deleted experiment's runs move to .trash with their artifacts, while the
        # recorded location still names mlruns/<experiment>/<run>/artifacts.
        if _default_layout(run):
            directory = self._experiment_dir(run.experiment_id)
            if directory is not None:
                yield str(directory / run.run_id / "artifacts")

    def _local_experiment_dirs(self, run: Run) -> Iterable[str]:
        if _default_layout(run):
            directory = self._experiment_dir(run.experiment_id)
            if directory is not None:
                yield str(directory)

    def _relative_base(self) -> str:
        return str(self.root.parent)


def _default_layout(run: Run) -> bool:
    """Whether the run's artifacts were recorded inside the store's own run directory."""
    tail = run.artifact_uri.replace("\\", "/").rstrip("/").split("/")[-3:]
    return tail == [run.experiment_id, run.run_id, "artifacts"]


def _metric_point(key: str, line: str, path: str, number: int) -> MetricPoint:
    fields = line.strip().split(" ")
    try:
        if len(fields) not in (2, 3, 5):
            raise ValueError(f"{len(fields)} fields, expected 2, 3 or 5")
        step = int(fields[2]) if len(fields) >= 3 else 0
        dataset_name, dataset_digest = (fields[3], fields[4]) if len(fields) == 5 else (None, None)
        return MetricPoint(
            key, float(fields[1]), step, int(fields[0]), None, dataset_name, dataset_digest
        )
    except ValueError as e:
        raise StoreFormatError(f"{path}:{number}: malformed metric line {line!r}: {e}") from e


def _subdirs(parent: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(parent), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Path(entry.path) for entry in entries if entry.is_dir()]


def _value_files(directory: Path) -> Iterator[tuple[str, str]]:
    """(key, path) of every file under ``directory``, by key; a key may contain ``/``."""
    found = []
    for parent, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(parent, name)
            found.append((Path(os.path.relpath(path, directory)).as_posix(), path))
    yield from sorted(found)


def _read_values(directory: Path) -> dict[str, str]:
    """Params or tags: each file's whole content is the value, exactly as written."""
    values = {}
    for key, path in _value_files(directory):
        with open(path, encoding="utf-8", newline="") as f:
            values[key] = f.read()
    return values


def _read_meta(path: Path, *, nested: bool = False) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return parse_flat_yaml(f.read(), nested=nested)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StoreFormatError(f"cannot read {path}: {e}") from e


def _id_order(experiment_id: str) -> tuple[int, int, str]:
    return (0, int(experiment_id), "") if experiment_id.isdigit() else (1, 0, experiment_id)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _time(value: Any) -> int | None:
    return None if value is None or isinstance(value, bool) else int(value)


def _status(value: Any, directory: Path) -> str:
    if value is None:
        return "RUNNING"  # MLflow's reading when meta.yaml has no status
    if isinstance(value, str) and value in RUN_STATUSES.values():
        return value
    if isinstance(value, int) and value in RUN_STATUSES:
        return RUN_STATUSES[value]
    raise StoreFormatError(f"{directory / META_FILE}: unknown run status {value!r}")
