"""Model-version sources on a server, checked as ``mlflow server`` 3.17 checks them.

MLflow's own checks (``_validate_source_run`` and ``_validate_source_model`` of its
handlers) are the oracle for sources that name no run or model: same refusals, same
messages. Sources that name a run or a logged model go through ``evstore server`` on a
thread; ``test_registry_differential`` sends the id-free refusals to a real mlflow server.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import ThreadServer

from evstore import Client, InvalidParameterValue, ResourceDoesNotExist
from evstore.tracking import version_sources

API = "/api/2.0/mlflow"

SCHEMES = ["", "/", "file://", "file:///", "s3://bucket/", "gs://b/", "runs:/", "runs://host/",
           "models:/", "models://host/", "mlflow-artifacts:/", "mlflow-artifacts://host/"]  # fmt: skip
SEGMENTS = ["a", "model", "..", ".", "%2e%2e", "%252e%252e", "m-1", "m-abc", "x@y", "@", "", "1",
            "latest", "%00", "a b"]  # fmt: skip
sources = st.builds(lambda scheme, parts: scheme + "/".join(parts), st.sampled_from(SCHEMES),
                    st.lists(st.sampled_from(SEGMENTS), max_size=4))  # fmt: skip


def _no_resource(_id: str) -> tuple[str, ...]:
    raise ResourceDoesNotExist("none")


def outcome(check: Any, *args: Any) -> str | None:
    """None when the check passes, else its message."""
    try:
        check(*args)
    except InvalidParameterValue as e:
        return str(e)
    except Exception as e:  # MLflow's MlflowException
        if type(e).__name__ != "MlflowException":
            raise
        # INTERNAL_ERROR: MLflow's 500 for a file: URI of another host, evstore's 400
        assert e.error_code in ("INVALID_PARAMETER_VALUE", "INTERNAL_ERROR"), e  # type: ignore[attr-defined]
        return str(e.message)  # type: ignore[attr-defined]
    return None


@functools.cache
def mlflow_handlers() -> Any:
    """MLflow's server handlers, imported once; their import configures SQLAlchemy mappers
    with a deprecation warning, which this suite would otherwise raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server import handlers
    return handlers


@settings(max_examples=300, deadline=None)
@given(source=sources)
def test_a_source_without_a_run_is_judged_as_mlflow_judges_it(source: str) -> None:
    theirs = mlflow_handlers()._validate_source_run
    assert outcome(version_sources.check_source_of_run, source, None, _no_resource) == outcome(theirs, source, None)


@settings(max_examples=300, deadline=None)
@given(source=sources)
def test_no_source_climbs_out_unnoticed(source: str) -> None:
    theirs = mlflow_handlers()._validate_non_local_source_contains_relative_paths
    assert outcome(version_sources.check_no_relative_parts, source) == outcome(theirs, source)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    running = ThreadServer(tmp_path / "server")
    try:
        yield running
    finally:
        running.stop()


def test_a_source_must_lie_in_the_run_or_model_the_request_names(server: ThreadServer) -> None:
    client = Client(server.url)
    try:
        run_id, other = (client.create_run("0").info.run_id for _ in range(2))
        model_id = client.create_logged_model("0", "net", run_id).model_id
        client.create_registered_model("clf")
    finally:
        client.close()
    accepted = [
        {"source": f"runs:/{run_id}/model", "run_id": run_id},
        {"source": f"mlflow-artifacts:/0/{run_id}/artifacts/model", "run_id": run_id},
        {"source": f"models:/{model_id}", "model_id": model_id},
        {"source": f"mlflow-artifacts:/0/models/{model_id}/artifacts/MLmodel", "model_id": model_id},
        {"source": "s3://bucket/model", "run_id": run_id},
    ]
    refused = [
        ({"source": f"runs:/{other}/model", "run_id": run_id}, "The run_id request parameter"),
        ({"source": f"mlflow-artifacts:/0/{other}/artifacts/model", "run_id": run_id}, "The run_id"),
        ({"source": f"mlflow-artifacts:/0/{run_id}/artifacts/../../x", "run_id": run_id}, "relative path"),
        ({"source": "/tmp/model", "run_id": run_id}, "contained within the artifact directory"),
        ({"source": f"runs:/{run_id}/model", "model_id": model_id}, "The model_id request parameter"),
        ({"source": f"models:/{model_id}", "run_id": run_id}, "The model_id request parameter"),
        ({"source": f"mlflow-artifacts:/0/{run_id}/artifacts/m", "model_id": model_id}, "The model_id"),
    ]
    with httpx.Client(base_url=server.url + API) as http:
        before = http.get("/registered-models/get", params={"name": "clf"}).json()
        for body, words in refused:
            response = http.post("/model-versions/create", json={"name": "clf", **body})
            assert (response.status_code, response.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), body
            assert words in response.json()["message"], (body, response.text)
        assert http.get("/registered-models/get", params={"name": "clf"}).json() == before  # nothing stored
        for number, body in enumerate(accepted, start=1):
            response = http.post("/model-versions/create", json={"name": "clf", **body})
            assert response.status_code == 200, (body, response.text)
            assert response.json()["model_version"]["version"] == str(number)


def test_a_local_store_takes_any_source_as_mlflows_local_stores_do(tmp_path: Path) -> None:
    client = Client(str(tmp_path / "local.db"))
    client.create_registered_model("clf")
    assert client.create_model_version("clf", "/tmp/model").source == "/tmp/model"
    assert client.create_model_version("clf", "runs:/0123/model").run_id is None
