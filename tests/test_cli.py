"""The runs CLI: help with examples on every command, user errors as one line, the read commands."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cli_here import run_here
from typer.testing import CliRunner

from evstore import Client, Metric, Param
from evstore.cli import app
from evstore.tracking import service as client_module

EVSTORE = os.path.join(os.path.dirname(sys.executable), "evstore")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS`` in this process (``cli_here``), with a wide terminal and no tracking URI set."""
    return run_here(*args, cwd=cwd)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A store with an experiment 'sweep' of three runs; (path, {name: run_id})."""
    path = str(tmp_path / "evstore.db")
    client = Client(path)
    experiment_id = client.create_experiment("sweep")
    ids = {}
    for index, lr in enumerate(["0.1", "0.01", "0.001"]):
        run_id = client.create_run(experiment_id, run_name=f"lr-{lr}", start_time=1000 + index).info.run_id
        client.log_batch(run_id, metrics=[Metric("acc", 0.7 + index / 10, 1, 0)], params=[Param("lr", lr)])
        ids[f"lr-{lr}"] = run_id
    yield path, ids
    for cached in [p for p in client_module._stores if p.startswith(str(tmp_path))]:
        runner = client_module._stores.pop(cached)
        runner.detach()
        runner.store.close()


# --- help ---------------------------------------------------------------------------------


def _commands() -> dict[str, object]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_tracking_commands_are_registered() -> None:
    assert {"experiments", "runs", "show", "history", "export", "demo", "verify"} <= set(_commands())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = _commands()[name]
    assert command.help and command.help.strip()  # type: ignore[attr-defined]
    assert "Example" in command.help  # type: ignore[attr-defined]
    shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "Example" in shown.output and f"evstore {name}" in shown.output


# --- user errors: one line on stderr, non-zero exit, no traceback --------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "--store", "postgres://nobody@127.0.0.1:1/x"], "cannot connect to postgresql://nobody@127.0.0.1:1/x"),
        (["runs", "--store", "mysql://db/x"], "unsupported store URI scheme 'mysql'"),
        (["runs", "--store", "sqlite://x.db"], "use sqlite:///path"),
        (["experiments", "--store", "/no/such/dir/x.db"], "no such directory"),
        (["runs", "--store", "typo.db"], "no store at typo.db"),
        (["show", "RUN", "--as-of", "999999"], "as_of position 999999 is past the head"),
        (["show", "0" * 32], f"Run with id={'0' * 32} not found"),
        (["history", "abc"], "Run with id=abc not found"),
        (["show", "RUN", "--as-of", "yesterday"], "--as-of takes a position, an ISO date/time or ms:EPOCH_MS"),
        (["runs", "--format", "xml"], "unknown format 'xml'"),
        (["runs", "--experiment", "nope"], "nope"),
        (["runs", "--max", "0"], "max_results"),
        (["export", "params", "out.parquet"], "export runs or metrics"),
        (["redact", "--position", "1", "--reason", "r", "--wait", "nan"], "--wait must be between 0 and 3600, not nan"),
        (["redact", "--position", "1", "--reason", "r", "--wait", "-1"], "--wait must be between 0 and 3600"),
    ],
)
def test_user_errors_are_one_line(
    store: tuple[str, dict[str, str]], tmp_path: Path, args: list[str], message: str
) -> None:
    path, ids = store
    args = [ids["lr-0.1"] if a == "RUN" else a for a in args]
    if "--store" not in args:
        args += ["--store", path]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert done.stdout == ""


def test_a_file_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not sqlite at all\n" * 100)
    done = run_cli("runs", "--store", str(tmp_path / "notes.db"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'notes.db'} is not an evstore store: file is not a database"
    ]


def test_a_bad_filter_points_at_the_offending_position(store: tuple[str, dict[str, str]]) -> None:
    path, _ids = store
    text = "params.lr = '0.1' and metrics.acc >> 1"
    done = run_cli("runs", "--store", path, "--filter", text)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    error, shown, caret = done.stderr.splitlines()
    assert error.startswith("error: ")
    assert shown.strip() == text
    offset = shown.index(text)
    assert caret.rstrip().endswith("^") and set(caret.strip()) == {"^"}
    assert caret.index("^") - offset == text.index(">>") + 1  # the second '>'


# --- the read commands ----------------------------------------------------------------------


def test_experiments_lists_them(store: tuple[str, dict[str, str]]) -> None:
    path, _ids = store
    done = run_cli("experiments", "--store", path)
    assert done.returncode == 0, done.stderr
    assert "sweep" in done.stdout and "Default" in done.stdout


def test_runs_formats(store: tuple[str, dict[str, str]]) -> None:
    path, ids = store
    as_json = run_cli("runs", "--store", path, "--format", "json", "--filter", "metrics.acc > 0.75",
                      "--order-by", "metrics.acc DESC")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    runs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["info"]["run_id"] for r in runs] == [ids["lr-0.001"], ids["lr-0.01"]]
    assert runs[0]["data"]["params"] == {"lr": "0.001"}
    as_csv = run_cli("runs", "--store", path, "--format", "csv", "--experiment", "sweep", "--max", "2")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 2 and {"run_id", "params.lr", "metrics.acc"} <= set(rows[0])
    as_table = run_cli("runs", "--store", path)
    assert as_table.returncode == 0, as_table.stderr
    for run_id in ids.values():
        assert run_id in as_table.stdout


def test_show_and_show_as_of(store: tuple[str, dict[str, str]]) -> None:
    path, ids = store
    run_id = ids["lr-0.1"]
    client = Client(path)
    position = client.store.head_position()
    client.set_tag(run_id, "later", "yes")
    now = run_cli("show", run_id, "--store", path)
    assert now.returncode == 0, now.stderr
    shown = json.loads(now.stdout)
    assert shown["info"]["run_id"] == run_id and shown["data"]["tags"]["later"] == "yes"
    before = run_cli("show", run_id, "--store", path, "--as-of", str(position))
    assert before.returncode == 0, before.stderr
    assert "later" not in json.loads(before.stdout)["data"]["tags"]


def test_demo_logs_and_shows_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "demo.db")
    done = run_cli("demo", "--store", path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "== runs" in out and "== audit trail" in out and "== evstore verify ==" in out
    assert "\nok: " in out
    client = Client(path)
    try:
        seed = client.get_experiment_by_name("v2_migration_demo")
        sweep = client.get_experiment_by_name("sweep")
        assert seed is not None and sweep is not None
        assert len(client.search_runs([seed.experiment_id])) == 1
        sweep_runs = client.search_runs([sweep.experiment_id])
        assert len(sweep_runs) == 4  # the grid-search parent and three nested runs
        child = next(r for r in sweep_runs if "mlflow.parentRunId" in r.data.tags)
        assert len(client.get_metric_history(child.info.run_id, "loss")) == 20
    finally:
        runner = client_module._stores.pop(os.path.abspath(path))
        runner.detach()
        runner.store.close()
