"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/...``) over the Client.

URLs name ``<experiment_id>/<run_id>/artifacts/<path>``. Bytes go to the Client's
content-addressed store (``objects/<sha[:2]>/<sha>`` under the artifacts root), so a
logical path never becomes a file path on the server. Paths are still checked strictly,
because the mlflow client turns them into local paths when it downloads: '..', '.',
empty segments, absolute paths, backslashes, NUL and percent-encoded separators are
refused with 400, as is an object directory that is a symlink or leads out of the root.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import posixpath
import re
import tempfile
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from evstore.entities import LifecycleStage
from evstore.errors import InvalidParameterValue, InvalidState, ResourceDoesNotExist
from evstore.server._http import HTTPError, StoreGate, json_response
from evstore.tracking.service import TrackingService as Client

PREFIX = "/api/2.0/mlflow-artifacts/artifacts"
_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"%00")
_SPOOL_IN_MEMORY = 8 << 20
_DRIVE = re.compile(r"^[A-Za-z]:(/|$)")


def check_relative_path(path: str) -> str:
    """A run-relative artifact path, or InvalidParameterValue saying what is wrong with it."""
    forms = [path]
    while len(forms) < 4 and unquote(forms[-1]) != forms[-1]:
        forms.append(unquote(forms[-1]))  # '..' encoded once, twice or thrice is refused too
    for form in forms:
        if "\x00" in form or "\\" in form:
            raise InvalidParameterValue(f"Invalid artifact path {path!r}: NUL and backslash are not allowed")
        if form.startswith("/") or _DRIVE.match(form):
            raise InvalidParameterValue(f"Invalid artifact path {path!r}: must be relative")
        if any(part in ("", ".", "..") for part in form.split("/")):
            raise InvalidParameterValue(
                f"Invalid artifact path {path!r}: '.', '..' and empty segments are not allowed"
            )
    return path


def split_artifact_path(path: str, *, allow_root: bool = False) -> tuple[str, str, str]:
    """(experiment_id, run_id, run-relative path) of ``<exp>/<run>/artifacts[/<path>]``."""
    parts = path.split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts" or not parts[0] or not parts[1]:
        raise InvalidParameterValue(
            f"Invalid artifact path {path!r}: expected <experiment_id>/<run_id>/artifacts/<path>"
        )
    relative = parts[3] if len(parts) == 4 else ""
    if relative or not allow_root:
        check_relative_path(relative)
    for part in parts[:2]:
        check_relative_path(part)
    return parts[0], parts[1], relative


def _raw_path_checked(request: Request) -> None:
    raw = request.scope.get("raw_path") or b""
    if any(marker in raw.lower() for marker in _ENCODED_SEPARATORS):
        raise InvalidParameterValue(
            "Invalid artifact path: percent-encoded '/', '\\' and NUL are not allowed"
        )


def _run_for_artifacts(client: Client, experiment_id: str, run_id: str, *, write: bool) -> None:
    info = client.get_run(run_id).info
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


async def _spool(request: Request, limit: int) -> tuple[Any, str]:
    """The body in a temp file (memory when small) and its sha256, within ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "INVALID_PARAMETER_VALUE", f"Artifact of {declared} bytes exceeds the limit of {limit} bytes.")
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - the caller closes it
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


async def upload(request: Request, client: Client, store: StoreGate, limit: int) -> Response:
    """PUT: store the body as one artifact file of the run."""
    _raw_path_checked(request)
    experiment_id, run_id, relative = split_artifact_path(request.path_params["path"])
    await store.quick(lambda: _run_for_artifacts(client, experiment_id, run_id, write=True))
    spool, sha256 = await _spool(request, limit)
    try:
        check_confined(client.artifact_root, sha256)
        await store.slow(client.record_artifact_bytes, run_id, relative, spool)
    finally:
        spool.close()
    return json_response({})


async def download(request: Request, client: Client, store: StoreGate) -> Response:
    """GET: one artifact file, streamed once its bytes match the sha256 recorded for it."""
    _raw_path_checked(request)
    experiment_id, run_id, relative = split_artifact_path(request.path_params["path"])

    def digest() -> str:
        _run_for_artifacts(client, experiment_id, run_id, write=False)
        return client.artifact_digest(run_id, relative)[1]

    sha256 = await store.quick(digest)
    check_confined(client.artifact_root, sha256)
    path = os.path.join(client.artifact_root, "objects", sha256[:2], sha256)
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


async def list_files(request: Request, client: Client, store: StoreGate) -> Response:
    """GET ?path=<exp>/<run>/artifacts[/dir]: the entries directly under a directory."""
    path = request.query_params.get("path", "")
    experiment_id, run_id, relative = split_artifact_path(path.strip("/"), allow_root=True)

    def listing() -> list[Any]:
        _run_for_artifacts(client, experiment_id, run_id, write=False)
        return client.list_artifacts(run_id, relative or None)

    files = []
    for info in await store.quick(listing):
        entry: dict[str, Any] = {"path": posixpath.basename(info.path), "is_dir": info.is_dir}
        if info.file_size is not None:
            entry["file_size"] = info.file_size
        files.append(entry)
    return json_response({"files": files})
