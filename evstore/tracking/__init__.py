"""The tracking API: one service that owns every rule, under two transports.

- ``service``: ``TrackingService``, MlflowClient's methods over a local store.
- ``http``: ``HttpTransport``, the same methods over an ``evstore server``.
- ``wire``: MLflow's JSON in both directions.

``evstore.Client`` (alias ``MlflowClient``) picks the transport from the tracking URI.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # MLflow's ``mlflow.tracking.MlflowClient``; imported on first use, since
    # evstore.client imports this package.
    if name in ("Client", "MlflowClient"):
        from evstore.client import Client

        return Client
    raise AttributeError(f"module 'evstore.tracking' has no attribute {name!r}")
