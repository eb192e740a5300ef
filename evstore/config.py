"""The tracking URI and its defaults, shared by the fluent API and ``Client``.

Order: ``set_tracking_uri``, else ``$EVSTORE_TRACKING_URI``, else ``$MLFLOW_TRACKING_URI``,
else ``./evstore.db``. An MLflow file store (a ``file:`` URI or an ``mlruns`` folder) is
refused with the command that imports it, instead of becoming a SQLite file of that name.
"""

from __future__ import annotations

import os

from evstore.errors import InvalidParameterValue
from evstore.stores import DEFAULT_URI
from evstore.validation import check_text, shown

_tracking_uri: str | None = None


def set_tracking_uri(uri: str | os.PathLike[str] | None) -> None:
    """Choose the store: a path, ``sqlite:///path``, or ``http://host:port`` of a server."""
    global _tracking_uri
    if uri is None:  # as MLflow: back to the environment and the default
        _tracking_uri = None
        return
    try:
        text = check_text("tracking URI", os.fspath(uri))
    except TypeError:
        raise InvalidParameterValue(
            f"Invalid tracking URI {shown(uri)}: it must be a str or os.PathLike"
        ) from None
    _tracking_uri = check_tracking_uri(text)


def get_tracking_uri() -> str:
    """The store in use: set_tracking_uri, else $EVSTORE_TRACKING_URI, else
    $MLFLOW_TRACKING_URI, else ./evstore.db."""
    if _tracking_uri is not None:
        return _tracking_uri
    found = os.environ.get("EVSTORE_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    return check_tracking_uri(found) if found else DEFAULT_URI


def is_set() -> bool:
    """Whether set_tracking_uri chose a store (rather than the environment or the default)."""
    return _tracking_uri is not None


def check_tracking_uri(uri: str) -> str:
    """``uri`` unless it names an MLflow file store, which evstore reads only by importing."""
    is_file_uri = uri.lower().startswith("file:")
    if "://" in uri and not is_file_uri:
        return uri  # sqlite:///, http(s)://, or a scheme the store opener refuses itself
    path = uri[len("file:") :] if is_file_uri else uri
    path = "/" + path.lstrip("/") if path.startswith("//") else path  # file:///abs -> /abs
    named_mlruns = os.path.basename(os.path.normpath(path)) == "mlruns" if path else False
    not_a_log = is_file_uri and not (os.path.isfile(path) or path.endswith(_LOG_SUFFIXES))
    if named_mlruns or os.path.isdir(path) or not_a_log:
        raise InvalidParameterValue(
            f"Tracking URI {shown(uri)} names an MLflow file store; evstore keeps runs in an"
            f" event log: import it once with `evstore import mlflow {path}`, then track to"
            " sqlite:///evstore.db"
        )
    return uri


_LOG_SUFFIXES = (".db", ".sqlite", ".sqlite3")
