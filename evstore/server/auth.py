"""Who is calling: the shared ``--auth-token``, or the store's users (``evstore users``).

With neither, the server takes any caller (bound to loopback by default). ``/health`` is
always open (as in MLflow's basic-auth app). With a shared token, every other request
must send ``Authorization: Bearer <token>``; its principal is
``shared-token``. Once the store has users, every request must name one: ``Bearer
<token>`` (the mlflow client's ``MLFLOW_TRACKING_TOKEN``) or HTTP ``Basic`` with the
user's name and token as the password (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``). Scheme names are case-insensitive, credentials are compared
in constant time, and a failure is ``401 UNAUTHENTICATED`` in MLflow's error shape.

The principal found is set for the request (``evstore.identity``): every event the
request appends carries it, with the client's address, in its commit's metadata.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

from evstore.identity import set_acting
from evstore.server._http import error_response
from evstore.users import Directory, Users

#: Paths answered without credentials: ``/health`` says only that the server is up.
OPEN_PATHS = frozenset({"/health"})
#: The principal of a request that sent the shared ``--auth-token``.
SHARED_TOKEN_PRINCIPAL = "shared-token"


def authentication(app: Any, directory: Directory, token: str | None) -> tuple[Any, Callable[[], bool]]:
    """``app`` behind the check above, and a function telling whether a check applies now
    (a token is set, or the store has users: the CLI may add one while the server runs)."""
    shared = token.encode() if token else None

    def required() -> bool:
        return shared is not None or directory.has_users()

    def principal(scheme: bytes, credentials: bytes, users: Users) -> str | None:
        if scheme == b"bearer" and credentials:
            if shared is not None and hmac.compare_digest(credentials, shared):
                return SHARED_TOKEN_PRINCIPAL
            found = users.bearer(credentials) if users.by_name else None
            return None if found is None else found.name
        if scheme == b"basic" and credentials and users.by_name:
            found = directory.basic(credentials)
            return None if found is None else found.name
        return None

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] in OPEN_PATHS:  # liveness probes, as MLflow's basic-auth
            await app(scope, receive, send)
            return
        users = directory.current()
        if shared is None and not users.by_name:
            await app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, credentials = sent.strip(b" ").partition(b" ")
        scheme, credentials = scheme.lower(), credentials.strip(b" ")
        if scheme == b"basic":
            # A password check is scrypt (tens of ms): off the event loop, so a flood of
            # wrong passwords cannot stall every other request.
            who = await asyncio.to_thread(principal, scheme, credentials, users)
        else:
            who = principal(scheme, credentials, users)
        if who is not None:
            client = scope.get("client")
            set_acting(who, client[0] if client else None)
            await app(scope, receive, send)
            return
        if not sent:
            message = (
                "Missing credentials: this server requires a user's token"
                " (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)."
                if users.by_name
                else "Missing bearer token: this server requires 'Authorization: Bearer <token>'"
                " (set MLFLOW_TRACKING_TOKEN for the mlflow client)."
            )
        else:
            message = "Invalid credentials." if users.by_name else "Invalid bearer token."
        response = error_response(401, "UNAUTHENTICATED", message)
        response.headers["WWW-Authenticate"] = 'Basic realm="evstore"' if users.by_name else "Bearer"
        await response(scope, receive, send)

    return guarded, required
