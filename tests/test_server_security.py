"""``evstore server`` against hostile requests, in its default (no token) mode, as MLflow 3.17.

Each refusal is checked for MLflow's status and body (the Host and Origin refusals are
MLflow's ``403 text/plain``; the rest its JSON error shape), and afterwards the store is
unchanged (same head position) and verify passes. Servers run as subprocesses
(``ServerProcess`` from test_server); requests that must set Host or omit headers go out
as raw bytes over a socket.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_server import API, ARTIFACTS, ServerProcess, head, new_run, refused, verified

from evstore import Client
from evstore.errors import InvalidParameterValue
from evstore.server.artifacts_api import remove_stray_uploads
from evstore.server.security import HostRule, origin_allowed
from evstore.validation import MAX_TAG_VALUE_LENGTH, check_artifact_path

INVALID_HOST = "Invalid Host header - possible DNS rebinding attack detected"
CORS_BLOCKED = "Cross-origin request blocked"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server for the module's read-mostly tests (each checks its own head)."""
    running = ServerProcess(tmp_path_factory.mktemp("security"), "--max-json-mb", "1")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def fresh_run(http: httpx.Client) -> tuple[str, str]:
    """(experiment_id, run_id) of a new run in a new experiment of the shared server."""
    return new_run(http, f"exp-{uuid.uuid4().hex}")


def raw(
    port: int, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request sent exactly as given (Host included only if in ``headers``)."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_part, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    response_headers = {
        k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
    }
    if response_headers.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return int(status_line.split()[1]), response_headers, payload


def _unchunk(payload: bytes) -> bytes:
    out = b""
    while payload:
        size_text, _, payload = payload.partition(b"\r\n")
        size = int(size_text, 16)
        if size == 0:
            break
        out += payload[:size]
        payload = payload[size + 2 :]
    return out


def forbidden(response: tuple[int, dict[str, str], bytes], message: str) -> None:
    """MLflow's refusal of a Host or an Origin: 403, text/plain, its message."""
    status, headers, body = response
    assert (status, body.decode()) == (403, message), response
    assert headers["content-type"] == "text/plain"


# --- Host header: DNS rebinding ----------------------------------------------------------


def test_a_foreign_host_header_is_refused(server: ServerProcess, http: httpx.Client) -> None:
    experiment_id, run_id = fresh_run(http)
    before = head(http)
    create = json.dumps({"name": "rebound"}).encode()
    requests = [
        ("POST", f"{API}/experiments/create", create),
        ("GET", f"{API}/experiments/get-by-name?experiment_name=Default", b""),
        ("PUT", f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/x.txt", b"payload"),
        ("GET", "/api/evstore/info", b""),
        ("GET", "/no/such/page", b""),
    ]
    # 10.attacker.example gets through MLflow's "10.*" pattern; here it is a name, not an IP.
    for host in ["evil.example", f"evil.example:{server.port}", f"10.attacker.example:{server.port}",
                 "192.168.1.5.attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io", ""]:  # fmt: skip
        for method, target, body in requests:
            headers = {"Host": host, "Content-Type": "application/json"}
            forbidden(raw(server.port, method, target, headers, body), INVALID_HOST)
    # No Host header at all (HTTP/1.0 style) is refused too.
    forbidden(raw(server.port, "GET", "/api/evstore/info", {}), INVALID_HOST)
    # As in MLflow, /health and /version answer any Host (load balancers probe by IP or name).
    assert raw(server.port, "GET", "/health", {"Host": "evil.example"})[:3:2] == (200, b"OK")
    assert raw(server.port, "GET", "/version", {"Host": "evil.example"})[0] == 200
    assert head(http) == before
    verified(http)


def test_loopback_private_and_bound_hosts_are_served(server: ServerProcess) -> None:
    port = server.port
    for host in ["localhost", f"localhost:{port}", "LOCALHOST:1", "127.0.0.1", f"127.0.0.1:{port}",
                 "[::1]", f"[::1]:{port}", "0.0.0.0:80", "10.1.2.3:5000", "172.16.0.9", "192.168.1.5:8080",
                 "[fd00::1]:5000"]:  # fmt: skip
        status, _, body = raw(port, "GET", "/api/evstore/info", {"Host": host})
        assert status == 200, (host, body)


@given(label=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), port=st.integers(1, 65535))
def test_a_name_is_never_taken_for_an_allowed_address(label: str, port: int) -> None:
    rule = HostRule(None, "127.0.0.1")
    for prefix in ["", "10.", "192.168.", "127.0.0.1.", "localhost."]:
        assert not rule.allows(f"{prefix}{label}.example:{port}".encode())
    assert rule.allows(f"localhost:{port}".encode())


@given(address=st.ip_addresses(), port=st.integers(1, 65535))
def test_private_ip_literals_are_allowed_and_public_ones_are_not(address: Any, port: int) -> None:
    private = [
        ipaddress.ip_network(n)
        for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
    ]
    expected = any(address in n for n in private) or str(address) in ("127.0.0.1", "0.0.0.0", "::1")
    host = f"[{address}]" if address.version == 6 else str(address)
    assert HostRule(None, "127.0.0.1").allows(f"{host}:{port}".encode()) == expected, host


def test_the_bound_address_is_an_allowed_host() -> None:
    rule = HostRule(None, "203.0.113.7")
    assert rule.allows(b"203.0.113.7:5000") and not rule.allows(b"203.0.113.8:5000")
    assert HostRule(None, "2001:db8::1").allows(b"[2001:db8::1]:5000")
    assert HostRule(None, "myhost.lan").allows(b"MyHost.lan")


def test_allowed_hosts_option_replaces_the_defaults_as_in_mlflow(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--allowed-hosts", "mlflow.example.com, *.corp.example")
    try:
        port = server.port
        for host in [
            "mlflow.example.com",
            f"mlflow.example.com:{port}",
            "a.corp.example",
            "b.a.corp.example:1",
        ]:
            assert raw(port, "GET", "/api/evstore/info", {"Host": host})[0] == 200, host
        for host in [
            f"127.0.0.1:{port}",
            "corp.example",
            "mlflow.example.com.evil",
            "evil.example",
        ]:
            forbidden(raw(port, "GET", "/api/evstore/info", {"Host": host}), INVALID_HOST)
        assert raw(port, "GET", "/health", {"Host": "127.0.0.1"})[0] == 200
    finally:
        server.stop()


def test_allowed_hosts_from_the_environment_and_star(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVSTORE_ALLOWED_HOSTS", "*")
    server = ServerProcess(tmp_path)
    try:
        assert raw(server.port, "GET", "/api/evstore/info", {"Host": "anything.example"})[0] == 200
    finally:
        server.stop()


# --- Origin: cross-origin writes and preflights ---------------------------------------------


def test_a_cross_origin_write_is_refused(server: ServerProcess, http: httpx.Client) -> None:
    experiment_id, run_id = fresh_run(http)
    before = head(http)
    local = {"Host": f"127.0.0.1:{server.port}"}
    # The classic CSRF: a form-like text/plain POST from a web page, which needs no preflight.
    for origin in [
        "https://evil.example",
        "http://evil.example:5000",
        "null",
        "http://localhost.evil.example",
    ]:
        for content_type in ["text/plain", "application/json"]:
            headers = {**local, "Origin": origin, "Content-Type": content_type}
            forbidden(
                raw(server.port, "POST", f"{API}/experiments/create", headers, b'{"name": "csrf"}'),
                CORS_BLOCKED,
            )
        upload = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/csrf.txt"
        forbidden(raw(server.port, "PUT", upload, {**local, "Origin": origin}, b"x"), CORS_BLOCKED)
    # As in MLflow a cross-origin GET is answered (it changes nothing; without an
    # Access-Control-Allow-Origin header the browser does not let the page read it).
    status, headers, _ = raw(
        server.port, "GET", "/api/evstore/info", {**local, "Origin": "https://evil.example"}
    )
    assert status == 200 and "access-control-allow-origin" not in headers
    assert head(http) == before
    verified(http)


def test_loopback_and_same_origin_writes_are_allowed(
    server: ServerProcess, http: httpx.Client
) -> None:
    json_body = {"Content-Type": "application/json"}
    status, headers, _ = raw(server.port, "POST", f"{API}/experiments/create",
                             {"Host": f"127.0.0.1:{server.port}", "Origin": "http://localhost:3000", **json_body},
                             b'{"name": "from-a-local-page"}')  # fmt: skip
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    lan = f"192.168.1.5:{server.port}"  # the server's own origin, reached by its LAN address
    status, _, body = raw(server.port, "POST", f"{API}/experiments/create",
                          {"Host": lan, "Origin": f"http://{lan}", **json_body}, b'{"name": "same-origin"}')  # fmt: skip
    assert status == 200, body
    assert origin_allowed("http://[::1]:8080", "127.0.0.1:5000", [])
    assert not origin_allowed("http://192.168.1.5:5000", "192.168.1.5:5001", [])


def test_preflights_are_answered_for_allowed_origins_only(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, "--cors-allowed-origins", "https://app.example,https://*.tools.example"
    )
    try:
        local = {"Host": f"127.0.0.1:{server.port}"}
        ask = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        target = f"{API}/experiments/create"
        for origin in ["https://app.example", "https://x.tools.example", "http://localhost:3000"]:
            status, headers, _ = raw(
                server.port, "OPTIONS", target, {**local, "Origin": origin, **ask}
            )
            assert status == 200 and headers["access-control-allow-origin"] == origin, (
                origin,
                headers,
            )
            assert "POST" in headers["access-control-allow-methods"]
            written = raw(server.port, "POST", target, {**local, "Origin": origin, "Content-Type": "application/json"},
                          json.dumps({"name": origin}).encode())  # fmt: skip
            assert written[0] == 200, written
        # A disallowed origin's preflight: Starlette's answer, the same as MLflow's.
        status, _, body = raw(
            server.port, "OPTIONS", target, {**local, "Origin": "https://evil.example", **ask}
        )
        assert (status, body) == (400, b"Disallowed CORS origin")
        forbidden(raw(server.port, "POST", target, {**local, "Origin": "https://app.example.evil",
                                                    "Content-Type": "application/json"}, b'{"name": "n"}'), CORS_BLOCKED)  # fmt: skip
    finally:
        server.stop()


# --- request bodies: JSON only, and not too deep ------------------------------------------------


def test_mlflow_api_bodies_must_be_application_json(
    server: ServerProcess, http: httpx.Client
) -> None:
    before = head(http)
    body = b'{"name": "typed"}'
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/jsonx", "text/json"]:  # fmt: skip
        response = http.post(
            f"{API}/experiments/create", content=body, headers={"Content-Type": content_type}
        )
        refused(
            http,
            response,
            400,
            "INVALID_PARAMETER_VALUE",
            "Bad Request. Content-Type must be one of ['application/json'].",
        )
    missing = http.post(f"{API}/experiments/create", content=body)
    refused(
        http,
        missing,
        400,
        "INVALID_PARAMETER_VALUE",
        "Bad Request. Content-Type header is missing.",
    )
    assert head(http) == before
    for content_type in ["application/json; charset=utf-8", "Application/JSON"]:
        response = http.post(f"{API}/experiments/create", content=json.dumps({"name": content_type}),
                             headers={"Content-Type": content_type})  # fmt: skip
        assert response.status_code == 200, response.text
    # GET requests carry their parameters in the query string; their Content-Type is not read.
    got = http.get(
        f"{API}/experiments/get-by-name",
        params={"experiment_name": "Default"},
        headers={"Content-Type": "text/plain"},
    )
    assert got.status_code == 200
    verified(http)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_400_not_a_500(
    server: ServerProcess, http: httpx.Client, depth: int
) -> None:
    _, run_id = fresh_run(http)
    before = head(http)
    for nested in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        body = b'{"run_id": "%s", "key": "t", "value": "v", "ignored": %s}' % (
            run_id.encode(),
            nested,
        )
        response = http.post(
            f"{API}/runs/set-tag", content=body, headers={"Content-Type": "application/json"}
        )
        refused(http, response, 400, "INVALID_PARAMETER_VALUE", "nested too deeply")
    assert head(http) == before
    verified(http)


# --- bearer token ------------------------------------------------------------------------------


def test_the_bearer_scheme_is_case_insensitive(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, token="s3cret")
    try:
        for authorization in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"]:
            response = httpx.get(
                server.url + "/api/evstore/info", headers={"Authorization": authorization}
            )
            assert response.status_code == 200, authorization
        for authorization in ["bearer S3CRET", "Basic s3cret", "bearers3cret", "bearer", "s3cret"]:
            response = httpx.get(
                server.url + "/api/evstore/info", headers={"Authorization": authorization}
            )
            assert (response.status_code, response.json()["error_code"]) == (
                401,
                "UNAUTHENTICATED",
            ), authorization
        # The Host check runs before the token check, and a preflight needs no token.
        forbidden(raw(server.port, "GET", "/api/evstore/info", {"Host": "evil.example", "Authorization": "Bearer s3cret"}),
                  INVALID_HOST)  # fmt: skip
        preflight = raw(server.port, "OPTIONS", f"{API}/experiments/create",
                        {"Host": "127.0.0.1", "Origin": "http://localhost:1", "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert preflight[0] == 200
    finally:
        server.stop()


# --- upload temp files -----------------------------------------------------------------------


def test_stray_upload_files_are_removed_when_a_server_starts(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    uploads, objects = artifacts / ".uploads", artifacts / "objects"
    uploads.mkdir(parents=True)
    objects.mkdir()
    dead = uploads / "evstore-upload-999999999-abc"  # no such process
    alive = uploads / f"evstore-upload-{os.getpid()}-def"  # this test process is alive
    old, fresh = objects / ".incoming-old", objects / ".incoming-new"
    for path in (dead, alive, old, fresh):
        path.write_bytes(b"partial upload")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    server = ServerProcess(tmp_path)
    try:
        assert sorted(p.name for p in uploads.iterdir()) == [alive.name]
        assert sorted(p.name for p in objects.iterdir()) == [fresh.name]
    finally:
        server.stop()
    # Called again in this process: a spool named with its own pid is a former holder's.
    removed = remove_stray_uploads(str(artifacts), now=time.time() + 7200)
    assert sorted(removed) == sorted([str(alive), str(fresh)])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see the spool file")
def test_a_killed_upload_leaves_no_file(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--max-artifact-mb", "64")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            experiment_id, run_id = fresh_run(http)
        target = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/big.bin"
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {40 << 20}\r\n\r\n".encode()
            )
            sock.sendall(b"0" * (12 << 20))  # past the 8 MiB kept in memory: now in a file
            fds = f"/proc/{server.process.pid}/fd"
            for _ in range(400):  # until the server has its spool file open (not a time limit)
                links = [os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)]
                if any(".uploads" in link for link in links):
                    break
                sock.sendall(b"0" * 65536)
            else:
                pytest.fail(f"the server never opened a spool file: {links}")
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
        leftovers = [p for p in server.artifacts.rglob("*") if p.is_file()]
        assert leftovers == []
    finally:
        server.stop()


# --- no absolute paths in answers -------------------------------------------------------------


def test_answers_do_not_reveal_where_the_store_is(
    server: ServerProcess, http: httpx.Client
) -> None:
    directory = str(server.store.parent.resolve())
    info = http.get("/api/evstore/info")
    assert info.json()["store"] == "server.db"
    experiment_id, run_id = fresh_run(http)
    payload = b"bytes behind a symlink"
    sha = hashlib.sha256(payload).hexdigest()
    outside = server.store.parent / "outside"
    outside.mkdir()
    (server.artifacts / "objects").mkdir(parents=True, exist_ok=True)
    (server.artifacts / "objects" / sha[:2]).symlink_to(outside, target_is_directory=True)
    symlinked = http.put(f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/f.bin", content=payload)
    refused(http, symlinked, 400, "INVALID_PARAMETER_VALUE", "<artifacts root>/objects/")
    answers = [info, symlinked,
               http.get(f"{API}/runs/get", params={"run_id": "0" * 32}),
               http.get(f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/missing.bin"),
               http.get("/api/evstore/verify")]  # fmt: skip
    for answer in answers:
        assert directory not in answer.text and str(server.store.parent) not in answer.text, (
            answer.text
        )


# --- artifact names ---------------------------------------------------------------------------


BAD_ARTIFACT_PATHS = [
    "../x", "a/../../x", "..;/x", "a/..;jsessionid=1/x", ".;/x", "/etc/passwd", "C:/x", "c:", "a\\b",
    "a#b", "a//b", "./a", "a/", "a\x00b", "%2e%2e/x", "%252e%252e/x", "a/%2e%2e%3b/x",
    "x" * 256, "é" * 128, "a/" * 512 + "b",
]  # fmt: skip


@pytest.mark.parametrize("path", BAD_ARTIFACT_PATHS, ids=range(len(BAD_ARTIFACT_PATHS)))
def test_unsafe_artifact_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidParameterValue, match="Invalid artifact path"):
        check_artifact_path(path)


_NAME = st.text(
    st.characters(codec="utf-8", exclude_characters="/\\#\x00%"), min_size=1, max_size=60
)


@given(
    parts=st.lists(
        _NAME.filter(lambda p: p.partition(";")[0] not in (".", "..")), min_size=1, max_size=8
    )
)
def test_ordinary_artifact_paths_are_accepted(parts: list[str]) -> None:
    path = "/".join(parts)
    if not _drive_like(path):
        assert check_artifact_path(path) == path


def _drive_like(path: str) -> bool:
    return len(path) >= 2 and path[1] == ":" and path[0].isascii() and path[0].isalpha()


@given(
    parts=st.lists(
        st.sampled_from(["a", "b.txt", "..", ".", "", "..;", ".;x", "%2e%2e"]),
        min_size=1,
        max_size=6,
    )
)
def test_any_dot_component_is_refused(parts: list[str]) -> None:
    path = "/".join(parts)
    bad = any(p in ("", ".", "..", "%2e%2e") or p.partition(";")[0] in (".", "..") for p in parts)
    if bad:
        with pytest.raises(InvalidParameterValue):
            check_artifact_path(path)
    else:
        assert check_artifact_path(path) == path


def test_artifact_path_length_limits() -> None:
    assert check_artifact_path("x" * 255) and check_artifact_path("é" * 127)  # 254 bytes
    longest = "/".join(["y" * 255] * 3 + ["y" * 254, "z"])  # 1,024 characters
    assert len(longest) == 1024 and check_artifact_path(longest) == longest
    with pytest.raises(InvalidParameterValue, match="1025 characters"):
        check_artifact_path(longest + "z")


def test_the_server_refuses_unsafe_artifact_names(
    server: ServerProcess, http: httpx.Client
) -> None:
    experiment_id, run_id = fresh_run(http)
    before = head(http)
    root = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts"
    for name in ["..;/x", "a/..;/x", "x" * 256, "d/" * 512 + "f", "a%23b"]:
        status, _, body = raw(
            server.port, "PUT", f"{root}/{name}", {"Host": "127.0.0.1"}, b"payload"
        )
        assert status == 400, (name, body)
        assert json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "invalid artifact path" in json.loads(body)["message"].lower()
    assert head(http) == before
    assert http.put(f"{root}/{'x' * 255}", content=b"ok").status_code == 200
    verified(http)


def test_empty_files_are_listed_without_a_size(http: httpx.Client) -> None:
    experiment_id, run_id = fresh_run(http)
    root = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts"
    assert http.put(f"{root}/empty.txt", content=b"").status_code == 200
    assert http.put(f"{root}/two.txt", content=b"ab").status_code == 200
    listing = http.get(ARTIFACTS, params={"path": f"{experiment_id}/{run_id}/artifacts"}).json()[
        "files"
    ]
    assert listing == [
        {"path": "empty.txt", "is_dir": False},
        {"path": "two.txt", "is_dir": False, "file_size": 2},
    ]
    assert http.get(f"{root}/empty.txt").content == b""


# --- tag length cap ------------------------------------------------------------------------------


def test_tag_values_are_capped_far_above_mlflow(server: ServerProcess, http: httpx.Client) -> None:
    experiment_id, run_id = fresh_run(http)
    longest, too_long = "t" * MAX_TAG_VALUE_LENGTH, "t" * (MAX_TAG_VALUE_LENGTH + 1)
    before = head(http)
    for endpoint, body in [
        ("runs/set-tag", {"run_id": run_id, "key": "big", "value": too_long}),
        ("runs/log-batch", {"run_id": run_id, "tags": [{"key": "big", "value": too_long}]}),
        (
            "experiments/set-experiment-tag",
            {"experiment_id": experiment_id, "key": "big", "value": too_long},
        ),
        (
            "runs/create",
            {"experiment_id": experiment_id, "tags": [{"key": "big", "value": too_long}]},
        ),
    ]:
        refused(
            http,
            http.post(f"{API}/{endpoint}", json=body),
            400,
            "INVALID_PARAMETER_VALUE",
            f"the limit is {MAX_TAG_VALUE_LENGTH}",
        )
    assert head(http) == before
    # Kept whole up to the cap: well past MLflow's 8,000 characters.
    assert (
        http.post(
            f"{API}/runs/set-tag", json={"run_id": run_id, "key": "big", "value": longest}
        ).status_code
        == 200
    )
    tags = http.get(f"{API}/runs/get", params={"run_id": run_id}).json()["run"]["data"]["tags"]
    assert {"key": "big", "value": longest} in tags
    verified(http)


def test_the_local_client_caps_tags_too(client: Client, run_id: str) -> None:
    with pytest.raises(InvalidParameterValue, match="the limit is"):
        client.set_tag(run_id, "big", "t" * (MAX_TAG_VALUE_LENGTH + 1))
    experiment_id = client.get_run(run_id).info.experiment_id
    with pytest.raises(InvalidParameterValue, match="the limit is"):
        client.set_experiment_tag(experiment_id, "big", "t" * (MAX_TAG_VALUE_LENGTH + 1))
    client.set_tag(run_id, "big", "t" * 20_000)
    assert len(client.get_run(run_id).data.tags["big"]) == 20_000
