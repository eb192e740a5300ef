"""`evstore redact`: erasure that keeps the proof.

A redaction replaces the value in the stored payloads, appends a ``Redacted`` event per
payload, rebuilds the read models that read those events, and purges the file: the
tests search the raw bytes of the store file and its WAL for the erased value. ``verify``
still passes and lists the redaction; tampering with what a redaction left is found.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_here import run_here
from conftest import close_cached_stores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import EVSTORE
from test_projections import HISTORIES, KEYS, RUN_IDS, seed_experiments_and_runs
from test_projections import snapshot as snapshot_tables

from evstore import Client, codec
from evstore.entities import Metric, Param, RunTag
from evstore.errors import InvalidParameterValue, ResourceDoesNotExist
from evstore.events import (
    ErasedEvent,
    MetricsLogged,
    ParamsLogged,
    Redacted,
)
from evstore.export import export
from evstore.history import run_history
from evstore.integrity import RedactionFound, VerifyReport, verify
from evstore.projection import open_store
from evstore.rebuild import rebuild
from evstore.redaction import redact
from evstore.stores import open_log
from evstore.tracking.service import TrackingService

FIXTURES = Path(__file__).parent / "fixtures"
#: A value nobody else writes, and a long one that spills into overflow pages (the
#: store's pages are 2 KiB), made of distinct pieces so any surviving piece is found.
SECRET = "customer-JONES-7c1f-secret-path"
LONG_SECRET = "".join(f"<{i:05d}-MERIWETHER-LEWIS>" for i in range(700))


def on_disk(path: Path) -> bytes:
    """The raw bytes of the store file and its WAL."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def pieces(value: str) -> list[bytes]:
    """The value cut into 24-byte pieces: one surviving anywhere on disk is a leak."""
    raw = value.encode()
    return [raw[i : i + 24] for i in range(0, len(raw), 24)] or [raw]


def assert_on_disk(path: Path, value: str) -> None:
    data = on_disk(path)
    assert all(piece in data for piece in pieces(value)), f"{value[:30]} is not on disk"


def assert_gone(path: Path, value: str) -> None:
    data = on_disk(path)
    left = [piece for piece in pieces(value) if piece in data]
    assert not left, f"{len(left)} pieces of {value[:30]}... are still on disk: {left[:3]}"


def snapshot(store: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table's rows, sorted."""
    return snapshot_tables(store)


def rebuilt_equals_inline(path: Path) -> None:
    """The read models as kept equal those a rebuild from the log gives."""
    runner = open_store(path)
    try:
        runner.check_fresh()
        inline = snapshot(runner.store)
        rebuild(runner.store)
        assert snapshot(runner.store) == inline
    finally:
        runner.store.close()


def redact_in(path: Path, **options: Any) -> Any:
    """Redact through a store of its own (as the CLI does), closed afterwards."""
    runner = open_store(path)
    try:
        return redact(runner.store, **options)
    finally:
        runner.store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A store with a run whose params and tags hold the secrets, and a second run."""
    path = tmp_path / "evstore.db"
    client = Client(str(path))
    experiment = client.create_experiment("exp")
    run = client.create_run(experiment, run_name="jones-churn", tags={"token": SECRET}).info.run_id
    client.log_batch(run, params=[Param("data_path", SECRET), Param("lr", "0.01"),
                                  Param("notes", LONG_SECRET)])  # fmt: skip
    client.set_tag(run, "token", SECRET + "-rotated")
    client.set_tag(run, "team", "core")
    other = client.create_run(experiment).info.run_id
    client.log_param(other, "data_path", "/data/other.csv")
    client.log_metric(run, "loss", 0.5)
    close_cached_stores(tmp_path)
    (tmp_path / "run_id").write_text(run)
    yield path
    close_cached_stores(tmp_path)


def run_of(store: Path) -> str:
    return (store.parent / "run_id").read_text()


# --- what a redaction erases, and what it keeps -----------------------------------------


def test_a_param_value_is_erased_from_the_file_the_wal_and_the_read_models(store: Path) -> None:
    run = run_of(store)
    assert_on_disk(store, LONG_SECRET)
    head = open_log(store).head_position()

    report = redact_in(store, run_id=run, param="notes", reason="erasure request 17")

    assert report.erased and report.purge_problem is None and report.rebuilt == ["params"]
    assert report.redacted_by == [head + 1]
    assert_gone(store, LONG_SECRET)
    # the other params of the same batch keep their values; the other run is untouched
    client = Client(str(store))
    params = client.get_run(run).data.params
    assert params == {"data_path": SECRET, "lr": "0.01", "notes": "[redacted]"}
    assert_on_disk(store, SECRET)
    rebuilt_equals_inline(store)
    with open_log(store) as log:
        report = verify(log)
    assert report.ok, report.reason
    [found] = report.redactions
    assert (found.target, found.key, found.reason, found.verified_through) == (
        "param", "notes", "erasure request 17", "digest",
    )  # fmt: skip


def test_a_value_also_held_by_read_model_indexes_and_by_another_key_is_erased_where_asked(
    store: Path,
) -> None:
    # SECRET is the value of param data_path and (with a suffix) of tag token: the param's
    # redaction leaves the tag's copies, the tag's then takes those too.
    run = run_of(store)
    redact_in(store, run_id=run, param="data_path", reason="r")
    client = Client(str(store))
    assert client.get_run(run).data.tags["token"] == SECRET + "-rotated"
    assert_on_disk(store, SECRET)
    close_cached_stores(store.parent)

    report = redact_in(store, run_id=run, tag="token", reason="leaked token")

    # the tag was set twice: at the run's start and later; both events are erased
    assert len(report.erased) == 2 and report.rebuilt == ["runs", "tags"]
    assert_gone(store, SECRET)
    run_now = Client(str(store)).get_run(run)
    assert run_now.data.tags["token"] == "[redacted]" and run_now.data.params["lr"] == "0.01"
    # the params table's value index reads the new value too
    with open_log(store) as log:
        found = log.query("SELECT run_id FROM params WHERE key = 'data_path' AND value = ?", (SECRET,))  # type: ignore[attr-defined]
        assert found == []
    rebuilt_equals_inline(store)


def test_the_run_name_tag_erases_the_run_name_wherever_it_is_held(store: Path) -> None:
    run = run_of(store)
    client = Client(str(store))
    client.set_tag(run, "mlflow.runName", "jones-churn-2")  # a rename by tag
    client.update_run(run, name="jones-churn-3")  # and a rename
    close_cached_stores(store.parent)

    report = redact_in(store, run_id=run, tag="mlflow.runName", reason="a customer's name")

    # the RunStarted's name, the TagSets of the name and the RunRenamed
    with open_log(store) as log:
        kinds = {r.type for r in log.read_stream(run) if r.position in report.erased}
    assert kinds == {"RunStarted", "TagSet", "RunRenamed"}
    for name in ("jones-churn", "jones-churn-2", "jones-churn-3"):
        assert_gone(store, name)
    info = Client(str(store)).get_run(run)
    assert info.info.run_name == "[redacted]" and info.data.tags["mlflow.runName"] == "[redacted]"
    rebuilt_equals_inline(store)


def test_a_whole_event_is_erased_and_read_as_if_it_had_not_been_appended(tmp_path: Path) -> None:
    # A metric point whose dataset name is a customer's: the metric read models held it.
    path = tmp_path / "evstore.db"
    client = Client(str(path))
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_metric(run, "acc", 0.9, step=1, dataset_name=SECRET, dataset_digest="d41d")
    client.log_metric(run, "acc", 0.8, step=2)
    close_cached_stores(tmp_path)
    with open_log(path) as log:
        (position,) = [r.position for r in log.read_stream(run) if isinstance(r.event, MetricsLogged)
                       and r.event.points[0].step == 1]  # fmt: skip
    assert_on_disk(path, SECRET)

    report = redact_in(path, position=position, reason="customer dataset")

    assert report.target == "event" and set(report.rebuilt) >= {"metrics"}
    assert_gone(path, SECRET)
    client = Client(str(path))
    assert [(m.step, m.value) for m in client.get_metric_history(run, "acc")] == [(2, 0.8)]
    with open_log(path) as log:
        erased = [r.event for r in log.read_stream(run) if r.position == position]
        assert erased == [ErasedEvent("MetricsLogged", 2)]
        assert verify(log).ok
    rebuilt_equals_inline(path)


def test_redacting_again_appends_nothing(store: Path) -> None:
    run = run_of(store)
    redact_in(store, run_id=run, param="data_path", reason="r")
    with open_log(store) as log:
        head = log.head_hash()
    again = redact_in(store, run_id=run, param="data_path", reason="r")
    assert (again.erased, again.redacted_by, again.rebuilt) == ([], [], [])
    assert again.already_erased and again.purge_problem is None
    with open_log(store) as log:
        assert log.head_hash() == head


def test_a_second_key_of_one_event_is_erased_by_a_second_redaction(store: Path) -> None:
    # Both redactions name the digest the event was appended with: its link verifies.
    run = run_of(store)
    first = redact_in(store, run_id=run, param="data_path", reason="one")
    second = redact_in(store, run_id=run, param="notes", reason="two")
    assert first.erased == second.erased
    with open_log(store) as log:
        report = verify(log)
        records = [r.event for r in log.read_stream(run) if isinstance(r.event, Redacted)]
    assert report.ok, report.reason
    assert [f.key for f in report.redactions] == ["data_path", "notes"]
    assert records[0].original_sha256 == records[1].original_sha256
    assert records[0].redacted_sha256 != records[1].redacted_sha256
    assert Client(str(store)).get_run(run).data.params == {
        "data_path": "[redacted]", "lr": "0.01", "notes": "[redacted]"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"param": "data_path", "reason": ""}, InvalidParameterValue, "needs a reason"),
        ({"param": "data_path", "reason": "   "}, InvalidParameterValue, "needs a reason"),
        ({"param": "nope", "reason": "r"}, ResourceDoesNotExist, "has no param 'nope'"),
        ({"tag": "nope", "reason": "r"}, ResourceDoesNotExist, "has no tag 'nope'"),
        ({"param": "lr", "tag": "team", "reason": "r"}, InvalidParameterValue, "say what to redact"),
        ({"reason": "r"}, InvalidParameterValue, "say what to redact"),
        ({"position": 1, "reason": "r"}, InvalidParameterValue, "ExperimentCreated at position 1"),
        ({"position": 10**6, "reason": "r"}, ResourceDoesNotExist, "no event at position"),
        ({"position": 0, "reason": "r"}, InvalidParameterValue, "1 or more"),
    ],
)
def test_a_refused_redaction_changes_nothing(
    store: Path, options: dict[str, Any], error: type, message: str
) -> None:
    if "position" not in options:
        options["run_id"] = run_of(store)
    before = on_disk(store)
    with pytest.raises(error, match=message):
        redact_in(store, **options)
    with open_log(store) as log:
        assert verify(log).ok and not verify(log).redactions
    assert SECRET.encode() in before and SECRET.encode() in on_disk(store)


def test_a_run_start_and_a_redaction_record_cannot_be_erased_whole(store: Path) -> None:
    run = run_of(store)
    with open_log(store) as log:
        started = log.read_stream(run)[0].position
    with pytest.raises(InvalidParameterValue, match="RunStarted.*--tag mlflow.runName"):
        redact_in(store, position=started, reason="r")
    report = redact_in(store, run_id=run, param="lr", reason="r")
    with pytest.raises(InvalidParameterValue, match="record of a redaction"):
        redact_in(store, position=report.redacted_by[0], reason="r")
    with pytest.raises(InvalidParameterValue, match="not of run"):
        redact_in(store, position=report.erased[0], run_id="f" * 32, reason="r")


# --- every read path shows [redacted] -----------------------------------------------------


def test_as_of_history_export_and_the_event_log_show_the_redaction(store: Path, tmp_path: Path) -> None:
    run = run_of(store)
    with open_log(store) as log:
        before = log.head_position()
    redact_in(store, run_id=run, param="data_path", reason="erasure request 17")
    service = TrackingService(str(store))
    # an earlier state is rebuilt from the payloads as they are now
    assert service.get_run(run, as_of=before).data.params["data_path"] == "[redacted]"
    trail = run_history(service.store, run)
    assert trail[-1]["type"] == "Redacted"
    assert "erased param data_path" in trail[-1]["change"]
    assert "erasure request 17" in trail[-1]["change"] and trail[-1]["user"]
    out = tmp_path / "runs.csv"
    export(service, "runs", str(out), "csv", "")
    with out.open() as f:
        exported = {row["run_id"]: row for row in csv.DictReader(f)}
    assert exported[run]["params.data_path"] == "[redacted]"


def test_the_cli_redacts_says_so_and_verify_lists_it(store: Path) -> None:
    run = run_of(store)

    def evstore(*args: str) -> subprocess.CompletedProcess[str]:
        return run_here(*args, "--store", str(store))

    done = evstore("redact", "--run", run, "--param", "data_path", "--reason", "erasure request 17")
    assert done.returncode == 0, done.stderr
    assert "redacted param 'data_path'" in done.stdout and "read models rebuilt: params" in done.stdout
    again = evstore("redact", "--run", run, "--param", "data_path", "--reason", "erasure request 17")
    assert again.returncode == 0 and "already redacted" in again.stdout
    assert "nothing appended" in again.stdout
    missing = evstore("redact", "--run", run, "--param", "data_path")
    assert missing.returncode != 0 and "--reason" in missing.stderr
    checked = evstore("verify")
    assert checked.returncode == 0, checked.stderr
    assert "redacted: position" in checked.stdout and "erasure request 17" in checked.stdout
    assert "verified from the digest kept" in checked.stdout
    shown = evstore("history", run)
    assert "[redacted]" in shown.stdout and "erased param data_path" in shown.stdout
    assert "Traceback" not in missing.stderr + again.stderr


def test_the_server_answers_with_the_redacted_value(tmp_path: Path) -> None:
    # A running server keeps its store open: the redaction runs beside it, and the
    # server's next answer (and the file) no longer hold the value.
    import httpx
    from servers import ServerProcess

    server = ServerProcess(tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = "/api/2.0/mlflow"
            experiment = http.post(f"{api}/experiments/create", json={"name": "e"}).json()["experiment_id"]
            run = http.post(f"{api}/runs/create", json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
            logged = http.post(f"{api}/runs/log-parameter", json={"run_id": run, "key": "path", "value": SECRET})
            assert logged.status_code == 200, logged.text
            done = subprocess.run(
                [EVSTORE, "redact", "--store", str(server.store), "--run", run, "--param", "path",
                 "--reason", "r"], capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            got = http.get(f"{api}/runs/get", params={"run_id": run}).json()["run"]["data"]["params"]
            assert got == [{"key": "path", "value": "[redacted]"}]
            assert_gone(server.store, SECRET)
    finally:
        server.stop()


# --- the purge -----------------------------------------------------------------------------


def test_copies_left_in_free_space_by_writes_without_secure_delete_are_purged(tmp_path: Path) -> None:
    # SQLite's own default is secure_delete off (Debian's build turns it on), and a rebuild
    # turns it off for its swap: an overwritten tag and replaced tables leave old values
    # in free space and free pages, which no erased payload points to.
    path = tmp_path / "evstore.db"
    service = TrackingService(str(path))
    service.store.connection.execute("PRAGMA secure_delete = OFF")
    run = service.create_run(service.create_experiment("e")).info.run_id
    service.set_tag(run, "token", SECRET)
    service.set_tag(run, "token", "rotated")
    service.log_param(run, "p", SECRET + "-param")
    for i in range(50):  # rows enough to fill a few pages
        service.log_param(run, f"k{i}", "x" * 100)
    close_cached_stores(tmp_path)
    runner = open_store(path)
    runner.store.connection.execute("PRAGMA secure_delete = OFF")  # type: ignore[attr-defined]
    rebuild(runner.store)
    runner.store.close()
    assert_on_disk(path, SECRET)

    redact_in(path, run_id=run, tag="token", reason="r")
    redact_in(path, run_id=run, param="p", reason="r")

    assert_gone(path, SECRET)
    with open_log(path) as log:
        assert verify(log).ok




def test_a_reader_holding_an_old_snapshot_delays_the_purge_and_a_second_run_finishes_it(
    store: Path,
) -> None:
    run = run_of(store)
    with closing(sqlite3.connect(store, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # a snapshot from before
        done = subprocess.run(
            [EVSTORE, "redact", "--store", str(store), "--run", run, "--param", "notes",
             "--reason", "r", "--wait", "0.3"], capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout
        assert "redacted param 'notes'" in done.stdout
        assert "WAL file could not be emptied" in done.stderr and "run the same command again" in done.stderr
        reader.execute("COMMIT")
    again = redact_in(store, run_id=run, param="notes", reason="r")
    assert again.erased == [] and again.purge_problem is None
    assert_gone(store, LONG_SECRET)


# --- the database guards what a redaction may change ----------------------------------------


@pytest.fixture
def redacted(store: Path) -> tuple[Path, int, int]:
    """The store with one param erased: (path, the erased position, its Redacted event's)."""
    report = redact_in(store, run_id=run_of(store), param="data_path", reason="r")
    return store, report.erased[0], report.redacted_by[0]


@pytest.mark.parametrize(
    "change",
    ["stream_key = stream_key + 1", "stream_version = stream_version + 1", "event_id = x'00'",
     "type_key = type_key + 1", "version = version + 1", "commit_id = 1", "hash = x'00'",
     "position = 1000", "payload = x'c0', hash = x'00'"],
)  # fmt: skip
def test_on_a_redacted_event_only_the_payload_may_change(
    redacted: tuple[Path, int, int], change: str
) -> None:
    path, position, redacted_by = redacted
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        with pytest.raises(sqlite3.IntegrityError, match="append-only; UPDATE refused"):
            connection.execute(f"UPDATE events SET {change} WHERE position = ?", (position,))
        # the payload alone is let through (the trigger cannot tell a redaction from it) ...
        connection.execute("UPDATE events SET payload = ? WHERE position = ?",
                           (codec.ERASED_PAYLOAD, position))  # fmt: skip
    # ... and verify finds it, at the erased event: the head is the event before it
    with open_log(path) as log:
        report = verify(log)
        before = next(log.read_raw(position - 2, 1))[0].hash.hex()
    assert report == VerifyReport(
        False, position - 1, position - 1, before, 0, position,
        f"the payload was changed after its redaction at position {redacted_by}",
    )  # fmt: skip


@pytest.mark.parametrize(
    "sql",
    ["UPDATE events SET payload = x'80' WHERE position = 2",
     "UPDATE redactions SET original_digest = x'00'",
     "DELETE FROM redactions",
     "INSERT OR REPLACE INTO redactions SELECT * FROM redactions"],
)  # fmt: skip
def test_the_redactions_table_is_append_only_and_payloads_without_one_stay_fixed(
    redacted: tuple[Path, int, int], sql: str
) -> None:
    path, _, _ = redacted
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as connection,
        pytest.raises(sqlite3.IntegrityError, match="append-only"),
    ):
        connection.execute(sql)


def drop_triggers(connection: sqlite3.Connection) -> None:
    for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        connection.execute(f"DROP TRIGGER {name}")


def test_an_edited_kept_digest_is_found_at_the_erased_event(redacted: tuple[Path, int, int]) -> None:
    path, position, _ = redacted
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        drop_triggers(connection)
        connection.execute("UPDATE redactions SET original_digest = ?", (bytes(32),))
    with open_log(path) as log:
        report = verify(log)
    assert not report.ok and report.first_bad_position == position
    assert "hash mismatch" in (report.reason or "")


def test_a_removed_redactions_row_is_found(redacted: tuple[Path, int, int]) -> None:
    path, position, _ = redacted
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        drop_triggers(connection)
        connection.execute("DELETE FROM redactions")
    with open_log(path) as log:
        report = verify(log)
    assert not report.ok and report.first_bad_position == position


def test_verify_lists_each_redaction_with_who_and_when(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVSTORE_USER", "auditor")
    report = redact_in(store, run_id=run_of(store), param="data_path", reason="GDPR request")
    [position], [redacted_by] = report.erased, report.redacted_by
    with open_log(store) as log:
        checked = verify(log)
        recorded_at = next(log.read_raw(redacted_by - 1, 1))[0].recorded_at
    assert checked.ok and recorded_at
    assert checked.redactions == [
        RedactionFound(position, redacted_by, "param", "data_path", "GDPR request", "digest",
                       "auditor", recorded_at)
    ]  # fmt: skip


def test_redactions_rows_swapped_between_two_redacted_events_are_found(store: Path) -> None:
    # Each Redacted event names the position it erased; rows pointing the other way are not
    # its record even though both erased events still verify through the kept digests.
    run = run_of(store)
    first = redact_in(store, run_id=run, param="data_path", reason="r")
    second = redact_in(store, run_id=run, tag="team", reason="r")
    (p1,), (r1,), (p2,), (r2,) = first.erased, first.redacted_by, second.erased, second.redacted_by
    assert p1 != p2
    with closing(sqlite3.connect(store, isolation_level=None)) as connection:
        rows = {
            by: (position, digest)
            for by, position, digest in connection.execute("SELECT * FROM redactions")
        }
        drop_triggers(connection)
        connection.execute("DELETE FROM redactions")
        connection.execute("INSERT INTO redactions VALUES (?, ?, ?)", (r1, *rows[r2]))
        connection.execute("INSERT INTO redactions VALUES (?, ?, ?)", (r2, *rows[r1]))
    with open_log(store) as log:
        report = verify(log)
    assert (report.ok, report.first_bad_position, report.reason) == (
        False, r1, f"the Redacted event names position {p1}, its redactions row {p2}"
    )  # fmt: skip


def test_a_redaction_without_its_redacted_event_is_found(store: Path) -> None:
    # Someone inserts a redactions row by hand to slip a payload change past the trigger.
    with open_log(store) as log:
        target = next(r for r in log.read_stream(run_of(store)) if r.type == "ParamsLogged").position
        head = log.head_position()
        original = codec.payload_digest(next(b for b in log.read_raw(target - 1, 1))[0].payload)
    forged = codec.encode(ParamsLogged(params={"x": "1"}))
    with closing(sqlite3.connect(store, isolation_level=None)) as connection:
        connection.execute("INSERT INTO redactions VALUES (?, ?, ?)", (head, target, original))
        connection.execute("UPDATE events SET payload = ? WHERE position = ?", (forged, target))
    with open_log(store) as log:
        report = verify(log)
    assert not report.ok
    assert report.first_bad_position == head and "names this" in (report.reason or "")


# --- format-3 events: their link covers the payload bytes --------------------------------


def test_a_format_3_event_is_redacted_and_verifies_through_its_stored_hash(tmp_path: Path) -> None:
    import json

    path = tmp_path / "demo.db"
    shutil.copy(FIXTURES / "format3" / "demo.db", path)
    old_head = json.loads((FIXTURES / "format3" / "demo-head.json").read_text())["head_hash"]
    # an older store's metric history is at an older layout: rebuilt once, as after any bump
    rebuilt = subprocess.run([EVSTORE, "rebuild", "--store", str(path)], capture_output=True,
                             text=True, timeout=120, check=False)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    with open_log(path) as log:
        target = next(r for r in log.read_all() if r.type == "ParamsLogged")
    report = redact_in(path, run_id=target.stream_id, param="learning_rate", reason="r")
    assert report.erased == [target.position]
    with open_log(path) as log:
        checked = verify(log, expect_head=old_head)  # a head recorded before still passes
        assert checked.ok, checked.reason
        assert [f.verified_through for f in checked.redactions] == ["stored hash"]
    done = subprocess.run([EVSTORE, "verify", "--store", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert "verified through its stored hash only" in done.stdout
    assert Client(str(path)).get_run(target.stream_id).data.params["learning_rate"] == "[redacted]"
    close_cached_stores(tmp_path)
    rebuilt_equals_inline(path)
    # its payload changed afterwards is still found
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        payload = connection.execute("SELECT payload FROM events WHERE position = ?",
                                     (target.position,)).fetchone()[0]  # fmt: skip
        connection.execute("UPDATE events SET payload = ? WHERE position = ?",
                           (payload.replace(b"[redacted]", b"[REDACTED]"), target.position))  # fmt: skip
    with open_log(path) as log:
        report_after = verify(log)
    assert not report_after.ok and report_after.first_bad_position == target.position


def test_the_initial_tags_of_a_version_1_run_start_are_redacted_in_place(tmp_path: Path) -> None:
    # The golden store of format 1 holds a RunStarted v1 whose payload carries its tags.
    path = tmp_path / "store.db"
    shutil.copy(FIXTURES / "stores" / "v1-before-metric-context" / "store.db", path)
    run = "a" * 32
    report = redact_in(path, run_id=run, tag="team", reason="r")
    with open_log(path) as log:
        stored = next(b for b in log.read_raw(report.erased[0] - 1, 1))[0]
        assert (stored.type, stored.version) == ("RunStarted", 1)
        assert verify(log).ok
    assert Client(str(path)).get_run(run).data.tags["team"] == "[redacted]"
    assert_gone(path, "core")
    rebuilt_equals_inline(path)


# --- inline == rebuilt after redactions ------------------------------------------------------


REDACTIONS = st.lists(
    st.tuples(st.sampled_from(RUN_IDS), st.sampled_from(["param", "tag", "event"]), KEYS,
              st.integers(1, 60)),
    max_size=4,
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=HISTORIES, redactions=REDACTIONS)
def test_redactions_leave_the_tables_a_rebuild_gives(
    history: list[tuple[str, list[Any]]], redactions: list[tuple[str, str, str, int]]
) -> None:
    # Random run histories, then random redactions of params, tags and whole events: the
    # tables kept inline equal a rebuild's, and the log verifies.
    with tempfile.TemporaryDirectory() as tmp:
        runner = open_store(Path(tmp) / "store.db")
        store = runner.store
        try:
            seed_experiments_and_runs(store)
            for target, ops in history:
                if target in RUN_IDS:
                    store.append(target, ops)
            for run_id, kind, key, position in redactions:
                options: dict[str, Any] = {"reason": "r"}
                if kind == "event":
                    options["position"] = position
                else:
                    options.update(run_id=run_id, **{kind: key})
                try:
                    redact(store, **options)
                except (InvalidParameterValue, ResourceDoesNotExist):
                    pass  # nothing of that kind there (or an event kept whole): refused
            runner.check_fresh()
            inline = snapshot(store)
            rebuild(store)
            assert snapshot(store) == inline
            report = verify(store)
            assert report.ok, report.reason
        finally:
            store.close()


def test_metric_points_of_a_redacted_batch_keep_their_values(tmp_path: Path) -> None:
    # A param erased from a log_batch that also logged metrics and tags: only the value goes.
    path = tmp_path / "evstore.db"
    client = Client(str(path))
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_batch(run, metrics=[Metric("acc", 0.5, 1, 3)], params=[Param("p", SECRET)],
                     tags=[RunTag("t", "v")])  # fmt: skip
    close_cached_stores(tmp_path)
    redact_in(path, run_id=run, param="p", reason="r")
    data = Client(str(path)).get_run(run).data
    assert (data.metrics, data.params, data.tags.get("t")) == ({"acc": 0.5}, {"p": "[redacted]"}, "v")
    with open_log(path) as log:
        assert [p.value for r in log.read_stream(run) if isinstance(r.event, MetricsLogged)
                for p in r.event.points] == [0.5]  # fmt: skip


def test_importing_the_source_again_does_not_bring_a_redacted_value_back(tmp_path: Path) -> None:
    from evstore.importers.mlflow_import import import_mlflow

    source = FIXTURES / "mlflow" / "mlflow-3.17-sqlite"
    store = tmp_path / "evstore.db"
    uri = f"sqlite:///{source / 'mlflow.db'}"
    import_mlflow(str(store), uri, artifacts_root=str(source))
    redact_in(store, run_id="7b91feda33124b34a02d53e2e4a7009a", param="optimizer", reason="r")
    redact_in(store, run_id="c6f66ce7614f4ee8aeaabb57a43915c3", tag="owner", reason="r")
    with open_log(store) as log:
        head = log.head_hash()

    again = import_mlflow(str(store), uri, artifacts_root=str(source))

    assert again.events_appended == 0
    with open_log(store) as log:
        assert log.head_hash() == head
    client = Client(str(store))
    assert client.get_run("7b91feda33124b34a02d53e2e4a7009a").data.params["optimizer"] == "[redacted]"
    assert client.get_run("c6f66ce7614f4ee8aeaabb57a43915c3").data.tags["owner"] == "[redacted]"
