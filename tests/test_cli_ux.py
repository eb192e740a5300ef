"""A CLI that never surprises: reads never create or write a store, read-only and damaged
files are one line, whole run ids, --as-of, interrupts, a killed rebuild's leftovers, the
importer's report."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_here import run_here
from typer.testing import CliRunner

from evstore import Client, Metric, Param
from evstore.cli import app
from evstore.errors import StoreError
from evstore.integrity import verify
from evstore.stores import open_log
from evstore.tracking import service as client_module

FIXTURES = Path(__file__).parent / "fixtures" / "mlflow"


def run_cli(*args: str, cwd: Path | None = None, columns: int = 250,
            read_only: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``evstore ARGS`` in this process (``cli_here``); with ``read_only``, every store file
    reads as not writable (as a chmod 444 file would for a user who is not root)."""
    from evstore.stores import sqlite as sqlite_store

    with pytest.MonkeyPatch.context() as patch:
        if read_only:
            patch.setattr(sqlite_store, "_writable", lambda path: False)
        return run_here(*args, cwd=cwd, columns=columns)


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed command, checked to contain ``needles``."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def head_of(path: Path) -> int:
    """The head position, read with plain sqlite3 read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


def forget(path: Path) -> None:
    """Close the process-wide store a Client opened on ``path``."""
    runner = client_module._stores.pop(os.path.abspath(path), None)
    if runner is not None:
        runner.detach()
        runner.store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A store with three runs of experiment 'sweep' (params lr, metric acc); (path, run ids)."""
    path = tmp_path / "runs.db"
    client = Client(str(path))
    experiment_id = client.create_experiment("sweep")
    ids = []
    for index, lr in enumerate(["0.1", "0.01", "0.001"]):
        run_id = client.create_run(experiment_id, run_name=f"lr-{lr}", start_time=1000 + index).info.run_id
        client.log_batch(run_id, metrics=[Metric("acc", 0.7 + index / 10, 1, 0)], params=[Param("lr", lr)])
        client.set_terminated(run_id)
        ids.append(run_id)
    forget(path)
    yield path, ids


# --- 1. reads never create or write a store ---------------------------------------------


READS = [["runs"], ["experiments"], ["show", "abc"], ["history", "abc"], ["info"], ["verify"],
         ["export", "runs", "out.parquet"], ["log"], ["rebuild"]]  # fmt: skip


@pytest.mark.parametrize("args", READS)
def test_a_read_of_a_missing_store_is_an_error_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    done = run_cli(*args, "--store", "typo.db", cwd=tmp_path)
    one_line_error(done, "no store at typo.db", "evstore init")
    assert os.listdir(tmp_path) == []


def test_init_creates_a_store_and_a_read_appends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    done = run_cli("init", "--store", str(path))
    assert done.returncode == 0, done.stderr
    assert "store ready" in done.stdout
    head = head_of(path)
    assert head == 1  # the Default experiment
    one_line_error(run_cli("show", "x" * 32, "--store", str(path)), "not found")
    for args in (["runs"], ["experiments"], ["info"], ["verify"], ["log"]):
        assert run_cli(*args, "--store", str(path)).returncode == 0
    assert head_of(path) == head
    experiments = run_cli("experiments", "--store", str(path))
    assert "Default" in experiments.stdout


# --- 2. read-only and damaged stores --------------------------------------------------------


def test_the_read_only_flag_reads_and_verifies_and_refuses_writes(store: tuple[Path, list[str]]) -> None:
    from evstore.events import TagSet
    from evstore.rebuild import rebuild

    path, ids = store
    before = path.read_bytes()
    log = open_log(path, read_only=True, create=False)
    try:
        assert log.read_only
        assert [e.stream_id for e in log.read_stream(ids[0])] == [ids[0]] * len(log.read_stream(ids[0]))
        assert verify(log).ok
        with pytest.raises(StoreError, match="is open read-only"):
            log.append(ids[0], [TagSet(key="k", value="v")])
        with pytest.raises(StoreError, match="is open read-only: a rebuild writes"):
            rebuild(log)
    finally:
        log.close()
    assert path.read_bytes() == before
    assert not Path(f"{path}.rebuild-lock").exists()


def test_a_store_this_user_cannot_write_is_read_and_verified(store: tuple[Path, list[str]]) -> None:
    path, ids = store
    head = head_of(path)
    for args in (["runs"], ["show", ids[0]], ["history", ids[0]], ["verify"], ["info"], ["experiments"]):
        done = run_cli(*args, "--store", str(path), read_only=True)
        assert done.returncode == 0, (args, done.stderr)
    assert ids[0] in run_cli("runs", "--store", str(path), read_only=True).stdout
    one_line_error(run_cli("rebuild", "--store", str(path), read_only=True), "is open read-only")
    assert head_of(path) == head
    assert not Path(f"{path}.rebuild-lock").exists()


def test_read_only_in_a_folder_nobody_may_write(store: tuple[Path, list[str]]) -> None:
    # The opener's immutable path: a WAL store without its -shm file in such a folder.
    from evstore.stores import sqlite as sqlite_store

    path, _ids = store
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    real_access = os.access
    folder = str(path.parent)

    def access(target: str | os.PathLike[str], mode: int) -> bool:
        if mode == os.W_OK and os.path.abspath(target) in (folder, str(path)):
            return False
        return real_access(target, mode)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_store.os, "access", access)
        log = open_log(path, create=False)
        try:
            assert log.read_only and verify(log).ok
        finally:
            log.close()
    assert not Path(f"{path}-shm").exists()


def damaged_copy(path: Path) -> Path:
    """A copy of the store with the first page of its log overwritten: every command
    that reads the log meets the damage (a page of a read model would not stop verify)."""
    copy = path.with_name("damaged.db")
    shutil.copyfile(path, copy)
    with closing(sqlite3.connect(copy)) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    assert root > 1
    with open(copy, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    return copy


@pytest.mark.parametrize("args", [["verify"], ["rebuild"], ["log"], ["info"]])
def test_a_damaged_file_is_one_line_naming_it_and_verify(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "demo.db"
    assert run_cli("demo", "--store", str(path)).returncode == 0
    copy = damaged_copy(path)
    done = run_cli(*args, "--store", str(copy))
    one_line_error(done, str(copy), "evstore verify", "damaged")
    assert not Path(f"{copy}.rebuild-lock").exists()


# --- 3. the runs table -----------------------------------------------------------------------


def test_run_ids_are_whole_and_a_narrow_terminal_gets_one_block_per_run(store: tuple[Path, list[str]]) -> None:
    path, ids = store
    narrow = run_cli("runs", "--store", str(path), columns=60)
    assert narrow.returncode == 0, narrow.stderr
    for run_id in ids:
        assert f"run_id      {run_id}" in narrow.stdout
    assert "…" not in narrow.stdout
    assert "lr=0.001" in narrow.stdout and "acc=0.9" in narrow.stdout
    wide = run_cli("runs", "--store", str(path), columns=250)
    assert wide.stdout.splitlines()[0].split() == [
        "run_id", "experiment", "name", "status", "started", "metrics", "params"]  # fmt: skip
    assert all(run_id in wide.stdout for run_id in ids) and "…" not in wide.stdout


def test_columns_picks_params_metrics_and_tags(store: tuple[Path, list[str]]) -> None:
    path, ids = store
    done = run_cli("runs", "--store", str(path), "--columns", "params.lr,metrics.acc,tags.mlflow.runName",
                   "--order-by", "metrics.acc DESC")  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["run_id", "params.lr", "metrics.acc", "tags.mlflow.runName"]
    assert [row.split() for row in rows] == [
        [ids[2], "0.001", "0.9", "lr-0.001"], [ids[1], "0.01", "0.8", "lr-0.01"],
        [ids[0], "0.1", "0.7", "lr-0.1"]]  # fmt: skip
    one_line_error(run_cli("runs", "--store", str(path), "--columns", "lr"), "--columns: 'lr'")


# --- 6. --as-of, times, --version ---------------------------------------------------------------


def test_as_of_takes_a_position_an_iso_time_or_epoch_ms(store: tuple[Path, list[str]]) -> None:
    import json

    path, ids = store
    log = open_log(path, create=False)
    events = log.read_stream(ids[0])
    log.close()
    started = events[0]  # RunStarted alone: no params yet
    cases = {
        str(started.position): started,
        f"ms:{started.recorded_at}": started,
        datetime.fromtimestamp(started.recorded_at / 1000, tz=UTC).isoformat(): started,
    }
    for text in cases:
        done = run_cli("show", ids[0], "--store", str(path), "--as-of", text)
        assert done.returncode == 0, (text, done.stderr)
        assert json.loads(done.stdout)["info"]["run_id"] == ids[0]
    by_position = json.loads(run_cli("show", ids[0], "--store", str(path), "--as-of",
                                     str(started.position)).stdout)  # fmt: skip
    assert by_position["data"]["params"] == {}
    head = head_of(path)
    one_line_error(run_cli("show", ids[0], "--store", str(path), "--as-of", str(head + 1)),
                   f"as_of position {head + 1} is past the head of the log ({head})")  # fmt: skip
    one_line_error(run_cli("show", ids[0], "--store", str(path), "--as-of", "ms:x"), "ms:EPOCH_MS")
    shown = CliRunner().invoke(app, ["show", "--help"], env={"COLUMNS": "200"})
    assert "ms:" in shown.output and "ISO 8601" in shown.output


def test_history_prints_iso_times_with_the_zone(store: tuple[Path, list[str]]) -> None:
    path, ids = store
    done = run_cli("history", ids[0], "--store", str(path))
    assert done.returncode == 0, done.stderr
    log = open_log(path, create=False)
    first = log.read_stream(ids[0])[0]
    log.close()
    expected = datetime.fromtimestamp(first.recorded_at / 1000, tz=UTC).astimezone()
    assert expected.isoformat(timespec="milliseconds") in done.stdout.splitlines()[1]


def test_version() -> None:
    from evstore import __version__

    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout == f"evstore {__version__}\n"


# --- 5. interrupts and a killed rebuild --------------------------------------------------------


def test_ctrl_c_in_rebuild_says_the_state_and_how_to_resume(
    store: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evstore import rebuild as rebuild_module

    path, _ids = store
    real = rebuild_module.rebuild

    def interrupted(log: object, names: object, *, progress: object = None) -> object:
        def stop(done: int, total: int) -> None:
            raise KeyboardInterrupt

        return real(log, names, progress=stop, chunk=2)  # type: ignore[arg-type]

    monkeypatch.setattr(rebuild_module, "rebuild", interrupted)
    done = CliRunner().invoke(app, ["rebuild", "--store", str(path)])
    assert done.exit_code == 130, done.output
    assert "interrupted" in done.output and f"evstore rebuild --store {path}" in done.output
    log = open_log(path, create=False)
    try:
        assert not [n for (n,) in log.query("SELECT name FROM sqlite_master WHERE type = 'table'") if "__b" in n]
    finally:
        log.close()
    assert not Path(f"{path}.rebuild-lock").exists()


def test_ctrl_c_in_import_says_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evstore.importers import mlflow_import

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mlflow_import, "import_mlflow", interrupted)
    done = CliRunner().invoke(app, ["import", "mlflow", "mlruns", "--store", str(tmp_path / "x.db")])
    assert done.exit_code == 130
    assert "imported so far is kept" in done.output and "again to resume" in done.output


KILLED_REBUILD = """
import os, sys
from evstore.rebuild import rebuild
from evstore.stores import open_log

def die(done, total):
    os._exit(9)  # killed midway: no cleanup runs

rebuild(open_log(sys.argv[1]), progress=die, chunk=10)
"""


def test_a_killed_rebuild_is_reported_by_info_and_cleaned_by_the_next(store: tuple[Path, list[str]]) -> None:
    path, _ids = store
    client = Client(str(path))
    run_id = client.create_run(client.create_experiment("big")).info.run_id
    client.log_batch(run_id, metrics=[Metric(f"m{i}", float(i), 1, i) for i in range(1000)])
    forget(path)
    killed = subprocess.run([sys.executable, "-c", KILLED_REBUILD, str(path)], check=False, timeout=120)
    assert killed.returncode == 9
    assert Path(f"{path}.rebuild-lock").exists()

    info = run_cli("info", "--store", str(path))
    assert info.returncode == 0, info.stderr
    line = next(x for x in info.stdout.splitlines() if x.startswith("rebuild_leftovers"))
    assert "lock file" in line and "shadow table" in line and "evstore rebuild" in line

    size = path.stat().st_size
    done = run_cli("rebuild", "--store", str(path))
    assert done.returncode == 0, done.stderr
    assert "bytes of free pages returned" in done.stdout
    assert not Path(f"{path}.rebuild-lock").exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert not [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") if "__b" in n]
    finally:
        conn.close()
    assert path.stat().st_size <= size
    assert "rebuild_leftovers" not in run_cli("info", "--store", str(path)).stdout


# --- 7. the importer's report -------------------------------------------------------------------


def test_a_missing_artifacts_root_is_an_error_before_anything_is_written(tmp_path: Path) -> None:
    source = f"sqlite:///{FIXTURES / 'mlflow-3.17-sqlite' / 'mlflow.db'}"
    done = run_cli("import", "mlflow", source, "--store", "x.db", "--artifacts-root", "gone", cwd=tmp_path)
    one_line_error(done, "gone is not a directory")
    assert os.listdir(tmp_path) == []


def test_the_import_says_what_it_could_not_import_without_a_line_per_run(tmp_path: Path) -> None:
    source = tmp_path / "mlflow.db"
    shutil.copyfile(FIXTURES / "mlflow-3.17-sqlite" / "mlflow.db", source)
    conn = sqlite3.connect(source)
    with conn:
        run_id, experiment_id = conn.execute("SELECT run_uuid, experiment_id FROM runs LIMIT 1").fetchone()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(logged_models)")]
        conn.execute(f"INSERT INTO logged_models ({', '.join(columns)}) VALUES"
                     f" ({', '.join('?' * len(columns))})",
                     [{"model_id": "m-1", "experiment_id": experiment_id, "name": "model",
                       "status": 1, "lifecycle_stage": "active", "creation_timestamp_ms": 1,
                       "last_updated_timestamp_ms": 1}.get(c, "x") for c in columns])  # fmt: skip
        conn.execute("INSERT INTO inputs (input_uuid, source_type, source_id, destination_type,"
                     " destination_id) VALUES ('i1', 'DATASET', 'd1', 'RUN', ?)", (run_id,))  # fmt: skip
        # one point of the run linked to two logged models: evstore keeps one link per point
        for model_id in ("m-1", "m-2"):
            conn.execute("INSERT INTO logged_model_metrics VALUES (?, 'loss', 1, 0, 0.5, ?, ?, NULL, NULL, NULL)",
                         (model_id, experiment_id, run_id))  # fmt: skip
    conn.close()
    done = run_cli("import", "mlflow", f"sqlite:///{source}", "--store", "x.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("imported from")
    assert "14 runs have no artifact folder: runs that never logged an artifact; if some did," \
           " pass --artifacts-root" in lines  # fmt: skip
    assert ", 1 logged models, 0 dataset inputs," in lines[0]
    assert "not imported (evstore does not track them): 1 metric links to a second logged model" in lines
    assert f"skipped run {run_id} dataset input d1: MLflow's datasets table has no dataset d1" in lines
    assert not [line for line in lines if "artifact location" in line]
    assert len(lines) == 4
