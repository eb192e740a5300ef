"""evstore: experiment tracking as an append-only, versioned, hash-chained event log.

Use it as MLflow: ``import evstore as mlflow``. ``evstore.Client`` mirrors
``MlflowClient``. Importing evstore loads neither pyarrow nor typer nor the server.
"""

from __future__ import annotations

__version__ = "0.1.0"

from evstore.client import Client
from evstore.entities import (
    Experiment,
    FileInfo,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    RunTag,
    ViewType,
)
from evstore.errors import (
    ConcurrencyError,
    EvstoreError,
    FilterParseError,
    InvalidParameterValue,
    InvalidState,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    StaleProjectionError,
)
from evstore.fluent import (
    ActiveRun,
    active_run,
    create_experiment,
    delete_experiment,
    delete_run,
    delete_tag,
    download_artifacts,
    end_run,
    get_experiment,
    get_experiment_by_name,
    get_metric_history,
    get_run,
    get_tracking_uri,
    last_active_run,
    list_artifacts,
    log_artifact,
    log_artifacts,
    log_dict,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    log_text,
    search_experiments,
    search_runs,
    set_experiment,
    set_tag,
    set_tags,
    set_tracking_uri,
    start_run,
)

MlflowClient = Client

__all__ = [
    "ActiveRun", "Client", "ConcurrencyError", "EvstoreError", "Experiment", "FileInfo",
    "FilterParseError", "InvalidParameterValue", "InvalidState", "LifecycleStage", "Metric",
    "MlflowClient", "Param", "ResourceAlreadyExists", "ResourceDoesNotExist", "Run", "RunData",
    "RunInfo", "RunStatus", "RunTag", "StaleProjectionError", "ViewType", "__version__",
    "active_run", "create_experiment", "delete_experiment", "delete_run", "delete_tag",
    "download_artifacts", "end_run", "get_experiment", "get_experiment_by_name",
    "get_metric_history", "get_run", "get_tracking_uri", "last_active_run", "list_artifacts",
    "log_artifact", "log_artifacts", "log_dict", "log_metric", "log_metrics", "log_param",
    "log_params", "log_text", "search_experiments", "search_runs", "set_experiment", "set_tag",
    "set_tags", "set_tracking_uri", "start_run",
]  # fmt: skip
