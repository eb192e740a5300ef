"""Artifacts in the UI: a preview as JSON (text, JSON, YAML, tables, images) or the file.

``?path=<p>&as=preview`` answers what the page draws; ``as=download`` the bytes as an
attachment; ``as=image`` the bytes of a raster image for an ``<img>``. Bytes are checked
against their recorded sha256 before any is sent. Nothing is ever served as HTML or SVG
inline: a logged page or drawing cannot run script on the UI's origin.
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import os
import posixpath
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from evstore.errors import InvalidParameterValue, InvalidState, ResourceDoesNotExist
from evstore.server._http import json_response

#: Bytes of a file read for a preview; past it the preview says it is cut.
PREVIEW_BYTES = 1 << 20
TABLE_ROWS = 500
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}  # fmt: skip
TEXT_SUFFIXES = frozenset({".txt", ".log", ".md", ".py", ".cfg", ".ini", ".toml", ".sh", ".rst",
                           ".html", ".htm", ".xml", ".svg", ".js", ".css", ".r", ".sql", ".ipynb",
                           ".requirements", ""})  # fmt: skip
YAML_NAMES = frozenset({"MLmodel", "MLproject"})


def kind_of(path: str) -> str:
    """How a file is previewed: image, json, yaml, table, text or binary (by its name)."""
    name = posixpath.basename(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_TYPES:
        return "image"
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml") or name in YAML_NAMES:
        return "yaml"
    if suffix in (".csv", ".tsv"):
        return "table"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return "binary"


def preview(path: str, data: bytes, size: int) -> dict[str, Any]:
    """What the page shows of a file of ``size`` bytes whose first bytes are ``data``."""
    kind = kind_of(path)
    cut = size > len(data)
    out: dict[str, Any] = {"path": path, "size": size, "kind": kind, "cut": cut}
    if kind in ("image", "binary"):
        return out
    text = data.decode("utf-8", "replace")
    if kind == "json" and not cut:
        try:
            parsed = json.loads(text)
        except ValueError:
            out["kind"] = "text"
        else:
            if isinstance(parsed, dict) and isinstance(parsed.get("columns"), list) and isinstance(
                parsed.get("data"), list
            ):  # mlflow.log_table's layout
                out.update(kind="table", columns=[str(c) for c in parsed["columns"]],
                           rows=[_row(r) for r in parsed["data"][:TABLE_ROWS]],
                           total_rows=len(parsed["data"]))  # fmt: skip
                return out
            text = json.dumps(parsed, indent=2, ensure_ascii=False)
    if kind == "table":
        dialect = "excel-tab" if path.lower().endswith(".tsv") else "excel"
        rows = list(csv.reader(io.StringIO(text), dialect=dialect))
        if rows:
            out.update(columns=rows[0], rows=rows[1 : TABLE_ROWS + 1], total_rows=len(rows) - 1)
            return out
        out["kind"] = "text"
    out["text"] = text
    return out


def _head(file: str) -> bytes:
    with open(file, "rb") as source:
        return source.read(PREVIEW_BYTES)


def _row(row: Any) -> list[str]:
    cells = row if isinstance(row, list) else [row]
    return [c if isinstance(c, str) else json.dumps(c) for c in cells]


async def serve(request: Request, service: Any, gate: Any) -> Response:
    """One artifact of a run as a preview, an image or a download."""
    from evstore.server.artifacts_api import _file_sha256, check_confined
    from evstore.server.ui.api import as_of_position, parse_as_of
    from evstore.server.ui.queries import artifacts_as_of

    run_id = request.path_params["run_id"]
    path = request.query_params.get("path") or ""
    wanted = request.query_params.get("as") or "preview"
    if wanted not in ("preview", "download", "image"):
        raise InvalidParameterValue(f"as must be preview, download or image, got {wanted!r}")
    as_of = parse_as_of(request.query_params.get("as_of"))

    def digest() -> tuple[int, str]:
        if as_of is None:
            return service.artifact_digest(run_id, path)  # type: ignore[no-any-return]
        position = as_of_position(service, run_id, as_of)
        entries = artifacts_as_of(service.store, run_id, position or 0)
        if path not in entries:
            raise ResourceDoesNotExist(f"No artifact {path!r} in run {run_id} as of {as_of}")
        return entries[path]

    size, sha256 = await gate.slow(digest)
    check_confined(service.artifact_root, sha256)
    file = os.path.join(service.artifact_root, "objects", sha256[:2], sha256)
    if await gate.slow(_file_sha256, file) != sha256:
        raise InvalidState(f"artifact {path!r} of run {run_id} is corrupt: its bytes do not match")
    if wanted == "preview":
        data = await gate.slow(_head, file)
        return json_response(preview(path, data, size))
    name = posixpath.basename(path)
    if wanted == "image" and kind_of(path) == "image":
        media = IMAGE_TYPES[os.path.splitext(name)[1].lower()]
        return FileResponse(file, media_type=media, headers={"cache-control": "private, max-age=3600"})
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media.startswith("text/html") or "svg" in media or "xml" in media:
        media = "application/octet-stream"
    return FileResponse(file, media_type=media, filename=name,
                        headers={"content-security-policy": "sandbox"})  # fmt: skip
