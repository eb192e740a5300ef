"""The storage format: older layouts migrate on open in one transaction; newer are refused."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from evstore.errors import StoreFormatError
from evstore.events import ParamsLogged
from evstore.integrity import verify
from evstore.stores import open_log
from evstore.stores import sqlite as sqlite_store

GOLDEN_V1 = Path(__file__).parent / "fixtures" / "stores" / "v1-before-metric-context" / "store.db"


def _format_1_copy(tmp_path: Path) -> Path:
    # The golden store was written at storage format 1 (before the REPLACE trigger).
    path = tmp_path / "store.db"
    shutil.copy(GOLDEN_V1, path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
    return path


def _triggers(path: Path) -> set[str]:
    rows = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return {name for (name,) in rows}


FORMAT_3_DEMO = Path(__file__).parent / "fixtures" / "format3" / "demo.db"
FORMAT_3_HEAD = json.loads((FORMAT_3_DEMO.parent / "demo-head.json").read_text())


def _stored_events(path: Path) -> list[tuple[object, ...]]:
    """Every event of an older layout as its own ``events`` table holds it."""
    uri = f"file:{path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        return connection.execute(
            "SELECT position, stream_id, stream_version, event_id, type, version, recorded_at,"
            " payload, metadata, hash FROM events ORDER BY position"
        ).fetchall()


def _read_back(log: object) -> list[tuple[object, ...]]:
    """The same columns, as the store reads them back after migrating."""
    return [
        (r.position, r.stream_id, r.stream_version, r.event_id, r.type, r.version,
         r.recorded_at, r.payload, r.metadata, r.hash)
        for batch in log.read_raw()  # type: ignore[attr-defined]
        for r in batch
    ]  # fmt: skip


def test_an_older_layout_is_migrated_on_open_and_keeps_its_history(tmp_path: Path) -> None:
    path = _format_1_copy(tmp_path)
    before = _stored_events(path)
    with open_log(path) as log:
        assert log.format_version() == sqlite_store.FORMAT_VERSION == 5  # type: ignore[attr-defined]
        report = verify(log)
        # every event keeps its id, time, payload, metadata and hash, read back as stored
        assert _read_back(log) == before
    assert report.ok and report.events == len(before)
    assert report.head_hash == before[-1][-1].hex()  # type: ignore[union-attr]
    assert {f"{t}_refuse_{a}" for t in ("events", "commits", "streams", "event_types", "event_metadata", "redactions")
            for a in ("update", "delete", "replace")} == _triggers(path)  # fmt: skip
    indexes = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    assert "events_by_type" not in {name for (name,) in indexes}
    with pytest.raises(sqlite3.IntegrityError, match="REPLACE refused"):
        sqlite3.connect(path).execute("INSERT OR REPLACE INTO events SELECT * FROM events LIMIT 1")


def test_a_format_3_store_keeps_its_head_hash_and_expected_heads_through_migration(
    tmp_path: Path,
) -> None:
    # demo.db: `evstore demo` written by evstore at format 3 (e911b30), then a two-event
    # append, a caller's hex event id and a caller's text id with its own metadata.
    path = tmp_path / "demo.db"
    shutil.copy(FORMAT_3_DEMO, path)
    before = _stored_events(path)
    middle = before[len(before) // 2][-1].hex()  # type: ignore[union-attr]
    with open_log(path) as log:
        assert _read_back(log) == before
        report = verify(log, expect_head=FORMAT_3_HEAD["head_hash"])
        assert report.ok, report
        assert (report.events, report.head_position, report.head_hash) == (
            FORMAT_3_HEAD["events"], FORMAT_3_HEAD["head_position"], FORMAT_3_HEAD["head_hash"]
        )
        assert verify(log, expect_head=middle).ok
        # new appends chain on from the old head, in the new canonical form
        log.append("f" * 32, [ParamsLogged(params={"after": "migration"})])
        assert verify(log).ok
    done = subprocess.run(
        [sys.executable, "-m", "evstore.cli", "verify", "--store", str(path),
         "--expect-head", FORMAT_3_HEAD["head_hash"]],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


_KILL_MIDWAY = """
import os, signal, sys
from evstore.stores import open_log, sqlite as store
real = store._format_4
def killed(db):
    real(db)  # every row copied, the old table dropped; the transaction still open
    os.kill(os.getpid(), signal.SIGKILL)
store.FORMAT_MIGRATIONS = (*store.FORMAT_MIGRATIONS[:3], killed, *store.FORMAT_MIGRATIONS[4:])
open_log(sys.argv[1])
"""


def test_a_migration_killed_midway_leaves_format_3_and_migrates_on_the_next_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "demo.db"
    shutil.copy(FORMAT_3_DEMO, path)
    before = _stored_events(path)
    done = subprocess.run(
        [sys.executable, "-c", _KILL_MIDWAY, str(path)], check=False, capture_output=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert _stored_events(path) == before  # rolled back: format 3, every event where it was
    with open_log(path) as log:
        assert log.format_version() == 5  # type: ignore[attr-defined]
        assert verify(log).head_hash == FORMAT_3_HEAD["head_hash"]
        assert _read_back(log) == before


def test_a_failing_migration_step_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _format_1_copy(tmp_path)

    def half_done(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("disk on fire")

    monkeypatch.setattr(sqlite_store, "FORMAT_MIGRATIONS", (*sqlite_store.FORMAT_MIGRATIONS, half_done))
    monkeypatch.setattr(sqlite_store, "FORMAT_VERSION", 6)
    with pytest.raises(StoreFormatError, match="migrating storage format 1 to 6 failed, nothing was changed: disk on fire"):
        open_log(path)
    connection = sqlite3.connect(path)
    # all pending steps share one transaction: not even steps 2 and 3 are applied
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "events_refuse_replace" not in _triggers(path)
    tables = {n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables


def test_a_store_from_a_newer_evstore_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_log(path).close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 7")
    connection.commit()
    with pytest.raises(StoreFormatError, match=r"storage format 7.*newer evstore.*up to 5"):
        open_log(path)


def test_a_sqlite_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE mine (x)")
    connection.commit()
    with pytest.raises(StoreFormatError, match="not an evstore store"):
        open_log(path)
    assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [("mine",)]


def _page_size(path: Path) -> int:
    return sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]


def test_a_new_store_takes_the_small_page_size_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    new = tmp_path / "new.db"
    with open_log(new) as log:
        log.append("s", [ParamsLogged(params={"a": "1"})])
    assert _page_size(new) == sqlite_store.PAGE_SIZE == 2048
    old = _format_1_copy(tmp_path)
    before = _page_size(old)
    assert before != sqlite_store.PAGE_SIZE  # written by an older evstore, at 4096
    with open_log(old) as log:
        log.append("s", [ParamsLogged(params={"a": "1"})])
        assert verify(log).ok
    assert _page_size(old) == before


def test_a_lone_event_stores_no_commit_id_and_a_batch_stores_its_last_position(
    tmp_path: Path,
) -> None:
    # Format 5: an append of one event is its own commit (NULL, read as its position);
    # every event of a larger append names the commit by the batch's last position.
    path = tmp_path / "s.db"
    with open_log(path) as log:
        log.append("s", [ParamsLogged(params={"a": "1"})])
        log.append("s", [ParamsLogged(params={"b": "2"}), ParamsLogged(params={"c": "3"})])
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT position, commit_id FROM events ORDER BY position")
        assert rows.fetchall() == [(1, None), (2, 3), (3, 3)]
