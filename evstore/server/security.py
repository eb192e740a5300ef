"""The server's guard against browsers: Host header (DNS rebinding) and Origin (CORS) checks.

Mirrors MLflow 3.17's security middleware (``mlflow/server/fastapi_security.py``), answering
as it does: a Host outside the allowed list gets ``403`` ``text/plain`` "Invalid Host header
- possible DNS rebinding attack detected" (``/health`` and ``/version`` are exempt); a
POST/PUT/DELETE/PATCH whose Origin is not allowed gets ``403`` "Cross-origin request
blocked"; preflights are answered by Starlette's CORSMiddleware configured as MLflow's.

Allowed hosts by default: localhost, 127.0.0.1, [::1], 0.0.0.0, the bound address and
private-range IP literals (10/8, 172.16/12, 192.168/16, fc00::/7), any port. MLflow
matches its private ranges as the patterns ``10.*`` and ``192.168.*``, which also let in
names such as ``10.attacker.example``; here an address is parsed as an IP, so they do not.
``allowed_hosts`` replaces the defaults as ``--allowed-hosts`` does in MLflow: an entry
with ``*`` is an fnmatch pattern, ``*`` alone allows every host, an entry without a port
matches any port. Allowed origins: loopback origins (as MLflow), the server's own origin
(the Origin's host is the request's Host), and ``allowed_origins`` (``*`` allows all).

A plain ASGI wrapper over the raw headers: a request without an Origin header (the mlflow
client, scripts) costs one pass over its headers and one dict lookup.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import re
from typing import Any

logger = logging.getLogger("evstore.server")

INVALID_HOST_MESSAGE = b"Invalid Host header - possible DNS rebinding attack detected"
CORS_BLOCKED_MESSAGE = b"Cross-origin request blocked"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
_HOST_CHECK_EXEMPT = frozenset({"/health", "/version"})
_STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_CORS_METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]
_LOOPBACK_ORIGIN = (
    r"^http://localhost(:[0-9]+)?$|^http://127\.0\.0\.1(:[0-9]+)?$|^http://\[::1\](:[0-9]+)?$"
)
_LOOPBACK_ORIGIN_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_PORT = re.compile(r":[0-9]*$")
_CACHED = 1024


def split_port(host: str) -> str:
    """The host name of a Host header value, lower-cased, without its port: '[::1]:80' -> '[::1]'."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        return _PORT.sub("", host)
    return host


def _is_private_ip(name: str) -> bool:
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE_NETWORKS)


def _bracketed(host: str) -> str:
    """A bind address as it appears in a Host header: '::1' -> '[::1]'."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class HostRule:
    """Which Host header values a server answers (see the module docstring)."""

    def __init__(self, allowed_hosts: list[str] | None, bound_host: str) -> None:
        self.patterns = [h.strip().lower() for h in allowed_hosts or [] if h.strip()]
        self.allow_all = "*" in self.patterns
        self.names = set() if self.patterns else {*LOCAL_HOSTS, _bracketed(bound_host.lower())}
        self._known: dict[bytes, bool] = {}

    def allows(self, host: bytes) -> bool:
        """True when the raw Host header value names this server."""
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= _CACHED:
                self._known.clear()
            known = self._known[host] = self._decide(host.decode("latin-1"))
        return known

    def _decide(self, host: str) -> bool:
        if self.allow_all:
            return True
        name = split_port(host)
        if not name:
            return False
        if not self.patterns:
            return name in self.names or _is_private_ip(name)
        full = host.strip().lower()
        return any(
            fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(name, p)
            if "*" in p
            else p in (full, name)
            for p in self.patterns
        )


def origin_allowed(origin: str, host: str, allowed_origins: list[str]) -> bool:
    """True when a browser at ``origin`` may change state on this server (Host ``host``)."""
    scheme, _, rest = origin.partition("://")
    origin_host = rest.lower()
    if scheme and split_port(origin_host) in _LOOPBACK_ORIGIN_HOSTS:
        return True  # MLflow allows every loopback origin
    if origin_host and origin_host == host.strip().lower():
        return True  # the server's own origin
    return any(fnmatch.fnmatchcase(origin, a) if "*" in a else origin == a for a in allowed_origins)


def security_middleware(
    app: Any, allowed_hosts: list[str] | None, bound_host: str, allowed_origins: list[str]
) -> Any:
    """``app`` behind the Host and Origin checks, with CORS preflights answered."""
    from starlette.middleware.cors import CORSMiddleware

    hosts = HostRule(allowed_hosts, bound_host)
    check_hosts = not hosts.allow_all
    any_origin = "*" in allowed_origins
    if any_origin:  # as MLflow: no credentials with a wildcard origin
        cors = CORSMiddleware(app, allow_origins=["*"], allow_credentials=False, allow_methods=["*"],
                              allow_headers=["*"], expose_headers=["*"])  # fmt: skip
    else:  # MLflow's CORSMiddleware takes its '*' patterns literally; here they match
        patterns = "|".join(
            [_LOOPBACK_ORIGIN] + [fnmatch.translate(a) for a in allowed_origins if "*" in a]
        )
        cors = CORSMiddleware(
            app, allow_origins=allowed_origins, allow_origin_regex=patterns,
            allow_credentials=True, allow_methods=_CORS_METHODS, allow_headers=["*"], expose_headers=["*"],
        )  # fmt: skip

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        if (
            check_hosts
            and not hosts.allows(host or b"")
            and scope["path"] not in _HOST_CHECK_EXEMPT
        ):
            logger.warning("Rejected request with invalid Host header: %r", host)
            await _forbidden(send, INVALID_HOST_MESSAGE)
            return
        if origin is None:
            await app(scope, receive, send)
            return
        if (
            not any_origin
            and scope["method"] in _STATE_CHANGING
            and not origin_allowed(
                origin.decode("latin-1"), (host or b"").decode("latin-1"), allowed_origins
            )
        ):
            logger.warning("Blocked cross-origin request from %r", origin)
            await _forbidden(send, CORS_BLOCKED_MESSAGE)
            return
        await cors(scope, receive, send)

    return guarded


async def _forbidden(send: Any, message: bytes) -> None:
    """MLflow's answer to a refused Host or Origin: 403, text/plain."""
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(message)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": message})
