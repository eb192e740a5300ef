"""`evstore export runs|metrics OUT --format parquet|csv|arrow [--filter]`, read back with pyarrow."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_here import run_here
from conftest import close_cached_stores

from evstore import Client, InvalidParameterValue, Metric, Param, RunTag
from evstore.export import export
from evstore.integrity import verify
from evstore.stores import open_log
from evstore.tracking import service as client_module

LOSSES = {"adam": [1.0, math.nan, 0.25, math.inf], "sgd": [2.0, 1.5], "rmsprop": [3.0]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A store with three runs (optimizers adam, sgd, rmsprop) and loss curves; their ids."""
    client = Client(str(tmp_path / "evstore.db"))
    experiment_id = client.create_experiment("sweep")
    ids = {}
    for index, (optimizer, losses) in enumerate(LOSSES.items()):
        run_id = client.create_run(experiment_id, run_name=optimizer, start_time=1000 + index).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("loss", value, 100 + step, step) for step, value in enumerate(losses)],
            params=[Param("optimizer", optimizer), Param("lr", str(0.1 / (index + 1)))],
            tags=[RunTag("kind", "grid")],
        )
        client.set_terminated(run_id)
        ids[optimizer] = run_id
    yield tmp_path / "evstore.db", ids
    close_cached_stores(tmp_path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS``, run in this process (``cli_here``)."""
    return run_here(*args)


def read_back(path: Path, fmt: str) -> Any:
    """The exported file as a pyarrow Table."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if fmt == "csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "arrow"])
def test_export_runs(store: tuple[Path, dict[str, str]], tmp_path: Path, fmt: str) -> None:
    db, ids = store
    out = tmp_path / f"runs.{fmt}"
    done = run_cli("export", "runs", str(out), "--format", fmt, "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 3 rows to {out}"
    table = read_back(out, fmt)
    assert table.num_rows == 3
    columns = set(table.column_names)
    assert {"run_id", "experiment_id", "run_name", "status", "start_time", "lifecycle_stage"} <= columns
    assert {"params.optimizer", "params.lr", "metrics.loss", "tags.kind"} <= columns
    rows = {row["run_id"]: row for row in table.to_pylist()}
    assert set(rows) == set(ids.values())
    adam, sgd, rmsprop = rows[ids["adam"]], rows[ids["sgd"]], rows[ids["rmsprop"]]
    assert (adam["params.optimizer"], adam["status"], adam["tags.kind"]) == ("adam", "FINISHED", "grid")
    assert adam["metrics.loss"] == math.inf  # the latest point: step 3
    assert sgd["metrics.loss"] == 1.5 and rmsprop["metrics.loss"] == 3.0
    assert sgd["start_time"] == 1001


@pytest.mark.parametrize("fmt", ["parquet", "csv", "arrow"])
def test_export_metrics_with_a_filter(store: tuple[Path, dict[str, str]], tmp_path: Path, fmt: str) -> None:
    db, ids = store
    out = tmp_path / f"metrics.{fmt}"
    done = run_cli(
        "export", "metrics", str(out), "--format", fmt, "--store", str(db),
        "--filter", "params.optimizer != 'rmsprop'",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = read_back(out, fmt)
    assert table.column_names == ["run_id", "key", "value", "step", "timestamp"]
    assert table.num_rows == len(LOSSES["adam"]) + len(LOSSES["sgd"])
    rows = table.to_pylist()
    assert {row["run_id"] for row in rows} == {ids["adam"], ids["sgd"]}
    adam = [row for row in rows if row["run_id"] == ids["adam"]]
    assert [(r["key"], r["step"], r["timestamp"]) for r in adam] == [
        ("loss", step, 100 + step) for step in range(4)
    ]
    values = [r["value"] for r in adam]
    assert values[0] == 1.0 and values[2] == 0.25 and values[3] == math.inf
    if fmt == "csv":
        assert values[1] is None or math.isnan(values[1])  # CSV readers take "nan" as null
    else:
        assert values[1] is not None and math.isnan(values[1])  # NaN stays NaN, not null


def test_export_leaves_deleted_runs_out_unless_asked(store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    # As MLflow's search_runs and `evstore runs`: active runs by default; --view to choose.
    db, ids = store
    Client(str(db)).delete_run(ids["sgd"])
    exported = {}
    for view in ("active", "deleted", "all"):
        for what in ("runs", "metrics"):
            out = tmp_path / f"{what}-{view}.parquet"
            args = ["export", what, str(out), "--store", str(db)]
            done = run_cli(*args, *(["--view", view] if view != "active" else []))
            assert done.returncode == 0, done.stderr
            exported[what, view] = {row["run_id"] for row in read_back(out, "parquet").to_pylist()}
    for what in ("runs", "metrics"):
        assert exported[what, "active"] == {ids["adam"], ids["rmsprop"]}
        assert exported[what, "deleted"] == {ids["sgd"]}
        assert exported[what, "all"] == set(ids.values())
    missing = tmp_path / "typo.db"
    for command in (["export", "runs", str(tmp_path / "x.csv")], ["runs"]):
        done = run_cli(*command, "--store", str(missing), "--view", "gone")
        assert done.returncode != 0 and "--view must be active, deleted or all" in done.stderr
        assert "Traceback" not in done.stderr
        assert not missing.exists() and not (tmp_path / "x.csv").exists()  # nothing created
    listed = run_cli("runs", "--store", str(db), "--view", "DELETED", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["info"]["run_id"] for line in listed.stdout.splitlines()] == [ids["sgd"]]


def test_export_parquet_keeps_nan_distinct_from_null(store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    db, _ids = store
    out = tmp_path / "m.parquet"
    assert export(Client(str(db)), "metrics", str(out), "parquet") == 7
    values = pq.read_table(out).column("value")
    assert values.null_count == 0
    assert pc.sum(pc.is_nan(values)).as_py() == 1


def test_large_metric_export_streams_in_batches(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    client = Client(str(tmp_path / "big.db"))
    try:
        run_id = client.create_run("0").info.run_id
        for start in range(0, 5000, 1000):
            client.log_batch(run_id, metrics=[Metric("x", float(i), i, i) for i in range(start, start + 1000)])
        out = tmp_path / "big.parquet"
        assert export(client, "metrics", str(out), "parquet", batch_size=1000) == 5000
        parquet = pq.ParquetFile(out)
        assert parquet.metadata.num_row_groups == 5  # written batch by batch
        assert parquet.read().column("step").to_pylist() == list(range(5000))
    finally:
        runner = client_module._stores.pop(os.path.abspath(tmp_path / "big.db"))
        runner.detach()
        runner.store.close()


def test_export_errors(store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    db, _ids = store
    client = Client(str(db))
    with pytest.raises(InvalidParameterValue, match="runs or metrics"):
        export(client, "params", str(tmp_path / "x.parquet"), "parquet")
    with pytest.raises(InvalidParameterValue, match="xlsx"):
        export(client, "runs", str(tmp_path / "x.xlsx"), "xlsx")
    with pytest.raises(InvalidParameterValue, match="no such directory"):
        export(client, "runs", str(tmp_path / "missing" / "x.parquet"), "parquet")
    done = run_cli("export", "runs", str(tmp_path / "x.parquet"), "--store", str(db),
                   "--filter", "params.optimizer = ")  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "^" in done.stderr


def test_export_never_overwrites_the_store_or_any_database(
    store: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    # `evstore export runs evstore.db` (OUT and --store mixed up) used to write the
    # parquet over the store itself.
    db, _ids = store
    with open_log(db) as log:
        before = (log.head_position(), log.head_hash())
    other = tmp_path / "other.db"
    other.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    for out, says in ((db, "is the store itself"), (Path(f"{db}-wal"), "is the store itself"),
                      (other, "belongs to a SQLite database"), (tmp_path, "it is a directory")):  # fmt: skip
        for fmt in ("parquet", "csv"):
            done = run_cli("export", "runs", str(out), "--format", fmt, "--store", str(db))
            assert done.returncode != 0 and says in done.stderr, (out, done.stderr)
            assert "Traceback" not in done.stderr
    assert other.read_bytes()[:16] == b"SQLite format 3\x00"
    with open_log(db) as log:
        assert verify(log).ok and (log.head_position(), log.head_hash()) == before


def test_a_failed_export_leaves_the_previous_file_and_no_partial_one(
    store: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evstore.export as export_module

    db, _ids = store
    out = tmp_path / "runs.csv"
    out.write_text("an earlier export\n")
    client = Client(str(db))
    with pytest.raises(InvalidParameterValue, match="unknown export format"):
        export(client, "runs", str(out), "xlsx")

    def disk_full(*_args: Any, **_kwargs: Any) -> Iterator[Any]:
        raise OSError(28, "No space left on device")
        yield  # a generator, as the real one

    with monkeypatch.context() as patch:
        patch.setattr(export_module, "_metric_batches", disk_full)
        with pytest.raises(InvalidParameterValue, match="cannot write .*No space left on device"):
            export(client, "metrics", str(out), "csv")
    assert out.read_text() == "an earlier export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    assert export(client, "metrics", str(out), "csv") == 7
    assert out.read_text().startswith("\"run_id\"")


def test_export_writes_into_a_pipe_and_keeps_a_file_s_permissions(
    store: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    # Renaming a temporary file over a pipe (or /dev/stdout, or a device) would replace it.
    import stat
    import threading

    db, _ids = store
    client = Client(str(db))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert export(client, "runs", str(fifo), "csv") == 3
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received[0].startswith(b'"run_id"')
    private = tmp_path / "private.csv"
    private.write_text("old")
    private.chmod(0o600)
    assert export(client, "runs", str(private), "csv") == 3
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() != "old"


def test_export_never_writes_over_another_database_s_wal(
    store: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    db, _ids = store
    other = tmp_path / "other.db"
    other.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    wal = tmp_path / "other.db-wal"
    wal.write_bytes(b"\x37\x7f\x06\x82" + b"\x00" * 60)
    with pytest.raises(InvalidParameterValue, match="belongs to a SQLite database"):
        export(Client(str(db)), "runs", str(wal), "csv")
    assert wal.read_bytes()[:4] == b"\x37\x7f\x06\x82"
