"""evstore: experiment tracking as an append-only, versioned, hash-chained event log.

Use it as MLflow: ``import evstore as mlflow``. ``evstore.Client`` mirrors
``MlflowClient``. Importing evstore loads neither pyarrow nor typer nor the server.
"""

from __future__ import annotations

__version__ = "0.1.0"

from evstore import artifacts, exceptions
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
    delete_experiment_tag,
    delete_run,
    delete_tag,
    download_artifacts,
    end_run,
    get_artifact_uri,
    get_experiment,
    get_experiment_by_name,
    get_metric_history,
    get_parent_run,
    get_run,
    get_tracking_uri,
    last_active_run,
    list_artifacts,
    load_table,
    log_artifact,
    log_artifacts,
    log_dict,
    log_figure,
    log_image,
    log_input,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    log_table,
    log_text,
    restore_experiment,
    restore_run,
    search_experiments,
    search_runs,
    set_experiment,
    set_experiment_tag,
    set_experiment_tags,
    set_tag,
    set_tags,
    set_tracking_uri,
    start_run,
)
from evstore.fluent_models import (
    register_model,
    search_logged_models,
    search_model_versions,
    search_registered_models,
)
from evstore.system_metrics import (
    disable_system_metrics_logging,
    enable_system_metrics_logging,
    set_system_metrics_samples_before_logging,
    set_system_metrics_sampling_interval,
)

MlflowClient = Client

__all__ = [
    "ActiveRun", "Client", "ConcurrencyError", "EvstoreError", "Experiment", "FileInfo",
    "FilterParseError", "InvalidParameterValue", "InvalidState", "LifecycleStage", "Metric",
    "MlflowClient", "Param", "ResourceAlreadyExists", "ResourceDoesNotExist", "Run", "RunData",
    "RunInfo", "RunStatus", "RunTag", "StaleProjectionError", "ViewType", "__version__",
    "active_run", "artifacts", "create_experiment", "delete_experiment", "delete_experiment_tag",
    "delete_run", "delete_tag", "disable_system_metrics_logging", "download_artifacts",
    "enable_system_metrics_logging", "end_run", "exceptions", "get_artifact_uri",
    "get_experiment", "get_experiment_by_name", "get_metric_history", "get_parent_run",
    "get_run", "get_tracking_uri", "last_active_run", "list_artifacts", "load_table",
    "log_artifact", "log_artifacts", "log_dict", "log_figure", "log_image", "log_input",
    "log_metric", "log_metrics", "log_param", "log_params", "log_table", "log_text",
    "register_model", "restore_experiment", "restore_run", "search_experiments",
    "search_logged_models", "search_model_versions", "search_registered_models", "search_runs",
    "set_experiment", "set_experiment_tag", "set_experiment_tags",
    "set_system_metrics_samples_before_logging", "set_system_metrics_sampling_interval",
    "set_tag", "set_tags", "set_tracking_uri", "start_run",
]  # fmt: skip
