"""The registry's REST calls against ``mlflow server`` 3.17.2 and ``evstore server``: the
same sequence of requests must get the same answers (status, error code and body), once
the times each server stamps are set aside. Sources are URIs, so no run or model ids
differ between the two. ``test_mlflow_differential`` plays them on the servers its run
calls use, so that one ``mlflow server`` starts for both."""

from __future__ import annotations

from typing import Any

import httpx
from differential import Server

API = "/api/2.0/mlflow"
SOURCE = "s3://bucket/path/model"

#: (method, path under /api/2.0/mlflow/, body or query)
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "registered-models/create", {"name": "churn", "tags": [{"key": "team", "value": "ml"}],
                                          "description": "first"}),
    ("POST", "registered-models/create", {"name": "churn"}),
    ("POST", "registered-models/create", {"name": "fraud"}),
    ("POST", "model-versions/create", {"name": "churn", "source": SOURCE,
                                       "tags": [{"key": "origin", "value": "s3"}]}),
    ("POST", "model-versions/create", {"name": "churn", "source": SOURCE, "description": "x",
                                       "run_link": "http://link"}),
    ("POST", "model-versions/create", {"name": "nope", "source": SOURCE}),
    ("GET", "model-versions/get", {"name": "churn", "version": "1"}),
    ("GET", "model-versions/get", {"name": "churn", "version": "9"}),
    ("POST", "registered-models/alias", {"name": "churn", "alias": "champion", "version": "1"}),
    ("GET", "registered-models/alias", {"name": "churn", "alias": "champion"}),
    ("POST", "registered-models/alias", {"name": "churn", "alias": "champion", "version": "2"}),
    ("GET", "registered-models/alias", {"name": "churn", "alias": "champion"}),
    ("GET", "registered-models/alias", {"name": "churn", "alias": "missing"}),
    ("POST", "registered-models/alias", {"name": "churn", "alias": "latest", "version": "1"}),
    ("POST", "registered-models/set-tag", {"name": "churn", "key": "owner", "value": "a"}),
    ("POST", "model-versions/set-tag", {"name": "churn", "version": "2", "key": "ok", "value": "yes"}),
    ("DELETE", "model-versions/delete-tag", {"name": "churn", "version": "2", "key": "missing"}),
    ("PATCH", "registered-models/update", {"name": "churn", "description": "second"}),
    ("PATCH", "model-versions/update", {"name": "churn", "version": "1", "description": "v1"}),
    ("POST", "model-versions/transition-stage", {"name": "churn", "version": "1", "stage": "Staging",
                                                 "archive_existing_versions": False}),
    ("POST", "model-versions/transition-stage", {"name": "churn", "version": "2", "stage": "Staging",
                                                 "archive_existing_versions": True}),
    ("POST", "model-versions/transition-stage", {"name": "churn", "version": "2", "stage": "Bogus",
                                                 "archive_existing_versions": False}),
    ("POST", "registered-models/get-latest-versions", {"name": "churn"}),
    ("POST", "registered-models/get-latest-versions", {"name": "churn", "stages": ["Archived"]}),
    ("GET", "registered-models/get", {"name": "churn"}),
    ("GET", "registered-models/get", {"name": "missing"}),
    ("GET", "registered-models/search", {"max_results": 1}),
    ("GET", "registered-models/search", {"filter": "name LIKE 'ch%'"}),
    ("GET", "registered-models/search", {"filter": "tags.team = 'ml'"}),
    ("GET", "registered-models/search", {"order_by": ["name DESC"]}),
    ("GET", "model-versions/search", {"filter": "name = 'churn'", "order_by": ["version_number ASC"]}),
    ("GET", "model-versions/search", {"filter": "name = 'churn' AND version_number > 1"}),
    ("GET", "model-versions/get-download-uri", {"name": "churn", "version": "1"}),
    ("DELETE", "registered-models/alias", {"name": "churn", "alias": "champion"}),
    ("DELETE", "registered-models/delete-tag", {"name": "churn", "key": "team"}),
    # MLflow's message for this one carries SQLAlchemy's text: the code is compared
    ("POST", "registered-models/rename", {"name": "churn", "new_name": "fraud", "_code_only": True}),
    ("POST", "registered-models/rename", {"name": "churn", "new_name": "churn2"}),
    ("DELETE", "model-versions/delete", {"name": "churn2", "version": "1"}),
    ("POST", "model-versions/create", {"name": "churn2", "source": SOURCE}),
    ("GET", "registered-models/get", {"name": "churn2"}),
    ("DELETE", "registered-models/delete", {"name": "fraud"}),
    ("GET", "registered-models/search", {}),
    # max_results 0: an empty page of registered models (with a token), a refused version
    # search, and a logged-model search of MLflow's default page
    ("GET", "registered-models/search", {"max_results": 0}),
    ("GET", "registered-models/search", {"max_results": 0, "filter": "name = 'none'"}),
    ("GET", "model-versions/search", {"max_results": 0}),
    ("POST", "logged-models/search", {"experiment_ids": ["0"], "max_results": 0}),
    ("POST", "logged-models/search", {"experiment_ids": ["0"]}),
    # sources a server refuses: local paths without a run, climbing out, ids that are not
    # the request's, improper models: URIs, the proxy without a run
    *[("POST", "model-versions/create", {"name": "churn2", "source": source}) for source in (
        "/tmp/model", "file:///etc/passwd", "relative/model", "s3://bucket/../other",
        "s3://bucket/%2e%2e/other", "s3://bucket/a%00b", "runs:/0123456789abcdef/model",
        "runs://host/0123456789abcdef/model", "models:/m-0123456789abcdef", "models://host/churn2/1",
        "models:/", "models:/a/b/c", "mlflow-artifacts:/0/abc/artifacts/model",
        "models:/missing/1", "models:/churn2@nothing",
    )],
    ("POST", "model-versions/create", {"name": "churn2", "source": "/tmp/model", "run_id": "f" * 32}),
    ("POST", "model-versions/create", {"name": "churn2", "source": "s3://b/m", "model_id": "m-missing"}),
    ("POST", "model-versions/create", {"name": "churn2", "source": "models:/churn2/2", "run_id": "x"}),
    # a version of a version: the source names the version it copies
    ("POST", "model-versions/create", {"name": "churn2", "source": "models:/churn2/2"}),
    ("POST", "model-versions/create", {"name": "churn2", "source": "models:/churn2/latest"}),
    ("GET", "model-versions/search", {"filter": "name = 'churn2'", "order_by": ["version_number ASC"]}),
]  # fmt: skip

#: Fields each server stamps with its own clock.
CLOCK_FIELDS = frozenset({"creation_timestamp", "last_updated_timestamp"})


def normalized(value: Any) -> Any:
    """The answer without server clock times, MLflow's extra error fields, or the page
    token's encoding (its presence is compared). ``latest_versions`` is sorted by version:
    MLflow lists them in the order its database loads the versions, which differs between
    its get and its search."""
    if isinstance(value, dict):
        out = {k: ("<token>" if k == "next_page_token" else normalized(v)) for k, v in value.items()
               if k not in CLOCK_FIELDS and k not in ("sqlstate", "error_class")}  # fmt: skip
        if "latest_versions" in out:
            out["latest_versions"] = sorted(out["latest_versions"], key=lambda v: int(v["version"]))
        return out
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def answer(http: httpx.Client, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    code_only = body.pop("_code_only", False)
    if method == "GET":
        response = http.get(API + "/" + path, params=body)
    else:
        response = http.request(method, API + "/" + path, json=body)
    found = normalized(response.json())
    if code_only:
        found = found.get("error_code")
    return response.status_code, found


def check(mlflow: Server, evstore: Server) -> None:
    """Play ``CALLS`` on both servers; each answer must equal MLflow's."""
    with httpx.Client(base_url=mlflow.url) as theirs, httpx.Client(base_url=evstore.url) as ours:
        for method, path, body in CALLS:
            expected = answer(theirs, method, path, dict(body))
            got = answer(ours, method, path, dict(body))
            assert got == expected, (method, path, body)
