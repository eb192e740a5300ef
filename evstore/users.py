"""Users of a server and their tokens, kept as events in the log (the stream ``users``).

    evstore users add NAME [--admin]     -> prints the token once
    evstore users list | disable NAME | rotate NAME
    evstore users grant NAME EXPERIMENT_ID PERMISSION | revoke NAME EXPERIMENT_ID

Every change is an event like any other (``UserAdded``, ``UserTokenRotated``,
``UserDisabled``, ``UserDeleted``, ``UserAdminChanged``, ``UserPasswordSet``,
``ExperimentPermissionGranted``, ``ExperimentPermissionRevoked``,
``RegisteredModelPermissionGranted``, ``RegisteredModelPermissionRevoked``), so access changes are
in the audit trail, with who made them. Users made through MLflow's basic-auth API have a
password instead of (or beside) a token, kept as a salted scrypt hash.

Permissions are MLflow's: READ, EDIT, MANAGE, NO_PERMISSIONS per experiment and per
registered model, a server-wide
default (READ unless ``--default-permission`` says otherwise) where a user has no grant,
and admins may do anything. A token is 32 random bytes (``evs_`` + URL-safe base64); only its sha256
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
from evstore.events import (
    ExperimentPermissionGranted,
    ExperimentPermissionRevoked,
    RegisteredModelPermissionGranted,
    RegisteredModelPermissionRevoked,
    UserAdded,
    UserAdminChanged,
    UserDeleted,
    UserDisabled,
    UserPasswordSet,
    UserTokenRotated,
)
from evstore.stores.base import EventStore

#: The stream every user event belongs to.
USERS_STREAM = "users"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_TOKEN_PREFIX = "evs_"


#: MLflow's permissions, by name: (may read, may update, may delete, may manage).
PERMISSIONS = {
    "READ": (True, False, False, False),
    "EDIT": (True, True, False, False),
    "MANAGE": (True, True, True, True),
    "NO_PERMISSIONS": (False, False, False, False),
}
#: What an operation needs, as an index into a PERMISSIONS tuple.
READ, UPDATE, DELETE, MANAGE = range(4)


def check_permission(permission: str) -> str:
    """A permission name MLflow knows, or InvalidParameterValue."""
    if permission not in PERMISSIONS:
        raise InvalidParameterValue(
            f"invalid permission {permission!r}: use one of {', '.join(PERMISSIONS)}"
        )
    return permission


class User(NamedTuple):
    """A user as the stream says now."""

    name: str
    admin: bool
    disabled: bool
    token_sha256: str
    #: When the user was added (ms since the epoch) and by whom (principal or OS user).
    added_at: int
    added_by: str
    #: The order the user was added in, from 1: MLflow's user id.
    id: int = 0
    password_hash: str = ""
    #: Permission by experiment id, and by registered model (its stream, ``registered-model-<hex>``).
    grants: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated in place

    def experiment_grants(self) -> dict[str, str]:
        """The grants on experiments alone."""
        return {k: v for k, v in self.grants.items() if not is_model_key(k)}


def token_digest(token: str | bytes) -> str:
    """The hex sha256 a token is kept as."""
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    """A user name: 1-64 letters, digits and ``. _ @ + -``, not starting with a symbol."""
    if not isinstance(name, str) or not _NAME.match(name) or name == "shared-token":
        raise InvalidParameterValue(
            f"invalid user name {name!r}: use 1-64 letters, digits and . _ @ + - (starting"
            " with a letter or digit)"
        )
    return name


def fold(store: EventStore) -> tuple[int, dict[str, User]]:
    """(stream version, users by name) as the log holds them now."""
    users: dict[str, User] = {}
    version = added = 0
    for recorded in store.read_stream(USERS_STREAM):
        version = recorded.stream_version
        event = recorded.event
        if isinstance(event, UserAdded):
            meta = recorded.metadata
            added += 1
            by = str(meta.get("principal") or meta.get("user") or "")
            users[event.name] = User(event.name, event.admin, False, event.token_sha256,
                                     recorded.recorded_at, by, added, "", {})  # fmt: skip
            continue
        found = users.get(getattr(event, "name", ""))
        if found is None:
            continue
        if isinstance(event, UserTokenRotated):
            found = found._replace(token_sha256=event.token_sha256)
        elif isinstance(event, UserDisabled):
            found = found._replace(disabled=True)
        elif isinstance(event, UserAdminChanged):
            found = found._replace(admin=event.admin)
        elif isinstance(event, UserPasswordSet):
            found = found._replace(password_hash=event.password_hash)
        elif isinstance(event, ExperimentPermissionGranted):
            found = found._replace(grants={**found.grants, event.experiment_id: event.permission})
        elif isinstance(event, ExperimentPermissionRevoked):
            found = found._replace(grants={k: v for k, v in found.grants.items() if k != event.experiment_id})
        elif isinstance(event, RegisteredModelPermissionGranted):
            found = found._replace(grants={**found.grants, event.model_key: event.permission})
        elif isinstance(event, RegisteredModelPermissionRevoked):
            found = found._replace(grants={k: v for k, v in found.grants.items() if k != event.model_key})
        elif isinstance(event, UserDeleted):
            del users[event.name]
            continue
        users[found.name] = found
    return version, users


def list_users(store: EventStore) -> list[User]:
    """Every user, by name."""
    return sorted(fold(store)[1].values())


def add_user(store: EventStore, name: str, admin: bool = False, password: str | None = None) -> str:
    """Add a user; returns their token (shown once: only its digest is kept). With a
    ``password`` (MLflow's ``users/create``) they may also sign in with it."""
    check_name(name)
    token = new_token()
    events: list[object] = [UserAdded(name=name, token_sha256=token_digest(token), admin=admin)]
    if password is not None:
        events.append(UserPasswordSet(name=name, password_hash=hash_password(password)))
    _append_checked(store, name, *events, must_exist=False)
    return token


def set_password(store: EventStore, name: str, password: str) -> None:
    """Set a user's password (kept as a salted scrypt hash)."""
    _append_checked(store, name, UserPasswordSet(name=name, password_hash=hash_password(password)))


def set_admin(store: EventStore, name: str, admin: bool) -> None:
    """Make a user an admin, or not."""
    _append_checked(store, name, UserAdminChanged(name=name, admin=bool(admin)))


def delete_user(store: EventStore, name: str) -> None:
    """Remove a user: refused from now on; what they did stays in the log, with their name."""
    _append_checked(store, name, UserDeleted(name=name), allow_disabled=True)


def grant(store: EventStore, name: str, experiment_id: str, permission: str) -> None:
    """Give a user ``permission`` on one experiment (replacing any earlier grant)."""
    event = ExperimentPermissionGranted(
        experiment_id=str(experiment_id), name=name, permission=check_permission(permission)
    )
    _append_checked(store, name, event, allow_disabled=True)


def revoke(store: EventStore, name: str, experiment_id: str) -> bool:
    """Remove a user's grant on one experiment; False if they had none (nothing written)."""
    with store.transaction():
        _, users = fold(store)
        found = users.get(name)
        if found is None:
            raise ResourceDoesNotExist(f"User with username={name} not found")
        if str(experiment_id) not in found.grants:
            return False
        _append_checked(store, name, ExperimentPermissionRevoked(experiment_id=str(experiment_id), name=name),
                        allow_disabled=True)  # fmt: skip
    return True


def is_model_key(key: str) -> bool:
    """Whether a grant's key names a registered model (its stream) rather than an experiment."""
    return key.startswith("registered-model-")


def grant_model(store: EventStore, name: str, model_key: str, model_name: str, permission: str) -> None:
    """Give a user ``permission`` on one registered model (replacing any earlier grant)."""
    event = RegisteredModelPermissionGranted(model_key=model_key, model_name=model_name, name=name,
                                             permission=check_permission(permission))  # fmt: skip
    _append_checked(store, name, event, allow_disabled=True)


def revoke_model(store: EventStore, name: str, model_key: str, model_name: str) -> bool:
    """Remove a user's grant on one registered model; False if they had none."""
    with store.transaction():
        found = fold(store)[1].get(name)
        if found is None:
            raise ResourceDoesNotExist(f"User with username={name} not found")
        if model_key not in found.grants:
            return False
        event = RegisteredModelPermissionRevoked(model_key=model_key, model_name=model_name, name=name)
        _append_checked(store, name, event, allow_disabled=True)
    return True


#: scrypt's cost: 2**14 x 8, about 16 MiB and a few tens of ms per check (a server keeps
#: the outcome of a check for the Directory's version, so a client's calls pay it once).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """A salted scrypt hash of a password, self-describing: scrypt$n$r$p$salt$hash."""
    if not isinstance(password, str) or not password:
        raise InvalidParameterValue("Username and password cannot be empty.")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (a ``hash_password`` value) was made of."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt),
                             n=int(n), r=int(r), p=int(p), dklen=len(expected))  # fmt: skip
    except (ValueError, binascii.Error):
        return False
    return kind == "scrypt" and hmac.compare_digest(got, expected)


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
            raise ResourceDoesNotExist(f"User with username={name} not found")
        if found.disabled:
            return False
        store.append(USERS_STREAM, [UserDisabled(name=name)], expected_version=version)
    return True


def _append_checked(
    store: EventStore, name: str, *events: object, must_exist: bool = True, allow_disabled: bool = False
) -> None:
    # Inside the write transaction: the fold and the append see the same stream.
    with store.transaction():
        version, users = fold(store)
        found = users.get(name)
        if must_exist and found is None:
            raise ResourceDoesNotExist(f"User with username={name} not found")
        if not must_exist and found is not None:
            raise ResourceAlreadyExists(f"User '{name}' already exists (a user named {name!r} exists already)")
        if must_exist and found is not None and found.disabled and not allow_disabled:
            raise InvalidParameterValue(f"user {name!r} is disabled")
        try:
            store.append(USERS_STREAM, list(events), expected_version=version)  # type: ignore[arg-type]
        except ConcurrencyError as e:
            raise ConcurrencyError(f"the users changed meanwhile; try again ({e})") from e


class Users(NamedTuple):
    """The users at one version of their stream: by name (disabled ones too), and the
    enabled ones by token digest. Read together, so a name never pairs with an old token."""

    by_name: dict[str, User]
    by_token: dict[str, User]

    def bearer(self, token: bytes) -> User | None:
        """The enabled user whose token this is, or None."""
        digest = token_digest(token)
        found = self.by_token.get(digest)
        # The dict lookup found it by its digest; compare again in constant time anyway.
        if found is None or not hmac.compare_digest(found.token_sha256, digest):
            return None
        return found


class Directory:
    """The users a server authenticates against, re-read when the stream grows."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._version = -1
        #: Replaced whole (one assignment) when the stream grows.
        self._users = Users({}, {})
        #: (name, password hash, sha256 of a password) a scrypt check passed.
        self._passwords: set[tuple[str, str, str]] = set()

    def _refresh(self) -> None:
        version = self._store.stream_version(USERS_STREAM)
        if version == self._version:
            return
        with self._lock:
            version, users = fold(self._store)
            self._users = Users(users, {u.token_sha256: u for u in users.values() if not u.disabled})
            self._passwords = set()
            self._version = version

    def current(self) -> Users:
        """The users as the log says now: one read of the stream's version for any number
        of lookups. Authentication looks a bearer token up in one such read; the permission
        check reads again on purpose, so a user removed while a request waited is refused."""
        self._refresh()
        return self._users

    def user(self, name: str) -> User | None:
        """The user named ``name`` as the log says now (disabled ones too), or None."""
        return self.current().by_name.get(name)

    def has_users(self) -> bool:
        """Whether the store has any user (then every request must name one)."""
        return bool(self.current().by_name)

    def bearer(self, token: bytes) -> User | None:
        """The enabled user whose token this is, or None."""
        return self.current().bearer(token)

    def basic(self, credentials: bytes) -> User | None:
        """The enabled user named by HTTP Basic credentials (base64 of ``name:token``)."""
        try:
            name, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        found = self.current().by_name.get(name)
        if found is None or found.disabled:
            return None
        digest = token_digest(password)
        if hmac.compare_digest(found.token_sha256, digest):
            return found
        if not found.password_hash:
            return None
        # Keyed by the stored hash too: a check that began before a password change can
        # never vouch for the old password after it.
        if (name, found.password_hash, digest) in self._passwords:
            return found
        if password_matches(password, found.password_hash):
            self._passwords.add((name, found.password_hash, digest))
            return found
        return None


def allows(user: User | None, experiment_id: str | None, needed: int, default: str) -> bool:
    """Whether ``user`` may do what needs ``needed`` (READ, UPDATE, DELETE or MANAGE) on an
    experiment: admins may do anything; else the user's grant on it, or the default."""
    if user is None or user.admin:
        return True  # no users (or the shared token): nothing to check
    permission = user.grants.get(str(experiment_id), default) if experiment_id is not None else default
    return PERMISSIONS[permission][needed]
