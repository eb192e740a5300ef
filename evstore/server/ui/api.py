"""The UI's JSON under ``/ui/api/``: read-only views the pages fetch.

Each view takes the tracking service and the request, checks its parameters, and returns
a function the store gate runs on a read thread. Pages get only what they draw: the
runs table its page and its chosen columns, a chart its downsampled series.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request

from evstore.entities import Run, ViewType
from evstore.errors import InvalidParameterValue
from evstore.history import local_time
from evstore.server.ui import queries
from evstore.server.ui.series import MAX_POINTS, X_MODES, SeriesCache, series_as_of
from evstore.tracking.service import TrackingService

View = Callable[[], Any]
_VIEWS = {"active": ViewType.ACTIVE_ONLY, "deleted": ViewType.DELETED_ONLY, "all": ViewType.ALL}
MAX_PAGE = 500
MAX_COMPARED = 500
MAX_COLUMNS = 200


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        raise InvalidParameterValue(f"{name} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def _float(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidParameterValue(f"{name} must be a number, got {text!r}") from None


def _view(request: Request) -> int:
    name = request.query_params.get("view") or "active"
    if name not in _VIEWS:
        raise InvalidParameterValue(f"view must be one of {', '.join(_VIEWS)}, got {name!r}")
    return _VIEWS[name]


def parse_as_of(text: str | None) -> int | datetime | None:
    """A log position (digits) or an ISO 8601 time (local when it names no zone)."""
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameterValue(
            f"as_of must be a log position or an ISO 8601 time, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def as_of_position(service: TrackingService, stream_id: str, as_of: int | datetime | None) -> int | None:
    """The log position ``as_of`` stands for in one stream, a run's or a registered model's
    (the last event at or before it)."""
    if as_of is None:
        return None
    if isinstance(as_of, int):
        return as_of
    limit = int(as_of.timestamp() * 1000)
    found = [p for p, recorded_at in service.store.stream_positions(stream_id) if recorded_at <= limit]
    return found[-1] if found else 0


def shown_uri(uri: str, hidden: tuple[tuple[str, str], ...]) -> str:
    """A location as the UI shows it: never an absolute path on the server."""
    for path, stand_in in hidden:
        if uri.startswith((path, "file://" + path)):
            return stand_in + uri.split(path, 1)[1]
    if uri.startswith(("/", "file:")) or (len(uri) > 2 and uri[1] == ":"):
        return "…/" + posixpath.basename(uri.replace(os.sep, "/").rstrip("/"))
    return uri


def _run_json(run: Run, hidden: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    info = run.info
    return {
        "run_id": info.run_id, "experiment_id": info.experiment_id, "run_name": info.run_name,
        "user_id": info.user_id, "status": info.status, "start_time": info.start_time,
        "end_time": info.end_time, "lifecycle_stage": info.lifecycle_stage,
        "artifact_uri": shown_uri(info.artifact_uri, hidden),
    }  # fmt: skip


# --- experiments -------------------------------------------------------------------------


def experiments(service: TrackingService, request: Request) -> View:
    """Every experiment in a view, with its run count; ``q`` keeps names containing it."""
    view = _view(request)
    contains = (request.query_params.get("q") or "").strip().lower()

    def answer() -> Any:
        found = service.search_experiments(view)
        with service.reading() as conn:
            counts = queries.run_counts(conn)
        return {"experiments": [
            {"experiment_id": e.experiment_id, "name": e.name, "lifecycle_stage": e.lifecycle_stage,
             "creation_time": e.creation_time, "last_update_time": e.last_update_time,
             "runs": counts.get(e.experiment_id, 0), "tags": e.tags}
            for e in found if contains in e.name.lower()
        ]}  # fmt: skip

    return answer


def _columns(text: str) -> list[tuple[str, str]]:
    chosen = []
    for item in text.split(","):
        kind, _, key = item.strip().partition(".")
        if not item.strip():
            continue
        if kind not in ("params", "metrics", "tags") or not key:
            raise InvalidParameterValue(
                f"a column is params.<key>, metrics.<key> or tags.<key>, got {item.strip()!r}"
            )
        chosen.append((kind, key))
    if len(chosen) > MAX_COLUMNS:
        raise InvalidParameterValue(f"at most {MAX_COLUMNS} columns at once, got {len(chosen)}")
    return chosen


def runs_page(service: TrackingService, request: Request, hidden: Any) -> View:
    """One page of an experiment's runs table, with only the columns asked for."""
    from evstore.search import create_page_token

    experiment_id = request.path_params["experiment_id"]
    size = _int(request, "size", 50, 1, MAX_PAGE)
    page = _int(request, "page", 0, 0, 10_000_000)
    order = [o for o in request.query_params.getlist("order") if o]
    filter_string = request.query_params.get("filter") or ""
    view = _view(request)
    chosen = _columns(request.query_params.get("cols") or "")

    def answer() -> Any:
        experiment = service.get_experiment(experiment_id)
        shown = {"experiment_id": experiment.experiment_id, "name": experiment.name,
                 "lifecycle_stage": experiment.lifecycle_stage}  # fmt: skip
        try:
            found = service.search_runs(
                [experiment_id], filter_string, view, size, order or None,
                create_page_token(page * size) if page else None,
            )  # fmt: skip
        except InvalidParameterValue as e:  # the page shows it beside the filter box
            return {"experiment": shown, "search_error": str(e)}
        with service.reading() as conn:
            columns = chosen or queries.default_columns(conn, [r.info.run_id for r in found])
            children = queries.child_counts(conn, [r.info.run_id for r in found])
        rows = []
        for run in found:
            data = {"params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags}
            row = _run_json(run, hidden)
            row["parent_run_id"] = run.data.tags.get("mlflow.parentRunId")
            row["children"] = children.get(run.info.run_id, 0)
            row["cells"] = [_cell(data[kind].get(key)) for kind, key in columns]
            rows.append(row)
        return {"experiment": shown, "runs": rows, "columns": [f"{k}.{key}" for k, key in columns],
                "page": page, "size": size, "has_next": found.token is not None}  # fmt: skip

    return answer


def _cell(value: Any) -> Any:
    from evstore.inspect import json_number

    return json_number(value)


def experiment_keys(service: TrackingService, request: Request) -> View:
    """The param, metric or tag keys an experiment's runs hold, for choosing columns."""
    experiment_id = request.path_params["experiment_id"]
    kind = request.query_params.get("kind") or "params"
    if kind not in ("params", "metrics", "tags"):
        raise InvalidParameterValue(f"kind must be params, metrics or tags, got {kind!r}")
    contains = request.query_params.get("q") or ""
    limit = _int(request, "limit", 200, 1, 5000)

    def answer() -> Any:
        with service.reading() as conn:
            keys, total = queries.experiment_keys(conn, experiment_id, kind, contains, limit)
        return {"kind": kind, "keys": keys, "total": total}

    return answer


# --- one run -----------------------------------------------------------------------------


def run_page(service: TrackingService, request: Request, hidden: Any) -> View:
    """A run (as of a position or time when asked): info, params, metrics, tags, family."""
    run_id = request.path_params["run_id"]
    as_of = parse_as_of(request.query_params.get("as_of"))

    def answer() -> Any:
        run = service.get_run(run_id, as_of=as_of)
        position = as_of_position(service, run_id, as_of)
        experiment = service.get_experiment(run.info.experiment_id)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        with service.reading() as conn:
            family = queries.family(conn, run_id, parent_id)
            events = queries.stream_positions(service.store, run_id)
        if position is not None:  # only the children that had begun by then
            firsts = queries.first_positions(service.store, [c["run_id"] for c in family["children"]])
            family["children"] = [c for c in family["children"] if firsts.get(c["run_id"], 0) <= position]
        return {
            "run": _run_json(run, hidden),
            "experiment": {"experiment_id": experiment.experiment_id, "name": experiment.name},
            "params": run.data.params,
            "metrics": [{"key": m.key, "value": _cell(m.value), "step": m.step,
                         "timestamp": m.timestamp} for m in run.data.latest_metrics],
            "tags": run.data.tags,
            "parent": family["parent"],
            "children": family["children"],
            "events": events,
            "as_of": None if position is None else {
                "position": position, "asked": request.query_params.get("as_of"),
                "time": next((local_time(t) for p, t in reversed(events) if p <= position), None),
            },
        }

    return answer


def run_history(service: TrackingService, request: Request, hidden: Any) -> View:
    """The run's audit trail with before -> after of every change."""
    from evstore.history import run_changes

    run_id = request.path_params["run_id"]

    def answer() -> Any:
        rows = run_changes(service.store, run_id)
        for row in rows:
            if row["source"]:
                row["source"] = shown_uri(str(row["source"]), hidden)
        name = service.get_run(run_id).info.run_name
        return {"run_id": run_id, "run_name": name, "events": rows}

    return answer


def artifacts(service: TrackingService, request: Request) -> View:
    """The entries directly under ``path`` of a run's artifacts (as of a position)."""
    run_id = request.path_params["run_id"]
    path = (request.query_params.get("path") or "").strip("/")
    as_of = parse_as_of(request.query_params.get("as_of"))

    def answer() -> Any:
        from evstore import reads

        position = as_of_position(service, run_id, as_of)
        if position is None:
            entries = [(f.path, f.is_dir, f.file_size) for f in service.list_artifacts(run_id, path or None)]
        else:
            recorded = queries.artifacts_as_of(service.store, run_id, position)
            entries = [(f.path, f.is_dir, f.file_size) for f in reads.list_artifacts(recorded, path or None)]
        return {"path": path, "files": [{"path": p, "is_dir": d, "size": s} for p, d, s in entries]}

    return answer


def series(service: TrackingService, request: Request, cache: SeriesCache) -> View:
    """One metric of one or more runs, downsampled to about ``points`` points per run."""
    run_ids = [r for r in (request.query_params.get("runs") or "").split(",") if r]
    key = request.query_params.get("key") or ""
    if not run_ids or not key:
        raise InvalidParameterValue("series needs runs=<id>[,<id>...] and key=<metric key>")
    if len(run_ids) > MAX_COMPARED:
        raise InvalidParameterValue(f"at most {MAX_COMPARED} runs at once, got {len(run_ids)}")
    mode = request.query_params.get("x") or "step"
    if mode not in X_MODES:
        raise InvalidParameterValue(f"x must be one of {', '.join(X_MODES)}, got {mode!r}")
    points = _int(request, "points", 1000, 4, MAX_POINTS)
    low, high = _float(request, "min"), _float(request, "max")
    as_of = parse_as_of(request.query_params.get("as_of"))

    def answer() -> Any:
        out = []
        column = "step" if mode == "step" else "time"
        with service.reading() as conn:
            starts = queries.start_times(conn, run_ids)
            now = {} if as_of is not None else cache.get_many(conn, run_ids, key, column, points)
            for run_id in run_ids:
                position = as_of_position(service, run_id, as_of)
                held = (now[run_id] if position is None
                        else series_as_of(service.store, run_id, key, column, position))  # fmt: skip
                shift = starts.get(run_id) or 0 if mode == "relative" else 0
                lo = None if low is None else low + shift
                hi = None if high is None else high + shift
                x, y = held.downsampled(points, lo, hi, conn)
                if shift:
                    x = [v - shift for v in x]
                upto = len(held)
                out.append({"run_id": run_id, "x": x, "y": y, "total": upto})
        return {"key": key, "x": mode, "series": out}

    return answer


# --- compare and the store ---------------------------------------------------------------


def compare(service: TrackingService, request: Request, hidden: Any) -> View:
    """Runs side by side: their params (which differ), metric keys and latest values."""
    run_ids = list(dict.fromkeys(r for r in (request.query_params.get("runs") or "").split(",") if r))
    if not run_ids:
        raise InvalidParameterValue("compare needs runs=<id>,<id>,...")
    if len(run_ids) > MAX_COMPARED:
        raise InvalidParameterValue(f"at most {MAX_COMPARED} runs at once, got {len(run_ids)}")

    def answer() -> Any:
        from evstore import reads
        from evstore.errors import ResourceDoesNotExist

        with service.reading() as conn:
            found = reads.load_runs(conn, run_ids)
        missing = set(run_ids) - {r.info.run_id for r in found}
        if missing:
            raise ResourceDoesNotExist(f"Run with id={min(missing)} not found")
        param_keys = sorted({k for r in found for k in r.data.params})
        metric_keys = sorted({k for r in found for k in r.data.metrics})
        differing = [k for k in param_keys if len({r.data.params.get(k) for r in found}) > 1]
        return {
            "runs": [dict(_run_json(r, hidden), params=r.data.params,
                          metrics={k: _cell(v) for k, v in r.data.metrics.items()}) for r in found],
            "param_keys": param_keys, "metric_keys": metric_keys, "differing": differing,
        }  # fmt: skip

    return answer


def store_health(service: TrackingService, request: Request) -> View:
    """verify, the head, the read models' state, unknown events and redactions."""

    def answer() -> Any:
        import msgspec

        from evstore.inspect import store_info
        from evstore.integrity import verify

        report = msgspec.to_builtins(verify(service.store))
        facts = store_info(service.store)
        facts["store"] = posixpath.basename(str(facts["store"]).replace(os.sep, "/"))
        with service.store.reading() as conn:
            models = queries.read_models(conn, facts["head_position"])
        by_type = facts.pop("events_by_type")
        return {
            "verify": report, "info": facts, "read_models": models,
            "unknown": {k: n for k, n in by_type.items() if _unknown(k)},
            "redactions": {k: n for k, n in by_type.items() if queries.is_redaction(k)},
            "events_by_type": by_type,
        }  # fmt: skip

    return answer


def _unknown(type_and_version: str) -> bool:
    from evstore.integrity import is_known

    name, _, version = type_and_version.rpartition(" v")
    return not (version.isdigit() and is_known(name, int(version)))
