"""Permissions as MLflow's basic-auth app has them, on a real ``evstore server``.

Every pair of (server default, a user's grant on the experiment) is tried against the
three kinds of operation (read a run, write to it, delete it), and must be allowed
exactly when MLflow's permission table allows it. Searches show only what the caller may
read; artifacts, evstore's endpoints and the UI obey the same rules; the real mlflow
client's basic-auth app client (``get_app_client("basic-auth")``) manages the users.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import close_cached_stores
from forked import run_python
from servers import EVSTORE, ThreadServer

from evstore import users
from evstore.integrity import verify
from evstore.projection import attach
from evstore.stores import open_log

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
PERMISSIONS = ["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"]
#: MLflow's table: what each permission allows (read, update, delete).
ALLOWS = {"READ": (True, False, False), "EDIT": (True, True, False), "MANAGE": (True, True, True),
          "NO_PERMISSIONS": (False, False, False)}  # fmt: skip


def cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVSTORE_")}
    return subprocess.run([EVSTORE, *args, "--store", str(store)], check=False, capture_output=True,
                          text=True, env=env)  # fmt: skip


def tracked(store: Path) -> Any:
    """The store with its read models attached, as the CLI writes to it (in this process:
    setting up users through the library is faster than a CLI process per user)."""
    return attach(open_log(store)).store


def add(store: Path, name: str, admin: bool = False) -> dict[str, str]:
    log = tracked(store)
    try:
        return {"Authorization": f"Bearer {users.add_user(log, name, admin=admin)}"}
    finally:
        log.close()


def grant(store: Path, name: str, experiment: str, permission: str) -> None:
    log = tracked(store)
    try:
        users.grant(log, name, experiment, permission)
    finally:
        log.close()


def post(server: ThreadServer, path: str, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, headers=headers, json=body)


def start(tmp_path: Path, default: str, names: list[str]) -> tuple[ThreadServer, dict[str, dict[str, str]]]:
    store = tmp_path / "server.db"
    headers = {"admin": add(store, "admin", admin=True)}
    for name in names:
        headers[name] = add(store, name)
    return ThreadServer(tmp_path, default_permission=default), headers


@pytest.mark.parametrize("default", PERMISSIONS)
def test_every_default_and_grant_pair_allows_what_mlflow_allows(tmp_path: Path, default: str) -> None:
    grants = {"no-grant": None, **{f"g-{p.lower()}": p for p in PERMISSIONS}}
    server, headers = start(tmp_path, default, list(grants))
    admin = headers["admin"]
    try:
        experiment = post(server, f"{API}/experiments/create", admin, {"name": "shared"}).json()["experiment_id"]
        for name, permission in grants.items():
            if permission:
                grant(server.store, name, experiment, permission)
        for name, permission in grants.items():
            may_read, may_update, may_delete = ALLOWS[permission or default]
            run_id = post(server, f"{API}/runs/create", admin, {"experiment_id": experiment}).json()["run"]["info"]["run_id"]
            me = headers[name]
            read = httpx.get(server.url + f"{API}/runs/get", params={"run_id": run_id}, headers=me)
            update = post(server, f"{API}/runs/log-metric", me, {"run_id": run_id, "key": "m", "value": 1.0,
                                                                  "timestamp": 1, "step": 0})  # fmt: skip
            delete = post(server, f"{API}/runs/delete", me, {"run_id": run_id})
            got = tuple(r.status_code for r in (read, update, delete))
            want = tuple(200 if ok else 403 for ok in (may_read, may_update, may_delete))
            assert got == want, (default, name, read.text, update.text, delete.text)
            for refused in (r for r in (read, update, delete) if r.status_code == 403):
                assert refused.json()["error_code"] == "PERMISSION_DENIED"
            history = httpx.get(server.url + f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "m"},
                                headers=admin).json()  # fmt: skip
            assert len(history.get("metrics", [])) == (1 if may_update else 0)  # a refusal wrote nothing
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_searches_show_only_what_the_caller_may_read(tmp_path: Path) -> None:
    server, headers = start(tmp_path, "NO_PERMISSIONS", ["bob"])
    admin, bob = headers["admin"], headers["bob"]
    try:
        seen = post(server, f"{API}/experiments/create", admin, {"name": "seen"}).json()["experiment_id"]
        hidden = post(server, f"{API}/experiments/create", admin, {"name": "hidden"}).json()["experiment_id"]
        for experiment in (seen, hidden):
            post(server, f"{API}/runs/create", admin, {"experiment_id": experiment}).raise_for_status()
        assert cli("users", "grant", "bob", seen, "READ", store=server.store).returncode == 0  # the CLI once
        names = {e["name"] for e in post(server, f"{API}/experiments/search", bob, {"max_results": 100}).json()["experiments"]}
        assert names == {"seen"}
        runs = post(server, f"{API}/runs/search", bob, {"experiment_ids": [seen, hidden]}).json()["runs"]
        assert {r["info"]["experiment_id"] for r in runs} == {seen}
        assert post(server, f"{API}/runs/search", bob, {"experiment_ids": [hidden]}).json() == {}
        # Creating needs no grant, and makes the creator its manager, in one transaction.
        mine = post(server, f"{API}/experiments/create", bob, {"name": "bobs"}).json()["experiment_id"]
        assert post(server, f"{API}/experiments/delete", bob, {"experiment_id": mine}).status_code == 200
        assert post(server, f"{API}/experiments/delete", bob, {"experiment_id": seen}).status_code == 403
        shown = cli("history", "users", store=server.store).stdout
        assert f"granted bob READ on experiment {seen}" in shown
        assert f"granted bob MANAGE on experiment {mine}" in shown and "bob via 127.0.0.1" in shown
        assert verify(open_log(server.store)).ok
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_artifacts_evstore_endpoints_and_the_ui_obey_the_same_rules(tmp_path: Path) -> None:
    server, headers = start(tmp_path, "NO_PERMISSIONS", ["bob"])
    admin, bob = headers["admin"], headers["bob"]
    try:
        experiment = post(server, f"{API}/experiments/create", admin, {"name": "e"}).json()["experiment_id"]
        run_id = post(server, f"{API}/runs/create", admin, {"experiment_id": experiment}).json()["run"]["info"]["run_id"]
        where = f"{experiment}/{run_id}/artifacts"
        assert httpx.put(server.url + f"{ARTIFACTS}/{where}/a.txt", headers=admin, content=b"hi").status_code == 200
        for request in [("GET", f"{ARTIFACTS}/{where}/a.txt", None), ("GET", ARTIFACTS + f"?path={where}", None),
                        ("PUT", f"{ARTIFACTS}/{where}/b.txt", b"x"),
                        ("GET", f"/api/evstore/runs/{run_id}/history", None),
                        ("GET", "/api/evstore/events", None), ("GET", "/api/evstore/verify", None),
                        ("GET", "/ui/api/experiments", None)]:  # fmt: skip
            method, path, body = request
            assert httpx.request(method, server.url + path, headers=bob, content=body).status_code == 403, path
            if method == "GET":
                assert httpx.get(server.url + path, headers=admin).status_code == 200, path
        grant(server.store, "bob", experiment, "READ")
        assert httpx.get(server.url + f"{ARTIFACTS}/{where}/a.txt", headers=bob).content == b"hi"
        assert httpx.get(server.url + f"/api/evstore/runs/{run_id}/history", headers=bob).status_code == 200
        assert httpx.put(server.url + f"{ARTIFACTS}/{where}/b.txt", headers=bob, content=b"x").status_code == 403
        assert httpx.get(server.url + "/api/evstore/events", headers=bob).status_code == 403
        assert httpx.get(server.url + "/api/evstore/info", headers=bob).status_code == 200
        # Streams that are not runs (an experiment's, the users') are no run trail to read.
        for stream in (f"experiment-{experiment}", "users"):
            assert httpx.get(server.url + f"/api/evstore/runs/{stream}/history", headers=bob).status_code == 404
            assert httpx.get(server.url + f"/api/evstore/runs/{stream}/history", headers=admin).status_code == 200
        # A name or run that does not exist is MLflow's 404, whatever the default permission.
        missing = httpx.get(server.url + f"{API}/experiments/get-by-name", params={"experiment_name": "nope"},
                            headers=bob)  # fmt: skip
        assert (missing.status_code, missing.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    finally:
        server.stop()
        close_cached_stores(tmp_path)


APP_CLIENT = """\
import json, sys
from mlflow.server import get_app_client
from mlflow.exceptions import MlflowException
auth = get_app_client("basic-auth", tracking_uri=sys.argv[1])
out = {}
user = auth.create_user("dave", "pw-1")
out["created"] = [user.username, user.is_admin]
out["got"] = [auth.get_user("dave").username, auth.get_user("dave").is_admin]
auth.grant_user_permission("dave", "experiment", sys.argv[2], "EDIT")
result = auth.get_user_permission("dave", "experiment", sys.argv[2])
out["permission"] = [result.allowed, result.permission]
auth.update_user_admin("dave", True)
out["admin"] = auth.get_user("dave").is_admin
auth.update_user_admin("dave", False)
auth.update_user_password("dave", "pw-2")
try:
    auth.create_user("dave", "again")
except MlflowException as e:
    out["duplicate"] = e.error_code
print(json.dumps(out))
"""


def run_script(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVSTORE_"))}
    environ.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **env)
    return run_python(script, *args, env=environ, timeout=120)


def test_mlflows_basic_auth_client_manages_evstore_users(tmp_path: Path) -> None:
    server, headers = start(tmp_path, "READ", ["bob"])
    admin_token = headers["admin"]["Authorization"].split()[-1]
    try:
        experiment = post(server, f"{API}/experiments/create", headers["admin"], {"name": "e"}).json()["experiment_id"]
        done = run_script(APP_CLIENT, server.url, experiment, MLFLOW_TRACKING_TOKEN=admin_token)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.splitlines()[-1])
        assert out == {"created": ["dave", False], "got": ["dave", False], "permission": [True, "EDIT"],
                       "admin": True, "duplicate": "RESOURCE_ALREADY_EXISTS"}  # fmt: skip
        dave = {"Authorization": "Basic " + base64.b64encode(b"dave:pw-2").decode()}
        old = {"Authorization": "Basic " + base64.b64encode(b"dave:pw-1").decode()}
        assert httpx.get(server.url + "/api/evstore/info", headers=old).status_code == 401
        run = post(server, f"{API}/runs/create", dave, {"experiment_id": experiment})
        assert run.status_code == 200, run.text
        # Only an admin manages users; then delete, and dave is refused.
        refused = post(server, f"{API}/users/create", headers["bob"], {"username": "erin", "password": "pw"})
        assert (refused.status_code, refused.json()["error_code"]) == (403, "PERMISSION_DENIED")
        gone = httpx.request("DELETE", server.url + f"{API}/users/delete", headers=headers["admin"],
                             json={"username": "dave"})  # fmt: skip
        assert gone.status_code == 200, gone.text
        assert httpx.get(server.url + "/api/evstore/info", headers=dave).status_code == 401
        missing = httpx.get(server.url + f"{API}/users/get", params={"username": "dave"}, headers=headers["admin"])
        assert (missing.status_code, missing.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("server.db"))
        assert b"pw-1" not in raw and b"pw-2" not in raw
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_a_server_that_authenticates_no_one_manages_no_users(tmp_path: Path) -> None:
    server = ThreadServer(tmp_path)
    try:
        made = post(server, f"{API}/users/create", {}, {"username": "eve", "password": "pw"})
        assert (made.status_code, made.json()["error_code"]) == (403, "PERMISSION_DENIED")
        assert "evstore users add" in made.json()["message"]
        assert httpx.get(server.url + "/api/evstore/info").status_code == 200  # still open: no user was made
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_the_registry_never_reaches_into_an_experiment_the_caller_may_not_read(tmp_path: Path) -> None:
    # bob may edit by default, but holds NO_PERMISSIONS on "secret" and its logged model.
    server, headers = start(tmp_path, "EDIT", ["bob"])
    admin, bob = headers["admin"], headers["bob"]
    try:
        secret = post(server, f"{API}/experiments/create", admin, {"name": "secret"}).json()["experiment_id"]
        grant(server.store, "bob", secret, "NO_PERMISSIONS")
        model = post(server, f"{API}/logged-models", admin, {"experiment_id": secret, "name": "m"})
        model_id = model.json()["model"]["info"]["model_id"]
        run = post(server, f"{API}/runs/create", admin, {"experiment_id": secret}).json()["run"]["info"]["run_id"]
        assert post(server, f"{API}/registered-models/create", bob, {"name": "mine"}).status_code == 200
        mine = post(server, f"{API}/experiments/create", bob, {"name": "mine"}).json()["experiment_id"]
        own_run = post(server, f"{API}/runs/create", bob, {"experiment_id": mine}).json()["run"]["info"]["run_id"]
        head = httpx.get(server.url + "/api/evstore/info", headers=admin).json()["head_position"]
        for path, body in [
            ("model-versions/create", {"name": "mine", "source": f"models:/{model_id}", "model_id": model_id}),
            ("model-versions/create", {"name": "mine", "source": f"models:/{model_id}"}),
            ("model-versions/create", {"name": "mine", "source": "s3://b/m", "run_id": run}),
            ("runs/log-inputs", {"run_id": own_run, "models": [{"model_id": model_id}]}),
            ("runs/outputs", {"run_id": own_run, "models": [{"model_id": model_id, "step": 0}]}),
        ]:
            refused = post(server, f"{API}/{path}", bob, body)
            assert (refused.status_code, refused.json()["error_code"]) == (403, "PERMISSION_DENIED"), (path, body)
        # Nothing was written: not the version, not the secret model's mlflow.modelVersions tag.
        assert httpx.get(server.url + "/api/evstore/info", headers=admin).json()["head_position"] == head
        tags = httpx.get(server.url + f"{API}/logged-models/{model_id}", headers=admin).json()["model"]["info"]
        assert "mlflow.modelVersions" not in {t["key"] for t in tags.get("tags", [])}
        # A source bob may read is accepted.
        made = post(server, f"{API}/model-versions/create", bob, {"name": "mine", "source": "s3://b/m", "run_id": own_run})
        assert made.status_code == 200, made.text
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_any_user_may_create_a_registered_model_and_its_creator_manages_it(tmp_path: Path) -> None:
    # MLflow's rule: creating needs no grant; the creator gets MANAGE on the model, in the
    # same write, so under a READ default bob still manages what he made and alice reads it.
    server, headers = start(tmp_path, "READ", ["bob", "alice"])
    bob, alice = headers["bob"], headers["alice"]
    try:
        assert post(server, f"{API}/registered-models/create", bob, {"name": "m"}).status_code == 200
        assert post(server, f"{API}/registered-models/set-tag", bob, {"name": "m", "key": "k", "value": "v"}).status_code == 200
        assert post(server, f"{API}/model-versions/create", bob, {"name": "m", "source": "s3://b/m"}).status_code == 200
        refused = post(server, f"{API}/registered-models/set-tag", alice, {"name": "m", "key": "k", "value": "w"})
        assert (refused.status_code, refused.json()["error_code"]) == (403, "PERMISSION_DENIED")
        found = httpx.get(server.url + f"{API}/registered-models/get", params={"name": "m"}, headers=alice)
        assert found.json()["registered_model"]["tags"] == [{"key": "k", "value": "v"}]
    finally:
        server.stop()
        close_cached_stores(tmp_path)
    log = tracked(tmp_path / "server.db")
    try:
        granted = [(e.event.name, e.event.model_name, e.event.permission) for e in log.read_stream("users")
                   if e.type == "RegisteredModelPermissionGranted"]  # fmt: skip
    finally:
        log.close()
    assert granted == [("bob", "m", "MANAGE")]


def registry_calls(name: str) -> list[tuple[str, str, dict[str, Any], int]]:
    """(method, path, body, what it needs: 0 read, 1 update, 2 delete) on a model with version 1,
    as MLflow 3.17's basic-auth app maps them."""
    model, version = {"name": name}, {"name": name, "version": "1"}
    return [
        ("GET", "registered-models/get", model, 0),
        ("POST", "registered-models/get-latest-versions", model, 0),
        ("GET", "model-versions/get", version, 0),
        ("GET", "model-versions/get-download-uri", version, 0),
        ("PATCH", "registered-models/update", {**model, "description": "d"}, 1),
        ("POST", "registered-models/set-tag", {**model, "key": "k", "value": "v"}, 1),
        ("DELETE", "registered-models/delete-tag", {**model, "key": "k"}, 1),
        ("POST", "registered-models/alias", {**version, "alias": "a"}, 1),
        ("GET", "registered-models/alias", {**model, "alias": "a"}, 0),
        ("POST", "model-versions/set-tag", {**version, "key": "k", "value": "v"}, 1),
        ("POST", "model-versions/transition-stage", {**version, "stage": "Staging"}, 1),
        ("POST", "model-versions/create", {**model, "source": "s3://b/m"}, 1),
        ("DELETE", "model-versions/delete-tag", {**version, "key": "k"}, 2),
        ("DELETE", "registered-models/alias", {**model, "alias": "a"}, 2),
        ("DELETE", "model-versions/delete", {"name": name, "version": "2"}, 2),
        ("DELETE", "registered-models/delete", model, 2),
    ]


def test_every_grant_on_a_registered_model_allows_what_mlflow_allows(tmp_path: Path) -> None:
    grants = {"no-grant": None, **{f"g-{p.lower()}": p for p in PERMISSIONS}}
    server, headers = start(tmp_path, "READ", list(grants))
    admin = headers["admin"]
    try:
        for name, permission in grants.items():
            # one model per user, granted through MLflow's auth API by the admin
            for path, body in [("registered-models/create", {"name": name}),
                               ("model-versions/create", {"name": name, "source": "s3://b/m"}),
                               ("registered-models/alias", {"name": name, "alias": "a", "version": "1"})]:  # fmt: skip
                post(server, f"{API}/{path}", admin, body).raise_for_status()
            if permission:
                post(server, "/api/3.0/mlflow/users/permissions/grant", admin, {
                    "username": name, "resource_type": "registered_model", "resource_id": name,
                    "permission": permission}).raise_for_status()  # fmt: skip
                got = httpx.get(server.url + "/api/3.0/mlflow/users/permissions/get", headers=admin, params={
                    "username": name, "resource_type": "registered_model", "resource_id": name}).json()  # fmt: skip
                assert got["permission"] == permission
            allowed = ALLOWS[permission or "READ"]
            # searches list only what the caller may read
            listed = httpx.get(server.url + f"{API}/registered-models/search", headers=headers[name]).json()
            assert (name in {m["name"] for m in listed.get("registered_models", [])}) == allowed[0], name
            for method, path, body, needs in registry_calls(name):
                answer = httpx.request(method, server.url + f"{API}/{path}", headers=headers[name],
                                       **({"params": body} if method == "GET" else {"json": body}))  # fmt: skip
                assert answer.status_code == (200 if allowed[needs] else 403), (name, path, answer.text)
    finally:
        server.stop()
        close_cached_stores(tmp_path)


def test_a_grant_follows_a_rename_and_dies_with_its_model(tmp_path: Path) -> None:
    server, headers = start(tmp_path, "READ", ["bob", "carol"])
    admin, bob, carol = headers["admin"], headers["bob"], headers["carol"]
    grant_url = "/api/3.0/mlflow/users/permissions/"
    try:
        post(server, f"{API}/registered-models/create", admin, {"name": "m"}).raise_for_status()
        for user, permission in (("bob", "EDIT"), ("carol", "NO_PERMISSIONS")):
            post(server, grant_url + "grant", admin, {"username": user, "resource_type": "registered_model",
                                                      "resource_id": "m", "permission": permission}).raise_for_status()
        # carol may not see it, in a get or a search of models or of versions
        post(server, f"{API}/model-versions/create", admin, {"name": "m", "source": "s3://b/m"}).raise_for_status()
        assert httpx.get(server.url + f"{API}/registered-models/get", params={"name": "m"}, headers=carol).status_code == 403
        for path in ("registered-models/search", "model-versions/search"):
            assert httpx.get(server.url + f"{API}/{path}", headers=carol).json() == {}, path
            assert httpx.get(server.url + f"{API}/{path}", headers=bob).json() != {}, path
        # the grants name the model, not its name: a rename keeps them
        post(server, f"{API}/registered-models/rename", admin, {"name": "m", "new_name": "m2"}).raise_for_status()
        assert post(server, f"{API}/registered-models/set-tag", bob, {"name": "m2", "key": "k", "value": "v"}).status_code == 200
        assert httpx.get(server.url + f"{API}/registered-models/get", params={"name": "m2"}, headers=carol).status_code == 403
        # a revoked grant leaves the default (READ)
        post(server, grant_url + "revoke", admin, {"username": "bob", "resource_type": "registered_model",
                                                   "resource_id": "m2"}).raise_for_status()  # fmt: skip
        assert post(server, f"{API}/registered-models/set-tag", bob, {"name": "m2", "key": "k", "value": "w"}).status_code == 403
        # a new model of the same name inherits nothing from the deleted one
        httpx.request("DELETE", server.url + f"{API}/registered-models/delete", headers=admin,
                      json={"name": "m2"}).raise_for_status()  # fmt: skip
        post(server, f"{API}/registered-models/create", admin, {"name": "m2"}).raise_for_status()
        assert httpx.get(server.url + f"{API}/registered-models/get", params={"name": "m2"}, headers=carol).status_code == 200
        # only a model's managers may grant on it, and only on a model that exists
        refused = post(server, grant_url + "grant", bob, {"username": "bob", "resource_type": "registered_model",
                                                          "resource_id": "m2", "permission": "MANAGE"})
        assert refused.status_code == 403
        missing = post(server, grant_url + "grant", admin, {"username": "bob", "resource_type": "registered_model",
                                                            "resource_id": "nope", "permission": "READ"})
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    finally:
        server.stop()
        close_cached_stores(tmp_path)
