"""``evstore server``: MLflow's tracking REST API over an evstore store.

The unmodified ``mlflow`` client talks to it with ``MLFLOW_TRACKING_URI=http://host:port``.
A Starlette app served by uvicorn: Starlette is small, plain ASGI and leaves JSON to us
(msgspec decodes and validates every request into a Struct before anything is written).

Layout: ``mlflow_api`` (the tracking endpoints), ``artifacts_api`` (the artifact proxy),
``evstore_api`` (read-only ``/api/evstore/``), ``schemas`` (request Structs), ``_http``
(errors, body limits, bearer auth, the store gate), ``ui`` (the web UI at ``/``), ``security`` (Host and Origin checks
against DNS rebinding and cross-origin writes, as MLflow 3.17's), ``gate`` (``StoreGate``:
quick calls keep their order in one lane, searches and downloads run beside it on their
own read connections, so a long read never delays an append).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_JSON_BYTES = 16 << 20
DEFAULT_MAX_ARTIFACT_BYTES = 5 << 30
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_MLFLOW_PREFIX = "/api/2.0/mlflow/"
_MLFLOW_USERS_PREFIX = "/api/2.0/mlflow/users/"


@dataclass(frozen=True)
class ServerSettings:
    """What one server process serves, and its limits."""

    store: str
    artifacts_root: str | None = None
    auth_token: str | None = None
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    #: Host header values served (None: loopback names, the bound address, private IPs).
    allowed_hosts: tuple[str, ...] | None = None
    #: Browser origins allowed to write, besides loopback ones and the server's own.
    cors_allowed_origins: tuple[str, ...] = ()
    #: The address the server binds (its own name is an allowed Host).
    bind_host: str = "127.0.0.1"
    #: With users: the permission a user has on an experiment they hold no grant on.
    default_permission: str = "READ"
    #: Signed checkpoints: one every this many minutes (None: none), with this private
    #: key, into this folder (``evstore.checkpoint.CheckpointWriter``).
    checkpoint_every: float | None = None
    checkpoint_key: str | None = None
    checkpoint_dir: str | None = None


def create_app(settings: ServerSettings) -> Any:
    """The ASGI app for a store; opens the store now, so a bad store fails before serving."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from evstore import __version__
    from evstore.server import artifacts_api, evstore_api, ui
    from evstore.server._http import (
        HTTPError,
        StoreGate,
        check_json_content_type,
        decode_body,
        hidden_paths,
        json_response,
        parse_request,
        receive_body,
        response_for,
        send_json,
    )
    from evstore.server.auth import authentication
    from evstore.server.mlflow_api import ENDPOINTS, SLOW_ENDPOINTS, match_path
    from evstore.server.permissions import Guard, auth_endpoints, ui_permission
    from evstore.server.security import security_middleware
    from evstore.server.ui import models as ui_models
    from evstore.tracking.service import TrackingService, close_tracking_store
    from evstore.users import Directory

    store = StoreGate()
    client = store.call(TrackingService, settings.store, True, settings.artifacts_root)
    store.call(client.ensure_default_experiment)
    artifacts_api.remove_stray_uploads(client.artifact_root)
    hidden = hidden_paths(str(getattr(client.store, "path", settings.store)), client.artifact_root)
    directory = Directory(client.store)
    guard = Guard(directory, settings.default_permission)
    checked = {key: (schema, guard.wrap(key[1], handler, key[0])) for key, (schema, handler) in ENDPOINTS.items()}
    auth_api = auth_endpoints(guard)
    sessions = ui.Sessions(settings.auth_token, directory)
    checkpoints = None
    if settings.checkpoint_every:
        from evstore.checkpoint import CheckpointWriter

        checkpoints = CheckpointWriter(
            client.store, settings.checkpoint_key or "", settings.checkpoint_dir or "."
        )

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:  # noqa: BLE001 - every failure becomes MLflow's error shape
                return response_for(e, hidden)

        return endpoint

    @guarded
    async def mlflow_api(request: Request) -> Response:
        return await serve_mlflow(request, request.path_params["path"])

    def write_key(path: str, from_path: dict[str, str], parsed: Any, supplied: str) -> str:
        # The tracking service derives a keyed write's event ids from the key and the
        # request it carries out (so a header reused for another request stores that
        # one), hence the key names only what the request does not: the endpoint, the
        # ids in its path and the run (ids are unique across the log, and two runs may
        # log the same point).
        named = "\0".join(f"{k}={v}" for k, v in sorted(from_path.items()))
        return f"mlflow/{path}\0{named}\0{getattr(parsed, 'run_id', '')}\0{supplied}"

    async def serve_mlflow(request: Request, path: str) -> Response:
        # A template's own text ("logged-models/{model_id}") is no path a client sends.
        found = None if "{" in path else checked.get((request.method, path))
        from_path: dict[str, str] = {}
        if found is None and (matched := match_path(request.method, path)) is not None:
            path, from_path = matched  # the template: its rule, its slow/quick lane
            found = checked[(request.method, path)]
        if found is None:
            raise not_found(request)
        schema, handler = found
        parsed: Any = await parse_request(request, schema, settings.max_json_bytes)
        for field, value in from_path.items():
            setattr(parsed, field, value)
        key = write_key(path, from_path, parsed, request.headers.get("idempotency-key") or "")
        run = store.slow if path in SLOW_ENDPOINTS else store.quick
        return json_response(await run(handler, client, parsed, key))

    @guarded
    async def mlflow_auth_api(request: Request) -> Response:
        path = request.url.path.removeprefix("/api/")
        found = auth_api.get((request.method, path))
        if found is None:
            raise not_found(request)
        schema, handler = found
        parsed: Any = await parse_request(request, schema, settings.max_json_bytes)
        return json_response(await store.quick(handler, client, parsed))

    def artifact_permission(path: str, write: bool) -> None:
        guard.check_artifacts(path.strip("/").split("/", 1)[0], write)

    @guarded
    async def artifact_file(request: Request) -> Response:
        artifact_permission(request.path_params["path"], request.method == "PUT")
        if request.method == "PUT":
            return await artifacts_api.upload(request, client, store, settings.max_artifact_bytes)
        return await artifacts_api.download(request, client, store)

    @guarded
    async def artifact_list(request: Request) -> Response:
        artifact_permission(request.query_params.get("path", ""), False)
        return await artifacts_api.list_files(request, client, store)

    def evstore_route(view: Callable[[Any, Request], Any], rule: str = "any") -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if rule == "admin":
                guard.check_admin()
            elif rule == "run":
                await store.quick(guard.check_run, client, request.path_params["run_id"])
            return json_response(await store.slow(view(client, request)))

        return guarded(endpoint)

    @guarded
    async def fallback(request: Request) -> Response:
        raise not_found(request)

    def not_found(request: Request) -> HTTPError:
        return HTTPError(
            404, "ENDPOINT_NOT_FOUND",
            f"evstore server does not implement {request.method} {request.url.path}",
        )  # fmt: skip

    async def health(request: Request) -> Response:
        return PlainTextResponse("OK")

    async def version(request: Request) -> Response:
        return PlainTextResponse(__version__)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import asyncio

        every = settings.checkpoint_every or 0
        writing = checkpoints and asyncio.create_task(checkpoints.every(every, store.slow))
        yield
        if writing:
            writing.cancel()
        await store.slow(close_tracking_store, settings.store)
        store.shutdown()

    artifacts = artifacts_api.PREFIX
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/version", version),
            Route("/api/2.0/mlflow/users/{action:path}", mlflow_auth_api, methods=["GET", "POST", "PATCH", "DELETE"]),
            Route("/api/3.0/mlflow/users/permissions/{action}", mlflow_auth_api, methods=["GET", "POST"]),
            Route("/api/2.0/mlflow/{path:path}", mlflow_api, methods=["GET", "POST", "PATCH", "DELETE"]),
            Route(artifacts, artifact_list, methods=["GET"]),
            Route(artifacts + "/{path:path}", artifact_file, methods=["GET", "PUT"]),
            Route("/api/evstore/events", evstore_route(evstore_api.events_page, "admin")),
            Route("/api/evstore/runs/{run_id}/history", evstore_route(evstore_api.run_history, "run")),
            Route("/api/evstore/verify", evstore_route(evstore_api.verify, "admin")),
            Route("/api/evstore/info", evstore_route(evstore_api.info)),
            *ui.routes(client, store, settings.auth_token, hidden, guarded, sessions, lambda: auth_required(),
                       ui_models.reader(guard)),
            Route("/{path:path}", fallback, methods=_ALL_METHODS),
        ],
        lifespan=lifespan,
    )
    async def tracking_first(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # MLflow's tracking calls go straight to their endpoint (the route below would
        # take them there): Starlette's router and middleware cost a tenth of a log_metric.
        path = scope["path"] if scope["type"] == "http" and not scope.get("root_path") else ""
        if (
            path.startswith(_MLFLOW_PREFIX)
            and not path.startswith(_MLFLOW_USERS_PREFIX)
            and scope["method"] in ("GET", "POST")
        ):
            endpoint = path[len(_MLFLOW_PREFIX) :]
            if scope["method"] == "POST" and ("POST", endpoint) in checked:
                await serve_post(scope, receive, send, endpoint)
                return
            request = Request(scope, receive)
            try:
                response = await serve_mlflow(request, endpoint)
            except Exception as e:  # noqa: BLE001 - every failure becomes MLflow's error shape
                response = response_for(e, hidden)
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    async def serve_post(scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        # serve_mlflow for a POST to a fixed path (every logging call), on the raw ASGI
        # messages: no Request, no header object, no Response (a fifth of a log_metric).
        try:
            declared = content_type = supplied = None
            for name, value in scope["headers"]:  # the first of a repeated one, as Headers.get
                if name == b"content-length" and declared is None:
                    declared = value
                elif name == b"content-type" and content_type is None:
                    content_type = value
                elif name == b"idempotency-key" and supplied is None:
                    supplied = value
            body = await receive_body(receive, declared, settings.max_json_bytes)
            check_json_content_type(None if content_type is None else content_type.decode("latin-1"))
            schema, handler = checked[("POST", path)]
            parsed: Any = decode_body(body, schema, scope["path"])
            key = write_key(path, {}, parsed, "" if supplied is None else supplied.decode("latin-1"))
            run = store.slow if path in SLOW_ENDPOINTS else store.quick
            answer = await run(handler, client, parsed, key)
        except Exception as e:  # noqa: BLE001 - every failure becomes MLflow's error shape
            await response_for(e, hidden)(scope, receive, send)
            return
        await send_json(send, answer)

    guarded_app, auth_required = authentication(
        ui_permission(tracking_first, guard), directory, settings.auth_token
    )
    with_ui = ui.ui_gate(ui_permission(tracking_first, guard), guarded_app, sessions, auth_required)
    hosts = list(settings.allowed_hosts) if settings.allowed_hosts else None
    return security_middleware(with_ui, hosts, settings.bind_host, list(settings.cors_allowed_origins))


def serve(
    settings: ServerSettings, host: str = "127.0.0.1", port: int = 5000, workers: int = 1
) -> None:
    """Serve the store with uvicorn until interrupted; ``workers`` processes share the
    port (a store many processes write: PostgreSQL)."""
    import uvicorn

    settings = dataclasses.replace(settings, bind_host=host)
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": "warning", "access_log": False,
        "timeout_keep_alive": 60, "server_header": False,
        # The client address stamped on events is the socket's peer: uvicorn would take
        # X-Forwarded-For from any loopback caller, so a local process could forge it.
        "proxy_headers": False,
    }  # fmt: skip
    if workers > 1:
        from evstore.stores import open_log

        open_log(settings.store).close()  # made once, here; a bad store fails before serving
        os.environ[_SETTINGS_VARIABLE] = json.dumps(dataclasses.asdict(settings))
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)
        return
    uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()


#: How a server hands its settings to its worker processes.
_SETTINGS_VARIABLE = "EVSTORE_SERVER_SETTINGS"


def app_from_environment() -> Any:
    """The app of one worker process of ``serve(workers=N)``, from the settings it left."""
    fields = json.loads(os.environ[_SETTINGS_VARIABLE])
    for name in ("allowed_hosts", "cors_allowed_origins"):
        if fields.get(name) is not None:
            fields[name] = tuple(fields[name])
    return create_app(ServerSettings(**fields))
