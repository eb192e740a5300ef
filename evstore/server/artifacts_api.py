"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/...``) over the tracking service.

URLs name ``<experiment_id>/<run_id>/artifacts/<path>``. Bytes go to the service's
content-addressed store (``objects/<sha[:2]>/<sha>`` under the artifacts root), so a
logical path never becomes a file path on the server. Paths are still checked strictly,
because the mlflow client turns them into local paths when it downloads: what
``evstore.validation.check_artifact_path`` refuses ('..', '.', empty segments, absolute
paths, backslashes, NUL, '#', overlong names) and percent-encoded separators are refused
with 400, as is an object directory that is a symlink or leads out of the root.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import posixpath
import tempfile
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from evstore.entities import LifecycleStage
from evstore.errors import InvalidParameterValue, InvalidState, ResourceDoesNotExist
from evstore.server._http import HTTPError, StoreGate, json_response
from evstore.tracking.service import TrackingService
from evstore.validation import check_artifact_path

PREFIX = "/api/2.0/mlflow-artifacts/artifacts"
_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"%00")
_SPOOL_IN_MEMORY = 8 << 20
UPLOAD_DIRECTORY = ".uploads"
UPLOAD_PREFIX = "evstore-upload-"
STALE_INCOMING_SECONDS = 3600


MODELS = "models"


def split_artifact_path(path: str, *, allow_root: bool = False) -> tuple[str, str, str]:
    """(experiment_id, owner, relative path) of ``<exp>/<run>/artifacts[/<path>]``, or of
    ``<exp>/models/<model_id>/artifacts[/<path>]`` (a logged model's: its owner is
    ``models/<model_id>``, which no run id can be, since a run id holds no '/')."""
    if path.split("/", 2)[1:2] == [MODELS]:
        experiment_id, _models, rest = path.split("/", 2)
        _, model_id, relative = split_artifact_path(f"{experiment_id}/{rest}", allow_root=allow_root)
        if not model_id.startswith("m-"):
            raise InvalidParameterValue(f"Invalid logged model id {model_id!r} in artifact path {path!r}")
        return experiment_id, f"{MODELS}/{model_id}", relative
    parts = path.split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts" or not parts[0] or not parts[1]:
        raise InvalidParameterValue(
            f"Invalid artifact path {path!r}: expected <experiment_id>/<run_id>/artifacts/<path>"
        )
    relative = parts[3] if len(parts) == 4 else ""
    if relative or not allow_root:
        check_artifact_path(relative)
    for part in parts[:2]:
        check_artifact_path(part)
    return parts[0], parts[1], relative


def logged_model_of(owner: str) -> str | None:
    """The model id of a logged model's owner (``models/<model_id>``); None for a run."""
    return owner.removeprefix(f"{MODELS}/") if owner.startswith(f"{MODELS}/") else None


def _raw_path_checked(request: Request) -> None:
    raw = request.scope.get("raw_path") or b""
    if any(marker in raw.lower() for marker in _ENCODED_SEPARATORS):
        raise InvalidParameterValue(
            "Invalid artifact path: percent-encoded '/', '\\' and NUL are not allowed"
        )


def _run_for_artifacts(service: TrackingService, experiment_id: str, run_id: str, *, write: bool) -> None:
    model_id = logged_model_of(run_id)
    if model_id is not None:
        if service.get_logged_model(model_id).experiment_id != experiment_id:
            raise ResourceDoesNotExist(f"Logged model {model_id} is not in experiment {experiment_id}")
        return
    info = service.get_run(run_id).info
    if info.experiment_id != experiment_id:
        raise ResourceDoesNotExist(f"Run {run_id} is not in experiment {experiment_id}")
    if write and info.lifecycle_stage != LifecycleStage.ACTIVE:
        raise InvalidParameterValue(  # as the tracking service answers any write to it
            f"The run {run_id} must be in the 'active' state. Current state is {info.lifecycle_stage}."
        )


def check_confined(root: str, sha256: str) -> None:
    """Refuse when the object's directories are symlinks or resolve outside ``root``."""
    base = os.path.realpath(root)
    objects = os.path.join(root, "objects")
    for candidate in (objects, os.path.join(objects, sha256[:2]), os.path.join(objects, sha256[:2], sha256)):
        if not os.path.lexists(candidate):
            break
        inside = os.path.realpath(candidate).startswith(base + os.sep)
        if os.path.islink(candidate) or not inside:
            raise InvalidParameterValue(
                f"Refusing artifact storage through a symlink or outside the root: {candidate}"
            )


def remove_stray_uploads(root: str, now: float | None = None) -> list[str]:
    """Delete what killed uploads left under ``root``; returns the paths removed.

    Spool files (``.uploads/evstore-upload-<pid>-*``) of processes that are gone, and the
    repository's ``objects/.incoming-*`` temp files untouched for an hour (a live writer
    keeps its file's mtime fresh; another process may be writing one right now).
    """
    removed = []
    now = time.time() if now is None else now
    for directory, prefix in ((os.path.join(root, UPLOAD_DIRECTORY), UPLOAD_PREFIX),
                              (os.path.join(root, "objects"), ".incoming-")):  # fmt: skip
        try:
            names = [n for n in os.listdir(directory) if n.startswith(prefix)]
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            try:
                if _is_stray(name, prefix, path, now):
                    os.unlink(path)
                    removed.append(path)
            except OSError:  # gone already, or not ours to delete
                continue
    return removed


def _is_stray(name: str, prefix: str, path: str, now: float) -> bool:
    if prefix != UPLOAD_PREFIX:
        return now - os.lstat(path).st_mtime > STALE_INCOMING_SECONDS
    pid = name[len(prefix):].partition("-")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


async def _spool(request: Request, limit: int, root: str) -> tuple[Any, str]:
    """The body in a temp file (memory when small) and its sha256, within ``limit``.

    On disk it is ``<root>/.uploads/evstore-upload-<pid>-*``: on Linux an unnamed file
    (O_TMPFILE), elsewhere named and unlinked at once, and any a crash leaves is
    removed by :func:`remove_stray_uploads` when a server starts.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "INVALID_PARAMETER_VALUE", f"Artifact of {declared} bytes exceeds the limit of {limit} bytes.")
    directory = os.path.join(root, UPLOAD_DIRECTORY)
    os.makedirs(directory, exist_ok=True)
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - the caller closes it
        max_size=_SPOOL_IN_MEMORY, prefix=f"{UPLOAD_PREFIX}{os.getpid()}-", dir=directory
    )
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "INVALID_PARAMETER_VALUE", f"Artifact exceeds the limit of {limit} bytes.")
            digest.update(chunk)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, digest.hexdigest()


async def upload(request: Request, service: TrackingService, store: StoreGate, limit: int) -> Response:
    """PUT: store the body as one artifact file of the run."""
    _raw_path_checked(request)
    experiment_id, run_id, relative = split_artifact_path(request.path_params["path"])
    await store.quick(lambda: _run_for_artifacts(service, experiment_id, run_id, write=True))
    spool, sha256 = await _spool(request, limit, service.artifact_root)
    try:
        check_confined(service.artifact_root, sha256)
        model_id = logged_model_of(run_id)
        if model_id is not None:
            await store.slow(service.record_model_artifact_bytes, model_id, relative, spool)
        else:
            await store.slow(service.record_artifact_bytes, run_id, relative, spool)
    finally:
        spool.close()
    return json_response({})


async def download(request: Request, service: TrackingService, store: StoreGate) -> Response:
    """GET: one artifact file, streamed once its bytes match the sha256 recorded for it."""
    _raw_path_checked(request)
    experiment_id, run_id, relative = split_artifact_path(request.path_params["path"])

    def digest() -> str:
        _run_for_artifacts(service, experiment_id, run_id, write=False)
        if (model_id := logged_model_of(run_id)) is not None:
            return service.model_artifact_digest(model_id, relative)[1]
        return service.artifact_digest(run_id, relative)[1]

    sha256 = await store.quick(digest)
    check_confined(service.artifact_root, sha256)
    path = os.path.join(service.artifact_root, "objects", sha256[:2], sha256)
    # Hashed in a worker thread, outside the gate (no database involved), then streamed.
    if await run_in_threadpool(_file_sha256, path) != sha256:
        raise InvalidState(f"artifact {relative!r} of run {run_id} is corrupt: its bytes do not match")
    media_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)


def _file_sha256(path: str) -> str | None:
    """The sha256 of a file's bytes, or None when it is missing."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


async def list_files(request: Request, service: TrackingService, store: StoreGate) -> Response:
    """GET ?path=<exp>/<run>/artifacts[/dir]: the entries directly under a directory."""
    path = request.query_params.get("path", "")
    experiment_id, run_id, relative = split_artifact_path(path.strip("/"), allow_root=True)

    def listing() -> list[Any]:
        _run_for_artifacts(service, experiment_id, run_id, write=False)
        if (model_id := logged_model_of(run_id)) is not None:
            return service.list_model_artifacts(model_id, relative or None)
        return service.list_artifacts(run_id, relative or None)

    files = []
    for info in await store.quick(listing):
        entry: dict[str, Any] = {"path": posixpath.basename(info.path), "is_dir": info.is_dir}
        if info.file_size:  # MLflow omits the size of an empty file, as protobuf omits a 0
            entry["file_size"] = info.file_size
        files.append(entry)
    return json_response({"files": files})
