"""Users of a server and their tokens, kept as events in the log (the stream ``users``).

    evstore users add NAME [--admin]     -> prints the token once
    evstore users list | disable NAME | rotate NAME

Adding, rotating and disabling are events like any other (``UserAdded``,
``UserTokenRotated``, ``UserDisabled``), so access changes are in the audit trail, with
who made them. A token is 32 random bytes (``evs_`` + URL-safe base64); only its sha256
is stored, which is enough for a secret of that strength (a slow KDF is for passwords,
which people choose). Once a store has a user, ``evstore server`` requires one on every
route but ``/health``.

:class:`Directory` is the server's view: the users folded from the stream, re-read only
when the stream has grown (one indexed read per request), so a user disabled from the
CLI is refused by a running server at its next request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from typing import NamedTuple

from evstore.errors import (
    ConcurrencyError,
    InvalidParameterValue,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)
from evstore.events import UserAdded, UserDisabled, UserTokenRotated
from evstore.stores.base import EventStore

#: The stream every user event belongs to.
USERS_STREAM = "users"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_TOKEN_PREFIX = "evs_"


class User(NamedTuple):
    """A user as the stream says now."""

    name: str
    admin: bool
    disabled: bool
    token_sha256: str
    #: When the user was added (ms since the epoch) and by whom (principal or OS user).
    added_at: int
    added_by: str


def token_digest(token: str | bytes) -> str:
    """The hex sha256 a token is kept as."""
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    """A user name: 1-64 letters, digits and ``. _ @ + -``, not starting with a symbol."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameterValue(
            f"invalid user name {name!r}: use 1-64 letters, digits and . _ @ + - (starting"
            " with a letter or digit)"
        )
    return name


def fold(store: EventStore) -> tuple[int, dict[str, User]]:
    """(stream version, users by name) as the log holds them now."""
    users: dict[str, User] = {}
    version = 0
    for recorded in store.read_stream(USERS_STREAM):
        version = recorded.stream_version
        event = recorded.event
        meta = recorded.metadata
        if isinstance(event, UserAdded):
            by = str(meta.get("principal") or meta.get("user") or "")
            users[event.name] = User(event.name, event.admin, False, event.token_sha256,
                                     recorded.recorded_at, by)  # fmt: skip
        elif isinstance(event, UserTokenRotated) and event.name in users:
            users[event.name] = users[event.name]._replace(token_sha256=event.token_sha256)
        elif isinstance(event, UserDisabled) and event.name in users:
            users[event.name] = users[event.name]._replace(disabled=True)
    return version, users


def list_users(store: EventStore) -> list[User]:
    """Every user, by name."""
    return sorted(fold(store)[1].values())


def add_user(store: EventStore, name: str, admin: bool = False) -> str:
    """Add a user; returns their token (shown once: only its digest is kept)."""
    check_name(name)
    token = new_token()
    _append_checked(store, name, UserAdded(name=name, token_sha256=token_digest(token), admin=admin),
                    must_exist=False)  # fmt: skip
    return token


def rotate_token(store: EventStore, name: str) -> str:
    """Give a user a new token; the old one is refused from now on. Returns the new one."""
    token = new_token()
    _append_checked(store, name, UserTokenRotated(name=name, token_sha256=token_digest(token)))
    return token


def disable_user(store: EventStore, name: str) -> bool:
    """Refuse a user from now on; False if they were disabled already (nothing written)."""
    with store.transaction():
        version, users = fold(store)
        found = users.get(name)
        if found is None:
            raise ResourceDoesNotExist(f"no user named {name!r}")
        if found.disabled:
            return False
        store.append(USERS_STREAM, [UserDisabled(name=name)], expected_version=version)
    return True


def _append_checked(store: EventStore, name: str, event: object, must_exist: bool = True) -> None:
    # Inside the write transaction: the fold and the append see the same stream.
    with store.transaction():
        version, users = fold(store)
        found = users.get(name)
        if must_exist and found is None:
            raise ResourceDoesNotExist(f"no user named {name!r}")
        if not must_exist and found is not None:
            raise ResourceAlreadyExists(f"a user named {name!r} exists already")
        if must_exist and found is not None and found.disabled:
            raise InvalidParameterValue(f"user {name!r} is disabled")
        try:
            store.append(USERS_STREAM, [event], expected_version=version)  # type: ignore[list-item]
        except ConcurrencyError as e:  # not under the lock a transaction takes, but say so
            raise ConcurrencyError(f"the users changed meanwhile; try again ({e})") from e


class Directory:
    """The users a server authenticates against, re-read when the stream grows."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._version = -1
        self._by_token: dict[str, User] = {}
        self._by_name: dict[str, User] = {}

    def _refresh(self) -> None:
        version = self._store.stream_version(USERS_STREAM)
        if version == self._version:
            return
        with self._lock:
            version, users = fold(self._store)
            self._by_name = users
            self._by_token = {u.token_sha256: u for u in users.values() if not u.disabled}
            self._version = version

    def has_users(self) -> bool:
        """Whether the store has any user (then every request must name one)."""
        self._refresh()
        return bool(self._by_name)

    def bearer(self, token: bytes) -> User | None:
        """The enabled user whose token this is, or None."""
        self._refresh()
        digest = token_digest(token)
        found = self._by_token.get(digest)
        # The dict lookup found it by its digest; compare again in constant time anyway.
        if found is None or not hmac.compare_digest(found.token_sha256, digest):
            return None
        return found

    def basic(self, credentials: bytes) -> User | None:
        """The enabled user named by HTTP Basic credentials (base64 of ``name:token``)."""
        try:
            name, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        self._refresh()
        found = self._by_name.get(name)
        digest = token_digest(password)
        if found is None or found.disabled or not hmac.compare_digest(found.token_sha256, digest):
            return None
        return found
