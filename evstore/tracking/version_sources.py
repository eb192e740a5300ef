"""Where a model version served by ``evstore server`` may come from, checked as ``mlflow
server`` 3.17 checks it (``_validate_source_run`` and ``_validate_source_model`` in its
handlers), with MLflow's messages and codes.

A local path must lie inside the artifacts of the run (or logged model) the request names;
``runs:/`` must name that run, ``models:/<id>`` that model; an ``mlflow-artifacts`` URI (or
the proxy's http path) must lie under the run's or model's artifact root; no source may climb
out with ``..``, an encoded ``..`` or a NUL. A client of a local store is not a server and is
not held to this, as MLflow's own local stores are not.
"""

from __future__ import annotations

import os
import pathlib
import re
import urllib.parse
import urllib.request
from collections.abc import Callable

from evstore.errors import InvalidParameterValue, ResourceDoesNotExist

#: Looks up the artifact roots (as stored, as served) of a run or a logged model by id;
#: raises ResourceDoesNotExist for an unknown id.
Roots = Callable[[str], tuple[str, ...]]


def invalid_source(source: object, id_name: str) -> InvalidParameterValue:
    """MLflow's refusal of a source the named run or model does not contain."""
    return InvalidParameterValue(
        f"Invalid model version source: '{source}'. The {id_name} request parameter must "
        "identify the resource that contains the source."
    )


def is_local(uri: str) -> bool:
    """MLflow's ``is_local_uri``: a bare path or a ``file:`` URI. A ``file:`` URI naming
    another host is refused in MLflow's words (MLflow answers 500, evstore 400: it is the
    caller's mistake)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file" and parsed.hostname and parsed.hostname != "." and not \
            parsed.hostname.startswith(("localhost", "127.0.0.1")):  # fmt: skip
        raise InvalidParameterValue(
            f"{uri} is not a valid remote uri. For remote access on windows, please consider using"
            " a different scheme such as SMB (e.g. smb://<hostname>/<path>)."
        )
    return parsed.scheme in ("", "file")


def _local_path(uri: str) -> str:
    path = urllib.parse.urlparse(uri).path if uri.startswith("file:") else uri
    return urllib.request.url2pathname(path)


def _resolved(uri: str) -> pathlib.Path:
    return pathlib.Path(_local_path(uri)).resolve()


def check_no_relative_parts(source: str) -> None:
    """Refuse a source that climbs out of its root (``..``, encoded or not, or a NUL)."""
    message = (
        f"Invalid model version source: '{source}'. If supplying a source as an http, https, "
        "local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be "
        "provided without relative path references present. Please provide an absolute path."
    )
    while (unquoted := urllib.parse.unquote_plus(source)) != source:
        source = unquoted
    source_path = re.sub(r"/+", "/", urllib.parse.urlparse(source).path.rstrip("/"))
    if "\x00" in source_path or any(p == ".." for p in source.split("/")):
        raise InvalidParameterValue(message)
    _drive, resolved = os.path.splitdrive(pathlib.Path(source_path).resolve().as_posix())
    if resolved != source_path:
        raise InvalidParameterValue(message)


def _unquoted(value: str) -> str:
    while (unquoted := urllib.parse.unquote(value)) != value:
        value = unquoted
    return value


def _uri_parts(uri: str) -> tuple[str, str, tuple[str, ...]]:
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme.lower(), parsed.netloc.lower(), tuple(_unquoted(p) for p in parsed.path.split("/") if p)


def is_within(source: str, root: str) -> bool:
    """Whether ``source`` lies under ``root`` (same scheme and host, a prefix of its path)."""
    scheme, authority, parts = _uri_parts(source)
    root_scheme, root_authority, root_parts = _uri_parts(root)
    return (scheme, authority) == (root_scheme, root_authority) and bool(root_parts) \
        and parts[: len(root_parts)] == root_parts  # fmt: skip


def is_artifact_source(source: str) -> bool:
    """An ``mlflow-artifacts:`` URI, or an http(s) URL through the artifact proxy's path."""
    scheme, _authority, parts = _uri_parts(source)
    if scheme == "mlflow-artifacts":
        return True
    route = ("api", "2.0", "mlflow-artifacts", "artifacts")
    return scheme in ("http", "https") and any(parts[i : i + 4] == route for i in range(len(parts) - 3))


def models_uri_model_id(source: str) -> str | None:
    """The logged model a ``models:/<id>`` URI names (None for ``models:/<name>/...``);
    an improper ``models:`` URI is refused as MLflow refuses it."""
    parsed = urllib.parse.urlparse(source, allow_fragments=False)
    path = parsed.path
    parts = path.lstrip("/").split("/")
    if not path.startswith("/") or len(path) <= 1 or len(parts) > 2 or not parts[0].strip():
        raise invalid_source(source, "model_id")
    if len(parts) == 2:
        if not parts[1].strip():
            raise invalid_source(source, "model_id")
        return None
    if "@" in path:
        name, _, alias = parts[0].rpartition("@")
        if not name or not alias.strip():
            raise invalid_source(source, "model_id")
        return None
    return parts[0]


def _roots(lookup: Roots, resource_id: str, source: str, id_name: str) -> tuple[str, ...]:
    try:
        return lookup(resource_id)
    except ResourceDoesNotExist:
        raise invalid_source(source, id_name) from None


def _within_local_root(source: str, roots: tuple[str, ...]) -> bool:
    path = _resolved(source)
    return any(is_local(root) and _resolved(root) in (path, *path.parents) for root in roots)


def _local_path_refused(shown: str, id_name: str) -> InvalidParameterValue:
    """MLflow's refusal of a local source outside the artifacts of the run or model named
    by ``id_name`` (its text says "run" for both)."""
    return InvalidParameterValue(
        f"Invalid model version source: '{shown}'. To use a local path as a model version "
        f"source, the {id_name} request parameter has to be specified and the local path has to "
        f"be contained within the artifact directory of the run specified by the {id_name}."
    )


def check_source_of_run(source: str, run_id: str | None, run_roots: Roots) -> None:
    """A version from a run: the source must lie in that run's artifacts."""
    if is_local(source):
        if run_id:
            roots = _roots(run_roots, run_id, source, "run_id")
            if _within_local_root(source, roots):
                return
            source = str(_resolved(source))  # MLflow names the resolved path
        raise _local_path_refused(source, "run_id")
    check_no_relative_parts(source)
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "runs":
        source_run = parsed.path.lstrip("/").split("/")[0]
        if parsed.netloc or not (run_id and source_run == run_id):
            raise invalid_source(source, "run_id")
        return
    if parsed.scheme == "models" and (parsed.netloc or models_uri_model_id(source) is not None):
        raise invalid_source(source, "model_id")
    if is_artifact_source(source):
        if run_id and any(is_within(source, root) for root in _roots(run_roots, run_id, source, "run_id")):
            return
        raise invalid_source(source, "run_id")


def check_source_of_model(source: str, model_id: str, model_roots: Roots) -> None:
    """A version from a logged model: the source must be that model or lie in its artifacts."""
    if is_local(source):
        roots = _roots(model_roots, model_id, source, "model_id")
        if _within_local_root(source, roots):
            return
        raise _local_path_refused(str(_resolved(source)), "model_id")
    check_no_relative_parts(source)
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "models":
        if parsed.netloc:
            raise invalid_source(source, "model_id")
        named = models_uri_model_id(source)
        if named is not None:
            if named == model_id:
                return
            raise invalid_source(source, "model_id")
    if parsed.scheme == "runs":
        raise invalid_source(source, "model_id")
    if is_artifact_source(source):
        if any(is_within(source, root) for root in _roots(model_roots, model_id, source, "model_id")):
            return
        raise invalid_source(source, "model_id")
