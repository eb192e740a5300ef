"""MLflow's input rules, with errors that say what was wrong."""

from __future__ import annotations

import numbers
import posixpath
import re
from typing import Any
from urllib.parse import unquote

from evstore.entities import Metric
from evstore.errors import InvalidParameterValue
from evstore.events import MetricPoint

# MLflow's rule: alphanumerics, underscores, dashes, periods, spaces, colons and slashes.
_KEY = re.compile(r"^[/\w.\- :]*$")
MAX_KEY_LENGTH = 250
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# MLflow's rule for run ids; ids starting with "experiment-" would name an experiment's stream.
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_RESERVED_STREAM_PREFIX = "experiment-"
# Tag values are kept whole past MLflow's caps (8,000 characters for run tags, 20,000 for
# experiment tags), up to this many characters; the importer writes MLflow's values as found.
MAX_TAG_VALUE_LENGTH = 65536
MAX_ARTIFACT_PATH_LENGTH = 1024
MAX_ARTIFACT_NAME_BYTES = 255
_DRIVE = re.compile(r"^[A-Za-z]:")


def shown(value: Any) -> str:
    """``repr(value)`` safe to print or send as UTF-8 (a lone surrogate is escaped)."""
    return repr(value).encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(what: str, value: Any) -> str:
    """A string evstore can store: a ``str`` that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        raise InvalidParameterValue(f"Invalid {what} {shown(value)}: it must be a string.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParameterValue(
                f"Invalid {what} {shown(value)}: it contains a lone surrogate, which cannot be"
                " stored as UTF-8."
            ) from None
    return value


def optional_text(what: str, value: Any) -> str | None:
    """None, or a string as :func:`check_text` accepts it."""
    return None if value is None else check_text(what, value)


def check_int64(what: str, value: Any) -> int:
    """An integer (not a bool, not a float) that fits in a signed 64-bit column."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InvalidParameterValue(f"Invalid {what} {shown(value)}: it must be an integer.")
        value = int(value)  # type: ignore[call-overload]  # numpy ints and the like
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidParameterValue(
            f"Invalid {what} {value}: it must fit in a signed 64-bit integer"
            f" ({INT64_MIN} to {INT64_MAX})."
        )
    return value


def optional_int64(what: str, value: Any) -> int | None:
    """None, or an integer as :func:`check_int64` accepts it."""
    return None if value is None else check_int64(what, value)


def new_run_id(run_id: Any) -> str:
    """A caller-chosen id for a new run: MLflow's rule, and not an experiment stream's name."""
    check_text("run id", run_id)
    if _RUN_ID.match(run_id) is None:
        raise InvalidParameterValue(
            f"Invalid value {shown(run_id)} for parameter 'run_id' supplied: a run id starts with"
            " a letter or digit, then up to 255 letters, digits, underscores or dashes."
        )
    if run_id.startswith(_RESERVED_STREAM_PREFIX):
        raise InvalidParameterValue(
            f"Invalid value {shown(run_id)} for parameter 'run_id' supplied: ids starting with"
            f" '{_RESERVED_STREAM_PREFIX}' are reserved for experiments."
        )
    return run_id


def validate_key(kind: str, key: Any) -> str:
    """A param, metric or tag key as MLflow accepts it."""
    if type(key) is str and (kind, key) in _VALID_KEYS:  # a training loop logs a few keys
        return key
    if isinstance(key, str) and type(key) is not str:
        key = str(key)  # numpy.str_ and other str subclasses: stored as a plain str
    if not isinstance(key, str) or not key:
        raise InvalidParameterValue(f"Invalid {kind} name: {shown(key)}. Names must be non-empty strings.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidParameterValue(
            f"{kind.capitalize()} name '{key[:40]}...' is {len(key)} characters long;"
            f" the limit is {MAX_KEY_LENGTH}."
        )
    if not _KEY.match(key):
        raise InvalidParameterValue(
            f"Invalid {kind} name: {shown(key)}. Names may only contain alphanumerics, underscores (_),"
            " dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)."
        )
    normalized = posixpath.normpath(key)  # MLflow's path_not_unique
    if normalized != key or normalized == "." or normalized.startswith(("..", "/")):
        raise InvalidParameterValue(
            f"Invalid {kind} name: '{key}'. Names may not be absolute paths or contain '..'"
            " or empty path segments, and may not be '.' or end in '/': names may be treated as"
            " files, and must not resolve to other names when treated as such. This name would"
            f" resolve to '{normalized}'."
        )
    if len(_VALID_KEYS) >= _VALID_KEYS_KEPT:
        _VALID_KEYS.clear()
    _VALID_KEYS.add((kind, key))
    return key


# Keys that passed validate_key: the same few are checked on every call of a training
# loop, and the regex and path checks cost more than the rest of the validation.
_VALID_KEYS: set[tuple[str, str]] = set()
_VALID_KEYS_KEPT = 10_000


def validate_metric(key: Any, value: Any, timestamp: Any, step: Any) -> tuple[str, float, int, int]:
    """A metric point as MLflow accepts it: numeric value, integer timestamp and step."""
    validate_key("metric", key)
    as_float = metric_value(value)
    if as_float is None:
        raise InvalidParameterValue(
            f"Got invalid value {value!r} for metric '{key}' (timestamp={timestamp}):"
            " the value must be a number."
        )
    if not (type(timestamp) is int and 0 <= timestamp <= INT64_MAX):
        timestamp = check_int64(f"timestamp for metric '{key}'", timestamp)
        if timestamp < 0:
            raise InvalidParameterValue(
                f"Got invalid value {timestamp} for timestamp of metric '{key}' (value={value}):"
                " the timestamp must be a nonnegative long (64-bit integer), as in MLflow."
            )
    if not (type(step) is int and INT64_MIN <= step <= INT64_MAX):
        if isinstance(step, float) and step.is_integer():
            step = int(step)  # 2.0 is step 2, as MLflow's SQL store keeps it; 1.5 is refused
        step = check_int64(f"step for metric '{key}'", step)
    return key, as_float, timestamp, step


def metric_context(model_id: Any, dataset_name: Any, dataset_digest: Any) -> tuple[Any, ...]:
    """MLflow 3's optional context of a metric point: each None or a string."""
    return (optional_text("model_id", model_id), optional_text("dataset_name", dataset_name),
            optional_text("dataset_digest", dataset_digest))  # fmt: skip


def metric_value(value: Any) -> float | None:
    """A metric value as a float the way MLflow's client converts it, or None if it is not one.

    A one-element array or tensor (numpy, torch: anything with ``.item()``) gives its item;
    then ``float()`` takes what it can, so True is 1.0 and "0.5" is 0.5, as in MLflow.
    """
    if type(value) is float:
        return value
    if value is None:
        return None
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, numbers.Number):
        try:
            value = item()  # a one-element array or tensor; more elements raise
        except (TypeError, ValueError, RuntimeError):
            return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def metric_points(metrics: Any) -> list[MetricPoint]:
    """Validate a batch of Metric-like objects: each distinct key once, then each point.

    Returns the events' points. Plain float/int values take a fast path; anything else
    goes through the full check of :func:`validate_metric`.
    """
    try:
        keys = {m.key for m in metrics}
    except (AttributeError, TypeError):
        raise InvalidParameterValue(
            f"metrics must be a list of Metric objects, not {shown(metrics)[:200]}"
        ) from None
    for key in keys:
        validate_key("metric", key)
    points: list[MetricPoint] = []
    append = points.append
    for m in metrics:
        value, timestamp, step = m.value, m.timestamp, m.step
        if type(m) is Metric:  # the common case: no getattr defaults to look up
            context = (m.model_id, m.dataset_name, m.dataset_digest)
        else:
            context = (getattr(m, "model_id", None), getattr(m, "dataset_name", None),
                       getattr(m, "dataset_digest", None))  # fmt: skip
        plain = context == _NO_CONTEXT
        if not plain:
            metric_context(*context)
        if (type(value) is float and type(timestamp) is int and type(step) is int
                and 0 <= timestamp <= INT64_MAX and INT64_MIN <= step <= INT64_MAX):  # fmt: skip
            append(MetricPoint(m.key, value, step, timestamp) if plain
                   else MetricPoint(m.key, value, step, timestamp, *context))  # fmt: skip
        else:
            key, value, timestamp, step = validate_metric(m.key, value, timestamp, step)
            append(MetricPoint(key, value, step, timestamp, *context))
    return points


_NO_CONTEXT = (None, None, None)


def param_value(value: Any) -> str:
    """MLflow stores every param value as its string form; evstore keeps all of it."""
    return _stored_text("param value", value)


def tag_value(key: str, value: Any) -> str:
    """MLflow stores tag values as strings (None as "None", as MLflow's client does)."""
    text = _stored_text(f"value of tag '{key}'", value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise InvalidParameterValue(
            f"Tag '{key}' has a value of {len(text)} characters; the limit is {MAX_TAG_VALUE_LENGTH}"
            " (evstore keeps tag values whole, far past MLflow's 8,000)."
        )
    return text


def check_artifact_path(path: str) -> str:
    """A run-relative artifact path (``dir/file.txt``) safe to become a local path anywhere.

    MLflow's ``validate_path_is_safe`` refuses '..' components, absolute paths (POSIX and
    Windows), backslashes (as Windows separators) and '#', checking the path percent-decoded
    until it stops changing. evstore also refuses NUL, empty and '.' components, and
    components that are '.' or '..' before a ';' (``..;/x``, which servlet-style proxies read
    as '..'). Lengths: each component at most 255 UTF-8 bytes (NAME_MAX of common file
    systems) and the whole path at most 1,024 characters; that also bounds the depth at 512,
    so no separate depth limit. Raises InvalidParameterValue saying what is wrong.
    """
    check_text("artifact path", path)
    if len(path) > MAX_ARTIFACT_PATH_LENGTH:
        raise InvalidParameterValue(
            f"Invalid artifact path {shown(path[:40])}...: it is {len(path)} characters long;"
            f" the limit is {MAX_ARTIFACT_PATH_LENGTH}."
        )
    forms = [path]
    while len(forms) < 10 and unquote(forms[-1]) != forms[-1]:
        forms.append(unquote(forms[-1]))  # '..' encoded once, twice or more is refused too
    for form in forms:
        if "\x00" in form or "\\" in form or "#" in form:
            raise InvalidParameterValue(
                f"Invalid artifact path {shown(path)}: NUL, backslash and '#' are not allowed"
            )
        if form.startswith("/") or _DRIVE.match(form):
            raise InvalidParameterValue(f"Invalid artifact path {shown(path)}: must be relative")
        for part in form.split("/"):
            if part in ("", ".", "..") or part.partition(";")[0] in (".", ".."):
                raise InvalidParameterValue(
                    f"Invalid artifact path {shown(path)}: '.', '..' and empty segments are not allowed"
                )
    for part in path.split("/"):
        if len(part.encode("utf-8")) > MAX_ARTIFACT_NAME_BYTES:
            raise InvalidParameterValue(
                f"Invalid artifact path {shown(path[:40])}...: the name {shown(part[:40])}... is"
                f" {len(part.encode('utf-8'))} bytes long; the limit is {MAX_ARTIFACT_NAME_BYTES}."
            )
    return path


def _stored_text(what: str, value: Any) -> str:
    """The string MLflow stores for a value (numpy.str_ too: a plain str), storable."""
    text = value if type(value) is str else str(value)
    return text if text.isascii() else check_text(what, text)


def validate_batch_limits(metrics: int, params: int, tags: int) -> None:
    """MLflow's limits on one log_batch call."""
    for what, count, limit in (
        ("metrics", metrics, MAX_METRICS_PER_BATCH),
        ("params", params, MAX_PARAMS_PER_BATCH),
        ("tags", tags, MAX_TAGS_PER_BATCH),
    ):
        if count > limit:
            raise InvalidParameterValue(
                f"A batch logging request can contain at most {limit} {what}. Got {count} {what}."
                " Please split up the request into batches of at most {limit} {what}.".replace(
                    "{limit}", str(limit)
                ).replace("{what}", what)
            )
    total = metrics + params + tags
    if total > MAX_ENTITIES_PER_BATCH:
        raise InvalidParameterValue(
            f"A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} metrics, params"
            f" and tags in total. Got {total}."
        )

