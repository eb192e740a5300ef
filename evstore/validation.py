"""MLflow's input rules, with errors that say what was wrong."""

from __future__ import annotations

import numbers
import posixpath
import re
from typing import Any

from evstore.errors import InvalidParameterValue

# MLflow's rule: alphanumerics, underscores, dashes, periods, spaces, colons and slashes.
_KEY = re.compile(r"^[/\w.\- :]*$")
MAX_KEY_LENGTH = 250
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000


def validate_key(kind: str, key: Any) -> str:
    """A param, metric or tag key as MLflow accepts it."""
    if type(key) is str and (kind, key) in _VALID_KEYS:  # a training loop logs a few keys
        return key
    if not isinstance(key, str) or not key:
        raise InvalidParameterValue(f"Invalid {kind} name: {key!r}. Names must be non-empty strings.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidParameterValue(
            f"{kind.capitalize()} name '{key[:40]}...' is {len(key)} characters long;"
            f" the limit is {MAX_KEY_LENGTH}."
        )
    if not _KEY.match(key):
        raise InvalidParameterValue(
            f"Invalid {kind} name: '{key}'. Names may only contain alphanumerics, underscores (_),"
            " dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)."
        )
    if posixpath.normpath(key) != key.rstrip("/") or key.startswith("/") or ".." in key.split("/"):
        raise InvalidParameterValue(
            f"Invalid {kind} name: '{key}'. Names may not be absolute paths or contain '..'"
            " or empty path segments."
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
    for name, number in (("timestamp", timestamp), ("step", step)):
        if isinstance(number, bool) or not isinstance(number, numbers.Integral):
            raise InvalidParameterValue(
                f"Got invalid {name} {number!r} for metric '{key}': it must be an integer."
            )
    return key, as_float, int(timestamp), int(step)  # type: ignore[call-overload]


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


def metric_points(metrics: Any) -> list[tuple[Any, ...]]:
    """Validate a batch of Metric-like objects: each distinct key once, then each point.

    Returns ``(key, value, step, timestamp, model_id, dataset_name, dataset_digest)``. Plain float/int values take a fast
    path; anything else goes through the full check of :func:`validate_metric`.
    """
    for key in {m.key for m in metrics}:
        validate_key("metric", key)
    points = []
    for m in metrics:
        value, timestamp, step = m.value, m.timestamp, m.step
        context = (getattr(m, "model_id", None), getattr(m, "dataset_name", None),
                   getattr(m, "dataset_digest", None))  # fmt: skip
        if type(value) is float and type(timestamp) is int and type(step) is int:
            points.append((m.key, value, step, timestamp, *context))
        else:
            key, value, timestamp, step = validate_metric(m.key, value, timestamp, step)
            points.append((key, value, step, timestamp, *context))
    return points


def param_value(value: Any) -> str:
    """MLflow stores every param value as its string form; evstore keeps all of it."""
    return value if isinstance(value, str) else str(value)


def tag_value(key: str, value: Any) -> str:
    """MLflow stores tag values as strings."""
    if value is None:
        raise InvalidParameterValue(f"Tag '{key}' has no value")
    return value if isinstance(value, str) else str(value)


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

