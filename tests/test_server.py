"""``evstore server`` over HTTP: shapes, retries, refusals, own endpoints, the Client over HTTP.

Each test serves the real server's app with uvicorn on a free loopback port, on a thread of
the test process (``ThreadServer``; ``ServerProcess`` where the command itself is under test),
and talks to it with httpx. Refused requests are checked three ways: the status code,
a message that says what was wrong, and an unchanged store (head position and verify).
The real ``mlflow`` client runs against the server in ``test_server_mlflow_client.py``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from conftest import close_cached_stores
from forked import run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServerProcess, ThreadServer

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    """A running server with a fresh store, stopped after the test."""
    running = ThreadServer(tmp_path, max_json_bytes=1 << 20, max_artifact_bytes=1 << 20)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def http(server: ThreadServer) -> Iterator[httpx.Client]:
    """An HTTP client for the server."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def call(http: httpx.Client, endpoint: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
    """One MLflow API call that must succeed; POST with a body, GET with a query."""
    if body is None:
        response = http.get(f"{API}/{endpoint}", params=query)
    else:
        response = http.post(f"{API}/{endpoint}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def new_run(http: httpx.Client, name: str = "exp") -> tuple[str, str]:
    """(experiment_id, run_id) of a new RUNNING run in a new experiment."""
    experiment_id = call(http, "experiments/create", {"name": name})["experiment_id"]
    run = call(http, "runs/create", {"experiment_id": experiment_id, "start_time": 1000})["run"]
    return experiment_id, run["info"]["run_id"]


def head(http: httpx.Client) -> int:
    """The store's head position, read through the server."""
    return int(http.get("/api/evstore/info").json()["head_position"])


def verified(http: httpx.Client) -> dict[str, Any]:
    """verify's report, read through the server; it must be ok."""
    report = http.get("/api/evstore/verify").json()
    assert report["ok"], report
    return report


# --- startup and the MLflow API shapes -----------------------------------------------------


def test_server_answers_on_loopback_only(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)  # the command itself, with its default bind address
    try:
        assert httpx.get(server.url + "/health").text == "OK"
        _refused_on_the_outward_address(server.port)
    finally:
        server.stop()


def _refused_on_the_outward_address(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this picks the outward address
        outward = probe.getsockname()[0]
    if outward.startswith("127."):
        pytest.skip("no non-loopback interface to check the bind address against")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{outward}:{port}/health", timeout=2)


def test_experiment_endpoints(http: httpx.Client) -> None:
    missing = http.get(f"{API}/experiments/get-by-name", params={"experiment_name": "demo"})
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "demo" in missing.json()["message"]
    experiment_id = call(http, "experiments/create", {"name": "demo", "tags": [{"key": "a", "value": "1"}]})[
        "experiment_id"
    ]
    experiment = call(http, "experiments/get", experiment_id=experiment_id)["experiment"]
    assert experiment["artifact_location"] == f"mlflow-artifacts:/{experiment_id}"
    assert experiment["tags"] == [{"key": "a", "value": "1"}]
    assert call(http, "experiments/get-by-name", experiment_name="demo")["experiment"] == experiment
    again = http.post(f"{API}/experiments/create", json={"name": "demo"})
    assert (again.status_code, again.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")

    call(http, "experiments/update", {"experiment_id": experiment_id, "new_name": "renamed"})
    call(http, "experiments/set-experiment-tag", {"experiment_id": experiment_id, "key": "b", "value": "2"})
    found = call(http, "experiments/search", {"filter": "name = 'renamed'"})["experiments"]
    assert [(e["name"], len(e["tags"])) for e in found] == [("renamed", 2)]
    by_get = http.get(f"{API}/experiments/search", params={"max_results": 1, "order_by": ["name ASC"]})
    assert by_get.status_code == 200 and by_get.json()["next_page_token"]
    # The Default experiment made by the store is served through the proxy too.
    default = call(http, "experiments/get", experiment_id="0")["experiment"]
    assert default["artifact_location"] == "mlflow-artifacts:/0"

    call(http, "experiments/delete", {"experiment_id": experiment_id})
    deleted = call(http, "experiments/search", {"view_type": "DELETED_ONLY"})["experiments"]
    assert [e["experiment_id"] for e in deleted] == [experiment_id]
    call(http, "experiments/restore", {"experiment_id": experiment_id})
    assert call(http, "experiments/get", experiment_id=experiment_id)["experiment"]["lifecycle_stage"] == "active"


def test_run_endpoints(http: httpx.Client) -> None:
    experiment_id, run_id = new_run(http)
    run = call(http, "runs/get", run_uuid=run_id)["run"]
    assert run["info"]["run_id"] == run["info"]["run_uuid"] == run_id
    assert run["info"]["artifact_uri"] == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    assert "end_time" not in run["info"] and run["info"]["start_time"] == 1000

    ids = {"run_id": run_id, "run_uuid": run_id}
    call(http, "runs/log-parameter", {**ids, "key": "lr", "value": "0.1"})
    for step, value in enumerate([1.0, "NaN", 0.25]):
        call(http, "runs/log-metric", {**ids, "key": "loss", "value": value, "timestamp": 5 + step, "step": step})
    call(http, "runs/set-tag", {**ids, "key": "team", "value": "a"})
    call(http, "runs/set-tag", {**ids, "key": "gone", "value": "x"})
    call(http, "runs/delete-tag", {"run_id": run_id, "key": "gone"})
    data = call(http, "runs/get", run_id=run_id)["run"]["data"]
    assert data["params"] == [{"key": "lr", "value": "0.1"}]
    assert data["metrics"] == [{"key": "loss", "value": 0.25, "timestamp": 7, "step": 2}]
    assert {t["key"]: t["value"] for t in data["tags"]}["team"] == "a"
    assert "gone" not in {t["key"] for t in data["tags"]}

    history = call(http, "metrics/get-history", run_id=run_id, metric_key="loss", max_results=2)
    assert [m["value"] for m in history["metrics"]] == [1.0, "NaN"]
    rest = call(http, "metrics/get-history", run_id=run_id, metric_key="loss", page_token=history["next_page_token"])
    assert [m["value"] for m in rest["metrics"]] == [0.25] and "next_page_token" not in rest

    info = call(http, "runs/update", {**ids, "status": "FAILED", "end_time": 99})["run_info"]
    assert (info["status"], info["end_time"]) == ("FAILED", 99)
    found = call(http, "runs/search", {"experiment_ids": [experiment_id], "filter": "params.lr = '0.1'"})
    assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
    call(http, "runs/delete", {"run_id": run_id})
    assert "runs" not in call(http, "runs/search", {"experiment_ids": [experiment_id]})  # empty: left out, as MLflow
    call(http, "runs/restore", {"run_id": run_id})
    assert call(http, "runs/get", run_id=run_id)["run"]["info"]["lifecycle_stage"] == "active"
    verified(http)


def test_search_runs_pages(http: httpx.Client) -> None:
    experiment_id = call(http, "experiments/create", {"name": "paged"})["experiment_id"]
    made = []
    for i in range(5):
        run = call(http, "runs/create", {"experiment_id": experiment_id, "start_time": 1000 + i})["run"]
        made.append(run["info"]["run_id"])
        call(http, "runs/log-metric", {"run_id": made[-1], "key": "m", "value": i, "timestamp": 1})
    seen: list[str] = []
    body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 2, "order_by": ["metrics.m DESC"]}
    for _ in range(len(made)):  # a page token that never ends fails here, not in a hang
        page = call(http, "runs/search", body)
        seen += [r["info"]["run_id"] for r in page["runs"]]
        if "next_page_token" not in page:
            break
        body["page_token"] = page["next_page_token"]
    else:
        pytest.fail(f"still a next page after {len(made)} pages of 2 runs")
    assert seen == made[::-1]


def test_log_batch_and_its_limits(server: ThreadServer, http: httpx.Client) -> None:
    _, run_id = new_run(http)
    metrics = [{"key": f"m{i % 7}", "value": i, "timestamp": 1, "step": i} for i in range(1000)]
    call(http, "runs/log-batch", {"run_id": run_id, "metrics": metrics})
    assert len(call(http, "metrics/get-history", run_id=run_id, metric_key="m0")["metrics"]) == 143
    before = head(http)
    for field, count, limit in (("metrics", 1001, 1000), ("params", 101, 100), ("tags", 101, 100)):
        items = [{"key": f"k{i}", "value": "1", "timestamp": 1} for i in range(count)]
        response = http.post(f"{API}/runs/log-batch", json={"run_id": run_id, field: items})
        assert response.status_code == 400, response.text
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert f"at most {limit} {field}" in response.json()["message"]
    assert head(http) == before
    verified(http)


def test_unimplemented_endpoints_are_404_endpoint_not_found(http: httpx.Client) -> None:
    for method, path in [
        ("POST", f"{API}/logged-models/m-1/artifacts/directories"),
        ("GET", f"{API}/traces/abc"),
        ("POST", "/api/2.0/mlflow/webhooks"),
        ("GET", "/api/3.0/mlflow/traces"),
        ("GET", f"{API}/runs/log-metric"),  # the wrong method for a known path
        ("DELETE", f"{ARTIFACTS}/1/abc/artifacts/x.txt"),
        ("GET", "/api/2.0/preview/mlflow/experiments/list"),
    ]:
        response = http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
        assert path in response.json()["message"]
    # A template's own text is taken as an id like any other, never as the template's key.
    model = http.post(f"{API}/logged-models", json={"experiment_id": "0", "name": "m"}).json()
    real = model["model"]["info"]["model_id"]
    literal = http.get(f"{API}/logged-models/{{model_id}}", params={"model_id": real})
    assert (literal.status_code, literal.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")


# --- retries: a request sent twice is stored once -------------------------------------------


def test_retried_requests_are_stored_once(http: httpx.Client) -> None:
    _, run_id = new_run(http)
    requests = [
        ("runs/log-metric", {"run_id": run_id, "key": "m", "value": 0.5, "timestamp": 7, "step": 1}),
        ("runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": "b", "value": 1, "timestamp": 7, "step": 0}],
            "params": [{"key": "p", "value": "1"}],
            "tags": [{"key": "t", "value": "1"}],
        }),
        ("runs/log-parameter", {"run_id": run_id, "key": "q", "value": "2"}),
        ("runs/set-tag", {"run_id": run_id, "key": "team", "value": "a"}),
        ("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": 9}),
    ]
    for endpoint, body in requests:
        call(http, endpoint, body)
        after_first = head(http)
        # The retry, with the fields in another order and run_uuid added: the same request.
        reordered = dict(reversed(list(body.items())), run_uuid=run_id)
        call(http, endpoint, reordered)
        assert head(http) == after_first, endpoint
    history = call(http, "metrics/get-history", run_id=run_id, metric_key="m")["metrics"]
    assert len(history) == 1
    verified(http)


def test_repeating_an_earlier_state_change_is_not_swallowed(http: httpx.Client) -> None:
    # A=1, A=2, A=1 must end at 1: a retry is recognised by state, not by the body alone.
    _, run_id = new_run(http)
    for value in ["1", "2", "1"]:
        call(http, "runs/set-tag", {"run_id": run_id, "key": "A", "value": value})
    for value in ["x", "y", "x"]:
        call(http, "runs/log-batch", {"run_id": run_id, "tags": [{"key": "B", "value": value}]})
    for status in ["FINISHED", "RUNNING", "FINISHED", "RUNNING"]:
        call(http, "runs/update", {"run_id": run_id, "status": status})
    run = call(http, "runs/get", run_id=run_id)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert (tags["A"], tags["B"], run["info"]["status"]) == ("1", "x", "RUNNING")


def test_idempotency_key_header_overrides_the_body_hash(http: httpx.Client) -> None:
    _, run_id = new_run(http)
    body = {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1, "step": 0}
    assert http.post(f"{API}/runs/log-metric", json=body, headers={"Idempotency-Key": "a"}).status_code == 200
    assert http.post(f"{API}/runs/log-metric", json=body, headers={"Idempotency-Key": "b"}).status_code == 200
    before = head(http)
    assert http.post(f"{API}/runs/log-metric", json=body, headers={"Idempotency-Key": "b"}).status_code == 200
    assert head(http) == before  # "b" again: a retry, stored once
    # Two keys, two requests: the log holds both writes; the history lists the identical
    # point once, as MLflow's store keeps it.
    page = http.get("/api/evstore/events", params={"stream": run_id, "type": "MetricsLogged"}).json()
    assert len(page["events"]) == 2
    assert len(call(http, "metrics/get-history", run_id=run_id, metric_key="m")["metrics"]) == 1

    # The Client over HTTP passes its idempotency_key on as the header.
    from evstore import Client

    remote = Client(str(http.base_url))
    try:
        remote.log_metric(run_id, "r", 1.0, timestamp=1, step=0, idempotency_key="k1")
        before = head(http)
        remote.log_metric(run_id, "r", 1.0, timestamp=1, step=0, idempotency_key="k1")
        assert head(http) == before
    finally:
        remote.close()


def test_the_remote_client_refuses_what_the_local_one_refuses(http: httpx.Client) -> None:
    import evstore
    from evstore import Client

    remote = Client(str(http.base_url))
    try:
        experiment_id = remote.create_experiment("refusals")
        before = head(http)
        for bad in (99, None, "bogus", True):
            with pytest.raises(evstore.InvalidParameterValue, match="view_type must be"):
                remote.search_experiments(view_type=bad)  # type: ignore[arg-type]
        for start_time in ("abc", 1.5, 10**30):
            with pytest.raises(evstore.InvalidParameterValue, match="start_time"):
                remote.create_run(experiment_id, start_time=start_time)  # type: ignore[arg-type]
        assert head(http) == before
        assert [e.name for e in remote.search_experiments(view_type="all")][:1] == ["refusals"]
    finally:
        remote.close()


def test_an_idempotency_key_reused_for_another_request_stores_it(http: httpx.Client) -> None:
    # The header names a retry of one request; a different body under it is another
    # write, which used to be answered with the first one's result and dropped.
    _, run_id = new_run(http)
    for value in (1, 2):
        body = {"run_id": run_id, "key": "m", "value": value, "timestamp": 1, "step": value}
        response = http.post(f"{API}/runs/log-metric", json=body, headers={"Idempotency-Key": "same"})
        assert response.status_code == 200
    history = call(http, "metrics/get-history", run_id=run_id, metric_key="m")["metrics"]
    assert sorted(point["value"] for point in history) == [1, 2]


# --- bad input: refused with the right status, a clear message, and nothing stored -----------


def refused(http: httpx.Client, response: httpx.Response, status: int, code: str, words: str) -> None:
    """The response is a refusal in MLflow's shape whose message contains ``words``."""
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code, response.text
    assert words.lower() in response.json()["message"].lower(), response.text


def test_malformed_json_and_wrong_types(http: httpx.Client) -> None:
    _, run_id = new_run(http)
    before = head(http)
    def post(endpoint: str, content: bytes | str) -> httpx.Response:
        return http.post(f"{API}/{endpoint}", content=content, headers={"Content-Type": "application/json"})

    refused(http, post("runs/log-metric", b'{"run_id": "x", "key": '), 400, "BAD_REQUEST", "malformed json")
    refused(http, post("runs/log-metric", b"[1, 2]"), 400, "INVALID_PARAMETER_VALUE", "expected `object`")
    cases = [
        ({"run_id": run_id, "key": "m", "value": "abc", "timestamp": 1}, "$.value"),
        ({"run_id": run_id, "key": 5, "value": 1, "timestamp": 1}, "$.key"),
        ({"run_id": run_id, "key": "m", "value": 1, "timestamp": 1, "step": 1.5}, "$.step"),
        ({"run_id": run_id, "key": "m", "value": 1, "timestamp": 10**30}, "$.timestamp"),
        ({"run_id": run_id, "key": "m", "value": True, "timestamp": 1}, "$.value"),
        ({"run_id": run_id, "value": 1, "timestamp": 1}, "`key`"),
        ({"key": "m", "value": 1, "timestamp": 1}, "run_id"),
    ]
    for body, words in cases:
        refused(http, post("runs/log-metric", json.dumps(body)), 400, "INVALID_PARAMETER_VALUE", words)
    # One bad metric in a batch: the whole batch is refused, its good points too.
    batch = {"run_id": run_id, "metrics": [
        {"key": "ok", "value": 1, "timestamp": 1}, {"key": "bad", "value": [1], "timestamp": 1},
    ]}  # fmt: skip
    refused(http, post("runs/log-batch", json.dumps(batch)), 400, "INVALID_PARAMETER_VALUE", "$.metrics[1].value")
    bad_key = {"run_id": run_id, "params": [{"key": "fine", "value": "1"}], "tags": [{"key": "../t", "value": "v"}]}
    refused(http, post("runs/log-batch", json.dumps(bad_key)), 400, "INVALID_PARAMETER_VALUE", "../t")
    refused(http, http.get(f"{API}/runs/search", params={}), 404, "ENDPOINT_NOT_FOUND", "runs/search")
    refused(
        http, http.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "m", "max_results": "x"}),
        400, "INVALID_PARAMETER_VALUE", "max_results",
    )  # fmt: skip
    refused(http, post("runs/search", b'{"filter": "metrics.m >"}'), 400, "INVALID_PARAMETER_VALUE", "")
    assert head(http) == before
    verified(http)


def test_unknown_ids_and_states(http: httpx.Client) -> None:
    _, run_id = new_run(http)
    before = head(http)
    unknown = "0" * 32
    refused(http, http.get(f"{API}/runs/get", params={"run_id": unknown}), 404, "RESOURCE_DOES_NOT_EXIST", unknown)
    for endpoint, body in [
        ("runs/log-metric", {"run_id": unknown, "key": "m", "value": 1, "timestamp": 1}),
        ("runs/log-batch", {"run_id": unknown, "tags": [{"key": "t", "value": "1"}]}),
        ("runs/set-tag", {"run_id": unknown, "key": "t", "value": "1"}),
        ("runs/update", {"run_id": unknown, "status": "FINISHED"}),
        ("runs/create", {"experiment_id": "12345"}),
        ("experiments/update", {"experiment_id": "12345", "new_name": "x"}),
    ]:
        refused(http, http.post(f"{API}/{endpoint}", json=body), 404, "RESOURCE_DOES_NOT_EXIST", "")
    refused(
        http, http.post(f"{API}/runs/update", json={"run_id": run_id, "status": "DONE"}),
        400, "INVALID_PARAMETER_VALUE", "DONE",
    )  # fmt: skip
    refused(
        http, http.post(f"{API}/runs/delete-tag", json={"run_id": run_id, "key": "nope"}),
        404, "RESOURCE_DOES_NOT_EXIST", "nope",
    )  # fmt: skip
    assert head(http) == before
    call(http, "runs/delete", {"run_id": run_id})
    deleted_head = head(http)
    body = {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1}
    refused(http, http.post(f"{API}/runs/log-metric", json=body), 400, "INVALID_PARAMETER_VALUE", "active")
    assert head(http) == deleted_head
    verified(http)


def test_oversize_bodies_are_413(server: ThreadServer, http: httpx.Client) -> None:
    experiment_id, run_id = new_run(http)
    before = head(http)
    big = {"run_id": run_id, "key": "p", "value": "x" * (2 << 20)}  # the server allows 1 MiB of JSON
    refused(http, http.post(f"{API}/runs/log-parameter", json=big), 413, "INVALID_PARAMETER_VALUE", "limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"run_id": "%s", "key": "p", "value": "' % run_id.encode()
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    streamed = http.post(f"{API}/runs/log-parameter", content=chunks())
    refused(http, streamed, 413, "INVALID_PARAMETER_VALUE", "limit")
    upload = http.put(f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/big.bin", content=b"0" * (2 << 20))
    refused(http, upload, 413, "INVALID_PARAMETER_VALUE", "limit")
    assert head(http) == before
    objects = server.artifacts / "objects"
    assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))
    verified(http)


# --- artifacts --------------------------------------------------------------------------


def test_artifact_upload_list_download(http: httpx.Client) -> None:
    experiment_id, run_id = new_run(http)
    root = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts"
    files = {"model_config.txt": b"lr=0.01\n", "plots/a b.png": bytes(range(256)), "plots/deep/c.json": b"{}"}
    for path, data in files.items():
        assert http.put(f"{root}/{path}", content=data).status_code == 200
    for path, data in files.items():
        assert http.get(f"{root}/{path}").content == data
    listing = http.get(ARTIFACTS, params={"path": f"{experiment_id}/{run_id}/artifacts"}).json()["files"]
    assert listing == [
        {"path": "model_config.txt", "is_dir": False, "file_size": 8},
        {"path": "plots", "is_dir": True},
    ]
    nested = http.get(ARTIFACTS, params={"path": f"{experiment_id}/{run_id}/artifacts/plots"}).json()["files"]
    assert [f["path"] for f in nested] == ["a b.png", "deep"]
    as_file = http.get(ARTIFACTS, params={"path": f"{experiment_id}/{run_id}/artifacts/model_config.txt"})
    assert as_file.json()["files"] == []
    refused(http, http.get(f"{root}/missing.txt"), 404, "RESOURCE_DOES_NOT_EXIST", "missing.txt")
    refused(http, http.get(f"{ARTIFACTS}/999/{run_id}/artifacts/model_config.txt"), 404, "RESOURCE_DOES_NOT_EXIST", "999")
    verified(http)


def test_tampered_artifact_is_refused_on_download(server: ThreadServer, http: httpx.Client) -> None:
    import hashlib

    experiment_id, run_id = new_run(http)
    url = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/model.bin"
    assert http.put(url, content=b"the real weights").status_code == 200
    sha = hashlib.sha256(b"the real weights").hexdigest()
    (server.artifacts / "objects" / sha[:2] / sha).write_bytes(b"the fake weights")
    refused(http, http.get(url), 400, "INVALID_STATE", "corrupt")


TRAVERSALS = [
    "../escape.txt",
    "a/../../escape.txt",
    "./x.txt",
    "a//b.txt",
    "%2e%2e/escape.txt",
    "%2E%2E%2Fescape.txt",
    "a%2f..%2fescape.txt",
    "..%5cescape.txt",
    "a\\..\\escape.txt",
    "x%00.txt",
    "%252e%252e/escape.txt",
]


def raw_request(server: ThreadServer, method: str, target: str, body: bytes | None) -> tuple[int, Any]:
    """Send ``target`` byte for byte (http.client does not normalise '..' or escapes)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, target, body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("path", TRAVERSALS)
def test_artifact_traversal_is_refused(server: ThreadServer, path: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        experiment_id, run_id = new_run(http)
        before = head(http)
        target = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/{path}"
        for method in ("PUT", "GET"):
            status, body = raw_request(server, method, target, b"payload" if method == "PUT" else None)
            assert status == 400, (method, path, body)
            assert body["error_code"] == "INVALID_PARAMETER_VALUE"
            assert "invalid artifact path" in body["message"].lower()
        listing = http.get(ARTIFACTS, params={"path": f"{experiment_id}/{run_id}/artifacts/{path}"})
        assert listing.status_code in (400, 404), listing.text
        assert head(http) == before
        verified(http)
    escaped = [p for p in server.store.parent.rglob("escape.txt")]
    assert escaped == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(
        st.sampled_from(["..", ".", "", "a", "b.txt", "c d", "%2e%2e", "%2E.", "%2f", "\\", "..\\"]),
        min_size=1,
        max_size=5,
    )
)
def test_any_path_with_a_dot_segment_is_refused(server: ThreadServer, segments: list[str]) -> None:
    # Listing takes the path as a query value; trailing slashes are trimmed there.
    relative = "/".join(segments).rstrip("/")
    decoded = unquote(relative)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.get(ARTIFACTS, params={"path": f"1/{'a' * 32}/artifacts/{relative}"})
    if relative and ("\\" in decoded or any(s in ("..", ".", "") for s in decoded.split("/"))):
        assert response.status_code == 400, (relative, response.text)
        assert "invalid artifact path" in response.json()["message"].lower()
    elif set(segments) <= {"a", "b.txt", "c d"}:
        assert response.status_code == 404, (relative, response.text)  # the path is fine: no such run
    else:
        assert response.status_code in (400, 404), (relative, response.text)


def test_symlinked_object_directory_is_refused(server: ThreadServer, http: httpx.Client, tmp_path: Path) -> None:
    import hashlib

    experiment_id, run_id = new_run(http)
    payload = b"secret bytes"
    sha = hashlib.sha256(payload).hexdigest()
    outside = tmp_path / "outside"
    outside.mkdir()
    objects = server.artifacts / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    (objects / sha[:2]).symlink_to(outside, target_is_directory=True)
    before = head(http)
    response = http.put(f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/f.bin", content=payload)
    refused(http, response, 400, "INVALID_PARAMETER_VALUE", "symlink")
    assert list(outside.iterdir()) == []
    assert head(http) == before
    verified(http)


# --- bearer token ---------------------------------------------------------------------


def test_bearer_token_is_required_when_set(tmp_path: Path) -> None:
    server = ThreadServer(tmp_path, token="s3cret")
    try:
        for headers, words in [({}, "missing bearer token"), ({"Authorization": "Bearer wrong"}, "invalid"),
                               ({"Authorization": "s3cret"}, "invalid")]:  # fmt: skip
            for method, path in [("GET", "/version"), ("POST", f"{API}/experiments/create"), ("GET", "/api/evstore/verify"),
                                 ("PUT", f"{ARTIFACTS}/0/{'a' * 32}/artifacts/x")]:  # fmt: skip
                response = httpx.request(method, server.url + path, headers=headers, json={"name": "x"})
                assert response.status_code == 401, (method, path)
                assert response.json()["error_code"] == "UNAUTHENTICATED"
                assert words in response.json()["message"].lower()
        assert httpx.get(server.url + "/health").status_code == 200  # a liveness probe needs none
        good = {"Authorization": "Bearer s3cret"}
        info = httpx.get(server.url + "/api/evstore/info", headers=good).json()
        assert info["head_position"] == 1  # only the Default experiment: nothing was written
        assert httpx.post(server.url + f"{API}/experiments/create", headers=good, json={"name": "x"}).status_code == 200
    finally:
        server.stop()


# --- evstore's own endpoints ----------------------------------------------------------------


def test_evstore_endpoints(http: httpx.Client) -> None:
    _, run_id = new_run(http)
    for step in range(5):
        call(http, "runs/log-metric", {"run_id": run_id, "key": "m", "value": step, "timestamp": 1, "step": step})
    page = http.get("/api/evstore/events", params={"limit": 3}).json()
    assert [e["position"] for e in page["events"]] == [1, 2, 3] and page["next_after"] == 3
    rest = http.get("/api/evstore/events", params={"after": 3, "limit": 1000}).json()
    assert rest["events"][0]["position"] == 4 and rest["next_after"] is None
    only_metrics = http.get("/api/evstore/events", params={"stream": run_id, "type": "MetricsLogged"}).json()
    assert len(only_metrics["events"]) == 5
    assert {e["stream_id"] for e in only_metrics["events"]} == {run_id}
    history = http.get(f"/api/evstore/runs/{run_id}/history").json()["events"]
    assert history[0]["type"] == "RunStarted" and history[-1]["change"] == "m[4]=4"
    assert http.get("/api/evstore/runs/nope/history").status_code == 404
    assert http.get("/api/evstore/events", params={"limit": 0}).status_code == 400
    report = verified(http)
    assert report["head_position"] == head(http)


# --- the Python side: the Client over HTTP and the fluent API over http ------------------------------


def test_remote_client_matches_the_local_client(
    server: ThreadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evstore
    from evstore import Client, Metric, Param, RunTag
    from evstore.integrity import verify

    remote = Client(server.url)
    experiment_id = remote.create_experiment("remote", tags={"a": 1})
    assert remote.get_experiment_by_name("remote").tags == {"a": "1"}
    assert remote.get_experiment_by_name("nope") is None
    run = remote.create_run(experiment_id, run_name="r1", tags={"t": "v"})
    run_id = run.info.run_id
    remote.log_param(run_id, "lr", 0.1)
    remote.log_metric(run_id, "loss", float("nan"), step=0)
    remote.log_metric(run_id, "loss", 0.5, step=1)
    remote.log_batch(run_id, metrics=[Metric("acc", 0.9, 5, 1)], params=[Param("opt", "adam")], tags=[RunTag("x", "y")])
    remote.set_tag(run_id, "team", "a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_bytes(b"hello")
    remote.log_artifact(run_id, str(tmp_path / "d" / "f.txt"), "sub")
    remote.set_terminated(run_id, "FAILED")
    with pytest.raises(evstore.ResourceDoesNotExist):
        remote.get_run("0" * 32)
    with pytest.raises(evstore.InvalidParameterValue, match="at most 100 params"):
        remote.log_batch(run_id, params=[Param(f"p{i}", "1") for i in range(101)])

    got = remote.get_run(run_id)
    history = remote.get_metric_history(run_id, "loss")
    listed = remote.list_artifacts(run_id, "sub")
    downloaded = remote.download_artifacts(run_id, "sub/f.txt", str(tmp_path / "dl"))
    found = remote.search_runs([experiment_id], "params.opt = 'adam'")
    remote.close()
    server.stop()

    # The same store, read by the local Client after the server stopped: the same answers.
    monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(server.artifacts))
    local = evstore.Client(str(server.store))
    try:
        assert local.get_run(run_id).data == got.data
        assert local.get_run(run_id).info.status == got.info.status == "FAILED"
        assert [m.value for m in local.get_metric_history(run_id, "loss")][1:] == [m.value for m in history][1:]
        assert str(history[0].value) == "nan"
        assert local.list_artifacts(run_id, "sub") == listed
        assert local.read_artifact(run_id, "sub/f.txt") == Path(downloaded).read_bytes() == b"hello"
        assert [r.info.run_id for r in found] == [run_id]
        assert verify(local.store).ok
    finally:
        close_cached_stores(server.store.parent)


def test_fluent_api_over_http(server: ThreadServer, tmp_path: Path) -> None:
    script = f"""
import evstore as mlflow
mlflow.set_tracking_uri({server.url!r})
mlflow.set_experiment("fluent")
with mlflow.start_run() as run:
    mlflow.log_param("p", 1)
    mlflow.log_metrics({{"a": 1.0, "b": 2.0}}, step=3)
    mlflow.set_tag("t", "v")
    mlflow.log_text("hi", "notes/hi.txt")
print(run.info.run_id)
"""
    done = run_python(script, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=server.url) as http:
        run = call(http, "runs/get", run_id=run_id)["run"]
        assert run["info"]["status"] == "FINISHED"
        assert {m["key"]: m["step"] for m in run["data"]["metrics"]} == {"a": 3, "b": 3}
        exp = run["info"]["experiment_id"]
        assert http.get(f"{ARTIFACTS}/{exp}/{run_id}/artifacts/notes/hi.txt").content == b"hi"


def test_metric_context_sent_by_the_client_reaches_the_log(http: httpx.Client) -> None:
    # MLflow 3 sends model_id and dataset fields with metrics; they are kept in the events.
    _, run_id = new_run(http)
    call(http, "runs/log-metric", {"run_id": run_id, "key": "acc", "value": 0.9, "timestamp": 1,
                                   "step": 0, "model_id": "m-1", "dataset_name": "eval",
                                   "dataset_digest": "abc"})  # fmt: skip
    call(http, "runs/log-batch", {"run_id": run_id, "metrics": [
        {"key": "acc", "value": 0.8, "timestamp": 2, "step": 1, "model_id": "m-2"}]})  # fmt: skip
    page = http.get("/api/evstore/events", params={"stream": run_id, "type": "MetricsLogged"}).json()
    points = [p for line in page["events"] for p in line["data"]["points"]]
    assert [p[4:] for p in points] == [["m-1", "eval", "abc"], ["m-2", None, None]]


def test_fluent_search_runs_pages_through_a_server(server: ThreadServer) -> None:
    # all_runs pages through any client's search_runs, asking no more than max_results;
    # the fluent API with an http tracking URI returns the pyarrow table a local store does.
    from evstore import Client, fluent
    from evstore.export import all_runs

    remote = Client(server.url)
    experiment_id = remote.create_experiment("fluent-remote")
    for i in range(5):
        remote.log_param(remote.create_run(experiment_id).info.run_id, "i", str(i))
    assert len(all_runs(remote, [experiment_id], max_results=None)) == 5
    pages = []
    original = remote.search_runs

    def counted(*args: Any) -> Any:
        pages.append(args[3])
        return original(*args)

    remote.search_runs = counted  # type: ignore[method-assign]
    assert len(all_runs(remote, [experiment_id], "params.i != '4'", max_results=3)) == 3
    assert pages == [3]
    remote.close()
    previous = fluent.get_tracking_uri() if fluent.config.is_set() else None
    fluent.set_tracking_uri(server.url)
    try:
        table = fluent.search_runs([experiment_id], order_by=["params.i ASC"], output_format="arrow")
        assert table.column("params.i").to_pylist() == ["0", "1", "2", "3", "4"]
        assert "run_id" in table.column_names
    finally:
        fluent._clients.pop(server.url).close()
        fluent.set_tracking_uri(previous)
