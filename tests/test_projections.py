"""Read models kept inline: what each table says after appends, versions, new models, subscribe.

Every test writes through a real store file with the projection hook attached, then
reads the tables with SQL. The determinism property (inline == rebuilt from scratch,
for random histories) is at the end.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from conftest import BACKENDS, history_points, nan_safe, new_uri_of
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from waiting import PATIENCE

import projections
from evstore import projection as mechanism
from evstore.errors import ProjectionError, StaleProjectionError
from evstore.events import (
    ArtifactRecorded,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    MetricPoint,
    MetricsLogged,
    ParamsLogged,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStarted,
    RunStatusChanged,
    TagDeleted,
    TagSet,
)
from evstore.inspect import store_info
from evstore.projection import (
    ProjectionRunner,
    ReadModel,
    open_store,
    subscribe,
)
from evstore.rebuild import rebuild
from evstore.stores import open_log
from evstore.stores.base import RecordedEvent
from projections import metrics as metrics_model
from projections.metrics import METRICS
from projections.runs import RUNS

RUN_A, RUN_B = "a" * 32, "b" * 32
#: How each backend says an integer is beyond 64 bits.
TOO_BIG = "OverflowError|out of range"
INF, NAN = math.inf, math.nan


@pytest.fixture
def runner(store_uri: str) -> Iterator[ProjectionRunner]:
    """A new store with every registered read model kept inline."""
    runner = open_store(store_uri)
    try:
        yield runner
    finally:
        runner.store.close()


def rows(runner: ProjectionRunner, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query against the store's tables."""
    return runner.store.query(sql)  # type: ignore[attr-defined,no-any-return]


def experiment(experiment_id: str = "1", name: str = "exp", **tags: str) -> ExperimentCreated:
    return ExperimentCreated(experiment_id=experiment_id, name=name,
                             artifact_location=f"a/{experiment_id}", creation_time=100, tags=tags)  # fmt: skip


def started(run_name: str = "r", experiment_id: str = "1") -> RunStarted:
    return RunStarted(experiment_id=experiment_id, run_name=run_name, user_id="u", start_time=200)


# --- what each table says -----------------------------------------------------------


def test_experiments_follow_their_events_and_last_update_time_moves(
    runner: ProjectionRunner,
) -> None:
    store = runner.store
    store.append("experiment-1", [experiment(team="vision", owner="ann")])
    assert rows(runner, "SELECT * FROM experiments") == [("1", "exp", "a/1", "active", 100, 100)]
    positions = store.append("experiment-1", [
        ExperimentRenamed(experiment_id="1", name="exp2"),
        ExperimentTagSet(experiment_id="1", key="team", value="nlp"),
        ExperimentTagDeleted(experiment_id="1", key="owner"),
    ])  # fmt: skip
    (renamed_at,) = {r.recorded_at for r in store.read_all(positions[0] - 1)}
    assert rows(runner, "SELECT name, last_update_time FROM experiments") == [("exp2", renamed_at)]
    assert rows(runner, "SELECT * FROM experiment_tags") == [("1", "team", "nlp")]
    store.append("experiment-1", [ExperimentDeleted(experiment_id="1", deleted_time=900)])
    assert rows(runner, "SELECT lifecycle_stage, last_update_time FROM experiments") == [
        ("deleted", 900)
    ]
    store.append("experiment-1", [ExperimentRestored(experiment_id="1", restored_time=950)])
    assert rows(runner, "SELECT lifecycle_stage, last_update_time FROM experiments") == [
        ("active", 950)
    ]


def test_runs_status_name_lifecycle_and_the_run_name_tag_stay_in_sync(
    runner: ProjectionRunner,
) -> None:
    store = runner.store
    store.append("experiment-1", [experiment()])
    store.append(RUN_A, [started("first"), TagSet(key="k", value="v")])
    run = "SELECT run_name, status, end_time, lifecycle_stage, deleted_time FROM runs"
    tags = "SELECT key, value FROM tags ORDER BY key"
    assert rows(runner, run) == [("first", "RUNNING", None, "active", None)]
    # MLflow's create_run records the name as the mlflow.runName tag.
    assert rows(runner, tags) == [("k", "v"), ("mlflow.runName", "first")]
    store.append(RUN_A, [RunRenamed(run_name="second")])
    assert rows(runner, tags)[1] == ("mlflow.runName", "second")
    store.append(RUN_A, [TagSet(key="mlflow.runName", value="third")])
    assert rows(runner, run)[0][0] == "third"
    store.append(RUN_A, [RunStatusChanged(status="FINISHED", end_time=500)])
    store.append(RUN_A, [RunStatusChanged(status="FAILED")])  # no end time: the old one stays
    assert rows(runner, run) == [("third", "FAILED", 500, "active", None)]
    store.append(RUN_A, [RunDeleted(deleted_time=600), TagDeleted(key="k")])
    assert rows(runner, run) == [("third", "FAILED", 500, "deleted", 600)]
    assert rows(runner, tags) == [("mlflow.runName", "third")]
    store.append(RUN_A, [RunRestored(restored_time=700)])
    assert rows(runner, run) == [("third", "FAILED", 500, "active", None)]


def test_params_and_artifacts(runner: ProjectionRunner) -> None:
    store = runner.store
    store.append(RUN_A, [started(), ParamsLogged(params={"lr": "0.1", "long": "x" * 10_000})])
    store.append(RUN_A, [ArtifactRecorded(path="m/model.pkl", size=3, sha256="ab" * 32)])
    store.append(RUN_A, [ArtifactRecorded(path="m/model.pkl", size=4, sha256="cd" * 32)])
    assert rows(runner, "SELECT key, length(value) FROM params ORDER BY key") == [
        ("long", 10_000),
        ("lr", 3),
    ]
    assert rows(runner, "SELECT * FROM artifacts") == [(RUN_A, "m/model.pkl", 4, "cd" * 32)]


def test_metric_history_keeps_every_distinct_point_nan_and_infinities(
    runner: ProjectionRunner,
) -> None:
    store = runner.store
    store.append(RUN_A, [started()])
    points = [MetricPoint("loss", 1.0, 0, 10), MetricPoint("loss", NAN, 1, 11),
              MetricPoint("loss", INF, 1, 11), MetricPoint("loss", -INF, -5, 12)]  # fmt: skip
    store.append(RUN_A, [MetricsLogged(points=points)])
    assert nan_safe(history_points(store)) == nan_safe([
        (RUN_A, "loss", 0, 10, 1.0), (RUN_A, "loss", 1, 11, NAN),
        (RUN_A, "loss", 1, 11, INF), (RUN_A, "loss", -5, 12, -INF),
    ])  # fmt: skip
    # Fewer than a chunk's worth: one narrow row each, NaN as NULL (SQLite's rule).
    assert rows(runner, "SELECT slot, step, timestamp, value FROM metric_tail") == [
        (0, 0, 10, 1.0), (1, 1, 11, None), (2, 1, 11, INF), (3, -5, 12, -INF),
    ]  # fmt: skip


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 4 points, so a few points fill several."""
    monkeypatch.setattr(metrics_model, "CHUNK", 4)
    return 4


def test_a_full_tail_is_packed_into_a_chunk_by_the_append_that_fills_it(
    runner: ProjectionRunner, small_chunks: int
) -> None:
    store = runner.store
    store.append(RUN_A, [started()])
    for step in range(3):
        store.append(RUN_A, [MetricsLogged(points=[MetricPoint("m", float(step), step, step)])])
    assert rows(runner, "SELECT count(*) FROM metric_tail") == [(3,)]
    assert rows(runner, "SELECT count(*) FROM metric_chunks") == [(0,)]
    # The fourth point fills the tail: one chunk, an empty tail, the series' bounds.
    store.append(RUN_A, [MetricsLogged(points=[MetricPoint("m", 3.0, 3, 3)])])
    assert rows(runner, "SELECT count(*) FROM metric_tail") == [(0,)]
    assert rows(runner, "SELECT series_id, chunk, min_timestamp, max_timestamp"
                        " FROM metric_chunks") == [(1, 0, 0, 3)]  # fmt: skip
    assert rows(runner, "SELECT * FROM metric_series") == [(1, RUN_A, "m", 1, 0, 3)]
    # A batch of ten: the next two chunks at once, two points left in the tail.
    store.append(RUN_A, [MetricsLogged(points=[
        MetricPoint("m", float(s), s, 100 - s) for s in range(4, 14)])])  # fmt: skip
    assert rows(runner, "SELECT chunk, min_timestamp, max_timestamp FROM metric_chunks") == [
        (0, 0, 3), (1, 93, 96), (2, 89, 92)
    ]  # fmt: skip
    assert rows(runner, "SELECT * FROM metric_series") == [(1, RUN_A, "m", 3, 0, 96)]
    assert rows(runner, "SELECT slot, step FROM metric_tail") == [(0, 12), (1, 13)]
    assert [p[2] for p in history_points(store)] == list(range(14))


def test_where_a_point_lives_does_not_depend_on_how_appends_were_split(
    new_store_uri: Any, small_chunks: int
) -> None:
    points = [MetricPoint(key, float(i), i // 2, 100 + i) for i in range(11) for key in ("a", "b")]
    tables = "metric_series", "metric_chunks", "metric_tail"
    found = []
    for split in (1, 3, len(points)):  # per call, small batches, one batch
        runner = open_store(new_store_uri(f"split{split}.db"))
        runner.store.append(RUN_A, [started()])
        for start in range(0, len(points), split):
            runner.store.append(RUN_A, [MetricsLogged(points=points[start : start + split])])
        found.append({t: rows(runner, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables})
        rebuild(runner.store)
        assert {t: rows(runner, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables} == found[-1]
        runner.store.close()
    assert found[0] == found[1] == found[2]


def test_identical_points_are_kept_once_in_the_tail_and_in_chunks(
    runner: ProjectionRunner, small_chunks: int
) -> None:
    store = runner.store
    store.append(RUN_A, [started()])
    log = store.append
    log(RUN_A, [MetricsLogged(points=[MetricPoint("m", NAN, 0, 5), MetricPoint("m", 1.0, 0, 5)])])
    # Again, within one batch and across appends: NaN equals NaN, -0.0 equals 0.0.
    log(RUN_A, [MetricsLogged(points=[MetricPoint("m", NAN, 0, 5), MetricPoint("m", -0.0, 1, 6),
                                      MetricPoint("m", 0.0, 1, 6)])])  # fmt: skip
    log(RUN_A, [MetricsLogged(points=[MetricPoint("m", 1.0, 0, 5)])])
    assert nan_safe(history_points(store)) == nan_safe(
        [(RUN_A, "m", 0, 5, NAN), (RUN_A, "m", 0, 5, 1.0), (RUN_A, "m", 1, 6, 0.0)]
    )
    # The fourth distinct point packs the chunk; a repeat of a packed point, even in a
    # batch with new ones and logged after later timestamps, is found in its chunk.
    log(RUN_A, [MetricsLogged(points=[MetricPoint("m", 2.0, 2, 7)])])
    log(RUN_A, [MetricsLogged(points=[MetricPoint("m", 9.0, 9, 9)])])
    log(RUN_A, [MetricsLogged(points=[MetricPoint("m", 1.0, 0, 5), MetricPoint("m", NAN, 0, 5),
                                      MetricPoint("m", 3.0, 0, 5)])])  # fmt: skip
    assert rows(runner, "SELECT count(*) FROM metric_chunks") == [(1,)]
    assert nan_safe([p[2:] for p in history_points(store)]) == nan_safe(
        [(0, 5, NAN), (0, 5, 1.0), (1, 6, 0.0), (2, 7, 2.0), (9, 9, 9.0), (0, 5, 3.0)]
    )
    # The log keeps what was sent.
    sent = sum(len(r.event.points) for r in store.read_all() if isinstance(r.event, MetricsLogged))
    assert sent == 11


def test_a_repeat_of_the_newest_point_is_dropped_wherever_the_series_holds_it(
    runner: ProjectionRunner, small_chunks: int
) -> None:
    store = runner.store
    store.append(RUN_A, [started()])

    def log(*timestamps: int, key: str = "m") -> None:
        store.append(RUN_A, [MetricsLogged(points=[MetricPoint(key, 1.0, t, t) for t in timestamps])])

    # The newest point is in the tail: its repeat, logged alone, is dropped.
    log(2)
    log(2)
    # Three more fill the tail into a chunk: a repeat of the chunk's newest is dropped.
    log(3, 4, 5)
    log(5)
    assert rows(runner, "SELECT count(*) FROM metric_tail") == [(0,)]
    # Two new points in one event, then two events in one append (which fill a chunk):
    # every point is kept, and the series row counts both chunks.
    log(6, 7)
    store.append(RUN_A, [MetricsLogged(points=[MetricPoint("m", 1.0, t, t)]) for t in (8, 9)])
    assert rows(runner, "SELECT * FROM metric_series") == [(1, RUN_A, "m", 2, 2, 9)]
    # Repeats within one batch of a new series are dropped too, the first kept.
    log(5, 5, key="n")
    log(5, 5, 6, key="o")
    assert [p[1:4] for p in history_points(store)] == [
        *[("m", t, t) for t in range(2, 10)], ("n", 5, 5), ("o", 5, 5), ("o", 6, 6),
    ]  # fmt: skip


def test_a_run_with_hundreds_of_metric_keys_finds_every_series_again(
    runner: ProjectionRunner,
) -> None:
    # The series of an append are looked up some hundreds of keys at a time.
    store = runner.store
    store.append(RUN_A, [started()])
    keys = [f"k{i:03}" for i in range(300)]
    for timestamp in (1, 2):
        store.append(RUN_A, [MetricsLogged(points=[MetricPoint(k, 0.5, 0, timestamp) for k in keys])])
    assert rows(runner, "SELECT count(*) FROM metric_series") == [(300,)]
    assert [p[1:4] for p in history_points(store)] == [(k, 0, t) for k in keys for t in (1, 2)]


@pytest.mark.parametrize(
    ("points", "latest"),
    [
        # the greatest step wins, whatever the order they arrive in
        ([(5.0, 3, 1), (6.0, 1, 9)], (5.0, 3, 1)),
        # same step: the greatest timestamp; then the greatest value
        ([(5.0, 2, 1), (4.0, 2, 2)], (4.0, 2, 2)),
        ([(5.0, 2, 2), (7.0, 2, 2), (6.0, 2, 2)], (7.0, 2, 2)),
        # NaN compares as 0 (MLflow stores NaN as 0 plus a flag); stored as NULL
        ([(-1.0, 2, 2), (NAN, 2, 2)], (None, 2, 2)),
        ([(NAN, 2, 2), (1.0, 2, 2)], (1.0, 2, 2)),
        # on a tie the point logged first stays
        ([(NAN, 2, 2), (0.0, 2, 2)], (None, 2, 2)),
        ([(0.0, 2, 2), (NAN, 2, 2)], (0.0, 2, 2)),
        ([(INF, -3, 0), (1e308, -3, 0)], (INF, -3, 0)),
    ],
)
@pytest.mark.parametrize("batched", [True, False])
def test_latest_metric_follows_mlflows_rule(
    runner: ProjectionRunner,
    points: list[tuple[float, int, int]],
    latest: tuple[Any, ...],
    batched: bool,
) -> None:
    store = runner.store
    store.append(RUN_A, [started()])
    events = [MetricsLogged(points=[MetricPoint("m", v, s, t)]) for v, s, t in points]
    for batch in [events] if batched else [[e] for e in events]:
        store.append(RUN_A, batch)
    runner.check_fresh()
    assert rows(runner, "SELECT value, step, timestamp FROM latest_metrics") == [latest]


def checkpoints(runner: ProjectionRunner) -> dict[str, int]:
    return {s.name: s.checkpoint for s in mechanism.store_state(runner.store)[0].values()}


def test_every_append_moves_every_checkpoint_in_the_same_transaction(
    runner: ProjectionRunner,
) -> None:
    runner.store.append(RUN_A, [started(), ParamsLogged(params={"a": "1"})])
    assert checkpoints(runner) == {m.name: 2 for m in runner.models}
    # A per-call metric point too: its models write it in its append, with the others.
    runner.store.append(RUN_A, [MetricsLogged(points=[MetricPoint("m", 1.0, 0, 1)])])
    assert checkpoints(runner) == {m.name: 3 for m in runner.models}
    assert history_points(runner.store) == [(RUN_A, "m", 0, 1, 1.0)]
    assert rows(runner, "SELECT value, step FROM latest_metrics") == [(1.0, 0)]
    assert store_info(runner.store)["projections_behind"] == "none"


def test_a_point_the_tables_cannot_hold_is_refused_by_its_own_append(
    runner: ProjectionRunner,
) -> None:
    runner.store.append(RUN_A, [started()])
    for step, stamp in ((2**63, 3), (0, 2**63), (2**64 - 1, 0)):  # msgpack holds them
        beyond = MetricsLogged(points=[MetricPoint("m", 1.0, step, stamp)])
        with pytest.raises(ProjectionError, match=rf"position 2 \(MetricsLogged\).*{TOO_BIG}"):
            runner.store.append(RUN_A, [beyond])
    # Nor in a batch big enough to be packed at once.
    many = [MetricPoint("m", float(i), i, i) for i in range(metrics_model.CHUNK)]
    with pytest.raises(ProjectionError, match=TOO_BIG):
        runner.store.append(RUN_A, [MetricsLogged(points=[*many, MetricPoint("m", 0.0, 2**63, 0)])])
    assert runner.store.head_position() == 1 and history_points(runner.store) == []
    assert checkpoints(runner) == {m.name: 1 for m in runner.models}


def test_a_runner_over_some_models_moves_only_their_checkpoints(runner: ProjectionRunner) -> None:
    runner.store.append(RUN_A, [started()])
    runner.detach()
    params = next(m for m in runner.models if m.name == "params")
    only_params = mechanism.ProjectionRunner(runner.store, [params])
    runner.store.append_hooks.append(only_params)
    runner.store.append(RUN_A, [ParamsLogged(params={"a": "1"}), MetricsLogged(points=[
        MetricPoint("m", 1.0, 0, 1)])])  # fmt: skip
    state, head = mechanism.store_state(runner.store)
    assert head == 3 and state["params"].checkpoint == 3
    assert {s.checkpoint for name, s in state.items() if name != "params"} == {1}
    assert rows(runner, "SELECT count(*) FROM metric_series") == [(0,)]  # left for catch-up


def test_a_runner_refuses_two_models_of_one_name(runner: ProjectionRunner) -> None:
    runs = next(m for m in runner.models if m.name == "runs")
    with pytest.raises(ValueError, match="read model names must be unique"):
        mechanism.ProjectionRunner(runner.store, [runs, runs])


def test_a_failing_projection_rolls_the_append_back(runner: ProjectionRunner) -> None:
    store = runner.store
    store.append("experiment-1", [experiment("1", "same")])
    # experiments.name is UNIQUE: the projection refuses, and the append with it.
    with pytest.raises(ProjectionError, match=r"position 2 \(ExperimentCreated\).*(?i:unique)"):
        store.append("experiment-2", [experiment("2", "same")])
    assert store.head_position() == 1
    assert rows(runner, "SELECT experiment_id FROM experiments") == [("1",)]


def shout(rec: RecordedEvent, out: mechanism.Ops) -> None:
    if rec.event.key == "boom":  # type: ignore[union-attr]
        raise ValueError("boom")
    out.add("insert", (rec.event.key,))  # type: ignore[union-attr]


SHOUTS = ReadModel(
    name="shouts", version=1, tables={"shouts": ("CREATE TABLE {shouts} (key TEXT)",)},
    statements={"insert": "INSERT INTO {shouts} VALUES (?)"}, handlers={TagSet: shout},
)  # fmt: skip


def test_a_failing_handler_fails_the_append_and_leaves_nothing_behind(store_uri: str) -> None:
    with open_log(store_uri) as log:
        runner = mechanism.attach(log, models=[*mechanism.registered(), SHOUTS])
        log.append(RUN_A, [started()])
        with pytest.raises(
            ProjectionError, match=r"position 3 \(TagSet v1, stream a+\): ValueError: boom"
        ):
            log.append(RUN_A, [TagSet(key="queued", value="1"), TagSet(key="boom", value="1")])
        log.append(RUN_A, [TagSet(key="next", value="1")])
        assert rows(runner, "SELECT key FROM shouts") == [("next",)]
        assert log.head_position() == 2


def test_events_appended_without_projections_are_refused_by_reads_then_applied_by_a_write(
    runner: ProjectionRunner, store_uri: str
) -> None:
    runner.store.append(RUN_A, [started()])
    with open_log(store_uri) as bare:  # a writer that does not keep the read models
        bare.append(RUN_A, [ParamsLogged(params={"x": "1"})])
    assert rows(runner, "SELECT count(*) FROM params") == [(0,)]
    # A read does not catch up (that would take the write lock): it names the fix.
    with pytest.raises(StaleProjectionError) as caught:
        runner.check_fresh(["params"])
    assert str(caught.value) == (
        "projection 'params' holds the log up to position 1 but the log's head is 2: the rest"
        " was appended by a writer that does not keep it (an older evstore, or the log opened"
        " without its read models); run `evstore rebuild --projection params` (any write"
        " through this evstore also applies it)"
    )
    assert rows(runner, "SELECT count(*) FROM params") == [(0,)]
    assert store_info(runner.store)["projections_behind"].startswith(
        "artifacts by 1, experiments by 1, latest_metrics by 1, logged_models by 1, metrics by 1,"
        " params by 1,"
    )
    # The next write through evstore applies what they lack, then its own events.
    with open_log(store_uri) as bare:
        bare.append(RUN_A, [ParamsLogged(params={"y": "2"})])
    runner.store.append(RUN_A, [ParamsLogged(params={"z": "3"})])
    assert rows(runner, "SELECT key FROM params ORDER BY key") == [("x",), ("y",), ("z",)]
    runner.check_fresh()
    # So does `evstore rebuild`, with writers going on.
    with open_log(store_uri) as bare:
        bare.append(RUN_A, [TagSet(key="w", value="4")])
    assert rebuild(runner.store, only_stale=True).projections == [m.name for m in runner.models]
    runner.check_fresh()
    assert ("w", "4") in rows(runner, "SELECT key, value FROM tags")


def test_events_of_unknown_types_are_skipped_and_counted(store_uri: str) -> None:
    class ModelRegistered(msgspec.Struct, frozen=True):  # a type some newer evstore writes
        version: ClassVar[int] = 1
        name: str

    with open_log(store_uri) as log:
        log.append(RUN_A, [started(), ModelRegistered("m"), TagSet(key="k", value="v")])  # type: ignore[list-item]
        summary = rebuild(log)
        assert (summary.events, summary.unknown_skipped) == (3, 1)
        assert log.query("SELECT key FROM tags ORDER BY key") == [("k",), ("mlflow.runName",)]  # type: ignore[attr-defined]


# --- versions ------------------------------------------------------------------------


def test_a_stale_projection_stops_reads_not_writes(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_store(store_uri)
    first.store.append(RUN_A, [started("before")])
    first.store.close()
    monkeypatch.setattr(RUNS, "version", RUNS.version + 1)  # this code's runs model changed

    runner = open_store(store_uri)  # opening is never an error
    try:
        # Writers go on: fresh models follow, the stale one is left behind.
        runner.store.append(RUN_B, [started("after"), ParamsLogged(params={"p": "1"})])
        assert rows(runner, "SELECT run_id, key FROM params") == [(RUN_B, "p")]
        assert rows(runner, "SELECT run_name FROM runs") == [("before",)]
        state, head = mechanism.store_state(runner.store)
        assert (state["runs"].checkpoint, state["params"].checkpoint, head) == (1, 3, 3)

        # Reads of it fail with one line: the model, both versions, the command.
        with pytest.raises(StaleProjectionError) as caught:
            runner.check_fresh(["runs", "params"])
        assert str(caught.value) == (
            f"projection 'runs' was built at version {RUNS.version - 1} but this evstore has"
            f" version {RUNS.version}: run `evstore rebuild --projection runs`"
        )
        runner.check_fresh(["params", "tags"])  # the others still read

        summary = rebuild(runner.store, ["runs"])
        assert summary.projections == ["runs"]
        runner.check_fresh()
        assert rows(runner, "SELECT run_name FROM runs ORDER BY run_name") == [
            ("after",),
            ("before",),
        ]
        runner.store.append(RUN_B, [RunRenamed(run_name="renamed")])  # inline again
        assert rows(runner, f"SELECT run_name FROM runs WHERE run_id = '{RUN_B}'") == [("renamed",)]
    finally:
        runner.store.close()


def test_a_store_of_the_metric_history_v1_reads_again_after_rebuild(db_path: Path) -> None:
    # A store whose metric history was built by an evstore before storage format 4: one
    # row per point in `metrics`, recorded at version 1.
    first = open_store(db_path)
    first.store.append(RUN_A, [started(), MetricsLogged(points=[MetricPoint("m", 1.0, 0, 1)])])
    with first.store.transaction() as conn:
        conn.execute("CREATE TABLE metrics (run_id TEXT, key TEXT, value REAL, step INTEGER,"
                     " timestamp INTEGER, position INTEGER, seq INTEGER)")  # fmt: skip
        conn.execute("CREATE INDEX metrics_history ON metrics (run_id, key, position, seq)")
        conn.execute("UPDATE projection_state SET version = 1 WHERE name = 'metrics'")
        for table in METRICS.tables:
            conn.execute(f"DROP TABLE {table}")
    first.store.close()

    runner = open_store(db_path)
    try:
        with pytest.raises(StaleProjectionError, match=(
            "'metrics' was built at version 1 but this evstore has version 3:"
            r" run `evstore rebuild --projection metrics`")):  # fmt: skip
            runner.check_fresh()
        runner.store.append(RUN_A, [MetricsLogged(points=[MetricPoint("m", 2.0, 1, 2)])])
        summary = rebuild(runner.store, only_stale=True)
        assert summary.projections == ["metrics"]
        runner.check_fresh()
        assert [p[4] for p in history_points(runner.store)] == [1.0, 2.0]
        tables = {name for (name,) in rows(runner, "SELECT name FROM sqlite_master")}
        assert "metrics" not in tables and "metrics_history" not in tables  # dropped
    finally:
        runner.store.close()


def test_auto_rebuild_brings_stale_projections_up_to_date_on_open(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_store(store_uri)
    first.store.append(RUN_A, [started("r")])
    first.store.close()
    monkeypatch.setattr(RUNS, "version", RUNS.version + 1)
    runner = open_store(store_uri, auto_rebuild=True)
    try:
        runner.check_fresh()
        assert mechanism.store_state(runner.store)[0]["runs"].version == RUNS.version
        assert rows(runner, "SELECT run_name FROM runs") == [("r",)]
    finally:
        runner.store.close()


# --- a read model a user adds ---------------------------------------------------------


def count_event(rec: RecordedEvent, out: mechanism.Ops) -> None:
    out.add("count", (type(rec.event).__name__,))


EVENT_COUNTS = ReadModel(
    name="event_counts",
    version=1,
    tables={"event_counts": ("CREATE TABLE {event_counts} (type TEXT PRIMARY KEY, n INTEGER)",)},
    statements={
        "count": "INSERT INTO {event_counts} VALUES (?, 1) ON CONFLICT (type) DO UPDATE SET n = n + 1"
    },
    handlers={cls: count_event for cls in (RunStarted, ParamsLogged, TagSet)},
)


def write_a_history(store_uri: str) -> None:
    runner = open_store(store_uri)
    runner.store.append(
        RUN_A, [started(), ParamsLogged(params={"a": "1"}), TagSet(key="k", value="v")]
    )
    runner.store.append(RUN_B, [started(), ParamsLogged(params={"a": "1"})])
    runner.store.close()


def test_a_model_added_later_is_built_when_a_small_store_opens(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_a_history(store_uri)
    monkeypatch.setattr(projections, "PROJECTIONS", [*projections.PROJECTIONS, EVENT_COUNTS])
    runner = open_store(store_uri)
    try:
        counts = "SELECT type, n FROM event_counts ORDER BY type"
        assert rows(runner, counts) == [("ParamsLogged", 2), ("RunStarted", 2), ("TagSet", 1)]
        runner.store.append(RUN_A, [TagSet(key="k2", value="v")])
        assert rows(runner, counts)[-1] == ("TagSet", 2)
    finally:
        runner.store.close()


def test_on_a_big_log_a_new_model_waits_for_rebuild(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_a_history(store_uri)
    monkeypatch.setattr(projections, "PROJECTIONS", [*projections.PROJECTIONS, EVENT_COUNTS])
    monkeypatch.setattr(mechanism, "BUILD_ON_OPEN_LIMIT", 2)  # this log counts as big
    runner = open_store(store_uri)
    try:
        with pytest.raises(
            StaleProjectionError, match=r"'event_counts' \(version 1\) is not built"
        ):
            runner.check_fresh(["event_counts"])
        runner.store.append(RUN_A, [TagSet(key="k2", value="v")])  # writers go on
        rebuild(runner.store, ["event_counts"])
        runner.check_fresh()
        assert rows(runner, "SELECT type, n FROM event_counts ORDER BY type") == [
            ("ParamsLogged", 2), ("RunStarted", 2), ("TagSet", 2)
        ]  # fmt: skip
    finally:
        runner.store.close()


# --- subscribe ------------------------------------------------------------------------


def test_subscribe_reads_to_the_head_then_follows_new_appends(store_uri: str) -> None:
    with open_log(store_uri) as log:
        log.append(RUN_A, [started(), ParamsLogged(params={"a": "1"}), TagSet(key="k", value="v")])
        assert [r.position for r in subscribe(log, 1)] == [
            2,
            3,
        ]  # idle_timeout=0: stops at the head

        def writer() -> None:
            with open_log(store_uri) as other:  # another connection, as another process would be
                for i in range(5):
                    other.append(RUN_A, [TagSet(key=f"t{i}", value="v")])

        seen: list[int] = []
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for rec in subscribe(log, 3, poll_interval=0.01, idle_timeout=30):
                seen.append(rec.position)
                if len(seen) == 5:
                    break
        finally:
            thread.join(PATIENCE)
        assert not thread.is_alive(), "the writer thread did not finish its appends"
        assert seen == [4, 5, 6, 7, 8]
        assert list(subscribe(log, 0, stop=lambda: True)) == []


def test_subscribe_feeds_a_model_from_its_checkpoint(store_uri: str) -> None:
    write_a_history(store_uri)
    with open_log(store_uri) as log:
        with log.transaction() as conn:
            for sql in EVENT_COUNTS.ddl():
                conn.execute(sql)
            last = mechanism.project(conn, [EVENT_COUNTS], subscribe(log, 0))
            assert last == log.head_position() == 5
        log.append(RUN_A, [TagSet(key="k2", value="v")])
        with log.transaction() as conn:
            mechanism.project(conn, [EVENT_COUNTS], subscribe(log, last))
        assert log.query("SELECT type, n FROM event_counts ORDER BY type") == [  # type: ignore[attr-defined]
            ("ParamsLogged", 2), ("RunStarted", 2), ("TagSet", 2)
        ]  # fmt: skip


# --- determinism: inline == rebuilt from scratch ---------------------------------------

RUN_IDS = ("0" * 32, "1" * 32, "2" * 32)
EXPERIMENT_IDS = ("1", "2")
KEYS = st.sampled_from(["a", "b", "mlflow.runName", "key with spaces/and slashes"])
TEXT = st.text(max_size=4)
TIMES = st.integers(0, 3)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, NAN, INF, -INF]
)
INT64 = st.sampled_from([-(2**63), 2**63 - 1])
POINTS = st.builds(
    MetricPoint, st.sampled_from(["loss", "acc", "k1", "k2", "k3", "k4 with space"]), FLOATS,
    st.integers(-2, 2) | INT64, st.integers(0, 2) | st.sampled_from([0, 2**63 - 1]),
)  # fmt: skip

RUN_EVENTS = st.one_of(
    st.builds(ParamsLogged, params=st.dictionaries(KEYS, TEXT, max_size=3)),
    st.builds(MetricsLogged, points=st.lists(POINTS, min_size=1, max_size=1)),  # log_metric
    st.builds(MetricsLogged, points=st.lists(POINTS, min_size=1, max_size=30)),  # log_batch
    st.builds(TagSet, key=KEYS, value=TEXT),
    st.builds(TagDeleted, key=KEYS),
    st.builds(RunRenamed, run_name=TEXT),
    st.builds(RunStatusChanged, status=st.sampled_from(["RUNNING", "FINISHED", "FAILED", "KILLED"]),
              end_time=st.none() | TIMES),
    st.builds(RunDeleted, deleted_time=TIMES),
    st.builds(RunRestored, restored_time=TIMES),
    st.builds(ArtifactRecorded, path=st.sampled_from(["model.pkl", "plots/a.png"]),
              size=st.integers(0, 9), sha256=st.sampled_from(["00", "11"])),
)  # fmt: skip
# Experiment events name their experiment when the history is written out.
EXPERIMENT_OPS = st.one_of(
    st.tuples(st.just("rename"), st.integers(0, 9)),
    st.tuples(st.just("tag"), KEYS, TEXT),
    st.tuples(st.just("untag"), KEYS),
    st.tuples(st.just("delete"), TIMES),
    st.tuples(st.just("restore"), TIMES),
)
HISTORIES = st.lists(
    st.tuples(st.sampled_from(RUN_IDS), st.lists(RUN_EVENTS, min_size=1, max_size=3))
    | st.tuples(st.sampled_from(EXPERIMENT_IDS), st.lists(EXPERIMENT_OPS, min_size=1, max_size=3)),
    max_size=25,
)


def experiment_event(experiment_id: str, op: tuple[Any, ...]) -> Event:
    kind, *args = op
    if kind == "rename":  # names stay unique: each experiment renames within its own names
        return ExperimentRenamed(experiment_id=experiment_id, name=f"e{experiment_id}-{args[0]}")
    if kind == "tag":
        return ExperimentTagSet(experiment_id=experiment_id, key=args[0], value=args[1])
    if kind == "untag":
        return ExperimentTagDeleted(experiment_id=experiment_id, key=args[0])
    if kind == "delete":
        return ExperimentDeleted(experiment_id=experiment_id, deleted_time=args[0])
    return ExperimentRestored(experiment_id=experiment_id, restored_time=args[0])


def snapshot(store: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table's rows, sorted; NaN made comparable."""
    tables = [table for model in mechanism.registered() for table in model.tables]
    return {
        table: sorted(
            (
                tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)
                for row in store.query(f"SELECT * FROM {table}")
            ),
            key=repr,
        )
        for table in tables
    }


#: Examples per backend: a PostgreSQL store costs more to make, and the mechanism is the same.
REBUILD_EXAMPLES = {"sqlite": 60, "postgres": 8}


@pytest.mark.parametrize("backend", BACKENDS)
def test_rebuilding_from_scratch_gives_the_tables_kept_inline(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The tables every append kept in step come out the same as a rebuild's, row for row,
    # however many events the rebuild applies at a time, and however small a metric chunk.
    stores = itertools.count()

    @settings(
        max_examples=REBUILD_EXAMPLES[backend], deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )  # fmt: skip
    @given(
        history=HISTORIES,
        chunk=st.sampled_from([2, 3, metrics_model.CHUNK]),
        rebuild_chunk=st.sampled_from([1, 7, 5000]),
    )
    def check(history: list[tuple[str, list[Any]]], chunk: int, rebuild_chunk: int) -> None:
        # PostgreSQL's text holds no NUL: there such an append is refused, whole.
        assume(backend != "postgres" or "\\x00" not in repr(history))
        uri = new_uri_of(backend, request, tmp_path / f"store{next(stores)}.db")
        with _chunk(chunk):
            runner = open_store(uri)
            store = runner.store
            try:
                # Experiments and runs first, then the random history, each step one append.
                seed_experiments_and_runs(store, {"t": "v"})
                for target, ops in history:
                    if target in EXPERIMENT_IDS:
                        store.append(
                            f"experiment-{target}", [experiment_event(target, op) for op in ops]
                        )
                    else:
                        store.append(target, ops)
                state, head = mechanism.store_state(store)
                assert {s.checkpoint for s in state.values()} == {head}
                runner.check_fresh()
                inline = snapshot(store)
                # The history holds each distinct point once, the first sent, in log order.
                assert nan_safe(history_points(store)) == nan_safe(distinct_points(history))

                summary = rebuild(store, chunk=rebuild_chunk)
                assert summary.head_position == store.head_position()
                assert snapshot(store) == inline
                runner.check_fresh()
            finally:
                store.close()

    check()


def seed_experiments_and_runs(store: Any, experiment_tags: dict[str, str] | None = None) -> None:
    """Append the experiments of EXPERIMENT_IDS and the runs of RUN_IDS, one append each."""
    for experiment_id in EXPERIMENT_IDS:
        store.append(f"experiment-{experiment_id}", [ExperimentCreated(
            experiment_id=experiment_id, name=f"e{experiment_id}", artifact_location="a",
            creation_time=1, tags=experiment_tags or {})])  # fmt: skip
    for i, run_id in enumerate(RUN_IDS):
        store.append(run_id, [started(f"run{i}", EXPERIMENT_IDS[i % 2]),
                              TagSet(key="mlflow.user", value="u")])  # fmt: skip


def distinct_points(history: list[tuple[str, list[Any]]]) -> list[tuple[Any, ...]]:
    """What the metric history must hold: per run and key, each distinct point once (NaN
    equal to NaN, -0.0 to 0.0), the first logged, in log order."""
    series: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    seen: set[tuple[Any, ...]] = set()
    for target, ops in history:
        for op in ops:
            for p in op.points if isinstance(op, MetricsLogged) else ():
                value = p.value + 0.0
                identity = (target, p.key, p.step, p.timestamp, "NaN" if math.isnan(value) else value)
                if identity not in seen:
                    seen.add(identity)
                    series.setdefault((target, p.key), []).append(
                        (target, p.key, p.step, p.timestamp, value)
                    )
    return [point for key in sorted(series) for point in series[key]]


@contextmanager
def _chunk(points: int) -> Iterator[None]:
    """Metric chunks of ``points`` points for the block (hypothesis has no monkeypatch)."""
    saved = metrics_model.CHUNK
    metrics_model.CHUNK = points
    try:
        yield
    finally:
        metrics_model.CHUNK = saved


def test_sqlite_turns_nan_into_null_which_the_tables_rely_on() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v REAL)")
    conn.executemany("INSERT INTO t VALUES (?)", [(NAN,), (INF,)])
    assert conn.execute("SELECT v FROM t").fetchall() == [(None,), (INF,)]
