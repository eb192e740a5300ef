"""Content-addressed artifact files: stored once by sha256, checked on the way out; and
``mlflow.artifacts``' readers (``download_artifacts``, ``load_text``, ``load_dict``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from evstore.errors import InvalidParameterValue, InvalidState, ResourceDoesNotExist
from evstore.validation import check_text, shown

_CHUNK = 1 << 20


class ArtifactRepository:
    """Files under ``root/objects/<sha256[:2]>/<sha256>``; runs refer to them by digest."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _object_path(self, sha256: str) -> str:
        return os.path.join(self.root, "objects", sha256[:2], sha256)

    def put_file(self, local_path: str) -> tuple[int, str]:
        """Store a file's bytes; returns (size, sha256). Stored once per content."""
        with open(local_path, "rb") as source:
            return self.put_stream(source)

    def put_stream(self, source: object) -> tuple[int, str]:
        """Store bytes read from a binary file object; returns (size, sha256)."""
        return self._write(source, None)

    def _write(self, source: object, expected: str | None) -> tuple[int, str]:
        """Write ``source`` to a temp file, then rename it into place by its digest (a
        reader never sees half a file); nothing is kept when it is not ``expected``."""
        os.makedirs(os.path.join(self.root, "objects"), exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, temp = tempfile.mkstemp(dir=os.path.join(self.root, "objects"), prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):  # type: ignore[attr-defined]
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            if expected is not None and sha != expected:
                raise InvalidState(f"artifact content {expected} is corrupt: its bytes hash to {sha}")
            final = self._object_path(sha)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(temp, final)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        return size, sha

    def holds(self, sha256: str, size: int) -> bool:
        """Whether the bytes with this digest are stored whole: of this size, and hashing to it."""
        path = self._object_path(sha256)
        try:
            if os.path.getsize(path) != size:
                return False
            with open(path, "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest() == sha256
        except FileNotFoundError:
            return False

    def copy_from(self, other: ArtifactRepository, sha256: str) -> None:
        """Store the bytes ``other`` holds under this digest, checked on the way."""
        path = other._object_path(sha256)
        if not os.path.exists(path):
            raise InvalidState(f"artifact content {sha256} is missing from {other.root}")
        with open(path, "rb") as source:
            self._write(source, sha256)

    def has(self, sha256: str) -> bool:
        """Whether the bytes with this digest are stored."""
        return os.path.exists(self._object_path(sha256))

    def copy_out(self, sha256: str, destination: str) -> str:
        """Copy stored bytes to ``destination``, checking their sha256 on the way."""
        source_path = self._object_path(sha256)
        if not os.path.exists(source_path):
            raise InvalidState(f"artifact content {sha256} is missing from {self.root}")
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        digest = hashlib.sha256()
        with open(source_path, "rb") as source, open(destination, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            os.unlink(destination)
            raise InvalidState(
                f"artifact content {sha256} is corrupt: its bytes hash to {digest.hexdigest()}"
            )
        return destination

    def open_checked(self, sha256: str) -> bytes:
        """The stored bytes, after checking their sha256."""
        path = self._object_path(sha256)
        if not os.path.exists(path):
            raise InvalidState(f"artifact content {sha256} is missing from {self.root}")
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise InvalidState(f"artifact content {sha256} is corrupt")
        return data


def logical_path(path: str) -> str:
    """A run-relative artifact path, refusing absolute paths and '..' segments."""
    check_text("artifact path", path)
    if not path.strip("/"):
        raise InvalidParameterValue(f"invalid artifact path {path!r}")
    if "\\" in path or "\x00" in path or path.startswith("/"):
        raise InvalidParameterValue(f"invalid artifact path {shown(path)}: must be relative")
    parts = path.split("/")
    if any(part in ("..", ".") for part in parts):
        raise InvalidParameterValue(f"invalid artifact path {shown(path)}: '.' and '..' are not allowed")
    return posixpath.normpath(path)



# --- mlflow.artifacts: reading a run's artifacts by URI ------------------------------------


def download_artifacts(
    artifact_uri: str | None = None,
    run_id: str | None = None,
    artifact_path: str | None = None,
    dst_path: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> str:
    """Copy a run's artifact file or directory locally (by ``run_id`` and ``artifact_path``,
    or by an ``artifact_uri`` such as ``runs:/<run_id>/path``); returns the local path."""
    from evstore.client import Client

    if (run_id, artifact_uri).count(None) != 1:
        raise InvalidParameterValue("Exactly one of `run_id` or `artifact_uri` must be specified")
    if artifact_uri is not None and artifact_path is not None:
        raise InvalidParameterValue("`artifact_path` cannot be specified if `artifact_uri` is specified")
    client = Client(tracking_uri)
    if artifact_uri is not None:
        run_id, artifact_path = _run_and_path(client, check_text("artifact URI", artifact_uri))
    if dst_path is not None:
        os.makedirs(dst_path, exist_ok=True)
    assert run_id is not None  # one of the two was given
    return str(client.download_artifacts(run_id, artifact_path or "", dst_path))


def load_text(artifact_uri: str) -> str:
    """The text of an artifact file named by URI."""
    with tempfile.TemporaryDirectory(prefix="evstore-load-") as folder:
        data = Path(download_artifacts(artifact_uri, dst_path=folder)).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterValue(f"The artifact {shown(artifact_uri)} is not UTF-8 text") from None


def load_dict(artifact_uri: str) -> dict[str, Any]:
    """A JSON (or YAML) artifact file named by URI, as a dict."""
    import json

    text = load_text(artifact_uri)
    if artifact_uri.endswith((".yml", ".yaml")):
        import yaml

        return dict(yaml.safe_load(text))
    try:
        return dict(json.loads(text))
    except (ValueError, TypeError):
        raise InvalidParameterValue(f"The artifact {shown(artifact_uri)} is not a JSON object") from None


def _run_and_path(client: Any, uri: str) -> tuple[str, str]:
    """(run id, path) of ``runs:/<run_id>/<path>`` or of a URI under a run's artifact URI."""
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].strip("/").partition("/")
        return run_id, path
    marker = "/artifacts"
    at = uri.find(marker)
    while at != -1:
        end = at + len(marker)
        if end == len(uri) or uri[end] == "/":
            run_id = posixpath.basename(uri[:at])
            with contextlib.suppress(ResourceDoesNotExist, InvalidParameterValue):
                if client.get_run(run_id).info.artifact_uri.rstrip("/") == uri[:end]:
                    return run_id, uri[end:].strip("/")
        at = uri.find(marker, end)
    raise InvalidParameterValue(
        f"Cannot tell which run's artifact {shown(uri)} is: use runs:/<run_id>/<path>"
        " or a URI under a run's artifact_uri"
    )
