"""The HTTP transport: the tracking service's methods over the REST API of ``evstore server``.

``evstore.Client`` uses it for an ``http(s)://`` tracking URI. It holds no rules: each call
is encoded as MLflow's REST request, the server's tracking service decides, and the answer
is decoded by ``evstore.tracking.wire`` (logged models, inputs and the registry:
``evstore.tracking.http_models``; stdlib ``http.client``, one keep-alive connection
per thread). A server error comes back as the matching ``EvstoreError``. Bearer token:
``EVSTORE_SERVER_TOKEN`` or ``MLFLOW_TRACKING_TOKEN``.
"""

from __future__ import annotations

import http.client
import os
import posixpath
import tempfile
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from evstore import codec
from evstore.entities import (
    Experiment,
    FileInfo,
    Metric,
    PagedList,
    Param,
    Run,
    RunInfo,
    RunTag,
    ViewType,
)  # fmt: skip
from evstore.errors import (
    InvalidParameterValue,
    ResourceDoesNotExist,
    StoreError,
)  # fmt: skip
from evstore.inspect import json_number
from evstore.tracking import wire
from evstore.tracking.http_models import HttpModelsMixin
from evstore.validation import check_int64, validate_metric

_API = "/api/2.0/mlflow/"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
_VIEW_NAMES = {code: name for name, code in ViewType.CODES.items()}


def _plain(value: Any) -> Any:
    """JSON for what msgspec does not encode itself: str subclasses such as numpy.str_."""
    if isinstance(value, str):
        return str(value)
    raise InvalidParameterValue(f"cannot send a {type(value).__name__} to the server: {value!r}")
def _context(model_id: str | None, dataset_name: str | None, dataset_digest: str | None) -> dict[str, str]:
    """MLflow 3's optional metric context, as the REST API names it (only the fields set)."""
    found = {"model_id": model_id, "dataset_name": dataset_name, "dataset_digest": dataset_digest}
    return {k: v for k, v in found.items() if v is not None}


class ServerLog:
    """The little a remote client can ask of the server's log: its head position."""

    def __init__(self, client: HttpTransport) -> None:
        self._client = client

    def head_position(self) -> int:
        """The position of the newest event on the server."""
        info = msgspec.json.decode(self._client._request("GET", "/api/evstore/info"))
        return int(info["head_position"])


class HttpTransport(HttpModelsMixin):
    """The tracking service of a server at ``http(s)://host:port``, over HTTP."""

    def __init__(self, tracking_uri: str, token: str | None = None) -> None:
        parts = urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterValue(f"not an http(s) tracking URI: {tracking_uri!r}")
        self.tracking_uri = tracking_uri.rstrip("/")
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self._token = token or os.environ.get("EVSTORE_SERVER_TOKEN") or os.environ.get(
            "MLFLOW_TRACKING_TOKEN"
        )
        self._local = threading.local()
        self.store = ServerLog(self)

    # --- transport ------------------------------------------------------------------

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None or fresh:
            if connection is not None:
                connection.close()
            kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            connection = kind(self._parts.hostname, self._parts.port, timeout=120)  # type: ignore[arg-type]
            self._local.connection = connection
        return connection

    def close(self) -> None:
        """Close this thread's connection to the server."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _request(
        self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
        content_type: str = "application/json", idempotency_key: str | None = None,
    ) -> bytes:  # fmt: skip
        target = quote(self._prefix + path, safe="/:")
        if query:
            target += "?" + urlencode(query, doseq=True)
        headers = {"Content-Type": content_type} if body is not None else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        for attempt in range(2):
            connection = self._connection(fresh=attempt > 0)
            try:
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed: resend once on a fresh one.
                if attempt or (hasattr(body, "seek") and not _rewind(body)):
                    raise StoreError(f"{method} {target} failed: {e}") from e
            except OSError as e:
                raise StoreError(f"{self.tracking_uri} is unreachable: {e}") from e
        if response.status >= 400:
            raise wire.error_from(response.status, data)
        return data

    def _call(
        self, method: str, endpoint: str, payload: dict[str, Any] | None = None, key: str | None = None
    ) -> Any:
        if method == "GET":
            data = self._request("GET", _API + endpoint, query=payload)
        else:
            body = msgspec.json.encode(payload or {}, enc_hook=_plain)
            data = self._request(method, _API + endpoint, body=body, idempotency_key=key)
        return msgspec.json.decode(data) if data else {}

    # --- experiments ----------------------------------------------------------------

    def create_experiment(self, name: str, artifact_location: str | None = None, tags: dict[str, Any] | None = None) -> str:
        """Create an experiment; returns its id."""
        payload: dict[str, Any] = {"name": name, "tags": wire.pairs(tags)}
        if artifact_location:
            payload["artifact_location"] = artifact_location
        return str(self._call("POST", "experiments/create", payload)["experiment_id"])

    def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment; raises ResourceDoesNotExist when there is none."""
        return wire.experiment_from(self._call("GET", "experiments/get", {"experiment_id": str(experiment_id)})["experiment"])

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """One experiment by name, or None."""
        try:
            found = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
        except ResourceDoesNotExist:
            return None
        return wire.experiment_from(found["experiment"])

    def search_experiments(
        self, view_type: int = ViewType.ACTIVE_ONLY, max_results: int | None = None,
        filter_string: str | None = None, order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Experiments in a view; pages through the server when ``max_results`` is None."""
        if isinstance(view_type, str):  # the names, as the local Client takes them too
            view_type = ViewType.CODES.get(view_type.upper(), view_type)
        if isinstance(view_type, bool) or view_type not in _VIEW_NAMES:
            raise InvalidParameterValue(
                "view_type must be ACTIVE_ONLY, DELETED_ONLY or ALL (or 1, 2, 3),"
                f" not {view_type!r}"
            )
        payload: dict[str, Any] = {"view_type": _VIEW_NAMES[view_type], "order_by": order_by or []}
        if filter_string:
            payload["filter"] = filter_string
        found: list[Experiment] = []
        while True:
            payload["max_results"] = min(max_results - len(found), 50000) if max_results else 50000
            if page_token:
                payload["page_token"] = page_token
            page = self._call("POST", "experiments/search", payload)
            found += [wire.experiment_from(e) for e in page.get("experiments", [])]
            page_token = page.get("next_page_token")
            if not page_token or max_results is not None:
                return PagedList(found, page_token)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Give an experiment a new, unused name."""
        self._call("POST", "experiments/update", {"experiment_id": str(experiment_id), "new_name": new_name})

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark an experiment deleted."""
        self._call("POST", "experiments/delete", {"experiment_id": str(experiment_id)})

    def restore_experiment(self, experiment_id: str) -> None:
        """Make a deleted experiment active again."""
        self._call("POST", "experiments/restore", {"experiment_id": str(experiment_id)})

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        """Set a tag on an experiment."""
        payload = {"experiment_id": str(experiment_id), "key": key, "value": str(value)}
        self._call("POST", "experiments/set-experiment-tag", payload)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Delete a tag of an experiment."""
        payload = {"experiment_id": str(experiment_id), "key": key}
        self._call("POST", "experiments/delete-experiment-tag", payload)

    # --- runs -----------------------------------------------------------------------

    def create_run(
        self, experiment_id: str, start_time: int | None = None,
        tags: dict[str, Any] | Iterable[RunTag] | None = None, run_name: str | None = None,
        *, run_id: str | None = None, user_id: str | None = None,
    ) -> Run:  # fmt: skip
        """Start a run in an experiment; returns it."""
        if run_id is not None:
            raise InvalidParameterValue("a server chooses run ids: create_run(run_id=...) is local only")
        payload: dict[str, Any] = {
            "experiment_id": str(experiment_id), "tags": wire.pairs(tags),
            "start_time": codec.now_ms() if start_time is None else check_int64(
                "start_time", start_time),
        }  # fmt: skip
        if run_name:
            payload["run_name"] = run_name
        if user_id:
            payload["user_id"] = user_id
        return wire.run_from(self._call("POST", "runs/create", payload)["run"])

    def get_run(self, run_id: str, as_of: int | datetime | None = None) -> Run:
        """A run with its params, latest metrics and tags (``as_of`` is local only)."""
        if as_of is not None:
            raise InvalidParameterValue("get_run(as_of=...) reads the log; use a local store")
        return wire.run_from(self._call("GET", "runs/get", {"run_id": run_id})["run"])

    def update_run(
        self, run_id: str, status: str | None = None, name: str | None = None,
        end_time: int | None = None, *, idempotency_key: str | None = None,
    ) -> RunInfo:  # fmt: skip
        """Change a run's status and/or name; returns the run's info."""
        payload: dict[str, Any] = {"run_id": run_id}
        for field, value in (("status", status), ("run_name", name), ("end_time", end_time)):
            if value is not None:
                payload[field] = value
        return wire.run_info_from(
            self._call("POST", "runs/update", payload, idempotency_key)["run_info"])

    def set_terminated(
        self, run_id: str, status: str | None = None, end_time: int | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """End a run with a status (FINISHED by default) and an end time."""
        end = codec.now_ms() if end_time is None else end_time
        self.update_run(run_id, status or "FINISHED", end_time=end, idempotency_key=idempotency_key)

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted."""
        self._call("POST", "runs/delete", {"run_id": run_id})

    def restore_run(self, run_id: str) -> None:
        """Make a deleted run active again."""
        self._call("POST", "runs/restore", {"run_id": run_id})

    # --- logging --------------------------------------------------------------------

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        """Log one param."""
        self._call("POST", "runs/log-parameter", {"run_id": run_id, "key": key, "value": str(value)})
        return value

    def log_metric(
        self, run_id: str, key: str, value: float, timestamp: int | None = None,
        step: int | None = None, synchronous: bool | None = None, dataset_name: str | None = None,
        dataset_digest: str | None = None, model_id: str | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Log one metric point; a retry (same body, or same ``idempotency_key``) is stored once."""
        key, value, timestamp, step = validate_metric(
            key, value, codec.now_ms() if timestamp is None else timestamp, step or 0
        )  # the local Client's checks, so both refuse the same Python values alike
        payload = {"run_id": run_id, "key": key, "value": json_number(value), "timestamp": timestamp,
                   "step": step, **_context(model_id, dataset_name, dataset_digest)}  # fmt: skip
        self._call("POST", "runs/log-metric", payload, idempotency_key)

    def log_batch(
        self, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (), synchronous: bool | None = None, *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Log metrics, params and tags in one atomic write."""
        # The local Client's checks and conversions (True -> 1.0, numpy ints -> int), so
        # both accept the same Python values and the body is plain JSON.
        checked = [validate_metric(m.key, m.value, m.timestamp, m.step) for m in metrics]
        payload = {
            "run_id": run_id,
            "metrics": [
                {
                    "key": key,
                    "value": json_number(value),
                    "timestamp": timestamp,
                    "step": step,
                    **_context(m.model_id, m.dataset_name, m.dataset_digest),
                }
                for m, (key, value, timestamp, step) in zip(metrics, checked)
            ],
            "params": wire.pairs(params),
            "tags": wire.pairs(tags),
        }
        self._call("POST", "runs/log-batch", payload, idempotency_key)

    def set_tag(
        self, run_id: str, key: str, value: Any, synchronous: bool | None = None,
        *, idempotency_key: str | None = None,
    ) -> None:  # fmt: skip
        """Set one tag on a run."""
        payload = {"run_id": run_id, "key": key, "value": str(value)}
        self._call("POST", "runs/set-tag", payload, idempotency_key)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Delete a tag from a run."""
        self._call("POST", "runs/delete-tag", {"run_id": run_id, "key": key})

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of a metric, in the order logged (all pages)."""
        points: list[Metric] = []
        query: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        while True:
            page = self._call("GET", "metrics/get-history", query)
            points += [
                wire.metric_from(m)
                for m in page.get("metrics", [])
            ]
            if not page.get("next_page_token"):
                return points
            query["page_token"] = page["next_page_token"]

    def search_runs(
        self, experiment_ids: str | list[str], filter_string: str = "",
        run_view_type: int = ViewType.ACTIVE_ONLY, max_results: int = 1000,
        order_by: list[str] | None = None, page_token: str | None = None,
    ) -> PagedList:  # fmt: skip
        """Runs matching MLflow's filter grammar, ordered, one page."""
        ids = [experiment_ids] if isinstance(experiment_ids, str) else [str(e) for e in experiment_ids]
        payload: dict[str, Any] = {
            "experiment_ids": ids, "filter": filter_string or "", "max_results": max_results,
            "run_view_type": _VIEW_NAMES[run_view_type], "order_by": order_by or [],
        }  # fmt: skip
        if page_token:
            payload["page_token"] = page_token
        page = self._call("POST", "runs/search", payload)
        return PagedList([wire.run_from(r) for r in page.get("runs", [])], page.get("next_page_token"))

    # --- artifacts ------------------------------------------------------------------

    def _artifact_root(self, run_id: str) -> str:
        info = self.get_run(run_id).info
        return f"{info.experiment_id}/{info.run_id}/artifacts"

    def record_artifact_bytes(self, run_id: str, path: str, source: Any) -> None:
        """Upload bytes from a binary file object as one artifact file."""
        target = f"{_ARTIFACTS}/{self._artifact_root(run_id)}/{path}"
        self._request("PUT", target, body=source, content_type="application/octet-stream")

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Upload one file (or a directory's files) under the run's artifacts."""
        if os.path.isdir(local_path):
            name = posixpath.join(artifact_path or "", os.path.basename(local_path))
            return self.log_artifacts(run_id, local_path, name)
        if not os.path.isfile(local_path):
            raise InvalidParameterValue(f"No such file to log as an artifact: {local_path}")
        with open(local_path, "rb") as source:
            name = os.path.basename(local_path)
            self.record_artifact_bytes(run_id, posixpath.join(artifact_path or "", name).strip("/"), source)
        return None

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        """Upload every file under a directory, keeping its layout."""
        if not os.path.isdir(local_dir):
            raise InvalidParameterValue(f"No such directory to log as artifacts: {local_dir}")
        for root, _dirs, names in os.walk(local_dir):
            for name in sorted(names):
                relative = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
                with open(os.path.join(root, name), "rb") as source:
                    target = posixpath.join(artifact_path or "", relative).strip("/")
                    self.record_artifact_bytes(run_id, target, source)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """Files and directories directly under ``path`` in a run's artifacts."""
        root = self._artifact_root(run_id)
        query = {"path": posixpath.join(root, path) if path else root}
        found = msgspec.json.decode(self._request("GET", _ARTIFACTS, query=query)).get("files", [])
        return [
            FileInfo(posixpath.join(path, f["path"]) if path else f["path"], f["is_dir"],
                     f.get("file_size", None if f["is_dir"] else 0))  # an empty file: size omitted
            for f in found
        ]

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file (the server checks their sha256)."""
        return self._request("GET", f"{_ARTIFACTS}/{self._artifact_root(run_id)}/{path}")

    def download_artifacts(self, run_id: str, path: str = "", dst_path: str | None = None) -> str:
        """Copy a file or directory of a run's artifacts locally; returns the local path."""
        dst = dst_path or tempfile.mkdtemp(prefix="evstore-artifacts-")
        path = path.strip("/")
        entries = self.list_artifacts(run_id, path or None)
        if not entries:
            target = os.path.join(dst, path)
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            with open(target, "wb") as out:
                out.write(self.read_artifact(run_id, path))
            return target
        for entry in entries:
            self.download_artifacts(run_id, entry.path, dst)
        return os.path.join(dst, path) if path else dst


def _rewind(body: Any) -> bool:
    try:
        body.seek(0)
    except (OSError, ValueError):
        return False
    return True
