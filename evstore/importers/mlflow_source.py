"""Read an MLflow tracking store as a stream of neutral records, without the mlflow package.

    open_source(source) -> MlflowSource
        SqlSource          MLflow's SQL store: SQLite, PostgreSQL (MySQL fits later)
        FileStoreSource    MLflow's file store, an ``mlruns/`` directory

A source yields ``Experiment`` and ``Run`` records, an experiment's ``LoggedModel``
records, a run's ``RunLinks`` (dataset and model inputs, model outputs), the model
registry as ``RegisteredModel`` records with their ``ModelVersion``s, a run's metric history as
``evstore.events.MetricPoint`` values (the neutral shape of a point: key, value, step,
timestamp and MLflow 3's model/dataset context), and its artifact files as
``ArtifactFile`` records. Iteration is deterministic: experiments by id, runs by
(start_time, run_id), a run's metric points in MLflow's own history order, artifacts by
path. Memory stays bounded: nothing holds more than one run's params and tags, and
metric histories are streamed.

Things a source cannot read but that do not stop it (a run directory without a
``meta.yaml``, say) are listed in ``source.skipped`` as ``(what, reason)`` pairs.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec

from evstore.errors import InvalidParameterValue, StoreFormatError
from evstore.events import DatasetInput, MetricPoint, ModelOutput

#: The MLflow tag whose value is the parent run's id.
PARENT_RUN_ID_TAG = "mlflow.parentRunId"

#: The ``schema_revision`` of a file store, which has no alembic revision.
FILE_STORE_REVISION = "file-store"


class Experiment(msgspec.Struct, frozen=True, kw_only=True):
    """An MLflow experiment as stored, with its tags."""

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int | None
    last_update_time: int | None
    tags: dict[str, str]
    #: MLflow 3.x SQL stores group experiments in workspaces; None where there are none.
    workspace: str | None = None

    @property
    def deleted_time(self) -> int | None:
        """When a deleted experiment was deleted: MLflow keeps it only as last_update_time."""
        return self.last_update_time if self.lifecycle_stage == "deleted" else None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """An MLflow run as stored: its info, current tags and params (not its metrics)."""

    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str
    deleted_time: int | None
    tags: dict[str, str]
    params: dict[str, str]

    @property
    def parent_run_id(self) -> str | None:
        """The parent run's id, from the ``mlflow.parentRunId`` tag."""
        return self.tags.get(PARENT_RUN_ID_TAG)


class LoggedModel(msgspec.Struct, frozen=True, kw_only=True):
    """An MLflow 3 logged model as stored, with its tags and params (its metrics are
    points of its run's history, with the model's id)."""

    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    creation_time: int
    last_updated_time: int | None
    #: PENDING, READY, FAILED (or UNSPECIFIED)
    status: str
    status_message: str
    model_type: str
    source_run_id: str | None
    lifecycle_stage: str
    tags: dict[str, str]
    params: dict[str, str]


class RunLinks(msgspec.Struct, frozen=True, kw_only=True):
    """What a run used and produced: dataset inputs (with their tags), logged models it
    used, and logged models it produced at a step."""

    datasets: list[DatasetInput] = []
    model_inputs: list[str] = []
    outputs: list[ModelOutput] = []


class ModelVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A version of a registered model as stored; a deleted one has ``current_stage``
    ``Deleted_Internal`` (MLflow keeps its row, with the source and description cleared)."""

    version: int
    creation_time: int | None
    last_updated_time: int | None
    description: str
    user_id: str
    current_stage: str
    source: str
    run_id: str | None
    run_link: str
    model_id: str | None
    status: str
    tags: dict[str, str]

    @property
    def deleted(self) -> bool:
        """Whether MLflow deleted the version (it keeps the row, marked)."""
        return self.current_stage == DELETED_STAGE


class RegisteredModel(msgspec.Struct, frozen=True, kw_only=True):
    """A registered model as stored: tags, aliases (alias -> version), versions by number."""

    name: str
    creation_time: int | None
    last_updated_time: int | None
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    versions: list[ModelVersion]
    workspace: str | None = None


#: The stage MLflow gives a deleted model version.
DELETED_STAGE = "Deleted_Internal"


def model_id_of(source: str) -> str | None:
    """The logged model a version's source names (``models:/m-<hex>[/...]``), as evstore's
    registry reads it."""
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/")[0]
    return None


class ArtifactFile(msgspec.Struct, frozen=True):
    """One artifact file of a run, or a report that it (or the whole location) is missing.

    ``path`` is relative to the run's artifact root, ``/``-separated; it is ``""`` when the
    run's whole artifact location could not be found. ``local_path`` is the absolute path
    of the file to read, or None when missing, with ``missing_reason`` saying why.
    """

    path: str
    local_path: str | None
    missing_reason: str | None = None

    @property
    def missing(self) -> bool:
        """Whether the file (or the location) could not be found."""
        return self.local_path is None


class MlflowSource(ABC):
    """An MLflow tracking store opened for reading."""

    #: The store's location as an absolute URI (``sqlite:////abs/mlflow.db``, ``file:///...``).
    uri: str
    #: The alembic revision of a SQL store, or ``FILE_STORE_REVISION``.
    schema_revision: str

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    @abstractmethod
    def experiments(self) -> Iterator[Experiment]:
        """Every experiment, active and deleted, by id."""

    @abstractmethod
    def runs(self, experiment: Experiment) -> Iterator[Run]:
        """Every run of an experiment, active and deleted, by (start_time, run_id)."""

    @abstractmethod
    def metric_points(self, run: Run) -> Iterator[MetricPoint]:
        """A run's full metric history, streamed, NaN and infinities as stored."""

    def metric_batches(
        self, run: Run, batch_size: int = 10_000
    ) -> Generator[list[MetricPoint], None, None]:
        """A run's metric history in lists of at most ``batch_size`` points, in order."""
        if batch_size < 1:
            raise InvalidParameterValue(f"batch_size must be positive, not {batch_size}")
        points = self.metric_points(run)
        while batch := list(islice(points, batch_size)):
            yield batch

    def artifacts(
        self, run: Run, artifacts_root: str | os.PathLike[str] | None = None
    ) -> Iterator[ArtifactFile]:
        """A run's artifact files by path; missing ones are yielded as missing, never raised.

        ``artifacts_root`` is where the artifacts live now, when the recorded location
        does not exist any more (a store copied off the machine that wrote it). The
        recorded path is then looked up under it by its longest tail that includes the
        run id: ``/srv/mlflow/x/mlartifacts/3/<run>/artifacts`` is found as
        ``ROOT/x/mlartifacts/3/<run>/artifacts``, ``ROOT/mlartifacts/3/<run>/artifacts``
        or ``ROOT/3/<run>/artifacts``, whichever exists first. A run without its own
        directory while its experiment's directory exists logged no artifacts (MLflow
        creates the directory on the first upload); when neither is found, the run is
        reported with one missing record whose path is ``""``.
        """
        root = os.path.abspath(os.fspath(artifacts_root)) if artifacts_root is not None else None
        location = _ArtifactLocation(run.artifact_uri, run.run_id, self._relative_base())
        directory = location.find(root, self._local_artifact_dirs(run))
        if directory is not None:
            yield from _walk_artifacts(directory)
            return
        if location.find_container(root, self._local_experiment_dirs(run)):
            return  # the run never uploaded an artifact
        yield ArtifactFile("", None, location.not_found_reason(root))

    def logged_models(self, experiment: Experiment) -> Iterator[LoggedModel]:
        """An experiment's logged models, deleted ones too, by (creation time, id)."""
        return iter(())

    def run_links(self, run: Run) -> RunLinks:
        """A run's dataset and model inputs and its model outputs."""
        return RunLinks()

    def registered_models(self) -> Iterator[RegisteredModel]:
        """The model registry: every registered model by name, with its versions."""
        return iter(())

    def model_artifacts(
        self, model: LoggedModel, artifacts_root: str | os.PathLike[str] | None = None
    ) -> Iterator[ArtifactFile]:
        """A logged model's artifact files, found as a run's are (``artifacts``); a model
        without files (PENDING, or logged with none) yields nothing."""
        root = os.path.abspath(os.fspath(artifacts_root)) if artifacts_root is not None else None
        location = _ArtifactLocation(model.artifact_location, model.model_id, self._relative_base())
        directory = location.find(root, self._local_model_dirs(model))
        if directory is not None:
            yield from _walk_artifacts(directory)

    def not_imported(self) -> dict[str, int]:
        """Counts of what the source holds that evstore does not import, by kind; kinds
        the source has none of are left out."""
        return {}

    def close(self) -> None:  # a source without resources has nothing to do
        """Release the store (a database connection); the source cannot be used after."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- hooks for the artifact lookup ------------------------------------------------

    def _relative_base(self) -> str:
        """The directory a relative recorded artifact path is taken to be relative to."""
        return os.getcwd()

    def _local_artifact_dirs(self, run: Run) -> Iterable[str]:
        """Store-specific places a run's artifacts may be, tried after the recorded one."""
        return ()

    def _local_experiment_dirs(self, run: Run) -> Iterable[str]:
        """Store-specific places of the directory that holds the run's (its experiment's)."""
        return ()

    def _local_model_dirs(self, model: LoggedModel) -> Iterable[str]:
        """Store-specific places a logged model's artifacts may be."""
        return ()


def open_source(source: str | os.PathLike[str]) -> MlflowSource:
    """Open an MLflow store: an ``mlruns/`` directory, a ``file:`` URI, ``sqlite:///path``
    or ``postgresql://user@host:port/db``."""
    from evstore.importers.mlflow_files import FileStoreSource
    from evstore.importers.mlflow_sql import SqlSource

    text = os.fspath(source)
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme.split("+", 1)[0] in ("postgres", "postgresql"):
        return SqlSource.from_postgres(text)
    if scheme.startswith(("mysql", "mssql")):
        raise InvalidParameterValue(
            f"{scheme} MLflow stores are not supported yet: use postgresql://, sqlite:///path"
            " or an mlruns/ directory"
        )
    if scheme == "sqlite":
        if not text.startswith("sqlite:///") or text == "sqlite:///:memory:":
            raise InvalidParameterValue(
                f"use sqlite:///path/mlflow.db (three slashes), not {text!r}"
            )
        path = text[len("sqlite:///") :]
    elif scheme == "file":
        path = _file_uri_path(text)
    elif "://" in text:
        raise InvalidParameterValue(
            f"unsupported MLflow store URI {text!r}: use an mlruns/ directory, a file: URI, "
            "sqlite:///path/mlflow.db or postgresql://user@host/db"
        )
    else:
        path = text
    if os.path.isdir(path):
        return FileStoreSource(path)
    if os.path.isfile(path):
        if not _is_sqlite_file(path):
            raise StoreFormatError(f"{path} is neither an mlruns/ directory nor an SQLite file")
        return SqlSource.from_sqlite(path)
    raise InvalidParameterValue(f"no MLflow store at {path}: no such file or directory")


def _file_uri_path(uri: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise InvalidParameterValue(f"file: URI on another host is not supported: {uri!r}")
    return urllib.request.url2pathname(parsed.path)


def _is_sqlite_file(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _sqlite_error(path: str, error: sqlite3.Error) -> StoreFormatError:
    """A driver error while opening a store, as evstore's own error naming the file."""
    return StoreFormatError(f"cannot read the MLflow store {path}: {error}")


# --- artifact lookup -----------------------------------------------------------------


class _ArtifactLocation:
    """A recorded artifact URI, and the ways to find it on this machine."""

    def __init__(self, uri: str, run_id: str, relative_base: str) -> None:
        self.uri = uri
        parsed = urllib.parse.urlparse(uri)
        # A one-letter scheme is a Windows drive letter, not a scheme.
        self.scheme = parsed.scheme if len(parsed.scheme) > 1 else ""
        self.local_path: str | None = None
        if not uri:
            path = ""
        elif self.scheme == "":
            self.local_path = os.path.join(relative_base, uri)
            path = uri
        elif self.scheme == "file":
            path = urllib.request.url2pathname(parsed.path)
            if parsed.netloc in ("", "localhost"):
                self.local_path = path
        else:
            path = urllib.parse.unquote(parsed.netloc + "/" + parsed.path.lstrip("/"))
        self.parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
        # The tail that identifies the run must include its id (MLflow writes
        # <experiment location>/<run_id>/artifacts); without it, the last component.
        if run_id in self.parts:
            self.anchor = len(self.parts) - 1 - self.parts[::-1].index(run_id)
        else:
            self.anchor = len(self.parts) - 1

    def find(self, root: str | None, fallbacks: Iterable[str]) -> str | None:
        """The directory holding the run's artifacts on this machine, if found."""
        return _first_dir(self.local_path, root, self.parts, self.anchor, fallbacks)

    def find_container(self, root: str | None, fallbacks: Iterable[str]) -> str | None:
        """The directory that would hold the run's directory (its experiment's), if found."""
        container = self.parts[: self.anchor]
        local = None
        if self.local_path is not None and container:
            local = str(Path(self.local_path).parents[len(self.parts) - self.anchor - 1])
        return _first_dir(local, root, container, len(container) - 1, fallbacks)

    def not_found_reason(self, root: str | None) -> str:
        """Why the run's artifacts are reported missing."""
        if not self.uri:
            return "no artifact location is recorded for the run"
        if self.local_path is None and root is None:
            return (
                f"artifact location {self.uri} is not on this machine: pass artifacts_root "
                "pointing at a local copy"
            )
        where = f" (nor any tail of it under {root})" if root else ""
        return f"artifact location {self.uri} not found{where}"


def _first_dir(
    local_path: str | None,
    root: str | None,
    parts: list[str],
    anchor: int,
    fallbacks: Iterable[str],
) -> str | None:
    if local_path is not None and os.path.isdir(local_path):
        return os.path.abspath(local_path)
    if root is not None and anchor >= 0:
        for start in range(anchor + 1):
            candidate = os.path.join(root, *parts[start:])
            if os.path.isdir(candidate):
                return candidate
    for fallback in fallbacks:
        if os.path.isdir(fallback):
            return os.path.abspath(fallback)
    return None


def _walk_artifacts(directory: str) -> Iterator[ArtifactFile]:
    """Every file under ``directory`` by path; unreadable entries are reported missing."""
    yield from _walk(Path(directory), "", {os.path.realpath(directory)})


def _walk(directory: Path, prefix: str, seen: set[str]) -> Iterator[ArtifactFile]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as e:
        yield ArtifactFile(prefix.rstrip("/"), None, f"cannot list {directory}: {e.strerror}")
        return
    for entry in entries:
        path = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), path + "/", seen)
        elif entry.is_file():
            yield ArtifactFile(path, os.path.abspath(entry.path))
        elif entry.is_dir():  # a symbolic link to a directory: follow it, once
            real = os.path.realpath(entry.path)
            if real in seen:
                yield ArtifactFile(path, None, f"symbolic link loop at {entry.path}")
            else:
                yield from _walk(Path(entry.path), path + "/", seen | {real})
        elif entry.is_symlink():
            yield ArtifactFile(path, None, f"broken symbolic link {entry.path}")
        else:
            yield ArtifactFile(path, None, f"{entry.path} is not a regular file")
