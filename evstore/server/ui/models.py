"""The UI's registry views under ``/ui/api/``: the models list, one registered model (its
versions, aliases, tags, history, as of a point), and what a run logged and used.

A model's history is ``evstore.model_history`` (what ``evstore history --model`` prints),
and "as of" is its ``registered_model_as_of``: the page adds no rules of its own. Whether
the caller may read a model is the server's own check for ``registered-models/get``
(``reader``), so a grant the server learns to apply applies here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.events import ModelVersionCreated
from evstore.history import local_time, provenance_of
from evstore.server.ui import queries
from evstore.server.ui.api import MAX_PAGE, View, _int, as_of_position, parse_as_of, shown_uri
from evstore.tracking.service import TrackingService

#: Whether the caller may read a registered model: (service, model name) -> bool.
MayRead = Callable[[TrackingService, str], bool]
#: The models searched at once while a page is gathered (the registry's own page limit).
_BATCH = 1000
#: How ``model_history`` words a new version's origin (a run, a logged model or a source).
_CREATED_FROM = "created from "
_ORDERS = ("name ASC", "name DESC", "last_updated_timestamp DESC", "last_updated_timestamp ASC",
           "creation_timestamp DESC", "creation_timestamp ASC")  # fmt: skip


def reader(guard: Any) -> MayRead:
    """The server's permission check of ``registered-models/get`` as a yes or no: a
    refusal (403) is no, anything else (a disabled user's 401) goes on up."""
    import msgspec

    from evstore.server._http import HTTPError
    from evstore.server.registry_schemas import RegisteredModelName

    check = guard.wrap("registered-models/get", lambda client, req, key: True, "GET")

    def may_read(service: TrackingService, name: str) -> bool:
        try:
            return bool(check(service, msgspec.convert({"name": name}, RegisteredModelName), ""))
        except HTTPError as e:
            if e.status == 403:
                return False
            raise

    return may_read


def everyone(service: TrackingService, name: str) -> bool:
    """The reader of a UI without users: every model may be read."""
    return True


# --- the models list ---------------------------------------------------------------------


def models_page(service: TrackingService, request: Request, may_read: MayRead) -> View:
    """One page of the registered models the caller may read, with their latest version,
    aliases, tags and description; ``filter`` is MLflow's registry grammar."""
    size = _int(request, "size", 50, 1, MAX_PAGE)
    page = _int(request, "page", 0, 0, 10_000_000)
    filter_string = request.query_params.get("filter") or ""
    order = request.query_params.get("order") or "name ASC"
    if order not in _ORDERS:
        raise InvalidParameterValue(f"order must be one of {', '.join(_ORDERS)}, got {order!r}")

    def answer() -> Any:
        found = []
        token = None
        try:
            while True:
                batch = service.search_registered_models(filter_string, _BATCH, [order], token)
                found += [m for m in batch if may_read(service, m.name)]
                token = batch.token
                if token is None:
                    break
        except InvalidParameterValue as e:  # the page shows it beside the filter box
            return {"search_error": str(e)}
        shown = found[page * size : (page + 1) * size]
        return {"models": [_model_row(m) for m in shown], "page": page, "size": size,
                "total": len(found), "has_next": (page + 1) * size < len(found)}  # fmt: skip

    return answer


def _model_row(model: Any) -> dict[str, Any]:
    latest = max(model.latest_versions, key=lambda v: int(v.version), default=None)
    return {
        "name": model.name, "description": model.description, "tags": model.tags,
        "aliases": model.aliases, "latest_version": None if latest is None else latest.version,
        "latest_versions": [{"version": v.version, "stage": v.current_stage} for v in model.latest_versions],
        "creation_timestamp": model.creation_timestamp,
        "last_updated_timestamp": model.last_updated_timestamp,
    }  # fmt: skip


# --- one registered model ----------------------------------------------------------------


def model_page(service: TrackingService, request: Request, may_read: MayRead, hidden: Any) -> View:
    """A registered model (as of a position or time when asked): its versions, aliases,
    tags and description, and every change to it, before -> after."""
    from evstore.server.permissions import denied

    name = request.path_params["name"]
    asked = request.query_params.get("as_of")
    as_of = parse_as_of(asked)

    def answer() -> Any:
        from evstore.model_history import model_changes, model_stream, registered_model_as_of
        from evstore.tracking.registry import load_versions

        if not may_read(service, name):
            raise denied()
        store = service.store
        key = model_stream(store, name)  # a model deleted since is found in the log
        recorded = store.read_stream(key)
        events = [(e.position, e.recorded_at) for e in recorded]
        position = as_of_position(service, key, as_of)
        with service.reading() as conn:
            current = queries.model_name(conn, key)
        absent = None
        model = None
        try:
            if as_of is None:
                if current == name:
                    model = service.get_registered_model(name)
                    with service.reading() as conn:
                        model.versions = load_versions(conn, key, name, None)  # type: ignore[attr-defined]
                else:
                    absent = f"{name} was renamed to {current}." if current else f"{name} was deleted."
            else:
                model = registered_model_as_of(store, name, as_of)
        except ResourceDoesNotExist as e:
            absent = str(e)
        history = model_changes(store, name)
        for row in history:
            if row["source"]:
                row["source"] = shown_uri(str(row["source"]), hidden)
            for change in row["changes"]:
                change["before"] = _shown_origin(change["before"], hidden)
                change["after"] = _shown_origin(change["after"], hidden)
        created = {e.event.version_number: provenance_of(e, e.metadata) for e in recorded
                   if isinstance(e.event, ModelVersionCreated)}  # fmt: skip
        return {
            "name": name,
            "current_name": current,
            "model": None if model is None else _model_json(service, model, created, hidden),
            "absent": absent,
            "history": history,
            "events": events,
            "as_of": None if position is None else {
                "position": position, "asked": asked,
                "time": next((local_time(t) for p, t in reversed(events) if p <= position), None),
            },
        }  # fmt: skip

    return answer


def _shown_origin(value: str | None, hidden: Any) -> str | None:
    """A version's "created from <source>" with no path on the server in it (a version
    registered from a local folder names that folder)."""
    if value is None or not value.startswith(_CREATED_FROM):
        return value
    return _CREATED_FROM + shown_uri(value[len(_CREATED_FROM) :], hidden)


def _model_json(service: TrackingService, model: Any, created: dict[int, Any], hidden: Any) -> dict[str, Any]:
    versions = getattr(model, "versions", [])
    with service.reading() as conn:
        runs = queries.run_names(conn, [v.run_id for v in versions if v.run_id])
        logged = queries.logged_model_names(conn, [v.model_id for v in versions if v.model_id])
    rows = []
    for v in sorted(versions, key=lambda v: -int(v.version)):
        made = created.get(int(v.version), {})
        rows.append({
            "version": v.version, "stage": v.current_stage, "status": v.status,
            "source": shown_uri(v.source, hidden), "run_id": v.run_id,
            "run_name": runs.get(v.run_id) if v.run_id else None,
            "model_id": v.model_id, "model_name": logged.get(v.model_id) if v.model_id else None,
            "tags": v.tags, "aliases": v.aliases, "description": v.description,
            "user_id": v.user_id, "created_by": made.get("principal") or made.get("user"),
            "creation_timestamp": v.creation_timestamp, "last_updated_timestamp": v.last_updated_timestamp,
        })  # fmt: skip
    return dict(_model_row(model), versions=rows)


# --- what a run logged and used ----------------------------------------------------------


def run_models(service: TrackingService, request: Request, may_read: MayRead, hidden: Any) -> View:
    """A run's dataset inputs, the logged models it used and produced, and the registered
    versions of those models or made from the run (those the caller may read; ``from_run``
    marks the ones the run made), as of a point."""
    run_id = request.path_params["run_id"]
    as_of = parse_as_of(request.query_params.get("as_of"))

    def answer() -> Any:
        service.get_run(run_id)  # a 404 for a run that is not there
        return _run_models(service, run_id, as_of_position(service, run_id, as_of), may_read, hidden)

    return answer


def _run_models(service: TrackingService, run_id: str, position: int | None, may_read: MayRead,
                hidden: Any) -> dict[str, Any]:  # fmt: skip
    store = service.store
    datasets, used = service.run_inputs(run_id)
    produced: dict[str, int | None] = dict(service.run_outputs(run_id))
    with service.reading() as conn:
        for model_id in queries.models_from_run(conn, run_id):
            produced.setdefault(model_id, None)
    if position is not None:  # what the run's own stream held then
        datasets, used, outputs = queries.inputs_as_of(store, run_id, position)
        begun = queries.first_positions(store, list(produced))
        produced = {m: outputs.get(m) for m in produced if m in outputs or begun.get(m, position + 1) <= position}
    with service.reading() as conn:
        logged = {m.model_id: m for m in _load_models(conn, [*produced, *used])}
        versions = queries.versions_from(conn, run_id, [*produced, *used])
    if position is not None:
        versions = [v for v in versions if queries.version_position(store, v) <= position]
    return {
        "datasets": [{
            "name": d.name, "digest": d.digest, "source_type": d.source_type,
            "source": shown_uri(d.source, hidden), "context": d.tags.get("mlflow.data.context"),
            "tags": d.tags} for d in datasets],
        "produced": [_logged_json(logged, m, step) for m, step in produced.items() if m in logged],
        "used": [_logged_json(logged, m, None) for m in used if m in logged],
        "versions": [{"name": v["name"], "version": str(v["version"]), "model_id": v["model_id"],
                      "from_run": v["run_id"] == run_id or v["model_id"] in produced}
                     for v in versions if may_read(service, v["name"])],
    }  # fmt: skip


def _load_models(conn: Any, model_ids: list[str]) -> list[Any]:
    from evstore.tracking.logged_models import load_models

    return load_models(conn, list(dict.fromkeys(model_ids)))


def _logged_json(logged: dict[str, Any], model_id: str, step: int | None) -> dict[str, Any]:
    model = logged[model_id]
    return {"model_id": model_id, "name": model.name, "status": model.status, "step": step,
            "model_type": model.model_type, "source_run_id": model.source_run_id,
            "lifecycle_stage": model.lifecycle_stage}  # fmt: skip
