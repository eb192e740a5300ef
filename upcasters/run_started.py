"""RunStarted: a run began."""

from __future__ import annotations

from typing import Any

from evstore.codec import upcaster


@upcaster("RunStarted", 1)
def run_started_v1_to_v2(payload: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """v2 moves initial tags out into TagSet events, so every tag has one kind of source."""
    started = {key: value for key, value in payload.items() if key != "tags"}
    tags = payload.get("tags") or {}
    return [("RunStarted", 2, started)] + [
        ("TagSet", 1, {"key": key, "value": value}) for key, value in tags.items()
    ]
