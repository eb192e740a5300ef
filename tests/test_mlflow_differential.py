"""Differential test: the same seeded sequence of real ``MlflowClient`` calls against
``mlflow server`` 3.17.2 (SQLite, artifacts served from a temp directory) and against
``evstore server``; every call's outcome must be the same.

An outcome is the call's return value as plain data (entities as dicts of their properties,
paged searches as the list of pages) or, when it raises, ``{"error": error_code}`` for an
``MlflowException`` and ``{"raised": type name}`` for anything else (plus the HTTP status and
error_code for the artifact endpoints' ``requests.HTTPError``). Messages are kept for the
report but not compared. A 5xx answer is not retried (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``),
and the client's pooled connections are dropped after a failed call.

Normalized, because it legitimately differs between two servers:

- experiment and run ids: replaced by the scenario key that created them (``<s1:e0>``),
  in id fields, in tag values, inside artifact URIs; the default experiment ``0`` likewise;
- run names the server generated for runs created without one (``bold-cat-123``, the shape
  MLflow makes up; any other value is compared as is): replaced by the run's key;
- clock readings: any ``*time`` field at or after 2017 (``CLOCK_FLOOR_MS``) becomes
  ``<clock>``; the scenario passes its own start, end and metric times far below that, and
  those are compared exactly;
- artifact URIs and locations: scheme and host dropped (``mlflow-artifacts:/1/<id>/artifacts``
  and ``http://host:port/...`` both become ``<artifacts>/<s1:e0>/<s1:r2>/artifacts``);
- ``user_id``: ``<user>``;
- page tokens: only whether a next page exists is compared (the player follows tokens);
- NaN: compared as the string ``"NaN"``.

Run one seed with the full diff: ``EVSTORE_DIFF_SEED=2 .venv/bin/python -m pytest -q -s
tests/test_mlflow_differential.py``; ``EVSTORE_DIFF_REPORT=/tmp/diff.md`` also writes every
difference, with the servers' messages, to that file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from differential import BIN, Op, Player, Server, compact, differences, scenario, where_different

SEEDS = [int(os.environ["EVSTORE_DIFF_SEED"])] if os.environ.get("EVSTORE_DIFF_SEED") else [1, 2]
SHOWN = 10_000 if os.environ.get("EVSTORE_DIFF_SEED") else 12


class Pair:
    """Both servers and a player for each."""

    def __init__(self, root: Path) -> None:
        self.mlflow = Server("mlflow", root / "mlflow")
        self.evstore = Server("evstore", root / "evstore")
        self.mlflow_player: Player
        self.evstore_player: Player


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """mlflow server and evstore server, started together, stopped afterwards."""
    root = tmp_path
    saved = {k: os.environ.get(k) for k in RETRY_ENV}
    os.environ.update(RETRY_ENV)
    servers = Pair(root)
    try:
        # Importing mlflow here (seconds) overlaps the servers' start.
        servers.mlflow_player = Player(servers.mlflow.url, root / "mlflow-work")
        servers.evstore_player = Player(servers.evstore.url, root / "evstore-work")
        servers.mlflow.wait_ready()
        servers.evstore.wait_ready()
        yield servers
    finally:
        servers.mlflow.stop()
        servers.evstore.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: A 5xx answer fails at once instead of being retried with backoff.
RETRY_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def test_same_outcomes_as_mlflow(pair: Pair) -> None:
    # One test over every seed, so that pytest-xdist starts the two servers once.
    reports = []
    for seed in SEEDS:
        # Play the same calls against both servers, then normalize and compare every outcome.
        ops = scenario(seed)
        with ThreadPoolExecutor(2) as pool:
            playing_mlflow = pool.submit(pair.mlflow_player.play, seed, ops)
            raw_evstore = pair.evstore_player.play(seed, ops)
            raw_mlflow = playing_mlflow.result()
        expected = [pair.mlflow_player.normalize(o) for o in raw_mlflow]
        actual = [pair.evstore_player.normalize(o) for o in raw_evstore]
        found = list(differences(ops, expected, actual))
        if os.environ.get("EVSTORE_DIFF_REPORT"):
            report_path = Path(os.environ["EVSTORE_DIFF_REPORT"])
            write_report(report_path, seed, found, raw_mlflow, raw_evstore)
        if found:
            reports.append(render(seed, found, len(ops)))

        # The store the evstore server wrote still verifies.
        verified = subprocess.run(
            [str(BIN / "evstore"), "verify", "--store", str(pair.evstore.store)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
    if reports:
        pytest.fail("\n\n".join(reports), pytrace=False)


def render(seed: int, found: list[tuple[int, Op, Any, Any]], total: int) -> str:
    """The first differences, readable: the call, then where MLflow's and evstore's differ."""
    lines = [f"seed {seed}: {len(found)} of {total} calls differ from MLflow"]
    for index, op, expected, actual in found[:SHOWN]:
        lines.append(f"#{index} {op}")
        lines += describe(expected, actual, "   ")
    if len(found) > SHOWN:
        lines.append(f"... {len(found) - SHOWN} more (EVSTORE_DIFF_SEED={seed} shows all)")
    return "\n".join(lines)


def describe(expected: Any, actual: Any, indent: str, parts: int = 6) -> list[str]:
    """The first ``parts`` places where two outcomes differ, MLflow's side first."""
    lines = []
    for n, (path, a, b) in enumerate(where_different(expected, actual)):
        if n == parts:
            lines.append(f"{indent}... more parts differ")
            break
        lines.append(f"{indent}at {path}: mlflow {brief(compact(a))} | evstore {brief(compact(b))}")
    return lines


def brief(outcome: Any, limit: int = 300) -> str:
    """An outcome as one line of JSON, cut to ``limit`` characters."""
    text = json.dumps(outcome, default=repr, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"...<{len(text)} chars>"


def write_report(
    path: Path, seed: int, found: list[tuple[int, Op, Any, Any]], raw_mlflow: list[Any],
    raw_evstore: list[Any],
) -> None:  # fmt: skip
    """Append every difference of one seed, with the servers' raw messages, to ``path``."""
    lines = [f"\n## seed {seed}: {len(found)} differences\n"]
    for index, op, expected, actual in found:
        lines.append(f"- `#{index} {op}`")
        lines += [f"  - {line}" for line in describe(expected, actual, "", parts=10)]
        for side, raw in (("mlflow", raw_mlflow[index]), ("evstore", raw_evstore[index])):
            if isinstance(raw, dict) and "message" in raw:
                lines.append(f"  - {side} said: {brief(raw['message'], 200)}")
    with open(path, "a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


# --- the harness itself: normalizing must not hide a real difference ------------------------


def test_normalize_maps_ids_and_clocks_only(tmp_path: Path) -> None:
    player = Player("http://127.0.0.1:9", tmp_path)
    player.experiment_names["7"] = "<s1:e0>"
    player.run_names["ab" * 16] = "<s1:r0>"
    outcome = {
        "info": {"experiment_id": "7", "run_id": "ab" * 16, "start_time": 1_000_123,
                 "end_time": 1_700_000_000_000, "user_id": "someone",
                 "artifact_uri": f"mlflow-artifacts:/7/{'ab' * 16}/artifacts"},
        "data": {"tags": {"idx": "7", "mlflow.parentRunId": "ab" * 16}, "metrics": {"m": math.nan}},
    }  # fmt: skip
    assert player.normalize(outcome) == {
        "info": {"experiment_id": "<s1:e0>", "run_id": "<s1:r0>", "start_time": 1_000_123,
                 "end_time": "<clock>", "user_id": "<user>",
                 "artifact_uri": "<artifacts>/<s1:e0>/<s1:r0>/artifacts"},
        "data": {"tags": {"idx": "7", "mlflow.parentRunId": "<s1:r0>"}, "metrics": {"m": "NaN"}},
    }  # fmt: skip
    served = "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/7/x"
    assert player.normalize(served, "artifact_uri") == "<artifacts>/<s1:e0>/x"


def test_where_different_points_at_the_smallest_part() -> None:
    left = {"items": [{"a": 1, "b": [1, 2]}], "more": False}
    right = {"items": [{"a": 1, "b": [1, 3]}], "more": True}
    assert list(where_different(left, right)) == [(".items[0].b[1]", 2, 3), (".more", False, True)]
    assert list(where_different({"error": "X"}, None)) == [(".", {"error": "X"}, None)]
    assert list(where_different([1], [1, 2])) == [(".", [1], [1, 2])]


def test_scenario_is_the_same_for_the_same_seed() -> None:
    assert [str(op) for op in scenario(5)] == [str(op) for op in scenario(5)]
    assert [str(op) for op in scenario(5)] != [str(op) for op in scenario(6)]
