"""Every MLflow endpoint the server serves has a permission rule (or is open to every
signed-in user because it filters what it returns): an endpoint added without one would
be for admins only, silently."""

from __future__ import annotations

from evstore.server.mlflow_api import ENDPOINTS
from evstore.server.permissions import METHOD_RULES, OPEN_TO_ALL, RULES


def test_every_endpoint_has_a_rule() -> None:
    missing = [(method, path) for method, path in ENDPOINTS
               if path not in RULES and path not in OPEN_TO_ALL
               and (method, path) not in METHOD_RULES]  # fmt: skip
    assert missing == []


def test_every_rule_names_a_served_endpoint() -> None:
    served = {path for _method, path in ENDPOINTS}
    assert set(RULES) - served == set()
    assert {key for key in METHOD_RULES if key not in ENDPOINTS} == set()
