"""MetricsLogged: a batch of metric points."""

from __future__ import annotations

from typing import Any

from evstore.codec import upcaster


@upcaster("MetricsLogged", 1)
def metrics_logged_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v2 points carry model and dataset context; no v1 point had any."""
    return {"points": [[*point[:4], None, None, None] for point in payload["points"]]}
