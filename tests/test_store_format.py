"""The storage format: older layouts migrate on open in one transaction; newer are refused."""

from __future__ import annotations

import shutil
import sqlite3
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


def test_an_older_layout_is_migrated_on_open_and_keeps_its_history(tmp_path: Path) -> None:
    path = _format_1_copy(tmp_path)
    before = sqlite3.connect(path).execute("SELECT * FROM events ORDER BY position").fetchall()
    with open_log(path) as log:
        assert log.format_version() == sqlite_store.FORMAT_VERSION == 3  # type: ignore[attr-defined]
        report = verify(log)
    assert report.ok and report.events == len(before)
    assert "events_refuse_replace" in _triggers(path)
    indexes = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    assert "events_by_type" not in {name for (name,) in indexes}
    # the migration touched no event
    assert sqlite3.connect(path).execute("SELECT * FROM events ORDER BY position").fetchall() == before
    with pytest.raises(sqlite3.IntegrityError, match="REPLACE refused"):
        sqlite3.connect(path).execute("INSERT OR REPLACE INTO events SELECT * FROM events LIMIT 1")


def test_a_failing_migration_step_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _format_1_copy(tmp_path)

    def half_done(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("disk on fire")

    monkeypatch.setattr(sqlite_store, "FORMAT_MIGRATIONS", (*sqlite_store.FORMAT_MIGRATIONS, half_done))
    monkeypatch.setattr(sqlite_store, "FORMAT_VERSION", 4)
    with pytest.raises(StoreFormatError, match="migrating storage format 1 to 4 failed, nothing was changed: disk on fire"):
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
    with pytest.raises(StoreFormatError, match=r"storage format 7.*newer evstore.*up to 3"):
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
