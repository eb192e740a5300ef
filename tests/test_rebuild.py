"""`evstore rebuild`: blue/green, under concurrent writers, killed midway, errors, the CLI.

The old tables serve until one transaction swaps the new ones in; a rebuild killed at
any moment leaves them serving and the next rebuild starts clean.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import history_points
from test_projections import snapshot
from typer.testing import CliRunner
from waiting import PATIENCE, Lines

from evstore import projection as mechanism
from evstore.cli import app
from evstore.errors import ProjectionError
from evstore.events import (
    ExperimentCreated,
    MetricPoint,
    MetricsLogged,
    ParamsLogged,
    RunStarted,
    TagSet,
)
from evstore.projection import ReadModel, open_store
from evstore.rebuild import _SHADOW_MARK, rebuild
from evstore.stores import is_postgres_uri, open_log
from evstore.stores.base import RecordedEvent
from projections.runs import RUNS

RUN = "c" * 32


def shadow_tables(store: Any) -> list[str]:
    """Tables a rebuild is building (or a killed one left)."""
    return [n for n in table_names(store) if _SHADOW_MARK in n]


def table_names(store: Any) -> list[str]:
    """Every table of the store, as its database lists them."""
    if is_postgres_uri(store.uri):
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return [name for (name,) in store.query(sql)]


def index_count(store: Any, tables: Iterable[str]) -> int:
    """How many indexes the store's tables have beyond their keys and UNIQUE constraints."""
    names = ", ".join(repr(t) for t in tables)
    if is_postgres_uri(store.uri):
        sql = ("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()"
               f" AND indexdef NOT LIKE 'CREATE UNIQUE%' AND tablename IN ({names})")  # fmt: skip
    else:
        sql = ("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
               f" AND tbl_name IN ({names})")  # fmt: skip
    return store.query(sql)[0][0]  # type: ignore[no-any-return]


def fill(store_uri: str, runs: int, steps: int) -> int:
    """A store with its read models kept inline: runs with params, tags and metric steps."""
    runner = open_store(store_uri)
    store = runner.store
    store.append("experiment-1", [ExperimentCreated(experiment_id="1", name="e",
                                                    artifact_location="a", creation_time=1)])  # fmt: skip
    for r in range(runs):
        run_id = f"{r:032x}"
        store.append(run_id, [
            RunStarted(experiment_id="1", run_name=f"run{r}", user_id="u", start_time=r),
            TagSet(key="team", value="x"), ParamsLogged(params={"lr": str(r)}),
            *(MetricsLogged(points=[MetricPoint("loss", 1 / (s + 1), s, s), MetricPoint("acc", s, s, s)])
              for s in range(steps)),
        ])  # fmt: skip
    runner.check_fresh()
    head = store.head_position()
    store.close()
    return head


@pytest.mark.parametrize("chunk", [7, 5000])
def test_rebuild_swaps_in_complete_tables_with_their_indexes(store_uri: str, chunk: int) -> None:
    # 120 points: chunks of 7 events insert them a row at a time; one chunk of them all
    # inserts them 50 rows to a statement and the 20 left one by one.
    head = fill(store_uri, runs=3, steps=20)
    with open_log(store_uri) as log:
        before = snapshot(log)
        for _ in range(2):  # a second rebuild must not collide with the first one's names
            summary = rebuild(log, chunk=chunk)
            assert (summary.events, summary.unknown_skipped, summary.head_position) == (
                head,
                0,
                head,
            )
            assert snapshot(log) == before
            assert shadow_tables(log) == []
        # Each live table carries the indexes its model declares, and queries use them.
        for model in mechanism.registered():
            declared = sum("CREATE INDEX" in sql for sql in model.ddl())
            assert index_count(log, model.tables) == declared, model.name
        if is_postgres_uri(store_uri):
            return  # its planner picks by statistics: what follows is SQLite's plan
        # A metric's history: its series by run and key, then its chunks and tail.
        for sql, args in (
            ("SELECT series_id FROM metric_series WHERE run_id = ? AND key = ?", (RUN, "loss")),
            ("SELECT points FROM metric_chunks WHERE series_id = ? ORDER BY chunk", (1,)),
            ("SELECT value FROM metric_tail WHERE series_id = ? ORDER BY slot", (1,)),
        ):
            plan = str(log.query(f"EXPLAIN QUERY PLAN {sql}", args))  # type: ignore[attr-defined]
            assert "SEARCH" in plan and ("INDEX" in plan or "PRIMARY KEY" in plan), plan
            assert "TEMP B-TREE" not in plan, plan


def test_no_trigger_or_view_of_a_sqlite_store_names_a_read_model_table(db_path: Path) -> None:
    # The swap renames tables the legacy way, which leaves trigger and view bodies as they
    # were written: right only while none of them names a read-model table.
    fill(str(db_path), runs=1, steps=2)
    with open_log(str(db_path)) as log:
        bodies = [sql for (sql,) in log.query(  # type: ignore[attr-defined]
            "SELECT sql FROM sqlite_master WHERE type IN ('trigger', 'view')"
        )]  # fmt: skip
    assert bodies, "the log's append-only triggers are missing"
    tables = {table for model in mechanism.registered() for table in model.tables}
    named = {t for t in tables for sql in bodies if re.search(rf'\b{t}\b', sql)}
    assert named == set()


# Appends when told: each line on stdin is a number of (MetricsLogged, TagSet) pairs to
# append; it answers with the pairs appended so far. It ends when its input does.
APPENDER = """
import sys
from evstore.events import MetricPoint, MetricsLogged, TagSet
from evstore.projection import open_store
store = open_store(sys.argv[1]).store
i = 0
print(i, flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        run = f"{i % 7:032x}"
        store.append(run, [MetricsLogged(points=[MetricPoint("loss", i, 1000 + i, i)]),
                           TagSet(key=f"t{i % 5}", value=str(i))])
        i += 1
    print(i, flush=True)
"""


def test_rebuild_while_another_process_appends_applies_every_event_once(store_uri: str) -> None:
    fill(store_uri, runs=20, steps=100)
    with subprocess.Popen([sys.executable, "-c", APPENDER, store_uri],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as appender:  # fmt: skip
        try:
            answers = Lines(appender.stdout, "the appender")
            assert answers.next() == "0"

            def append(pairs: int) -> int:
                """Have the appender process append ``pairs`` pairs; wait until it has."""
                assert appender.stdin is not None
                appender.stdin.write(f"{pairs}\n".encode())
                appender.stdin.flush()
                return int(answers.next())

            append(100)  # before the rebuild
            with open_log(store_uri) as log:
                start = log.head_position()
                calls: list[int] = []

                def append_midway(done: int, total: int) -> None:
                    # The first three chunks of the replay, which runs without the write
                    # lock (far from the head: about ten chunks of 200 in its first round).
                    calls.append(done)
                    if len(calls) <= 3:
                        writer = getattr(log, "connection", None)  # SQLite's write connection
                        assert writer is None or not writer.in_transaction
                        append(25)

                summary = rebuild(log, chunk=200, near_head=20, progress=append_midway)
                # The appends landed during the rebuild, and it took them in before the swap.
                assert summary.head_position == start + 2 * 3 * 25
            # ...and after it, they go inline into the new tables.
            assert append(50) == 100 + 3 * 25 + 50
            assert appender.stdin is not None
            appender.stdin.close()  # the appender ends at the end of its input
            assert answers.rest() == []
            assert appender.wait(PATIENCE) == 0
        finally:
            if appender.poll() is None:
                appender.kill()

    runner = open_store(store_uri)
    try:
        runner.check_fresh()
        log = runner.store
        head = log.head_position()
        assert {s.checkpoint for s in mechanism.store_state(log)[0].values()} == {head}
        # Every point in the log is in the history exactly once...
        points = sum(
            len(r.event.points) for r in log.read_all() if isinstance(r.event, MetricsLogged)
        )
        assert len(history_points(log)) == points  # all distinct
        # ...and every table equals a rebuild from scratch.
        live = snapshot(log)
        rebuild(log)
        assert snapshot(log) == live
    finally:
        runner.store.close()


# Rebuilds step by step: after each chunk it says how far it is, then waits for a line
# on stdin before it goes on.
REBUILD_STEP_BY_STEP = """
import sys
from evstore.rebuild import rebuild
from evstore.stores import is_postgres_uri, open_log

def progress(done, total):
    print(done, total, flush=True)
    sys.stdin.readline()

rebuild(open_log(sys.argv[1]), chunk=300, progress=progress)
print("done", flush=True)
"""


def test_a_rebuild_killed_midway_leaves_the_old_tables_serving(store_uri: str) -> None:
    fill(store_uri, runs=10, steps=300)
    with open_log(store_uri) as log:
        before = snapshot(log)
    with subprocess.Popen([sys.executable, "-c", REBUILD_STEP_BY_STEP, store_uri],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:  # fmt: skip
        try:
            steps = Lines(child.stdout, "the rebuild")
            done, total = (int(x) for x in steps.next().split())
            while done < total // 3:
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                child.stdin.flush()
                done, total = (int(x) for x in steps.next().split())
            # Midway (a third of the log replayed), the rebuild waiting for its next chunk.
            child.send_signal(signal.SIGKILL)
            assert child.wait(PATIENCE) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
    assert done < total

    runner = open_store(store_uri)
    try:
        log = runner.store
        assert shadow_tables(log)  # the killed build's leftovers exist, unread...
        runner.check_fresh()
        assert snapshot(log) == before  # ...and the old tables answer as before
        log.append(RUN, [RunStarted(experiment_id="1", run_name="new", user_id="u", start_time=9)])
        summary = rebuild(log)  # a new rebuild drops the leftovers and completes
        assert summary.head_position == log.head_position()
        assert shadow_tables(log) == []
        assert log.query(f"SELECT run_name FROM runs WHERE run_id = '{RUN}'") == [("new",)]  # type: ignore[attr-defined]
    finally:
        runner.store.close()


def test_ctrl_c_during_a_rebuild_drops_its_shadow_tables(store_uri: str) -> None:
    fill(store_uri, runs=2, steps=50)
    with open_log(store_uri) as log:
        before = snapshot(log)

        def interrupt(done: int, total: int) -> None:
            if done >= 20:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            rebuild(log, chunk=10, progress=interrupt)
        assert shadow_tables(log) == []
        assert snapshot(log) == before


def fail_on_boom(rec: RecordedEvent, out: mechanism.Ops) -> None:
    if rec.event.key == "boom":  # type: ignore[union-attr]
        raise ValueError("cannot count a boom")
    out.add("count", (rec.event.key,))  # type: ignore[union-attr]


FRAGILE = ReadModel(
    name="fragile", version=1,
    tables={"fragile": ("CREATE TABLE {fragile} (key TEXT)",)},
    statements={"count": "INSERT INTO {fragile} VALUES (?)"},
    handlers={TagSet: fail_on_boom},
)  # fmt: skip


def test_a_failing_handler_stops_the_rebuild_naming_position_and_type(store_uri: str) -> None:
    fill(store_uri, runs=1, steps=3)
    with open_log(store_uri) as log:
        log.append(RUN, [RunStarted(experiment_id="1", run_name="r", user_id="u", start_time=1),
                         TagSet(key="boom", value="v")])  # fmt: skip
        models = [*mechanism.registered(), FRAGILE]
        before = snapshot(log)
        with pytest.raises(
            ProjectionError, match=r"position 9 \(TagSet v1, stream c+\).*cannot count a boom"
        ):
            rebuild(log, models=models)
        assert shadow_tables(log) == []
        assert snapshot(log) == before


def test_a_failing_statement_is_located_to_its_event(store_uri: str) -> None:
    with open_log(store_uri) as log:  # a log written without projections: names collide
        for experiment_id in ("1", "2", "3"):
            log.append(f"experiment-{experiment_id}", [ExperimentCreated(
                experiment_id=experiment_id, name="same" if experiment_id != "1" else "other",
                artifact_location="a", creation_time=1)])  # fmt: skip
        with pytest.raises(
            ProjectionError, match=r"position 3 \(ExperimentCreated v1\).*(?i:unique)"
        ):
            rebuild(log)
        assert shadow_tables(log) == []


def test_golden_stores_rebuild_into_their_expected_tables(tmp_path: Path) -> None:
    import test_golden as golden

    for name in golden.golden_stores():
        target = tmp_path / name
        target.mkdir()
        with open_log(golden.copy_golden_store(name, target)) as log:
            tables = golden.read_model_tables(log)
        expected = json.loads((golden.STORES_DIR / name / "expected.json").read_text())
        assert golden.queryable_result(tables) == expected, name


# --- the command ----------------------------------------------------------------------


def test_evstore_rebuild_fixes_a_stale_projection(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store_uri, runs=2, steps=2)
    monkeypatch.setattr(RUNS, "version", RUNS.version + 1)
    runner = open_store(store_uri)
    try:
        with pytest.raises(
            mechanism.StaleProjectionError, match="evstore rebuild --projection runs"
        ):
            runner.check_fresh()
        result = CliRunner().invoke(
            app, ["rebuild", "--store", store_uri, "--projection", "runs"]
        )
        assert result.exit_code == 0, result.output
        assert "rebuilt runs: 11 events replayed, 0 unknown skipped, head 11" in result.output
        runner.check_fresh()
    finally:
        runner.store.close()


def test_evstore_rebuild_names_an_unknown_projection_in_one_line(db_path: Path) -> None:
    fill(db_path, runs=1, steps=1)
    done = subprocess.run([sys.executable, "-m", "evstore.cli", "rebuild", "--store", str(db_path),
                           "--projection", "nope"], check=False, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        (
            "error: no projection named nope; known: experiments, runs, params, tags, metrics,"
            " latest_metrics, artifacts, run_provenance, logged_models, run_inputs, registry"
        )
    ]


def test_rebuild_is_still_importable_from_its_old_module() -> None:
    from evstore import projection
    from evstore.rebuild import RebuildSummary

    assert projection.rebuild is rebuild and projection.RebuildSummary is RebuildSummary
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        projection.nope  # noqa: B018
