"""The web UI ``evstore server`` serves at ``/``: runs, charts, the audit trail, the store.

A small JavaScript app without a build step (``static/``): every page is the same HTML
shell, and its script fetches what the page shows from ``/ui/api/`` (``api.py``). Why not
server-rendered templates: the charts, the column chooser and the time control are
interactive anyway, and building every element with ``textContent`` in one place makes
"every user-supplied string is escaped" a property of one helper (``el`` in ``dom.js``)
rather than of each template. Charts use uPlot (MIT, vendored with its license), made for
long time series; the server downsamples each series to about the pixels drawn.

The UI sits behind the same gate as the API (Host and Origin checks, the bearer token).
With a token, a browser signs in once at ``/ui/signin``: the server answers with an
HttpOnly, SameSite=Strict cookie holding an HMAC of the token (never the token), which
the gate accepts for the UI's own GET routes only, never for the MLflow API's writes.
Every UI response carries a strict Content-Security-Policy: scripts from this server only,
no inline script or style.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from evstore.identity import set_acting

STATIC_DIRECTORY = os.path.join(os.path.dirname(__file__), "static")
STATIC_PREFIX = "/ui/static"
API_PREFIX = "/ui/api"
SIGNIN_PATH = "/ui/signin"
COOKIE_NAME = "evstore_session"
#: The pages people paste into a chat: each answers the same shell.
PAGE_ROUTES = ("/", "/experiments", "/experiments/{experiment_id}", "/runs/{run_id}",
               "/runs/{run_id}/history", "/compare", "/store", "/models", "/models/{name:path}")  # fmt: skip
_PAGE_PREFIXES = ("/experiments", "/runs/", "/compare", "/store", "/models")
_PAGE_NAMES = frozenset(p.rstrip("/") for p in _PAGE_PREFIXES)  # "/runs" as well as "/runs/..."
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:;"
    " connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
_UI_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def session_value(token: str) -> str:
    """The cookie a signed-in browser holds: an HMAC of the token, not the token itself."""
    return hmac.new(token.encode(), b"evstore ui session", hashlib.sha256).hexdigest()


class Sessions:
    """Who a UI session cookie stands for: the shared ``--auth-token``, or a user.

    A user's cookie is their name and an HMAC, under a secret of this server process, of
    their name and their token's digest: it holds no secret, a rotated or disabled token
    ends the session at once, and a restart signs everyone out.
    """

    def __init__(self, token: str | None, directory: Any = None) -> None:
        import secrets

        self._shared = session_value(token) if token else None
        self._directory = directory
        self._secret = secrets.token_bytes(32)

    def _mac(self, name: str, digest: str) -> str:
        return hmac.new(self._secret, f"{name}\0{digest}".encode(), hashlib.sha256).hexdigest()

    def sign_in(self, sent: str, token: str | None) -> str | None:
        """The cookie for a token typed into the sign-in page, or None if it is no one's."""
        if token is not None and hmac.compare_digest(sent.encode(), token.encode()):
            return self._shared
        user = self._directory.bearer(sent.encode()) if self._directory is not None and sent else None
        return None if user is None else f"u.{user.name}.{self._mac(user.name, user.token_sha256)}"

    def who(self, cookie: str) -> tuple[bool, str | None]:
        """(whether the cookie is a live session, the user it stands for: None for the shared token)."""
        if self._shared is not None and hmac.compare_digest(cookie.encode("latin-1"), self._shared.encode()):
            return True, None
        kind, _, rest = cookie.partition(".")
        name, _, mac = rest.rpartition(".")
        if kind != "u" or not name or self._directory is None:
            return False, None
        user = self._directory.user(name)
        if user is None or user.disabled:
            return False, None
        return hmac.compare_digest(mac.encode("latin-1"), self._mac(name, user.token_sha256).encode()), name


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the UI's pages (not its API, assets or sign-in)."""
    return path == "/" or path.startswith(_PAGE_PREFIXES) or path in _PAGE_NAMES


def is_ui(path: str) -> bool:
    """Whether ``path`` belongs to the UI (pages, ``/ui/...``)."""
    return is_page(path) or path.startswith("/ui/")


def _public(path: str) -> bool:
    return path == SIGNIN_PATH or path.startswith(STATIC_PREFIX + "/")


def _cookie(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, found = part.strip().partition("=")
                if key == COOKIE_NAME:
                    return found.strip('"')  # quoted when it holds a name with @
    return None


def ui_gate(
    app: Any, api_app: Any, sessions: Sessions, auth_required: Callable[[], bool] = lambda: False
) -> Any:
    """Route UI requests around the bearer check when a session cookie vouches for them.

    ``app`` is the app without the bearer check, ``api_app`` the same app behind it. UI
    responses get the security headers. Without a token everything goes to ``api_app``.
    Once the store has users (``auth_required`` says so), the sign-in page takes a user's
    token too, and their session acts as them (``evstore.identity``); ``app`` must then
    check what they may read (``permissions.ui_permission``).
    """

    async def gate(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not is_ui(path):
            await api_app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _UI_HEADERS
            await send(message)

        if _public(path) or not auth_required():
            await app(scope, receive, with_headers)
            return
        cookie = _cookie(scope)
        if cookie is not None and scope["method"] in ("GET", "HEAD"):
            live, user = sessions.who(cookie)
            if live:
                if user is not None:
                    client = scope.get("client")
                    set_acting(user, client[0] if client else None)
                await app(scope, receive, with_headers)
                return
        has_bearer = any(k == b"authorization" for k, _ in scope["headers"])
        if is_page(path) and not has_bearer:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + ("?" + query if query else "")
            await _redirect(with_headers, f"{SIGNIN_PATH}?next={quote(target, safe='')}")
            return
        await api_app(scope, receive, with_headers)

    return gate


async def _redirect(send: Any, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/experiments"
    return target


_SIGNIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · evstore</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/static/style.css"></head>
<body><main class="signin"><h1>evstore</h1>
<p>This server asks for its access token.</p>
<form method="post" action="/ui/signin">
<input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button></form><p class="error">{error}</p></main></body></html>
"""


def routes(service: Any, gate: Any, token: str | None, hidden: Any,
           guarded: Callable[[Any], Any], sessions: Sessions | None = None,
           auth_required: Callable[[], bool] = lambda: False,
           may_read_model: Callable[[Any, str], bool] | None = None) -> list[Any]:  # fmt: skip
    """The UI's Starlette routes: pages, ``/ui/api``, static assets, sign-in.
    ``may_read_model(service, name)`` says whether the caller may see a registered model
    (``models.reader`` of the server's permission check; everyone without one)."""
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from evstore.server._http import json_response
    from evstore.server.ui import api, artifacts, models
    from evstore.server.ui.series import SeriesCache

    cache = SeriesCache()
    shell = os.path.join(STATIC_DIRECTORY, "index.html")

    async def page(request: Request) -> Response:
        return FileResponse(shell, media_type="text/html", headers={"cache-control": "no-cache"})

    async def signin(request: Request) -> Response:
        if request.method == "GET":
            return _signin_page(request.query_params.get("next"), "")
        form = parse_qs((await request.body())[:8192].decode("utf-8", "replace"))
        target = safe_next((form.get("next") or [""])[0])
        sent = (form.get("token") or [""])[0]
        if not auth_required():
            return RedirectResponse(target, status_code=303)
        cookie = (sessions or Sessions(token)).sign_in(sent, token)
        if cookie is None:
            return _signin_page(target, "That token is not this server's, nor a user's.", 401)
        response = RedirectResponse(target, status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE_NAME, cookie, httponly=True, samesite="strict",
                            secure=secure, path="/")  # fmt: skip
        return response

    def _signin_page(target: str | None, error: str, status: int = 200) -> Response:
        body = _SIGNIN_PAGE.format(next=html.escape(safe_next(target)), error=html.escape(error))
        return HTMLResponse(body, status_code=status)

    def json_view(make: Callable[[Request], Callable[[], Any]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return json_response(await gate.slow(make(request)))

        return guarded(endpoint)

    def with_hidden(view: Any) -> Callable[[Request], Any]:
        return lambda request: view(service, request, hidden)

    def plain(view: Any) -> Callable[[Request], Any]:
        return lambda request: view(service, request)

    may_read = may_read_model or models.everyone

    def registry(view: Any, *more: Any) -> Callable[[Request], Any]:
        return lambda request: view(service, request, may_read, *more)

    async def artifact(request: Request) -> Response:
        return await artifacts.serve(request, service, gate)

    pages = [Route(path, page, methods=["GET", "HEAD"]) for path in PAGE_ROUTES]
    run = API_PREFIX + "/runs/{run_id}"
    return pages + [
        Route(SIGNIN_PATH, signin, methods=["GET", "POST"]),
        Route(API_PREFIX + "/experiments", json_view(plain(api.experiments))),
        Route(API_PREFIX + "/experiments/{experiment_id}/runs", json_view(with_hidden(api.runs_page))),
        Route(API_PREFIX + "/experiments/{experiment_id}/keys", json_view(plain(api.experiment_keys))),
        Route(run, json_view(with_hidden(api.run_page))),
        Route(run + "/history", json_view(with_hidden(api.run_history))),
        Route(run + "/artifacts", json_view(plain(api.artifacts))),
        Route(run + "/artifact", guarded(artifact)),
        Route(run + "/models", json_view(registry(models.run_models, hidden))),
        Route(API_PREFIX + "/models", json_view(registry(models.models_page))),
        Route(API_PREFIX + "/models/{name:path}", json_view(registry(models.model_page, hidden))),
        Route(API_PREFIX + "/series", json_view(lambda request: api.series(service, request, cache))),
        Route(API_PREFIX + "/compare", json_view(with_hidden(api.compare))),
        Route(API_PREFIX + "/store", json_view(plain(api.store_health))),
        Mount(STATIC_PREFIX, app=StaticFiles(directory=STATIC_DIRECTORY)),
    ]

