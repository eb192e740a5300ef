"""Events from the future: a store a newer evstore wrote to still opens, reads and verifies.

A newer evstore may store event types this code has never heard of, or a newer version
of a type it knows. Those events come back as ``UnknownEvent`` (type, version, the raw
payload) instead of failing the read; ``verify`` checks their hashes like any other and
counts them, and ``evstore info`` / ``evstore verify`` say a newer evstore wrote them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from cli_here import run_here
from conftest import history_points

from evstore import codec
from evstore.events import (
    EVENT_TYPES,
    ExperimentCreated,
    MetricPoint,
    MetricsLogged,
    RunStarted,
    TagSet,
    UnknownEvent,
)
from evstore.integrity import verify
from evstore.stores import open_log

RUN = "e" * 32


class ModelRegistered(msgspec.Struct, frozen=True, kw_only=True):
    """A type a future evstore might add. Not an ``Event``: it never enters EVENT_TYPES."""

    version: ClassVar[int] = 1

    name: str
    source: str


#: MetricsLogged as a future evstore might write it: one version past this code's.
MetricsLoggedFromTheFuture = msgspec.defstruct(
    "MetricsLogged",
    [("points", list[list[Any]]), ("lineage", dict[str, str])],
    namespace={"version": MetricsLogged.version + 1},
    frozen=True,
    kw_only=True,
)

FUTURE_TYPE = ModelRegistered(name="resnet", source="runs:/" + RUN + "/model")
FUTURE_VERSION = MetricsLoggedFromTheFuture(points=[["loss", 0.5, 3, 7, None, None, None, "x"]],
                                           lineage={"parent": "m-1"})  # fmt: skip


@pytest.fixture
def future_store(tmp_path: Path) -> Path:
    """A store where a newer evstore appended two events this code cannot decode."""
    path = tmp_path / "future.db"
    assert "ModelRegistered" not in EVENT_TYPES
    assert EVENT_TYPES["MetricsLogged"] is MetricsLogged
    with open_log(path) as log:
        # Written through the store's own append path, so the hash chain is real.
        log.append("experiment-1", [ExperimentCreated(experiment_id="1", name="e",
                   artifact_location="a/1", creation_time=1)])  # fmt: skip
        log.append(RUN, [RunStarted(experiment_id="1", run_name="r", user_id="u", start_time=2)])
        log.append(RUN, [FUTURE_TYPE, FUTURE_VERSION])  # type: ignore[list-item]
        # This code keeps appending after them: the chain runs through the unknown events.
        log.append(
            RUN,
            [MetricsLogged(points=[MetricPoint("loss", 0.25, 4, 8)]), TagSet(key="k", value="v")],
        )
    return path


def test_unknown_events_read_back_as_unknown_event_with_their_raw_payload(
    future_store: Path,
) -> None:
    with open_log(future_store) as log:
        read = list(log.read_all())
        by_stream = log.read_stream(RUN)

    assert [type(r.event).__name__ for r in read] == [
        "ExperimentCreated", "RunStarted", "UnknownEvent", "UnknownEvent", "MetricsLogged", "TagSet"
    ]  # fmt: skip
    assert read[2].event == UnknownEvent("ModelRegistered", 1, codec.encode(FUTURE_TYPE))  # type: ignore[arg-type]
    assert read[3].event == UnknownEvent(
        "MetricsLogged",
        MetricsLogged.version + 1,
        codec.encode(FUTURE_VERSION),  # type: ignore[arg-type]
    )
    assert [(r.position, r.type, r.version) for r in read[2:4]] == [
        (3, "ModelRegistered", 1), (4, "MetricsLogged", MetricsLogged.version + 1)
    ]  # fmt: skip
    # Events after them decode as usual, and a stream read sees the same.
    assert read[4].event == MetricsLogged(points=[MetricPoint("loss", 0.25, 4, 8)])
    assert [r.event for r in by_stream] == [r.event for r in read[1:]]


def test_verify_checks_and_counts_unknown_events(future_store: Path) -> None:
    with open_log(future_store) as log:
        report = verify(log)
    assert report.ok, report
    assert (report.events, report.unknown_events, report.head_position) == (6, 2, 6)


def test_decode_treats_impossible_versions_as_unknown() -> None:
    payload = codec.encode(TagSet(key="k", value="v"))
    for version in (0, -1, TagSet.version + 1):
        assert codec.decode("TagSet", version, payload) == (
            UnknownEvent("TagSet", version, payload),
        )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS`` through its entry point in this process (``cli_here``), without
    colour, on a terminal wide enough that tables never wrap."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_COLOR", "1")
        return run_here(*args, columns=200)


def test_cli_info_says_a_newer_evstore_wrote_them(future_store: Path) -> None:
    result = run_cli("info", "--store", str(future_store))
    assert result.returncode == 0, result.stderr
    assert "2 events were written by a newer evstore" in result.stdout

    facts = json.loads(run_cli("info", "--store", str(future_store), "--json").stdout)
    assert (facts["events"], facts["unknown_events"]) == (6, 2)
    assert facts["events_by_type"]["ModelRegistered v1"] == 1
    assert facts["events_by_type"][f"MetricsLogged v{MetricsLogged.version + 1}"] == 1


def test_cli_verify_passes_and_says_a_newer_evstore_wrote_them(future_store: Path) -> None:
    result = run_cli("verify", "--store", str(future_store))
    assert result.returncode == 0, result.stderr
    assert "2 events were written by a newer evstore" in result.stdout
    assert "ok: 6 events" in result.stdout


def test_cli_log_shows_unknown_events_without_failing(future_store: Path) -> None:
    result = run_cli("log", "--store", str(future_store), "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    unknown = [line for line in lines if line["data"].get("unknown")]
    assert [(u["type"], u["version"]) for u in unknown] == [
        ("ModelRegistered", 1), ("MetricsLogged", MetricsLogged.version + 1)
    ]  # fmt: skip
    assert unknown[0]["data"]["payload_hex"] == codec.encode(FUTURE_TYPE).hex()  # type: ignore[arg-type]


def test_rebuild_skips_and_counts_unknown_events(future_store: Path) -> None:
    from evstore.rebuild import rebuild

    with open_log(future_store) as log:
        summary = rebuild(log)
        assert (summary.unknown_skipped, summary.head_position) == (2, 6)
        # The known events around them are all in the read models.
        assert log.query("SELECT run_id, run_name FROM runs") == [(RUN, "r")]
        assert [(key, value, step) for _, key, step, _, value in history_points(log)] == [
            ("loss", 0.25, 4)
        ]
        tags = log.query("SELECT key, value FROM tags WHERE run_id = ? ORDER BY key", (RUN,))
        assert ("k", "v") in tags
        assert verify(log).ok


def test_cli_rebuild_reports_the_unknown_events_it_skipped(future_store: Path) -> None:
    result = run_cli("rebuild", "--store", str(future_store))
    assert result.returncode == 0, result.stderr
    assert "2 unknown skipped" in result.stdout


def test_read_models_kept_inline_still_open_and_append_after_them(future_store: Path) -> None:
    from evstore.projection import open_store

    runner = open_store(future_store)  # builds the read models on open: a small log
    try:
        runner.store.append(RUN, [TagSet(key="after", value="future")])
        runner.check_fresh()
        rows = runner.store.query(
            "SELECT key, value FROM tags WHERE run_id = ? ORDER BY key", (RUN,)
        )
        assert {("after", "future"), ("k", "v")} <= set(rows)
        assert verify(runner.store).ok
    finally:
        runner.store.close()
