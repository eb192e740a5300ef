"""MLflow's fluent API (``import evstore as mlflow``): module-level runs and logging."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import posixpath
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from evstore import codec, config, system_metrics
from evstore.artifact_logging import LOGGED_ARTIFACTS_TAG, artifact_file_path, dict_text, read_table
from evstore.artifacts import logical_path
from evstore.config import get_tracking_uri, set_tracking_uri  # noqa: F401 - MLflow's names
from evstore.entities import Metric, Param, Run, RunTag, ViewType
from evstore.errors import InvalidParameterValue, InvalidState, ResourceDoesNotExist
from evstore.validation import check_text, shown

_state = threading.local()
_clients: dict[str, Any] = {}
#: MLflow's default of ``search_runs``' max_results (SEARCH_MAX_RESULTS_PANDAS).
SEARCH_MAX_RESULTS_PANDAS = 100_000


def reset() -> None:
    """Forget the tracking URI, the active runs and experiment and the cached clients
    (for tests; a process normally never needs it). Stops any system-metrics sampling."""
    for monitor in getattr(_state, "monitors", {}).values():
        monitor.finish()
    _state.__dict__.clear()
    config.set_tracking_uri(None)
    _clients.clear()


def _client() -> Any:
    uri = config.get_tracking_uri()
    client = _clients.get(uri)
    if client is None:
        from evstore.client import Client

        client = Client(uri)
        _clients[uri] = client
    return client


def _runs() -> list[ActiveRun]:
    stack = getattr(_state, "runs", None)
    if stack is None:
        stack = _state.runs = []
    return stack


class ActiveRun:
    """The run ``start_run`` began; a context manager that ends it by how the block ends."""

    def __init__(self, run: Run) -> None:
        self._run = run

    @property
    def info(self) -> Any:
        """The run's info as it was when started."""
        return self._run.info

    @property
    def data(self) -> Any:
        """The run's data as it was when started."""
        return self._run.data

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self not in _runs():  # already ended inside the block (as MLflow checks)
            return
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        end_run(status)


def set_experiment(experiment_name: str | None = None, experiment_id: str | None = None) -> Any:
    """Make an experiment the active one, creating it by name if missing."""
    client = _client()
    if experiment_id is not None:
        experiment = client.get_experiment(experiment_id)
    elif experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            client.create_experiment(experiment_name)
            experiment = client.get_experiment_by_name(experiment_name)
    else:
        raise InvalidParameterValue("Must specify exactly one of experiment_name or experiment_id")
    if experiment.lifecycle_stage != "active":
        raise InvalidParameterValue(
            f"Cannot set a deleted experiment {experiment.name!r} as the active experiment."
            " You can restore the experiment, or permanently delete it to create a new one."
        )
    _state.experiment_id = experiment.experiment_id
    return experiment


def _experiment_id() -> str:
    explicit = getattr(_state, "experiment_id", None)
    if explicit is not None:
        return explicit
    return os.environ.get("MLFLOW_EXPERIMENT_ID") or os.environ.get("EVSTORE_EXPERIMENT_ID") or "0"


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    log_system_metrics: bool | None = None,
) -> ActiveRun:
    """Start (or resume, with ``run_id``) a run; use it in a ``with`` block.

    ``log_system_metrics``: sample CPU, memory, disk and network as ``system/*`` metrics
    until the run ends (None: as enable/disable_system_metrics_logging chose)."""
    client = _client()
    stack = _runs()
    sample_system = system_metrics.wanted(log_system_metrics)
    if sample_system:
        system_metrics.check_available()  # before the run exists
    if stack and not nested:
        raise InvalidParameterValue(
            f"Run with UUID {stack[-1].info.run_id} is already active. To start a nested run,"
            " call start_run with nested=True"
        )
    if run_id is not None:
        run = client.get_run(run_id)
        if run.info.lifecycle_stage != "active":
            raise InvalidParameterValue(f"Cannot start run with ID {run_id} because it is deleted")
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        active = ActiveRun(client.get_run(run_id))
    else:
        run_tags: dict[str, Any] = {
            "mlflow.user": _user_name(),
            "mlflow.source.name": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "<console>",
            "mlflow.source.type": "LOCAL",
        }
        if parent_run_id:
            _check_parent(client, stack, parent_run_id)
        parent = parent_run_id or (stack[-1].info.run_id if stack and nested else None)
        if parent:
            run_tags["mlflow.parentRunId"] = parent
        if description:
            run_tags["mlflow.note.content"] = description
        run_tags.update(tags or {})
        active = ActiveRun(
            client.create_run(experiment_id or _experiment_id(), tags=run_tags, run_name=run_name)
        )
    stack.append(active)
    if sample_system:
        monitor = system_metrics.SystemMetricsMonitor(client, active.info.run_id,
                                                      resume=run_id is not None)  # fmt: skip
        monitor.start()
        _monitors()[active.info.run_id] = monitor
    return active


def _monitors() -> dict[str, Any]:
    monitors = getattr(_state, "monitors", None)
    if monitors is None:
        monitors = _state.monitors = {}
    return monitors


def _check_parent(client: Any, stack: list[ActiveRun], parent_run_id: str) -> None:
    """MLflow's checks of an explicit parent: the active run if any, existing, not deleted."""
    if stack and parent_run_id != stack[-1].info.run_id:
        raise InvalidParameterValue(
            f"Current run with UUID {stack[-1].info.run_id} does not match the specified"
            f" parent_run_id {parent_run_id}. To start a new nested run under the parent run"
            f" with UUID {stack[-1].info.run_id}, first end the current run before calling"
            " start_run."
        )
    parent = client.get_run(parent_run_id)  # ResourceDoesNotExist: Run with id=... not found
    if parent.info.lifecycle_stage != "active":
        raise InvalidParameterValue(
            f"Cannot start run under parent run with ID {parent_run_id} because it is in the"
            " deleted state."
        )


def active_run() -> ActiveRun | None:
    """The innermost run started here and not yet ended, or None."""
    stack = _runs()
    return stack[-1] if stack else None


def last_active_run() -> Run | None:
    """The run most recently active here."""
    stack = _runs()
    if stack:
        return _client().get_run(stack[-1].info.run_id)
    last = getattr(_state, "last_run_id", None)
    return _client().get_run(last) if last else None


def end_run(status: str = "FINISHED") -> None:
    """End the active run with a status."""
    stack = _runs()
    if not stack:
        return
    run = stack.pop()
    _state.last_run_id = run.info.run_id
    monitor = _monitors().pop(run.info.run_id, None)
    if monitor is not None:  # sampling stops before the run ends (a partial interval is dropped, as MLflow)
        monitor.finish()
    _client().set_terminated(run.info.run_id, status)


def _end_run_at_exit() -> None:
    """As in MLflow: a run still active when the interpreter exits ends FINISHED; nothing
    may fail the exit."""
    with contextlib.suppress(Exception):
        end_run()


atexit.register(_end_run_at_exit)


def _active_id() -> str:
    stack = _runs()
    if stack:
        return stack[-1].info.run_id
    return start_run().info.run_id


def log_param(key: str, value: Any, synchronous: bool | None = None) -> Any:
    """Log a param on the active run."""
    return _client().log_param(_active_id(), key, value)


def log_params(params: dict[str, Any], synchronous: bool | None = None) -> None:
    """Log several params in one write."""
    batch = [Param(k, str(v)) for k, v in _mapping("params", params).items()]
    _client().log_batch(_active_id(), params=batch)


def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    synchronous: bool | None = None,
    timestamp: int | None = None,
    run_id: str | None = None,
    model_id: str | None = None,
    dataset: Any = None,
) -> None:
    """Log a metric point on the active run (``dataset``: an MLflow Dataset, if any)."""
    _client().log_metric(
        run_id or _active_id(), key, value, timestamp, step, None,
        getattr(dataset, "name", None), getattr(dataset, "digest", None), model_id,
    )  # fmt: skip


def log_metrics(
    metrics: dict[str, float],
    step: int | None = None,
    synchronous: bool | None = None,
    run_id: str | None = None,
    timestamp: int | None = None,
    **_context: Any,
) -> None:
    """Log several metrics at one step and time, in one write."""
    ts = codec.now_ms() if timestamp is None else timestamp
    batch = [Metric(k, v, ts, step or 0) for k, v in _mapping("metrics", metrics).items()]
    _client().log_batch(run_id or _active_id(), metrics=batch)


def set_tag(key: str, value: Any, synchronous: bool | None = None) -> None:
    """Set a tag on the active run."""
    _client().set_tag(_active_id(), key, value)


def set_tags(tags: dict[str, Any], synchronous: bool | None = None) -> None:
    """Set several tags in one write."""
    batch = [RunTag(k, str(v)) for k, v in _mapping("tags", tags).items()]
    _client().log_batch(_active_id(), tags=batch)


def _mapping(what: str, value: Any) -> Mapping[str, Any]:
    """A dict argument, or a clear error before any run is started."""
    if not isinstance(value, Mapping):
        raise InvalidParameterValue(f"{what} must be a dict of key to value, not {shown(value)[:200]}")
    return value


def delete_tag(key: str) -> None:
    """Delete a tag from the active run."""
    _client().delete_tag(_active_id(), key)


def log_artifact(local_path: str, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Store a file under the active run's artifacts."""
    _client().log_artifact(run_id or _active_id(), local_path, artifact_path)


def log_artifacts(local_dir: str, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Store a directory's files under the active run's artifacts."""
    _client().log_artifacts(run_id or _active_id(), local_dir, artifact_path)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    """Store a string as an artifact file."""
    check_text("text", text)
    artifact_file_path(artifact_file)  # bad input starts no run
    _client().log_text(run_id or _active_id(), text, artifact_file)


def log_dict(dictionary: dict[str, Any], artifact_file: str, run_id: str | None = None) -> None:
    """Store a dict as a JSON (or YAML, for ``.yml``/``.yaml``) artifact file."""
    log_text(dict_text(dictionary, artifact_file), artifact_file, run_id)


def log_figure(figure: Any, artifact_file: str, *, save_kwargs: dict[str, Any] | None = None) -> None:
    """Store a matplotlib or plotly figure as an artifact file."""
    _client().log_figure(_active_id(), figure, artifact_file, save_kwargs=save_kwargs)


def log_image(
    image: Any,
    artifact_file: str | None = None,
    key: str | None = None,
    step: int | None = None,
    timestamp: int | None = None,
    synchronous: bool | None = False,
) -> None:
    """Store a numpy array or PIL image as a file, or as a step of an image ``key``."""
    _client().log_image(_active_id(), image, artifact_file, key, step, timestamp, synchronous)


def log_table(data: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Store a dict or DataFrame as a table MLflow's client and UI read."""
    _client().log_table(run_id or _active_id(), data, artifact_file)


def log_input(dataset: Any = None, context: str | None = None, tags: dict[str, str] | None = None,
              model: Any = None) -> None:  # fmt: skip
    """Record a dataset (an mlflow ``Dataset``, or one with name, digest, source_type and
    source) the active run used, with its context (training, eval, ...); and/or a logged
    model (``model``: its id or a ``LoggedModelInput``)."""
    from evstore.tracking.inputs import CONTEXT_TAG

    datasets = []
    if dataset is not None:
        entity = getattr(dataset, "_to_mlflow_entity", None)
        found = entity() if callable(entity) else dataset
        if not all(hasattr(found, f) for f in ("name", "digest", "source_type", "source")):
            raise InvalidParameterValue(
                f"log_input takes a dataset with name, digest, source_type and source (an mlflow"
                f" Dataset), not {type(dataset).__name__}; the run is unchanged"
            )
        input_tags = {**_mapping("tags", tags or {}), **({CONTEXT_TAG: context} if context else {})}
        datasets.append({"dataset": {f: getattr(found, f, None) for f in
                                     ("name", "digest", "source_type", "source", "schema", "profile")},
                         "tags": input_tags})  # fmt: skip
    models = [model] if model is not None else []
    _client().log_inputs(_active_id(), datasets, models)


def get_artifact_uri(artifact_path: str | None = None) -> str:
    """The active run's artifact URI, or that of a path under it."""
    root = _client().get_run(_active_id()).info.artifact_uri
    if not artifact_path:
        return str(root)
    return posixpath.join(root, logical_path(artifact_path))


def get_parent_run(run_id: str) -> Run | None:
    """The parent of a nested run, or None."""
    return _client().get_parent_run(run_id)  # type: ignore[no-any-return]


def set_experiment_tag(key: str, value: Any) -> None:
    """Set a tag on the active experiment."""
    _client().set_experiment_tag(_experiment_id(), key, value)


def set_experiment_tags(tags: dict[str, Any]) -> None:
    """Set several tags on the active experiment."""
    for key, value in _mapping("tags", tags).items():
        set_experiment_tag(key, value)


def delete_experiment_tag(key: str) -> None:
    """Delete a tag from the active experiment."""
    _client().delete_experiment_tag(_experiment_id(), key)


def get_run(run_id: str, as_of: Any = None) -> Run:
    """A run by id (``as_of`` a position or datetime reads it back in time)."""
    return _client().get_run(run_id, as_of=as_of) if as_of is not None else _client().get_run(run_id)


def get_experiment(experiment_id: str) -> Any:
    """An experiment by id."""
    return _client().get_experiment(experiment_id)


def get_experiment_by_name(name: str) -> Any:
    """An experiment by name, or None."""
    return _client().get_experiment_by_name(name)


def create_experiment(name: str, artifact_location: str | None = None, tags: dict[str, Any] | None = None) -> str:
    """Create an experiment; returns its id."""
    return _client().create_experiment(name, artifact_location, tags)


def delete_experiment(experiment_id: str) -> None:
    """Mark an experiment deleted."""
    _client().delete_experiment(experiment_id)


def delete_run(run_id: str) -> None:
    """Mark a run deleted."""
    _client().delete_run(run_id)


def restore_run(run_id: str) -> None:
    """Make a deleted run active again."""
    _client().restore_run(run_id)


def restore_experiment(experiment_id: str) -> None:
    """Make a deleted experiment (and its runs) active again."""
    _client().restore_experiment(experiment_id)


def load_table(
    artifact_file: str, run_ids: list[str] | None = None, extra_columns: list[str] | None = None
) -> Any:
    """The tables ``log_table`` stored at ``artifact_file`` in the active experiment's runs
    (or in ``run_ids``), concatenated into one DataFrame."""
    import pandas as pd

    client = _client()
    entry = {"path": artifact_file, "type": "table"}
    frames = []
    for run in search_runs(output_format="list"):
        if run_ids and run.info.run_id not in run_ids:
            continue
        if entry not in json.loads(run.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]")):
            continue
        frame = read_table(client.read_artifact(run.info.run_id, artifact_file), artifact_file)
        for column in extra_columns or []:
            name = f"{column}_" if column in frame else column
            frame[name] = run.info.run_id if column == "run_id" else getattr(run.info, column, None)
        frames.append(frame)
    if not frames:
        raise ResourceDoesNotExist("No runs found with the corresponding table artifact.")
    return pd.concat(frames, ignore_index=True)


def search_experiments(
    view_type: int = ViewType.ACTIVE_ONLY,
    max_results: int | None = None,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
) -> list[Any]:
    """Experiments in a view, newest first."""
    return list(_client().search_experiments(view_type, max_results, filter_string, order_by))


def get_metric_history(run_id: str, key: str) -> list[Metric]:
    """Every point of a metric of a run."""
    return _client().get_metric_history(run_id, key)


def list_artifacts(run_id: str, path: str | None = None) -> list[Any]:
    """Artifact entries of a run under a path."""
    return _client().list_artifacts(run_id, path)


def download_artifacts(run_id: str, artifact_path: str = "", dst_path: str | None = None) -> str:
    """Copy a run's artifact file or directory locally; returns the local path."""
    return _client().download_artifacts(run_id, artifact_path, dst_path)


def search_runs(
    experiment_ids: list[str] | None = None,
    filter_string: str = "",
    run_view_type: int = ViewType.ACTIVE_ONLY,
    max_results: int = SEARCH_MAX_RESULTS_PANDAS,
    order_by: list[str] | None = None,
    output_format: str = "pandas",
    search_all_experiments: bool = False,
    experiment_names: list[str] | None = None,
) -> Any:
    """Runs as MLflow returns them: a pandas DataFrame (MLflow's columns and dtypes),
    ``output_format="list"`` for Run objects, or ``"arrow"`` for a ``pyarrow.Table``."""
    from evstore.export import all_runs, runs_table

    builders: dict[str, Callable[[list[Run]], Any]] = {
        "pandas": _runs_frame, "list": list, "arrow": runs_table,
    }  # fmt: skip
    if output_format not in builders:
        raise InvalidParameterValue(
            f"Unsupported output format: {shown(output_format)}. Supported string values are"
            " 'pandas', 'list' or 'arrow'"
        )
    if max_results is not None and (type(max_results) is not int or max_results < 1):
        raise InvalidParameterValue(  # MLflow's fluent search_runs returns no runs for <= 0
            f"Invalid value {shown(max_results)} for parameter 'max_results': it must be a"
            " positive integer, or None for every run"
        )
    client = _client()
    if experiment_names:
        found = [client.get_experiment_by_name(n) for n in experiment_names]
        experiment_ids = [e.experiment_id for e in found if e is not None]
        if not experiment_ids:  # none of the names exists: no runs, as MLflow
            return builders[output_format]([])
    if not experiment_ids:
        if search_all_experiments:
            experiment_ids = [e.experiment_id for e in client.search_experiments(ViewType.ALL)]
        else:
            experiment_ids = [_experiment_id()]
    runs = all_runs(client, experiment_ids, filter_string, run_view_type, max_results, order_by)
    return builders[output_format](runs)


#: The run info columns of MLflow's search_runs DataFrame, in its order.
FRAME_INFO_COLUMNS = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")


def _runs_frame(runs: list[Run]) -> Any:
    """MLflow's search_runs DataFrame, built through Arrow: FRAME_INFO_COLUMNS (times as UTC
    datetimes), then metrics.* (float, NaN when missing), params.* and tags.* (sorted)."""
    import importlib.util

    import pyarrow as pa

    if importlib.util.find_spec("pandas") is None:
        raise InvalidState(
            "search_runs returns a pandas DataFrame, as MLflow's does: pip install pandas,"
            " or pass output_format='list' (Run objects) or 'arrow' (a pyarrow Table)"
        )
    text, time = pa.string(), pa.timestamp("us", tz="UTC")
    if not runs:  # MLflow's frame of no runs: its info columns, float64
        empty = pa.table({name: pa.array([], pa.float64()) for name in FRAME_INFO_COLUMNS})
        return empty.to_pandas()
    fields = [pa.field(name, time if name.endswith("_time") else text) for name in FRAME_INFO_COLUMNS]
    columns: list[list[Any]] = [
        [_frame_info(r, name) for r in runs] for name in FRAME_INFO_COLUMNS
    ]
    for prefix, kind in (("metrics", pa.float64()), ("params", text), ("tags", text)):
        for key in sorted({k for r in runs for k in getattr(r.data, prefix)}):
            fields.append(pa.field(f"{prefix}.{key}", kind))
            columns.append([getattr(r.data, prefix).get(key) for r in runs])
    return pa.table(columns, schema=pa.schema(fields)).to_pandas()


def _frame_info(run: Run, name: str) -> Any:
    value = getattr(run.info, name)
    return value * 1000 if name.endswith("_time") and value is not None else value


def _user_name() -> str:
    from evstore.stores.base import default_metadata

    return str(default_metadata()["user"])
