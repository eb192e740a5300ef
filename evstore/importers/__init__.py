"""Readers that bring other trackers' history into evstore.

``open_source(SOURCE)`` opens an MLflow store (an ``mlruns/`` directory, a ``file:`` URI
or ``sqlite:///path/mlflow.db``) without the ``mlflow`` package and streams it as
neutral records; see ``evstore.importers.mlflow_source``.
"""

from __future__ import annotations

from evstore.importers.mlflow_source import (
    FILE_STORE_REVISION,
    PARENT_RUN_ID_TAG,
    ArtifactFile,
    Experiment,
    LoggedModel,
    MlflowSource,
    ModelVersion,
    RegisteredModel,
    Run,
    RunLinks,
    open_source,
)
from evstore.importers.mlflow_sql import KNOWN_REVISIONS

__all__ = [
    "FILE_STORE_REVISION",
    "KNOWN_REVISIONS",
    "PARENT_RUN_ID_TAG",
    "ArtifactFile",
    "Experiment",
    "LoggedModel",
    "MlflowSource",
    "ModelVersion",
    "RegisteredModel",
    "Run",
    "RunLinks",
    "open_source",
]
