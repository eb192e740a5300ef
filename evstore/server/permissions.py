"""MLflow's basic-auth permissions on the server, and MLflow's auth API over evstore's users.

Once a store has users, each request's user (``evstore.server.auth``) is checked as
MLflow's basic-auth app checks it: an experiment's grant for that user, else the server's
default permission (``--default-permission``, READ unless told otherwise); admins (and
the shared ``--auth-token``) may do anything. Reading needs READ, writing (runs, metrics,
params, tags, renames) EDIT, deleting and restoring MANAGE; creating an experiment needs
nothing and gives its creator MANAGE on it, in the same transaction. A refusal is ``403
PERMISSION_DENIED``. Searches return only what the caller may read. The registry is MLflow's
too: a grant per registered model (keyed by its stream, so it follows a rename and dies with
the model), else the default; any user may create a registered model and gets MANAGE on it;
a version's calls need what its model gives. Artifacts obey the rules of their run's experiment; evstore's whole-log endpoints (events, verify) are for
admins; the UI's data is for users who may read every experiment.

The auth API is MLflow 3.17's, so ``mlflow.server.get_app_client("basic-auth",
tracking_uri=...)`` manages evstore's users: ``users/create``, ``get``,
``update-password``, ``update-admin``, ``delete`` (``/api/2.0/mlflow/``) and
``users/permissions/grant``, ``revoke``, ``get`` (``/api/3.0/mlflow/``) on experiments and
registered models (``resource_type`` ``experiment`` or ``registered_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from evstore import reads, users
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.identity import acting
from evstore.server._http import EMPTY_OBJECT, HTTPError, error_response
from evstore.server.auth import SHARED_TOKEN_PRINCIPAL
from evstore.users import DELETE, PERMISSIONS, READ, UPDATE, Directory, User, allows

#: Endpoints under /api/2.0/mlflow/ -> (what they need, where the experiment comes from).
RULES: dict[str, tuple[int, str]] = {
    "experiments/get": (READ, "experiment"),
    "experiments/get-by-name": (READ, "name"),
    "experiments/update": (UPDATE, "experiment"),
    "experiments/set-experiment-tag": (UPDATE, "experiment"),
    "experiments/delete-experiment-tag": (UPDATE, "experiment"),
    "experiments/delete": (DELETE, "experiment"),
    "experiments/restore": (DELETE, "experiment"),
    "runs/create": (UPDATE, "experiment"),
    "runs/get": (READ, "run"),
    "metrics/get-history": (READ, "run"),
    "runs/update": (UPDATE, "run"),
    "runs/log-metric": (UPDATE, "run"),
    "runs/log-parameter": (UPDATE, "run"),
    "runs/set-tag": (UPDATE, "run"),
    "runs/delete-tag": (UPDATE, "run"),
    "runs/log-batch": (UPDATE, "run"),
    "runs/delete": (DELETE, "run"),
    "runs/restore": (DELETE, "run"),
    "runs/outputs": (UPDATE, "run"),
    "runs/log-inputs": (UPDATE, "run"),
    # logged models: their experiment's permission, as MLflow 3.17's basic-auth app
    "logged-models": (UPDATE, "experiment"),
    "logged-models/{model_id}": (READ, "model"),  # GET; PATCH and DELETE in METHOD_RULES
    "logged-models/{model_id}/tags": (UPDATE, "model"),
    "logged-models/{model_id}/tags/{tag_key}": (UPDATE, "model"),
    "logged-models/{model_id}/params": (UPDATE, "model"),
    # The registry: the caller's grant on the registered model (by name), else the default;
    # a version's calls need what its registered model gives (MLflow 3.17's basic-auth app)
    **{f"registered-models/{p}": (READ, "registry") for p in ("get", "get-latest-versions")},
    **{f"registered-models/{p}": (UPDATE, "registry") for p in
       ("rename", "update", "set-tag", "delete-tag", "alias")},
    "registered-models/delete": (DELETE, "registry"),
    **{f"model-versions/{p}": (READ, "registry") for p in ("get", "get-download-uri")},
    **{f"model-versions/{p}": (UPDATE, "registry") for p in
       ("create", "update", "transition-stage", "set-tag")},
    **{f"model-versions/{p}": (DELETE, "registry") for p in ("delete", "delete-tag")},
}
#: Where one path needs a different permission per method.
METHOD_RULES: dict[tuple[str, str], tuple[int, str]] = {
    ("PATCH", "logged-models/{model_id}"): (UPDATE, "model"),
    ("DELETE", "logged-models/{model_id}"): (DELETE, "model"),
    ("GET", "registered-models/alias"): (READ, "registry"),
    ("DELETE", "registered-models/alias"): (DELETE, "registry"),
}
#: Endpoints any signed-in user may call: what they return is filtered, or holds nothing.
OPEN_TO_ALL = frozenset({"experiments/create", "experiments/search", "runs/search", "logged-models/search",
                         "registered-models/create", "registered-models/search", "model-versions/search"})


def _referenced(req: Any) -> list[tuple[str, Any]]:
    """The runs and logged models a request names besides its own subject, which the
    caller must be able to read: a version's source run and model, a run's input and
    output models."""
    named: list[tuple[str, Any]] = []
    if isinstance(getattr(req, "source", None), str) and req.source.startswith("models:/m-"):
        named.append(("model", _ModelId(req.source.removeprefix("models:/").split("/")[0])))
    if getattr(req, "model_id", None) and hasattr(req, "source"):
        named.append(("model", _ModelId(req.model_id)))
    if getattr(req, "run_id", None) and hasattr(req, "source"):
        named.append(("run", _RunId(req.run_id)))
    named.extend(("model", _ModelId(m.model_id)) for m in getattr(req, "models", ()))
    source = getattr(req, "source", None)
    if isinstance(source, str) and source.startswith("models:/") and not source.startswith("models:/m-"):
        # a version copied from another registered model's version: that model must be readable
        path = source.removeprefix("models:/")
        named.append(("registry", _ModelName(path.split("/")[0] if "/" in path else path.rpartition("@")[0])))
    return named


def denied() -> HTTPError:
    """MLflow's refusal."""
    return HTTPError(403, "PERMISSION_DENIED", "Permission denied")


class Guard:
    """The checks for one server: its users (``Directory``) and default permission."""

    def __init__(self, directory: Directory, default: str) -> None:
        users.check_permission(default)
        self.directory = directory
        self.default = default
        #: A run's experiment, by run id: it never changes (MLflow has no move), so one
        #: read per run serves every later check of its calls.
        self._experiment_of_run: dict[str, str] = {}

    def caller(self) -> User | None:
        """The user acting now; None when no check applies (no users, the shared token).
        A principal no longer in the directory (deleted or disabled while its request
        waited) is refused, never taken for "no check"."""
        who = acting()
        if who is None or who[0] == SHARED_TOKEN_PRINCIPAL:
            return None
        user = self.directory.user(who[0])
        if user is None or user.disabled:
            raise HTTPError(401, "UNAUTHENTICATED", "Invalid credentials.")
        return user

    def may(self, user: User | None, experiment_id: str | None, needed: int) -> bool:
        return allows(user, experiment_id, needed, self.default)

    def reads_everything(self, user: User | None) -> bool:
        """Whether ``user`` may read every experiment (so the UI may show them all)."""
        if user is None or user.admin:
            return True
        return PERMISSIONS[self.default][READ] and all(
            PERMISSIONS[p][READ] for p in user.experiment_grants().values())

    def wrap(self, path: str, handler: Callable[..., Any], method: str = "") -> Callable[..., Any]:
        """``handler`` (a tracking endpoint) with the caller's permission checked first,
        its answer filtered (searches), or the creator's grant added (create)."""

        def checked(client: Any, req: Any, key: str) -> Any:
            user = self.caller()
            if user is None or user.admin:
                return handler(client, req, key)
            rule = METHOD_RULES.get((method, path)) or RULES.get(path)
            if rule is not None:
                needed, source = rule
                experiment_id = self._experiment_of(client, req, source)
                if experiment_id is None:  # no such run or name: the handler's own 404
                    return handler(client, req, key)
                if not self.may(user, experiment_id, needed):
                    raise denied()
                for source, named in _referenced(req):  # what it points at must be readable
                    found = self._experiment_of(client, named, source)
                    if found is not None and not self.may(user, found, READ):
                        raise denied()
                return handler(client, req, key)
            if path == "registered-models/create":
                with client.store.transaction():  # the model and its creator's grant, at once
                    answer = handler(client, req, key)
                    model_key = self._model_key(client, req.name)
                    users.grant_model(client.store, user.name, model_key, req.name, "MANAGE")  # type: ignore[arg-type]
                return answer
            if path == "experiments/create":
                with client.store.transaction():  # the experiment and its creator's grant, at once
                    answer = handler(client, req, key)
                    users.grant(client.store, user.name, answer["experiment_id"], "MANAGE")
                return answer
            if path in ("runs/search", "logged-models/search"):
                req.experiment_ids = [e for e in req.experiment_ids if self.may(user, e, READ)]
                return handler(client, req, key) if req.experiment_ids else EMPTY_OBJECT
            if path == "experiments/search":
                answer = handler(client, req, key)
                answer["experiments"] = [e for e in answer.get("experiments", [])
                                         if self.may(user, e["experiment_id"], READ)]  # fmt: skip
                return answer
            if path in ("registered-models/search", "model-versions/search"):
                field = "registered_models" if path.startswith("registered") else "model_versions"
                answer = handler(client, req, key)
                readable = [m for m in answer.get(field, [])
                            if self.may(user, self._model_key(client, m["name"]), READ)]  # fmt: skip
                answer = {k: v for k, v in answer.items() if k != field}
                return {field: readable, **answer} if readable else answer
            if path in OPEN_TO_ALL:
                return handler(client, req, key)
            raise denied()  # an endpoint without a rule is for admins

        return checked

    def check_artifacts(self, experiment_id: str, write: bool) -> None:
        """Artifacts of a run obey its experiment's permission (EDIT to upload)."""
        user = self.caller()
        if not self.may(user, experiment_id, UPDATE if write else READ):
            raise denied()

    def check_run(self, client: Any, run_id: str) -> None:
        """A run's trail is for those who may read its experiment; a stream that is not a
        run (an experiment's, the users') is for admins only."""
        user = self.caller()
        if user is None or user.admin:
            return
        experiment_id = self._experiment_of(client, _RunId(run_id), "run")
        if experiment_id is None:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        if not self.may(user, experiment_id, READ):
            raise denied()

    def _experiment_of(self, client: Any, req: Any, source: str) -> str | None:
        """The experiment a request acts on (None: no such run or experiment name)."""
        if source == "experiment":
            return str(req.experiment_id)
        if source == "name":
            found = client.get_experiment_by_name(req.experiment_name)
            return None if found is None else str(found.experiment_id)
        if source == "registry":
            return self._model_key(client, req.name)
        if source == "model":
            from evstore.tracking.logged_models import load_models

            with client.reading() as conn:
                models = load_models(conn, [req.model_id])
            return models[0].experiment_id if models else None
        known = self._experiment_of_run.get(req.run_id)
        if known is not None:
            return known
        with client.reading() as conn:
            state = reads.run_state(conn, req.run_id)
        if state is None:
            return None
        if len(self._experiment_of_run) >= 100_000:
            self._experiment_of_run.clear()
        self._experiment_of_run[req.run_id] = experiment_id = str(state[0])
        return experiment_id

    @staticmethod
    def _model_key(client: Any, name: Any) -> str | None:
        """The stream of the registered model named ``name`` (None: no such model)."""
        from evstore.tracking.registry import _key_of

        if not isinstance(name, str) or not name:
            return None
        with client.reading() as conn:
            return _key_of(conn, name)

    def check_admin(self) -> None:
        """Whole-store endpoints (the event log, verify) are for admins."""
        user = self.caller()
        if user is not None and not user.admin:
            raise denied()


def ui_permission(app: Any, guard: Guard) -> Any:
    """``app`` with the UI's pages and data refused (403) to a user who may not read every
    experiment: the UI shows whole experiments and compares across them."""

    async def checked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/ui/api") and not guard.reads_everything(guard.caller()):
            response = error_response(403, "PERMISSION_DENIED", "Permission denied: the UI shows every"
                                      " experiment, and this user may not read them all")  # fmt: skip
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return checked


class _RunId(msgspec.Struct):
    run_id: str


class _ModelId(msgspec.Struct):
    model_id: str


class _ModelName(msgspec.Struct):
    name: str


# --- MLflow's auth API ------------------------------------------------------------------


class UserRequest(msgspec.Struct, kw_only=True):
    username: str
    password: str = ""
    current_password: str | None = None
    is_admin: bool = False


class PermissionRequest(msgspec.Struct, kw_only=True):
    username: str
    resource_type: str
    resource_id: str
    permission: str = ""


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.name, "is_admin": user.admin}


def _resource(client: Any, req: PermissionRequest) -> tuple[str, str | None]:
    """(the grant's key, the model's name): an experiment id, or a registered model's stream."""
    if req.resource_type == "experiment":
        return req.resource_id, None
    if req.resource_type == "registered_model":
        key = Guard._model_key(client, req.resource_id)
        if key is None:
            raise ResourceDoesNotExist(f"Registered Model with name={req.resource_id} not found")
        return key, req.resource_id
    raise InvalidParameterValue(
        f"resource_type {req.resource_type!r} is not supported: evstore grants permissions on"
        " experiments and registered models (experiment, registered_model)"
    )


def auth_endpoints(guard: Guard) -> dict[tuple[str, str], tuple[type, Callable[..., Any]]]:
    """(method, path under /api/<v>/mlflow/) -> (request schema, handler(client, req))."""
    directory = guard.directory

    def admin() -> User | None:
        if acting() is None:  # a server that asks no one who they are manages no users
            raise HTTPError(403, "PERMISSION_DENIED", "This server authenticates no one: add the"
                            " first admin with `evstore users add NAME --admin`, then sign in as them.")
        user = guard.caller()
        if user is not None and not user.admin:
            raise denied()
        return user

    def found(name: str) -> User:
        user = directory.user(name)
        if user is None:
            raise ResourceDoesNotExist(f"User with username={name} not found")
        return user

    def create_user(client: Any, req: UserRequest) -> Any:
        admin()
        if not req.username or not req.password:
            raise InvalidParameterValue("Username and password cannot be empty.")
        users.add_user(client.store, req.username, password=req.password)
        return {"user": _user_json(found(req.username))}

    def get_user(client: Any, req: UserRequest) -> Any:
        if acting() is None:
            admin()
        caller = guard.caller()
        if caller is not None and not caller.admin and caller.name != req.username:
            raise denied()
        return {"user": _user_json(found(req.username))}

    def update_password(client: Any, req: UserRequest) -> Any:
        if acting() is None:
            admin()
        caller = guard.caller()
        if caller is not None and not caller.admin and caller.name != req.username:
            raise denied()
        if caller is not None and caller.name == req.username:  # self-service: prove it
            user = found(req.username)
            if not req.current_password or not users.password_matches(req.current_password, user.password_hash):
                raise InvalidParameterValue("Current password is required and must match.")
        users.set_password(client.store, req.username, req.password)
        return EMPTY_OBJECT

    def update_admin(client: Any, req: UserRequest) -> Any:
        admin()
        users.set_admin(client.store, req.username, req.is_admin)
        return EMPTY_OBJECT

    def delete_user(client: Any, req: UserRequest) -> Any:
        caller = admin()
        if caller is not None and caller.name == req.username:
            raise HTTPError(400, "BAD_REQUEST", "Users cannot delete their own account.")
        users.delete_user(client.store, req.username)
        return EMPTY_OBJECT

    def may_manage(resource: str) -> None:
        if acting() is None:
            admin()
        if not guard.may(guard.caller(), resource, users.MANAGE):
            raise denied()

    def grant(client: Any, req: PermissionRequest) -> Any:
        resource, model_name = _resource(client, req)
        may_manage(resource)
        if model_name is not None:
            users.grant_model(client.store, req.username, resource, model_name, req.permission)
            return EMPTY_OBJECT
        client.get_experiment(resource)  # 404 for an experiment that does not exist
        users.grant(client.store, req.username, resource, req.permission)
        return EMPTY_OBJECT

    def revoke(client: Any, req: PermissionRequest) -> Any:
        resource, model_name = _resource(client, req)
        may_manage(resource)
        if model_name is not None:
            users.revoke_model(client.store, req.username, resource, model_name)
        else:
            users.revoke(client.store, req.username, resource)
        return EMPTY_OBJECT

    def get_permission(client: Any, req: PermissionRequest) -> Any:
        resource, _model_name = _resource(client, req)
        caller = guard.caller()
        if caller is not None and not caller.admin and caller.name != req.username:
            may_manage(resource)
        user = found(req.username)
        permission = "MANAGE" if user.admin else user.grants.get(resource, guard.default)
        return {"allowed": PERMISSIONS[permission][UPDATE], "permission": permission}

    return {
        ("POST", "2.0/mlflow/users/create"): (UserRequest, create_user),
        ("GET", "2.0/mlflow/users/get"): (UserRequest, get_user),
        ("PATCH", "2.0/mlflow/users/update-password"): (UserRequest, update_password),
        ("PATCH", "2.0/mlflow/users/update-admin"): (UserRequest, update_admin),
        ("DELETE", "2.0/mlflow/users/delete"): (UserRequest, delete_user),
        ("POST", "3.0/mlflow/users/permissions/grant"): (PermissionRequest, grant),
        ("POST", "3.0/mlflow/users/permissions/revoke"): (PermissionRequest, revoke),
        ("GET", "3.0/mlflow/users/permissions/get"): (PermissionRequest, get_permission),
    }
