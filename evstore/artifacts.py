"""Content-addressed artifact files: stored once by sha256, checked on the way out."""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile

from evstore.errors import InvalidParameterValue, InvalidState
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
            final = self._object_path(sha)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(temp, final)  # atomic: a reader never sees half a file
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        return size, sha

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

