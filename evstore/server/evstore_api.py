"""evstore's own read-only endpoints under ``/api/evstore/``: events, run history, verify."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import msgspec
from starlette.requests import Request

from evstore.errors import InvalidParameterValue
from evstore.tracking.service import TrackingService

MAX_EVENTS_PER_PAGE = 1000


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidParameterValue(f"{name} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def events_page(service: TrackingService, request: Request) -> Any:
    """A page of the event log, oldest first: ``?after=&limit=&stream=&type=`` (type repeats)."""
    from evstore.inspect import event_lines

    after = _int_param(request, "after", 0, 0, 2**63 - 1)
    limit = _int_param(request, "limit", 100, 1, MAX_EVENTS_PER_PAGE)
    stream = request.query_params.get("stream") or None
    types = request.query_params.getlist("type") or None

    def page() -> dict[str, Any]:
        lines = event_lines(service.store, stream=stream, types=types, after=after, limit=limit)
        more = len(lines) == limit
        return {"events": lines, "next_after": lines[-1]["position"] if more else None}

    return page


def run_history(service: TrackingService, request: Request) -> Any:
    """Every event of one run with what it changed."""
    from evstore.history import run_history as history

    run_id = request.path_params["run_id"]
    return lambda: {"run_id": run_id, "events": history(service.store, run_id)}


def verify(service: TrackingService, request: Request) -> Any:
    """The hash chain and sequences recomputed: ``evstore verify`` as JSON."""
    from evstore.integrity import verify as verify_log

    return lambda: msgspec.to_builtins(verify_log(service.store))


def info(service: TrackingService, request: Request) -> Any:
    """Counts, head position and hash: ``evstore info`` as JSON (the store by file name only)."""
    from evstore.inspect import store_info

    def facts() -> dict[str, Any]:
        found = store_info(service.store)
        found["store"] = posixpath.basename(str(found["store"]).replace(os.sep, "/"))
        return found

    return facts
