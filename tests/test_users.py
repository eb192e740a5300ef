"""Users and who did it: `evstore users`, the server's authentication, the principal.

The real mlflow client (3.17) calls a real ``evstore server`` with a user's token
(``MLFLOW_TRACKING_TOKEN``) and with HTTP Basic (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``); every event it appends carries the authenticated user as
``principal`` in its commit's metadata. A user name the client claims, or a header it
forges, never becomes the principal; a disabled or rotated token is refused.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_here import run_here
from conftest import close_cached_stores
from forked import run_python
from servers import EVSTORE, ThreadServer

from evstore import users
from evstore.integrity import verify
from evstore.projection import attach
from evstore.stores import open_log
from evstore.users import USERS_STREAM, list_users

API = "/api/2.0/mlflow"

SCRIPT = """\
import json, sys
from mlflow import MlflowClient
client = MlflowClient()
experiment_id = client.create_experiment(sys.argv[1])
run = client.create_run(experiment_id)
client.log_param(run.info.run_id, "lr", "0.01")
client.log_metric(run.info.run_id, "loss", 0.5, step=1)
client.set_terminated(run.info.run_id)
print(json.dumps({"run_id": run.info.run_id, "experiment_id": experiment_id}))
"""


def cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVSTORE_")}
    return subprocess.run(
        [EVSTORE, *args, "--store", str(store)], check=False, capture_output=True, text=True, env=env
    )


def add(store: Path, name: str, *flags: str) -> str:
    if not store.exists():
        assert cli("init", store=store).returncode == 0
    done = cli("users", "add", name, *flags, store=store)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]  # the token is the last word


def mlflow_as(url: str, cwd: Path, experiment: str, **credentials: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVSTORE_"))}
    env.update(MLFLOW_TRACKING_URI=url, MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **credentials)  # fmt: skip
    return run_python(SCRIPT, experiment, cwd=cwd, env=env, timeout=120)


def principals(store: Path, stream: str) -> list[tuple[str, str | None, str | None]]:
    """(type, principal, client) of every event of a stream."""
    log = open_log(store)
    try:
        return [(r.type, r.metadata.get("principal"), r.metadata.get("client"))
                for r in log.read_stream(stream)]  # fmt: skip
    finally:
        log.close()


def basic(name: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()}


@pytest.fixture
def server(tmp_path: Path) -> Any:
    store = tmp_path / "server.db"
    # Set up through the library (a CLI process per user is slow; the CLI has its own tests).
    log = attach(open_log(store)).store
    try:
        tokens = {"alice": users.add_user(log, "alice", admin=True), "bob": users.add_user(log, "bob")}
    finally:
        log.close()
    running = ThreadServer(tmp_path)
    running.tokens = tokens  # type: ignore[attr-defined]
    yield running
    running.stop()
    close_cached_stores(tmp_path)


def test_users_add_keeps_only_a_digest_and_prints_the_token_last(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    missing = cli("users", "add", "alice", store=store)
    assert missing.returncode != 0 and "evstore init" in missing.stderr and not store.exists()
    assert cli("init", store=store).returncode == 0
    done = cli("users", "add", "alice", "--admin", store=store)
    assert done.returncode == 0, done.stderr
    token = done.stdout.split()[-1]
    assert token.startswith("evs_") and len(token) > 40
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.db"))
    assert token.encode() not in raw
    listed = cli("users", "list", store=store)
    assert "alice" in listed.stdout and "yes" in listed.stdout and "enabled" in listed.stdout
    again = cli("users", "add", "alice", store=store)
    assert again.returncode != 0 and "exists already" in again.stderr and "Traceback" not in again.stderr
    bad = cli("users", "add", "-rf", store=store)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    bad = cli("users", "add", "al ice", store=store)
    assert bad.returncode != 0 and "invalid user name" in bad.stderr
    users = list_users(open_log(store))
    assert [(u.name, u.admin, u.disabled) for u in users] == [("alice", True, False)]
    assert verify(open_log(store)).ok


def test_every_request_needs_a_user_once_there_are_users(server: Any) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    for method, path in [("GET", f"{API}/experiments/search?max_results=5"), ("GET", "/api/evstore/info"),
                         ("POST", f"{API}/experiments/create"), ("GET", "/ui/api/experiments"),
                         ("GET", "/get-artifact?path=x&run_uuid=" + "a" * 32)]:  # fmt: skip
        for headers in [{}, {"Authorization": "Bearer nope"}, basic("alice", server.tokens["bob"]),
                        basic("nobody", server.tokens["bob"]), {"Authorization": "Basic %%%"}]:  # fmt: skip
            response = httpx.request(method, server.url + path, headers=headers, json={"name": "x"})
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error_code"] == "UNAUTHENTICATED"
            assert response.headers["www-authenticate"].lower().startswith("basic")
    for headers in [{"Authorization": f"Bearer {server.tokens['bob']}"},
                    {"Authorization": f"bEaReR   {server.tokens['bob']}"}, basic("bob", server.tokens["bob"])]:  # fmt: skip
        assert httpx.get(server.url + "/api/evstore/info", headers=headers).status_code == 200


def test_the_real_mlflow_client_with_a_token_and_with_basic_auth(server: Any, tmp_path: Path) -> None:
    denied = mlflow_as(server.url, tmp_path, "nobody-here")
    assert denied.returncode != 0 and "UNAUTHENTICATED" in denied.stderr
    by_token = mlflow_as(server.url, tmp_path, "alices", MLFLOW_TRACKING_TOKEN=server.tokens["alice"])
    assert by_token.returncode == 0, by_token.stderr
    by_basic = mlflow_as(server.url, tmp_path, "bobs", MLFLOW_TRACKING_USERNAME="bob",
                         MLFLOW_TRACKING_PASSWORD=server.tokens["bob"])  # fmt: skip
    assert by_basic.returncode == 0, by_basic.stderr
    alice_run = json.loads(by_token.stdout.splitlines()[-1])["run_id"]
    bob_run = json.loads(by_basic.stdout.splitlines()[-1])["run_id"]
    assert {p for _, p, _ in principals(server.store, alice_run)} == {"alice"}
    assert {p for _, p, _ in principals(server.store, bob_run)} == {"bob"}
    assert {c for _, _, c in principals(server.store, bob_run)} == {"127.0.0.1"}
    experiment = json.loads(by_basic.stdout.splitlines()[-1])["experiment_id"]
    assert {p for _, p, _ in principals(server.store, f"experiment-{experiment}")} == {"bob"}
    shown = cli("history", bob_run, store=server.store)
    assert "bob via 127.0.0.1" in shown.stdout


def test_a_claimed_user_or_a_forged_header_never_becomes_the_principal(server: Any) -> None:
    assert cli("users", "grant", "bob", "0", "EDIT", store=server.store).returncode == 0
    bob = {"Authorization": f"Bearer {server.tokens['bob']}", "X-Forwarded-For": "10.9.9.9",
           "X-Forwarded-User": "alice", "X-Evstore-Principal": "alice", "Remote-User": "alice"}  # fmt: skip
    created = httpx.post(server.url + f"{API}/runs/create", headers=bob,
                         json={"experiment_id": "0", "user_id": "alice-the-admin"}).json()  # fmt: skip
    run_id = created["run"]["info"]["run_id"]
    assert created["run"]["info"]["user_id"] == "alice-the-admin"  # kept, as the run's claim
    httpx.post(server.url + f"{API}/runs/set-tag", headers=bob,
               json={"run_id": run_id, "key": "mlflow.user", "value": "alice"}).raise_for_status()  # fmt: skip
    stamped = principals(server.store, run_id)
    assert {t for t, _, _ in stamped} == {"RunStarted", "TagSet"}
    assert {(p, c) for _, p, c in stamped} == {("bob", "127.0.0.1")}  # not X-Forwarded-For
    shown = cli("history", run_id, store=server.store).stdout
    assert "claimed user alice-the-admin" in shown and "bob via 127.0.0.1" in shown
    # The export carries both: the user the run claimed, and who started it from where.
    out = server.store.parent / "runs.csv"
    exported = run_here("export", "runs", str(out), "--format", "csv", "--store", str(server.store))
    assert exported.returncode == 0, exported.stderr
    rows = {row["run_id"]: row for row in csv.DictReader(out.read_text().splitlines())}
    assert (rows[run_id]["user_id"], rows[run_id]["started_by"], rows[run_id]["started_from"]) == (
        "alice-the-admin", "bob", "127.0.0.1")
    assert list(rows[run_id])[3:6] == ["user_id", "started_by", "started_from"]


def test_a_disabled_or_rotated_token_is_refused_by_the_running_server(server: Any) -> None:
    bob = {"Authorization": f"Bearer {server.tokens['bob']}"}
    alice = {"Authorization": f"Bearer {server.tokens['alice']}"}
    assert httpx.get(server.url + "/api/evstore/info", headers=bob).status_code == 200
    assert cli("users", "disable", "bob", store=server.store).returncode == 0
    assert httpx.get(server.url + "/api/evstore/info", headers=bob).status_code == 401
    assert httpx.get(server.url + "/api/evstore/info", headers=basic("bob", server.tokens["bob"])).status_code == 401
    again = cli("users", "disable", "bob", store=server.store)
    assert again.returncode == 0 and "nothing appended" in again.stdout

    rotated = cli("users", "rotate", "alice", store=server.store)
    assert rotated.returncode == 0, rotated.stderr
    new = {"Authorization": f"Bearer {rotated.stdout.split()[-1]}"}
    assert httpx.get(server.url + "/api/evstore/info", headers=alice).status_code == 401
    assert httpx.get(server.url + "/api/evstore/info", headers=new).status_code == 200
    refused = cli("users", "rotate", "bob", store=server.store)
    assert refused.returncode != 0 and "disabled" in refused.stderr
    # The changes are events of the users stream, with who made them.
    events = [t for t, _, _ in principals(server.store, USERS_STREAM)]
    assert events == ["UserAdded", "UserAdded", "UserDisabled", "UserTokenRotated"]
    assert verify(open_log(server.store)).ok


def test_the_shared_token_keeps_working_beside_users(tmp_path: Path) -> None:
    store = tmp_path / "server.db"
    token = add(store, "carol")
    running = ThreadServer(tmp_path, token="s3cret")
    try:
        for headers in [{"Authorization": "Bearer s3cret"}, {"Authorization": f"Bearer {token}"},
                        basic("carol", token)]:  # fmt: skip
            assert httpx.get(running.url + "/api/evstore/info", headers=headers).status_code == 200
        created = httpx.post(running.url + f"{API}/experiments/create",
                             headers={"Authorization": "Bearer s3cret"}, json={"name": "shared"}).json()  # fmt: skip
        stream = f"experiment-{created['experiment_id']}"
        assert principals(store, stream) == [("ExperimentCreated", "shared-token", "127.0.0.1")]
    finally:
        running.stop()
        close_cached_stores(tmp_path)


def test_the_ui_signs_a_user_in_once_and_their_session_ends_with_their_token(server: Any) -> None:
    page = httpx.get(server.url + "/experiments")
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/signin")
    wrong = httpx.post(server.url + "/ui/signin", data={"token": "evs_nope", "next": "/experiments"})
    assert wrong.status_code == 401 and "evstore_session" not in wrong.headers.get("set-cookie", "")
    signed = httpx.post(server.url + "/ui/signin", data={"token": server.tokens["bob"], "next": "/experiments"})
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and server.tokens["bob"] not in cookie
    session = {"Cookie": cookie.split(";", 1)[0]}
    assert httpx.get(server.url + "/ui/api/experiments", headers=session).status_code == 200
    assert httpx.get(server.url + "/experiments", headers=session).status_code == 200
    forged = {"Cookie": session["Cookie"].replace("u.bob.", "u.alice.")}
    assert httpx.get(server.url + "/ui/api/experiments", headers=forged).status_code == 401
    assert cli("users", "rotate", "bob", store=server.store).returncode == 0
    assert httpx.get(server.url + "/ui/api/experiments", headers=session).status_code == 401
