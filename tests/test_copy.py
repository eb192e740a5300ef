"""`evstore copy SRC DST`: a store's log and artifact files into another, SQLite or
PostgreSQL, resumable; both ends verify to the same head hash.

The round trip copies a tracked store (runs, params, metrics, tags, an artifact file, a
redaction, commits after it) SQLite -> PostgreSQL -> SQLite and compares the rows as
stored. Resuming is tested by a copy killed midway and by copies stopped at random
positions; refusals (a diverged or unrelated destination, the store itself) change nothing.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresDatabase, close_cached_stores
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from waiting import wait_until

from evstore import Client, codec
from evstore.cli import app
from evstore.copying import copy_log, copy_store
from evstore.entities import Metric, Param, RunTag
from evstore.errors import InvalidParameterValue, InvalidState
from evstore.events import TagSet
from evstore.integrity import verify
from evstore.redaction import redact
from evstore.stores import EventStore, RawEvent, open_log

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "customer-JONES-7c1f-secret-path"


def raw_rows(uri: str) -> list[RawEvent]:
    """Every row of the log at ``uri`` as stored."""
    with open_log(uri, create=False) as log:
        return [row for batch in log.read_raw() for row in batch]


def log_state(uri: str) -> tuple[list[RawEvent], list[Any], str]:
    """The rows, the redactions rows and the head hash of the log at ``uri``."""
    with open_log(uri, create=False) as log:
        rows = [row for batch in log.read_raw() for row in batch]
        return rows, [tuple(r) for r in log.redactions()], log.head_hash()  # type: ignore[attr-defined]


def cli(*args: str) -> Any:
    """``evstore ARGS`` in this process; an error stays in ``result.exception``."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def verified_head(uri: str) -> str:
    """`evstore verify` passes on ``uri``; the head hash it prints."""
    done = cli("verify", "--store", uri)
    assert done.exit_code == 0, done.output
    return done.output.split("hash ", 1)[1].split()[0]  # type: ignore[no-any-return]


def tracked_store(folder: Path) -> tuple[str, str]:
    """A SQLite store of two runs with params, metrics, tags and an artifact file, a
    param redacted, and commits after the redaction; (path, the redacted run's id)."""
    folder.mkdir()
    path = str(folder / "evstore.db")
    client = Client(path)
    experiment = client.create_experiment("copied", tags={"owner": "ops"})
    run = client.create_run(experiment, run_name="first").info.run_id
    client.log_batch(
        run,
        metrics=[Metric("loss", 1 / (step + 1), 1000 + step, step) for step in range(30)],
        params=[Param("data_path", SECRET), Param("lr", "0.1")],
        tags=[RunTag("team", "vision")],
    )
    (folder / "model.txt").write_text("weights " * 100)
    client.log_artifact(run, str(folder / "model.txt"), "model")
    other = client.create_run(experiment, run_name="second").info.run_id
    client.log_metric(other, "acc", 0.5, step=1)
    client.set_terminated(run)
    close_cached_stores(folder)
    done = cli("redact", "--run", run, "--param", "data_path", "--reason", "erasure request", "--store", path)
    assert done.exit_code == 0, done.output
    client = Client(path)
    client.log_metric(other, "acc", 0.75, step=2)
    client.set_tag(other, "stage", "done")
    close_cached_stores(folder)
    return path, run


def test_a_round_trip_sqlite_postgres_sqlite_keeps_every_row(tmp_path: Path, postgres_database: PostgresDatabase) -> None:
    source, run = tracked_store(tmp_path / "source")
    shared, back = postgres_database.new_store_uri(), str(tmp_path / "back" / "evstore.db")
    (tmp_path / "back").mkdir()
    # small batches: the redacted event and its Redacted event land in different batches
    there = copy_store(source, shared, destination_artifacts=str(tmp_path / "pg-artifacts"), batch_size=4)
    home = copy_store(shared, back, source_artifacts=str(tmp_path / "pg-artifacts"), batch_size=3)
    original = log_state(source)
    assert there.events == home.events == len(original[0]) and (there.first, there.last) == (1, len(original[0]))
    assert there.artifact_files == home.artifact_files == 1
    assert "runs" in there.read_models and there.read_models_note is None
    assert "runs" in home.read_models and home.read_models_note is None
    # the same rows, redactions and head hash; verify passes on each and prints that head
    assert log_state(shared) == original and log_state(back) == original
    assert {verified_head(uri) for uri in (source, shared, back)} == {original[2]} == {home.head_hash}
    # the events and the read models read back the same
    with open_log(source) as one, open_log(back) as other:
        assert list(one.read_all()) == list(other.read_all())
    copies = [Client(source), Client(shared), Client(back)]
    runs = [
        sorted((r.info.run_name, r.data.params, r.data.metrics, r.data.tags) for r in c.search_runs(["1"]))
        for c in copies
    ]
    assert runs[0] == runs[1] == runs[2] and runs[0][0][1]["data_path"] == codec.REDACTED
    got = copies[2].download_artifacts(run, "model", str(tmp_path / "out"))
    assert (Path(got) / "model.txt").read_text() == "weights " * 100
    close_cached_stores(tmp_path)
    close_cached_stores(shared)
    # nothing left to copy: again changes nothing, and finds the artifact in place
    again = copy_store(source, back)
    assert (again.events, again.artifact_files, again.artifact_files_present) == (0, 0, 1)
    assert log_state(back) == original
    # a redaction made in the source after the copies is made in each copy by the next one
    done = cli("redact", "--run", run, "--tag", "team", "--reason", "later", "--store", source)
    assert done.exit_code == 0, done.output
    there = copy_store(source, shared, destination_artifacts=str(tmp_path / "pg-artifacts"))
    home = copy_store(shared, back, source_artifacts=str(tmp_path / "pg-artifacts"))
    assert (there.events, there.redactions_applied) == (home.events, home.redactions_applied) == (1, 1)
    redacted = log_state(source)
    assert log_state(shared) == redacted and log_state(back) == redacted
    assert {verified_head(uri) for uri in (source, shared, back)} == {redacted[2]}
    assert Client(back).get_run(run).data.tags["team"] == codec.REDACTED
    close_cached_stores(tmp_path)


def test_a_format_3_store_copies_both_ways_with_its_recorded_head(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    # events written before format 4 keep their form-3 links, copied as they are
    source = tmp_path / "demo.db"
    shutil.copy(FIXTURES / "format3" / "demo.db", source)
    head = json.loads((FIXTURES / "format3" / "demo-head.json").read_text())["head_hash"]
    shared, back = postgres_database.new_store_uri(), str(tmp_path / "back.db")
    (tmp_path / "no-files").mkdir()  # the fixture keeps no artifact files: each is missing
    there = copy_store(str(source), shared, source_artifacts=str(tmp_path / "no-files"),
                       destination_artifacts=str(tmp_path / "artifacts"))  # fmt: skip
    home = copy_store(shared, back, source_artifacts=str(tmp_path / "artifacts"))
    assert there.artifacts_missing and there.artifacts_missing == home.artifacts_missing
    assert {verified_head(uri) for uri in (shared, back)} == {head}
    assert {row.form for row in raw_rows(back)} == {3}
    assert raw_rows(back) == raw_rows(shared)


# --- resuming -----------------------------------------------------------------------------


def bare_log(path: Path, commits: list[tuple[int, int, bool]], erase: list[int]) -> str:
    """A log of ``commits`` (stream number, events, with caller ids), then the events at
    the ``erase`` indexes (of those erasable) erased, each by its own redaction."""
    with open_log(path) as log:
        with log.transaction():
            for number, (stream, count, with_ids) in enumerate(commits):
                events = [TagSet(key=f"k{number}-{i}", value=f"v{number}") for i in range(count)]
                event_ids = [f"evt-{number}-{i}" for i in range(count)] if with_ids else None
                log.append(f"stream-{stream}", events, event_ids=event_ids)
        head = log.head_position()
        for position in sorted({1 + index % head for index in erase}):
            redact(log, reason="test", position=position, purge_wait=0)
    return str(path)


COMMITS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(1, 4), st.booleans()), min_size=1, max_size=25
)


def same_log(src: EventStore, dst: EventStore) -> None:
    """``dst`` holds every row and redaction of ``src`` as stored, and verifies."""
    assert [row for batch in dst.read_raw() for row in batch] == [row for batch in src.read_raw() for row in batch]
    assert dst.redactions() == src.redactions()  # type: ignore[attr-defined]
    report = verify(dst)
    assert report.ok, report.reason


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    commits=COMMITS,
    erase=st.lists(st.integers(0, 200), max_size=3),
    stops=st.lists(st.integers(0, 120), max_size=3),
    batch_size=st.integers(1, 9),
    erase_later=st.lists(st.integers(0, 200), max_size=2),
)
# positions 1 and 2 erased, recorded at 8 and 9: a stop at 8 moves back before both
@example(commits=[(0, 1, False)] * 4 + [(0, 3, False)], erase=[0, 1], stops=[8], batch_size=1,
         erase_later=[])  # fmt: skip
def test_copies_stopped_anywhere_and_resumed_store_every_event_once(
    commits: list[tuple[int, int, bool]], erase: list[int], stops: list[int], batch_size: int,
    erase_later: list[int],
) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        source = bare_log(Path(folder) / "source.db", commits, erase)
        with open_log(source) as src, open_log(Path(folder) / "copy.db") as dst:
            # each stop ends at the last whole commit before it; the last copy goes on to the head
            for stop in [*sorted(stops), None]:
                copy_log(src, dst, batch_size=batch_size, until_position=stop)
                rows = [row for batch in dst.read_raw() for row in batch]
                assert rows == [row for batch in src.read_raw() for row in batch][: len(rows)]
                assert not rows or rows[-1].commit == rows[-1].position
                assert verify(dst).ok  # every state a copy commits verifies
            same_log(src, dst)
            # redactions made in the source after the copy are made in the copy by the next one
            erasable = [row.position for batch in src.read_raw() for row in batch if row.type == "TagSet"]
            erased = 0
            for position in sorted({erasable[index % len(erasable)] for index in erase_later}):
                erased += len(redact(src, reason="later", position=position, purge_wait=0).erased)
            done = copy_log(src, dst, batch_size=batch_size)
            assert done.redactions_applied == erased and done.events == erased
            same_log(src, dst)


def test_a_copy_killed_midway_resumes_and_stores_every_event_once(tmp_path: Path) -> None:
    source = bare_log(tmp_path / "source.db", [(n % 5, 1, False) for n in range(1500)], [])
    destination = tmp_path / "copy.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "evstore.cli", "copy", source, str(destination), "--batch-size", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def copied() -> int:
            if not destination.exists():
                return 0
            with closing(sqlite3.connect(f"file:{destination}?mode=ro", uri=True)) as db:
                try:
                    return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
                except sqlite3.OperationalError:  # its tables are not made yet
                    return 0

        wait_until(lambda: copied() >= 10, "the copy's first batches committed")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    stopped_at = copied()
    assert 10 <= stopped_at < 1500, "the kill came after the copy had finished"
    # the part copied verifies on its own; the next copy goes on from its head
    with open_log(destination) as part:
        assert verify(part).ok
    done = cli("copy", source, str(destination), "--batch-size", "200")
    head = verified_head(source)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] == (
        f"copied {1500 - stopped_at} events (positions {stopped_at + 1}..1500), 0 artifact files;"
        f" head {head} at position 1500"
    )
    assert raw_rows(str(destination)) == raw_rows(source)
    assert verified_head(str(destination)) == head


# --- refusals -----------------------------------------------------------------------------


def test_a_destination_that_diverged_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    source = bare_log(tmp_path / "source.db", [(n % 3, 2, False) for n in range(20)], [5])
    destination = str(tmp_path / "copy.db")
    # a stop before the erased position 6 is the last whole commit before it: 1..4
    assert copy_store(source, destination, until_position=20).last == 4
    with open_log(destination) as log:
        log.append("stream-0", [TagSet(key="only", value="here")])
    before = log_state(destination)
    done = subprocess.run(
        [sys.executable, "-m", "evstore.cli", "copy", source, destination],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {destination} holds a different history: its event at position 5")
    assert "nothing was changed" in line
    assert log_state(destination) == before


def test_a_batch_size_below_1_is_refused_before_a_destination_is_made(tmp_path: Path) -> None:
    source = bare_log(tmp_path / "source.db", [(0, 3, False)], [])
    done = cli("copy", source, str(tmp_path / "copy.db"), "--batch-size", "0")
    assert isinstance(done.exception, InvalidParameterValue)
    assert str(done.exception) == "the batch size must be 1 or more, not 0"
    assert not (tmp_path / "copy.db").exists()


def test_a_store_with_other_events_is_refused(tmp_path: Path) -> None:
    source = bare_log(tmp_path / "source.db", [(0, 3, False)], [])
    unrelated = str(tmp_path / "other.db")
    assert cli("init", "--store", unrelated).exit_code == 0  # it holds the Default experiment
    before = log_state(unrelated)
    with pytest.raises(InvalidState, match="holds a different history"):
        copy_store(source, unrelated)
    longer = bare_log(tmp_path / "longer.db", [(0, 5, False)], [])
    with pytest.raises(InvalidState, match="holds 5 events, the source 3: it is not a copy"):
        copy_store(source, longer)
    assert log_state(unrelated) == before and len(raw_rows(longer)) == 5


def test_a_store_is_not_copied_into_itself(backend: str, store_uri: str) -> None:
    with open_log(store_uri) as log:
        log.append("stream-0", [TagSet(key="k", value="v")])
    same = f"sqlite:///{store_uri}" if backend == "sqlite" else store_uri
    with pytest.raises(InvalidParameterValue, match="are the same store: nothing to copy"):
        copy_store(store_uri, same)
    assert len(raw_rows(store_uri)) == 1


def test_a_postgres_end_without_an_artifact_folder_is_refused_before_anything_is_written(
    tmp_path: Path, postgres_database: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVSTORE_ARTIFACT_ROOT", raising=False)
    source, _ = tracked_store(tmp_path / "source")
    shared = postgres_database.new_store_uri()
    with pytest.raises(InvalidParameterValue, match="no artifact folder of its own: name one with --dst-artifacts"):
        copy_store(source, shared)
    with postgres_database.connect() as conn:
        schema = shared.rsplit("%3D", 1)[1]
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
    assert tables == (0,)  # not even created


# --- the store contract: append_raw ----------------------------------------------------------


@pytest.fixture
def rows(tmp_path: Path) -> Iterator[list[RawEvent]]:
    """A source's rows: three commits, of 1, 3 and 2 events."""
    with open_log(tmp_path / "source.db") as log:
        log.append("a", [TagSet(key="k", value="1")])
        log.append("b", [TagSet(key=k, value="2") for k in "xyz"])
        log.append("a", [TagSet(key=k, value="3") for k in "pq"])
        yield [row for batch in log.read_raw() for row in batch]


def test_append_raw_keeps_rows_as_they_are(log: EventStore, rows: list[RawEvent]) -> None:
    log.append_raw(rows[:4])
    log.append_raw(rows[4:])
    assert [row for batch in log.read_raw() for row in batch] == rows
    assert verify(log).ok


@pytest.mark.parametrize(
    ("cut", "change", "message"),
    [
        (slice(0, 4), {"hash": bytes(32)}, "position 4: its link does not verify"),
        (slice(0, 4), {"payload": b"\x80"}, "position 2: its link does not verify"),
        (slice(1, 4), {}, "position 2 does not follow position 0"),
        (slice(0, 3), {}, "the rows end inside the commit of positions 2..4: give whole commits"),
        (slice(0, 4), {"recorded_at": 7}, "position 3 is not in the commit of positions 2..4"),
        (slice(0, 4), {"stream_version": 5}, "position 4: stream b is at version 2, the row is version 5"),
        (slice(0, 4), {"form": None}, "position 3: its commit record is missing"),
    ],
)
def test_append_raw_refuses_rows_that_do_not_continue_its_chain(
    log: EventStore, rows: list[RawEvent], cut: slice, change: dict[str, Any], message: str
) -> None:
    given = rows[cut]
    at = {"hash": 3, "payload": 1, "recorded_at": 2, "stream_version": 3, "form": 2}
    for key, value in change.items():
        index = at[key] - (cut.start or 0)
        given[index] = RawEvent(**{**{f: getattr(given[index], f) for f in RawEvent.__struct_fields__}, key: value})
    with pytest.raises(InvalidParameterValue, match=message.replace(".", r"\.")):
        log.append_raw(given)
    assert log.head_position() == 0
