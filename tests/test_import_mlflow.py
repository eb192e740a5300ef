"""`evstore import mlflow` against real MLflow stores (tests/fixtures/mlflow/).

Each fixture's ``manifest.json`` is what MLflow's own client read back from the store.
The store is imported the way a user would (the ``evstore`` command, as its own process),
then everything in the manifest is compared, field by field, with what ``evstore.Client``
returns. Then: a re-import adds nothing, an import killed midway and resumed ends
identical to a clean one, an unknown schema revision is refused, and ``evstore history``
shows MLflow's own times.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cli_here import run_here
from conftest import close_cached_stores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import PATIENCE, Lines

from evstore import Client
from evstore.entities import ViewType
from evstore.importers import FILE_STORE_REVISION, KNOWN_REVISIONS, mlflow_import
from evstore.importers.mlflow_import import import_mlflow
from evstore.integrity import verify
from evstore.stores import open_log
from evstore.tracking import service as client_module

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "mlflow"
FOLDERS = ["mlflow-3.17-sqlite", "mlflow-3.17-file", "mlflow-2.22-sqlite"]
SUMMARY = re.compile(
    r"imported from (?P<source>\S+) \(schema (?P<revision>[^)]+)\): (?P<experiments>\d+)"
    r" experiments, (?P<runs>\d+) runs, (?P<metric_points>\d+) metric points, (?P<params>\d+)"
    r" params, (?P<tags>\d+) tags, (?P<artifacts>\d+) artifacts, (?P<logged_models>\d+) logged"
    r" models, (?P<dataset_inputs>\d+) dataset inputs, (?P<model_inputs>\d+) model inputs,"
    r" (?P<model_outputs>\d+) model outputs, (?P<registered_models>\d+) registered models,"
    r" (?P<model_versions>\d+) model versions, (?P<model_aliases>\d+) aliases;"
    r" (?P<new_events>\d+) new events"
)
MANIFEST_VALUES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# --- helpers ---------------------------------------------------------------------------


def manifest(folder: str) -> dict[str, Any]:
    """The fixture's ground truth, as MLflow's client read it back."""
    return json.loads((FIXTURES / folder / "manifest.json").read_text(encoding="utf-8"))


def source_for(folder: str, form: str = "native") -> str:
    """The SOURCE argument for a fixture: sqlite:///abs for SQL, the mlruns dir or a file: URI."""
    path = FIXTURES / folder / manifest(folder)["tracking_uri_relative"]
    if manifest(folder)["backend"] == "sqlite":
        return f"sqlite:///{path}"
    return path.as_uri() if form == "file-uri" else str(path)


def source_uri(folder: str) -> str:
    """The absolute URI the importer records as provenance for a fixture."""
    path = FIXTURES / folder / manifest(folder)["tracking_uri_relative"]
    return f"sqlite:///{path}" if manifest(folder)["backend"] == "sqlite" else path.as_uri()


def cli_env() -> dict[str, str]:
    """The environment of an ``evstore`` process: no store or artifact root from outside."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("EVSTORE_TRACKING_URI", "EVSTORE_ARTIFACT_ROOT")}  # fmt: skip
    env["COLUMNS"] = "250"
    return env


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS`` through its entry point in this process (``cli_here``), with no
    artifact root from outside (the killed-import test runs its own process)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("EVSTORE_ARTIFACT_ROOT", raising=False)
        return run_here(*args, cwd=cwd)


def import_cli(source: str, store: Path, artifacts_root: Path | None, cwd: Path) -> dict[str, Any]:
    """Run ``evstore import mlflow`` and return its parsed summary (and the skipped lines)."""
    args = ["import", "mlflow", source, "--store", str(store)]
    if artifacts_root is not None:
        args += ["--artifacts-root", str(artifacts_root)]
    done = run_cli(*args, cwd=cwd)
    assert done.returncode == 0, f"import failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    match = SUMMARY.search(done.stdout)
    assert match, f"no summary line in:\n{done.stdout}"
    summary: dict[str, Any] = {
        k: (int(v) if v.isdigit() else v) for k, v in match.groupdict().items()
    }
    summary["skipped"] = [line for line in done.stdout.splitlines() if line.startswith("skipped ")]
    return summary


def head_of(store_path: Path) -> int:
    """The target store's head position, read with plain sqlite3 (0 if nothing yet)."""
    if not store_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    except sqlite3.OperationalError:  # the file is being created: no events table yet
        return 0
    finally:
        conn.close()


def fixture_snapshot(folder: str) -> list[tuple[str, int, int]]:
    """Every file of a fixture folder with size and mtime: the import must not touch it."""
    found = []
    for path in sorted((FIXTURES / folder).rglob("*")):
        stat = path.stat()
        found.append((str(path.relative_to(FIXTURES)), stat.st_size, stat.st_mtime_ns))
    return found


def load_bench() -> ModuleType:
    """benchmarks/bench_import.py, whose builder writes big MLflow stores with raw SQL."""
    spec = importlib.util.spec_from_file_location("bench_import", ROOT / "benchmarks" / "bench_import.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No store or artifact root from the environment; close the stores this test opened."""
    monkeypatch.delenv("EVSTORE_TRACKING_URI", raising=False)
    monkeypatch.delenv("EVSTORE_ARTIFACT_ROOT", raising=False)
    yield
    close_cached_stores(tmp_path)


# --- comparing a store with a manifest ---------------------------------------------------


def expected_value(value: Any) -> float:
    """A manifest metric value: a number, or "NaN" / "Infinity" / "-Infinity"."""
    return MANIFEST_VALUES[value] if isinstance(value, str) else float(value)


def same_float(a: float, b: float) -> bool:
    """Equal to the bit, or both NaN (values must come over exactly, not approximately)."""
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """Two {key: value} dicts with the same keys and the same floats (NaN equals NaN)."""
    return a.keys() == b.keys() and all(same_float(a[k], b[k]) for k in a)


class Mismatches(list[str]):
    """Every difference found, each naming where, the field and both values."""

    def check(self, where: str, field: str, expected: Any, actual: Any, same: bool | None = None) -> None:
        if not (expected == actual if same is None else same):
            self.append(f"{where}: {field}: manifest {expected!r} != evstore {actual!r}")


def all_artifacts(client: Client, run_id: str, path: str | None = None) -> dict[str, int | None]:
    """Every artifact file of a run (list_artifacts walked recursively): path -> size."""
    found: dict[str, int | None] = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found.update(all_artifacts(client, run_id, info.path))
        else:
            found[info.path] = info.file_size
    return found


def compare_run(client: Client, experiment_id: str, expected: dict[str, Any],
                download_dir: Path, out: Mismatches) -> None:  # fmt: skip
    """One run of the manifest against Client.get_run, its histories and its artifacts."""
    run_id = expected["run_id"]
    where = f"run {run_id} ({expected['run_name']})"
    run = client.get_run(run_id)  # works for deleted runs too
    info, data = run.info, run.data
    out.check(where, "run_id", run_id, info.run_id)
    out.check(where, "experiment_id", experiment_id, info.experiment_id)
    for field in ("run_name", "status", "lifecycle_stage", "start_time", "end_time", "user_id"):
        out.check(where, field, expected[field], getattr(info, field))
    out.check(where, "params", expected["params"], data.params)
    out.check(where, "tags", expected["tags"], data.tags)
    latest = {k: expected_value(v) for k, v in expected["latest_metrics"].items()}
    out.check(where, "latest_metrics", latest, data.metrics, same_metrics(latest, data.metrics))
    out.check(where, "metric keys", sorted(expected["metric_history"]), sorted(data.metrics))
    for key, points in expected["metric_history"].items():
        want = [(t, s, expected_value(v)) for t, s, v in points]
        got = [(m.timestamp, m.step, m.value) for m in client.get_metric_history(run_id, key)]
        if len(want) != len(got):
            out.append(f"{where}: metric_history[{key!r}]: manifest {len(want)} points"
                       f" != evstore {len(got)} points: {want!r} != {got!r}")  # fmt: skip
            continue
        for index, (w, g) in enumerate(zip(want, got)):
            same = w[:2] == g[:2] and same_float(w[2], g[2])
            out.check(where, f"metric_history[{key!r}][{index}] (timestamp, step, value)", w, g, same)
    want_files = {a["path"]: a["size"] for a in expected["artifacts"]}
    got_files = all_artifacts(client, run_id)
    out.check(where, "artifacts (path: size)", want_files, got_files)
    for artifact in expected["artifacts"]:
        path = artifact["path"]
        if path not in got_files:
            continue  # reported above
        out.check(where, f"artifact {path} recorded sha256", artifact["sha256"],
                  client.artifact_digest(run_id, path)[1])  # fmt: skip
        local = client.download_artifacts(run_id, path, str(download_dir / run_id))
        digest = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        out.check(where, f"artifact {path} sha256 of the downloaded bytes", artifact["sha256"], digest)


def compare_with_manifest(
    client: Client, folder: str, download_dir: Path, *, only_these: bool = True
) -> Mismatches:
    """Everything in the fixture's manifest against what the Client returns.

    ``only_these``: the store holds exactly the manifest's experiments (no others).
    """
    truth = manifest(folder)
    out = Mismatches()
    found = {e.experiment_id: e for e in client.search_experiments(ViewType.ALL)}
    if only_these:
        out.check("store", "experiment ids", sorted(e["experiment_id"] for e in truth["experiments"]),
                  sorted(found))  # fmt: skip
    for experiment in truth["experiments"]:
        experiment_id = experiment["experiment_id"]
        where = f"experiment {experiment_id} ({experiment['name']})"
        if experiment_id not in found:
            out.append(f"{where}: missing from evstore")
            continue
        got = found[experiment_id]
        for field in ("experiment_id", "name", "lifecycle_stage", "tags"):
            out.check(where, field, experiment[field], getattr(got, field))
        runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000)
        out.check(where, "run ids", sorted(r["run_id"] for r in experiment["runs"]),
                  sorted(r.info.run_id for r in runs))  # fmt: skip
        for run in experiment["runs"]:
            try:
                compare_run(client, experiment_id, run, download_dir, out)
            except Exception as e:  # noqa: BLE001 - an unreadable run is one more mismatch
                out.append(f"run {run['run_id']} ({run['run_name']}): cannot read it: {e!r}")
    return out


def expected_counts(folder: str) -> dict[str, int]:
    """What the import summary must count, from the manifest."""
    runs = [r for e in manifest(folder)["experiments"] for r in e["runs"]]
    return {
        "experiments": len(manifest(folder)["experiments"]),
        "runs": len(runs),
        "metric_points": sum(len(h) for r in runs for h in r["metric_history"].values()),
        "params": sum(len(r["params"]) for r in runs),
        "tags": sum(len(r["tags"]) for r in runs),
        "artifacts": sum(len(r["artifacts"]) for r in runs),
    }


def assert_no_mismatches(mismatches: list[str]) -> None:
    """Print every mismatch, then fail if there was any."""
    for line in mismatches:
        print(line)
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches)


# --- 1. every fixture, imported through the CLI, equals its manifest ----------------------

CASES = [
    pytest.param("mlflow-3.17-sqlite", "native", id="3.17-sqlite"),
    pytest.param("mlflow-3.17-file", "native", id="3.17-file-mlruns-dir"),
    pytest.param("mlflow-3.17-file", "file-uri", id="3.17-file-file-uri"),
    pytest.param("mlflow-2.22-sqlite", "native", id="2.22-sqlite"),
]


@pytest.mark.parametrize(("folder", "form"), CASES)
def test_import_equals_the_manifest(folder: str, form: str, tmp_path: Path) -> None:
    truth = manifest(folder)
    before = fixture_snapshot(folder)
    store = tmp_path / "evstore.db"

    # Import as a user would: the evstore command, artifacts found under the fixture folder.
    summary = import_cli(source_for(folder, form), store, FIXTURES / folder, cwd=tmp_path)

    # The summary counts what the manifest holds, names the source and MLflow's schema.
    counts = {k: summary[k] for k in expected_counts(folder)}
    assert counts == expected_counts(folder)
    assert summary["source"] == source_uri(folder)
    revision = summary["revision"]
    if truth["backend"] == "file":
        assert revision == FILE_STORE_REVISION
    else:
        assert truth["mlflow_version"].startswith(KNOWN_REVISIONS[revision].mlflow_version + ".")
    # A run may be reported as skipped only if MLflow itself lists no artifact for it.
    with_artifacts = {r["run_id"] for e in truth["experiments"] for r in e["runs"] if r["artifacts"]}
    for line in summary["skipped"]:
        assert not any(run_id in line for run_id in with_artifacts), line

    # Everything in the manifest, field by field, through the Client.
    client = Client(str(store))
    assert_no_mismatches(compare_with_manifest(client, folder, tmp_path / "downloads"))

    # Every event carries its provenance, and the log verifies.
    events = list(client.store.read_all())
    assert len({e.position for e in events}) == summary["new_events"] == client.store.head_position()
    for event in events:
        meta = event.metadata
        assert (meta["source_uri"], meta["mlflow_schema_revision"]) == (source_uri(folder), revision)
        assert isinstance(meta["imported_at"], int)
    assert verify(client.store).ok
    assert fixture_snapshot(folder) == before, "the import modified the fixture"


# --- 2. re-importing adds nothing ---------------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS)
def test_reimport_adds_zero_events(folder: str, tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    first = import_mlflow(str(store), source_for(folder), artifacts_root=str(FIXTURES / folder))
    log = open_log(store)
    head, head_hash = log.head_position(), log.head_hash()
    assert first.events_appended == head > 0

    # Again through the CLI, then again through the library: nothing new, the same head.
    again = import_cli(source_for(folder), store, FIXTURES / folder, cwd=tmp_path)
    assert again["new_events"] == 0
    assert {k: again[k] for k in expected_counts(folder)} == expected_counts(folder)
    third = import_mlflow(str(store), source_for(folder), artifacts_root=str(FIXTURES / folder))
    assert third.events_appended == 0
    assert (log.head_position(), log.head_hash()) == (head, head_hash)
    assert verify(log).ok
    log.close()


# --- 3. an import killed midway, resumed, ends as a clean one -----------------------------

KILL_RUNS, KILL_KEYS, KILL_STEPS = 30, 5, 1000  # 150,000 points in 30 runs


def projection_rows(store_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, sorted (the state a Client reads)."""
    # experiments.last_update_time included: imports set it from MLflow's times (creation,
    # deletion, restore), never from when evstore recorded the event.
    selects = {t: f"SELECT * FROM {t}" for t in ("experiments", "experiment_tags", "runs", "params",
                                                 "tags", "metric_series", "metric_chunks",
                                                 "metric_tail", "latest_metrics", "artifacts")}  # fmt: skip
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        rows = {}
        for table, sql in selects.items():
            width = len(conn.execute(f"{sql} LIMIT 0").description)
            order = ", ".join(str(column) for column in range(1, width + 1))
            rows[table] = conn.execute(f"{sql} ORDER BY {order}").fetchall()
        return rows
    finally:
        conn.close()


def stored_events(store_path: Path) -> list[tuple[Any, ...]]:
    """(position, stream, version, event id, type, type version, payload) of every event."""
    log = open_log(store_path)
    try:
        return [(r.position, r.stream_id, r.stream_version, r.event_id, r.type, r.version, r.payload)
                for batch in log.read_raw() for r in batch]  # fmt: skip
    finally:
        log.close()


# An import that stops once it has imported ``half`` metric points: it prints "half" and
# waits for a line on stdin (the test kills it there instead).
IMPORT_UNTIL_HALF = """
import sys
from evstore.importers.mlflow_import import import_mlflow
target, source, artifacts, half = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
points = 0
def progress(what, n):
    global points
    if what == "metric_points":
        points += n
        if points >= half:
            print("half", flush=True)
            sys.stdin.readline()
import_mlflow(target, source, artifacts_root=artifacts, progress=progress)
"""


def test_killed_import_resumes_without_duplicates(tmp_path: Path) -> None:
    folder = "mlflow-3.17-sqlite"
    # A bigger MLflow store: the fixture plus an experiment of 150,000 points (some NaN).
    source = tmp_path / "mlflow.db"
    shutil.copyfile(FIXTURES / folder / "mlflow.db", source)
    load_bench().add_experiment(source, runs=KILL_RUNS, keys=KILL_KEYS, steps=KILL_STEPS,
                                name="big", nan_every=997)  # fmt: skip
    uri, artifacts = f"sqlite:///{source}", FIXTURES / folder

    # The reference: a clean import into a fresh store.
    clean = tmp_path / "clean.db"
    reference = import_mlflow(str(clean), uri, artifacts_root=str(artifacts))
    assert reference.metric_points == expected_counts(folder)["metric_points"] + KILL_RUNS * KILL_KEYS * KILL_STEPS
    total = reference.events_appended

    # The same import as a process, SIGKILLed once half of its metric points are in: it
    # says so and waits there, between two appends, for the kill.
    store = tmp_path / "evstore.db"
    half = str(reference.metric_points // 2)
    with subprocess.Popen(
        [sys.executable, "-c", IMPORT_UNTIL_HALF, str(store), uri, str(artifacts), half],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=cli_env(), cwd=tmp_path,
    ) as process:  # fmt: skip
        try:
            assert Lines(process.stdout, "the import").next() == "half"
            process.send_signal(signal.SIGKILL)
            assert process.wait(PATIENCE) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
    killed_at = head_of(store)
    assert 0 < killed_at < total, (killed_at, total)

    # Resume: run it again. It completes, and only the missing events are added.
    resumed = import_cli(uri, store, artifacts, cwd=tmp_path)
    assert resumed["new_events"] == total - killed_at
    assert resumed["metric_points"] == reference.metric_points

    # No duplicates: the same events, ids and payloads at the same positions as the clean
    # import, the same read models, the manifest's runs intact, and the chain verifies.
    assert head_of(store) == total
    assert stored_events(store) == stored_events(clean)
    assert projection_rows(store) == projection_rows(clean)
    client = Client(str(store))
    assert_no_mismatches(compare_with_manifest(client, folder, tmp_path / "downloads", only_these=False))
    assert verify(client.store).ok


# --- 4. an unknown schema revision is refused ----------------------------------------------


def test_unknown_schema_revision_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "mlflow.db"
    shutil.copyfile(FIXTURES / "mlflow-3.17-sqlite" / "mlflow.db", source)
    conn = sqlite3.connect(source)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = 'deadbeef0000'")
    conn.close()
    store = tmp_path / "evstore.db"
    assert run_cli("init", "--store", str(store), cwd=tmp_path).returncode == 0
    before = head_of(store)  # init's Default experiment

    done = run_cli("import", "mlflow", f"sqlite:///{source}", "--store", str(store), cwd=tmp_path)

    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "'deadbeef0000'" in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert head_of(store) == before == 1


# --- 5. evstore history shows MLflow's own times ------------------------------------------

HISTORY_ROW = re.compile(r"^\s*(\d+)\s+(\d{4}-\d\d-\d\dT\S+)\s+(\w+)\s")


def shown(ms: int) -> str:
    """A time as ``evstore history`` prints it (ISO 8601, local time with its zone, ms)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone().isoformat(timespec="milliseconds")


def history_rows(store: Path, run_id: str, cwd: Path) -> list[tuple[int, str, str]]:
    """(position, time, type) of each row ``evstore history RUN`` prints."""
    done = run_cli("history", run_id, "--store", str(store), cwd=cwd)
    assert done.returncode == 0, done.stderr
    rows = [HISTORY_ROW.match(line) for line in done.stdout.splitlines()[1:] if line.strip()]
    assert all(rows), done.stdout
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in rows if m]


def test_history_shows_mlflow_times_in_order(tmp_path: Path) -> None:
    folder = "mlflow-3.17-sqlite"
    store = tmp_path / "evstore.db"
    import_mlflow(str(store), source_for(folder), artifacts_root=str(FIXTURES / folder))
    runs = {r["run_name"]: r for e in manifest(folder)["experiments"] for r in e["runs"]}

    # The seed run: started, then its metric, its artifact and its end, as MLflow timed them.
    seed = runs["powerful-crane-40"]
    rows = history_rows(store, seed["run_id"], tmp_path)
    start, end = shown(seed["start_time"]), shown(seed["end_time"])
    metric = shown(seed["metric_history"]["accuracy"][0][0])
    expected = ([(start, "RunStarted")] + [(start, "TagSet")] * len(seed["tags"])
                + [(start, "ParamsLogged"), (metric, "MetricsLogged"),
                   (end, "ArtifactRecorded"), (end, "RunStatusChanged")])  # fmt: skip
    assert [(time_, type_) for _, time_, type_ in rows] == expected
    assert [position for position, _, _ in rows] == sorted(position for position, _, _ in rows)
    assert [time_ for _, time_, _ in rows] == sorted(time_ for _, time_, _ in rows)

    # A deleted run whose metrics were logged with 2023 timestamps: those are shown, not
    # the import's time, and the deletion is last.
    old = runs["solo-5"]
    rows = history_rows(store, old["run_id"], tmp_path)
    by_type = {type_: time_ for _, time_, type_ in rows}
    assert by_type["RunStarted"] == shown(old["start_time"])
    assert by_type["MetricsLogged"] == shown(old["metric_history"]["score"][0][0])
    assert by_type["RunStatusChanged"] == shown(old["end_time"])
    assert rows[-1][2] == "RunDeleted"


# --- importing into a store that already has experiments ---------------------------------


def test_experiments_clashing_with_the_target_are_skipped_with_the_reason(tmp_path: Path) -> None:
    folder = "mlflow-3.17-sqlite"
    store = tmp_path / "evstore.db"
    # The target already has "Default" (id 0) and its own "sweep" (id 1): MLflow's
    # experiment 1 clashes by id, MLflow's "sweep" (id 2) by name.
    Client(str(store)).create_experiment("sweep")

    summary = import_cli(source_for(folder), store, FIXTURES / folder, cwd=tmp_path)

    assert "skipped experiment 1 (v2_migration_demo): the target store has another experiment" \
        " with this id" in summary["skipped"]
    assert "skipped experiment 2 (sweep): the target store's experiment 1 has this name" \
        in summary["skipped"]
    # The rest came over: Default joined, the deleted experiment 3 and its runs imported.
    assert (summary["experiments"], summary["runs"]) == (2, 2)
    client = Client(str(store))
    archived = next(e for e in manifest(folder)["experiments"] if e["experiment_id"] == "3")
    out = Mismatches()
    for run in archived["runs"]:
        compare_run(client, "3", run, tmp_path / "downloads", out)
    assert_no_mismatches(out)
    assert client.get_experiment("1").name == "sweep"
    assert verify(client.store).ok


# --- re-importing a source that changed since: the import is a sync ----------------------

SQLITE_317 = "mlflow-3.17-sqlite"
RUNNING_RUN = "f483a38ed8a844d4a56b7af7e8e578b4"  # solo-4, still RUNNING in the fixture
DELETED_RUN = "bee89077e67f479f8f234404acdac48a"  # solo-5, deleted in the fixture
FINISHED_RUN = "7ec98275baa043988240150f1bb818a6"  # solo-3
SEED_RUN = "7b91feda33124b34a02d53e2e4a7009a"  # powerful-crane-40, has an artifact
LATEST_BY_MLFLOW_RULE = (
    'INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid)'
    ' SELECT "key", value, timestamp, step, is_nan, run_uuid FROM (SELECT *, row_number()'
    ' OVER (PARTITION BY "key" ORDER BY step DESC, timestamp DESC, value DESC) AS rank'
    ' FROM metrics WHERE run_uuid = ? AND "key" = ?) WHERE rank = 1'
)


class _Crash(Exception):
    """Raised inside an append transaction: the import dies with that batch not stored."""


def mlflow_rows(source: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of the MLflow SQLite source, read directly."""
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def change_source(source: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Change the MLflow SQLite source the way MLflow would have (one transaction)."""
    conn = sqlite3.connect(source)
    with conn:
        for sql, params in statements:
            conn.execute(sql, params)
    conn.close()


def log_points(source: Path, run_id: str, points: list[tuple[str, float, int, int]]) -> None:
    """MLflow's log_batch on the source: (key, value, timestamp, step) rows, latest kept."""
    conn = sqlite3.connect(source)
    with conn:
        conn.executemany(  # MLflow ignores a point identical to a stored one
            'INSERT OR IGNORE INTO metrics ("key", value, timestamp, run_uuid, step, is_nan)'
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(k, 0.0 if math.isnan(v) else v, t, run_id, s, int(math.isnan(v))) for k, v, t, s in points],
        )
        for key in {k for k, _, _, _ in points}:
            conn.execute('DELETE FROM latest_metrics WHERE run_uuid = ? AND "key" = ?', (run_id, key))
            conn.execute(LATEST_BY_MLFLOW_RULE, (run_id, key))
    conn.close()


def imported_copy(tmp_path: Path, folder: str = SQLITE_317) -> tuple[Path, Path, Path]:
    """A copy of a SQLite fixture and its artifacts, imported once; (source, artifacts, store)."""
    source, artifacts, store = tmp_path / "mlflow.db", tmp_path / "artifacts", tmp_path / "evstore.db"
    shutil.copyfile(FIXTURES / folder / "mlflow.db", source)
    shutil.copytree(FIXTURES / folder / "mlartifacts", artifacts / "mlartifacts")
    import_mlflow(str(store), f"sqlite:///{source}", artifacts_root=str(artifacts))
    return source, artifacts, store


def sync(store: Path, source: Path, artifacts: Path | None = None) -> Any:
    """Import the (changed) source again; returns the summary."""
    return import_mlflow(str(store), f"sqlite:///{source}",
                         artifacts_root=None if artifacts is None else str(artifacts))  # fmt: skip


def history_key(point: tuple[int, int, float]) -> tuple[int, int, bool, float]:
    """A (timestamp, step, value) sort key where NaN sorts (and compares) as itself."""
    timestamp, step, value = point
    return (timestamp, step, math.isnan(value), 0.0 if math.isnan(value) else value)


def compare_with_source(client: Client, source: Path, evstore_keys: frozenset[str] = frozenset()) -> Mismatches:
    """Everything the MLflow SQLite source holds now against what the Client returns.

    Metric histories are compared as multisets (sorted the same way): evstore keeps the
    order points were logged in, and a point MLflow got late is imported late.
    ``evstore_keys``: metrics logged in evstore only, left out of the comparison.
    """
    out = Mismatches()
    for experiment_id, name, stage, updated in mlflow_rows(
        source, "SELECT experiment_id, name, lifecycle_stage, last_update_time FROM experiments"
    ):
        where, got = f"experiment {experiment_id}", client.get_experiment(str(experiment_id))
        tags = dict(mlflow_rows(source, 'SELECT "key", value FROM experiment_tags WHERE experiment_id = ?',
                                (experiment_id,)))  # fmt: skip
        out.check(where, "(name, lifecycle_stage, tags)", (name, stage, tags),
                  (got.name, got.lifecycle_stage, got.tags))  # fmt: skip
        if stage == "deleted":
            out.check(where, "last_update_time", updated, got.last_update_time)
    for run_id, status, end_time, stage in mlflow_rows(
        source, "SELECT run_uuid, status, end_time, lifecycle_stage FROM runs"
    ):
        where, run = f"run {run_id}", client.get_run(run_id)
        out.check(where, "(status, end_time, lifecycle_stage)", (status, end_time, stage),
                  (run.info.status, run.info.end_time, run.info.lifecycle_stage))  # fmt: skip
        for table, got in (("tags", run.data.tags), ("params", run.data.params)):
            want = dict(mlflow_rows(source, f'SELECT "key", value FROM {table} WHERE run_uuid = ?', (run_id,)))
            out.check(where, table, want, got)
        latest = {k: math.nan if nan else v for k, v, nan in mlflow_rows(
            source, 'SELECT "key", value, is_nan FROM latest_metrics WHERE run_uuid = ?', (run_id,))}  # fmt: skip
        got_latest = {k: v for k, v in run.data.metrics.items() if k not in evstore_keys}
        out.check(where, "latest_metrics", latest, got_latest, same_metrics(latest, got_latest))
        for (key,) in mlflow_rows(source, 'SELECT DISTINCT "key" FROM metrics WHERE run_uuid = ?', (run_id,)):
            want = sorted(((t, s, math.nan if nan else v) for t, s, v, nan in mlflow_rows(
                source, 'SELECT timestamp, step, value, is_nan FROM metrics WHERE run_uuid = ? AND "key" = ?',
                (run_id, key))), key=history_key)  # fmt: skip
            got_points = sorted(((m.timestamp, m.step, m.value) for m in client.get_metric_history(run_id, key)),
                                key=history_key)  # fmt: skip
            out.check(where, f"metric_history[{key!r}]", want, got_points,
                      [history_key(p) for p in want] == [history_key(p) for p in got_points])  # fmt: skip
    return out


def run_events(store: Path, run_id: str) -> list[Any]:
    """The events of a run's stream, decoded (RecordedEvent)."""
    log = open_log(store)
    try:
        return log.read_stream(run_id)
    finally:
        log.close()


def metric_batches_of(store: Path, run_id: str) -> list[int]:
    """The number of points in each imported MetricsLogged event of a run, in order."""
    return [len(r.event.points) for r in run_events(store, run_id)
            if r.type == "MetricsLogged" and "imported_at" in r.metadata]  # fmt: skip


def assert_in_sync(
    store: Path, source: Path, artifacts: Path | None = None, evstore_keys: frozenset[str] = frozenset()
) -> None:
    """The store equals the source now; importing again adds nothing; the log verifies."""
    client = Client(str(store))
    assert_no_mismatches(compare_with_source(client, source, evstore_keys))
    log = open_log(store)
    head = log.head_position()
    assert sync(store, source, artifacts).events_appended == 0
    assert log.head_position() == head
    assert verify(log).ok
    log.close()


def test_reimport_brings_points_logged_since(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    head = open_log(store).head_position()
    # MLflow logged one more point on the RUNNING run after the first import.
    log_points(source, RUNNING_RUN, [("score", 0.5, 1700000339600, 5)])

    summary = sync(store, source, artifacts)

    # Exactly that point came over, once, in one new event; the summary counts the source.
    assert summary.events_appended == 1 == open_log(store).head_position() - head
    assert summary.metric_points == expected_counts(SQLITE_317)["metric_points"] + 1
    history = [(m.timestamp, m.step, m.value) for m in Client(str(store)).get_metric_history(RUNNING_RUN, "score")]
    assert len(history) == 4 and history[-1] == (1700000339600, 5, 0.5)
    assert metric_batches_of(store, RUNNING_RUN) == [3, 1]
    assert_in_sync(store, source, artifacts)


def test_reimport_brings_tags_set_since(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    change_source(source, ("INSERT INTO tags VALUES ('reviewed', 'yes', ?)", (RUNNING_RUN,)))

    assert sync(store, source, artifacts).events_appended == 1

    assert Client(str(store)).get_run(RUNNING_RUN).data.tags["reviewed"] == "yes"
    assert_in_sync(store, source, artifacts)


def test_reimport_follows_tags_params_status_and_lifecycle(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    before = len(run_events(store, RUNNING_RUN))
    change_source(
        source,
        # On the RUNNING run: a tag added, a tag changed, a tag deleted, a param added,
        # then the run finished.
        ("INSERT INTO tags VALUES ('reviewed', 'yes', ?)", (RUNNING_RUN,)),
        ("UPDATE tags SET value = 'paired' WHERE run_uuid = ? AND \"key\" = 'kind'", (RUNNING_RUN,)),
        ("DELETE FROM tags WHERE run_uuid = ? AND \"key\" = 'mlflow.runName'", (RUNNING_RUN,)),
        ("INSERT INTO params VALUES ('added', '7', ?)", (RUNNING_RUN,)),
        ("UPDATE runs SET status = 'FINISHED', end_time = 1795711959999 WHERE run_uuid = ?", (RUNNING_RUN,)),
        # A finished run deleted, and the deleted solo-5 restored.
        ("UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = 1795711960000 WHERE run_uuid = ?",
         (FINISHED_RUN,)),
        ("UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE run_uuid = ?", (DELETED_RUN,)),
    )  # fmt: skip

    summary = sync(store, source, artifacts)

    # One batch of tag and param changes, then the status; nothing else on that run.
    new = run_events(store, RUNNING_RUN)[before:]
    assert [type(r.event).__name__ for r in new] == [
        "TagSet", "TagSet", "TagDeleted", "ParamsLogged", "RunStatusChanged"]  # fmt: skip
    events = [r.event for r in new]
    assert {(e.key, e.value) for e in events[:2]} == {("reviewed", "yes"), ("kind", "paired")}
    assert events[2].key == "mlflow.runName" and events[3].params == {"added": "7"}
    assert (events[4].status, events[4].end_time) == ("FINISHED", 1795711959999)
    assert [type(r.event).__name__ for r in run_events(store, FINISHED_RUN)][-1] == "RunDeleted"
    assert run_events(store, FINISHED_RUN)[-1].event.deleted_time == 1795711960000
    assert [type(r.event).__name__ for r in run_events(store, DELETED_RUN)][-1] == "RunRestored"
    assert summary.events_appended == len(new) + 2
    assert summary.skipped == []
    assert_in_sync(store, source, artifacts)


def test_reimport_follows_experiment_changes(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    change_source(
        source,
        # "sweep" renamed and its tag changed; experiment 1 tagged, then deleted with its
        # run; the deleted "archived-2023" restored with its runs.
        ("UPDATE experiments SET name = 'sweep-2024', last_update_time = 1795711960100 WHERE experiment_id = 2", ()),
        ("UPDATE experiment_tags SET value = 'nlp' WHERE experiment_id = 2 AND \"key\" = 'team'", ()),
        ("INSERT INTO experiment_tags VALUES ('owner', 'ana', 1)", ()),
        (("UPDATE experiments SET lifecycle_stage = 'deleted', last_update_time = 1795711960200"
          " WHERE experiment_id = 1"), ()),
        ("UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = 1795711960200 WHERE experiment_id = 1", ()),
        (("UPDATE experiments SET lifecycle_stage = 'active', last_update_time = 1795711960300"
          " WHERE experiment_id = 3"), ()),
        ("UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE experiment_id = 3", ()),
    )  # fmt: skip

    summary = sync(store, source, artifacts)

    client = Client(str(store))
    assert client.get_experiment("2").name == "sweep-2024"
    assert client.get_experiment("1").last_update_time == 1795711960200  # MLflow's time
    assert client.get_experiment("3").lifecycle_stage == "active"
    log = open_log(store)
    types = [type(r.event).__name__ for s in ("1", "2", "3") for r in log.read_stream(f"experiment-{s}")]
    log.close()
    assert types == ["ExperimentCreated", "ExperimentTagSet", "ExperimentDeleted",
                     "ExperimentCreated", "ExperimentRenamed", "ExperimentTagSet",
                     "ExperimentCreated", "ExperimentDeleted", "ExperimentRestored"]  # fmt: skip
    assert summary.experiments == 4
    assert_in_sync(store, source, artifacts)


def test_reimport_records_new_and_changed_artifacts(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    [run_dir] = list((artifacts / "mlartifacts").rglob(SEED_RUN))
    files = sorted(p for p in (run_dir / "artifacts").rglob("*") if p.is_file())
    files[0].write_bytes(b"changed after the first import\n")
    (run_dir / "artifacts" / "added.txt").write_bytes(b"uploaded after the first import\n")

    summary = sync(store, source, artifacts)

    recorded = [r.event for r in run_events(store, SEED_RUN) if r.type == "ArtifactRecorded"]
    new = recorded[-2:]
    assert summary.events_appended == 2
    assert {e.path for e in new} == {"added.txt", files[0].relative_to(run_dir / "artifacts").as_posix()}
    client = Client(str(store))
    for event in new:
        local = client.download_artifacts(SEED_RUN, event.path, str(tmp_path / "downloads"))
        assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == event.sha256
    assert_in_sync(store, source, artifacts)


def test_whole_missing_artifact_location_is_counted_not_listed(tmp_path: Path) -> None:
    # old-0 and old-1 (deleted experiment 3) never uploaded artifacts and MLflow made no
    # directory for them: counted once in the summary, not reported run by run as lost.
    summary = import_mlflow(str(tmp_path / "evstore.db"), source_for(SQLITE_317),
                            artifacts_root=str(FIXTURES / SQLITE_317))  # fmt: skip
    runs = {r["run_id"]: r for e in manifest(SQLITE_317)["experiments"] for r in e["runs"]}
    assert summary.skipped == []
    assert summary.runs_without_artifacts == 2
    assert sum(1 for r in runs.values() if not r["artifacts"]) >= 2


def test_late_point_is_imported_once_and_a_vanished_one_is_reported(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    # A point of "score" whose timestamp sorts before the last imported one (a client
    # with a slow clock): the imported points are no longer a prefix of the source's.
    log_points(source, RUNNING_RUN, [("score", 0.25, 1700000339565, 1)])

    summary = sync(store, source, artifacts)

    assert summary.events_appended == 1
    assert [e for e in summary.skipped if "metric" in e[0]] == []
    assert_in_sync(store, source, artifacts)

    # A point MLflow no longer has is reported and kept.
    change_source(source, ("DELETE FROM metrics WHERE run_uuid = ? AND step = -3", (RUNNING_RUN,)))
    summary = sync(store, source, artifacts)
    assert summary.events_appended == 0
    [(what, reason)] = [e for e in summary.skipped if "metric" in e[0]]
    assert what == f"run {RUNNING_RUN} metric 'score'"
    assert reason == ("1 point(s) imported earlier are no longer in the MLflow store"
                      " (e.g. step -3, timestamp 1700000339572); kept in evstore")
    assert len(Client(str(store)).get_metric_history(RUNNING_RUN, "score")) == 4


def test_file_store_point_logged_since_on_an_earlier_key(tmp_path: Path) -> None:
    # The file store lists a run's points key by key: a new "accuracy" point sorts before
    # the imported points of "train/loss" and "val loss", so prefixes are per key.
    mlruns = tmp_path / "mlruns"
    shutil.copytree(FIXTURES / "mlflow-3.17-file" / "mlruns", mlruns)
    store = tmp_path / "evstore.db"
    import_mlflow(str(store), str(mlruns))
    run_id = "26b3c361818f4a2abf25bf883ae9be08"
    [metrics] = list(mlruns.glob(f"*/{run_id}/metrics"))
    with open(metrics / "accuracy", "a", encoding="utf-8") as f:
        f.write("1795711961400 0.9 7\n")

    summary = import_mlflow(str(store), str(mlruns))

    assert summary.events_appended == 1
    history = Client(str(store)).get_metric_history(run_id, "accuracy")
    assert [(m.timestamp, m.value, m.step) for m in history][-1] == (1795711961400, 0.9, 7)
    assert len(history) == len((metrics / "accuracy").read_text().splitlines())
    assert import_mlflow(str(store), str(mlruns)).events_appended == 0


def test_the_users_own_writes_to_an_imported_run_are_not_undone(tmp_path: Path) -> None:
    source, artifacts, store = imported_copy(tmp_path)
    client = Client(str(store))
    # After the import, the team works on in evstore: retags, deletes an imported tag,
    # logs a point, ends the run MLflow still shows RUNNING.
    client.set_tag(RUNNING_RUN, "kind", "mine")
    client.delete_tag(RUNNING_RUN, "mlflow.runName")
    client.log_metric(RUNNING_RUN, "score", 9.0, step=9)
    client.set_terminated(RUNNING_RUN, "FINISHED")
    head = client.store.head_position()

    assert sync(store, source, artifacts).events_appended == 0

    run = client.get_run(RUNNING_RUN)
    assert client.store.head_position() == head
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "mine"
    assert "mlflow.runName" not in run.data.tags
    assert len(client.get_metric_history(RUNNING_RUN, "score")) == 4

    # When MLflow itself changes the tag later, the import brings MLflow's new value.
    change_source(source, ("UPDATE tags SET value = 'paired' WHERE run_uuid = ? AND \"key\" = 'kind'",
                           (RUNNING_RUN,)))  # fmt: skip
    assert sync(store, source, artifacts).events_appended == 1
    assert client.get_run(RUNNING_RUN).data.tags["kind"] == "paired"


def grown_source(tmp_path: Path) -> tuple[Path, str]:
    """The fixture plus a run of 7,000 points, imported into clean.db; (source, run id)."""
    source = tmp_path / "mlflow.db"
    shutil.copyfile(FIXTURES / SQLITE_317 / "mlflow.db", source)
    _, [run_id] = load_bench().add_experiment(source, runs=1, keys=2, steps=3500, name="grows")
    return source, run_id


def grow(source: Path, run_id: str, steps: range) -> None:
    """MLflow logs two keys for more steps, after the points already there."""
    log_points(source, run_id, [(f"metric_{k}", step / 7, 1_800_000_000_000 + step, step)
                                for step in steps for k in (0, 1)])  # fmt: skip


def test_resumed_sync_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    source, run_id = grown_source(tmp_path)
    stores = [tmp_path / "uninterrupted.db", tmp_path / "resumed.db"]
    for store in stores:
        import_mlflow(str(store), f"sqlite:///{source}")
    assert metric_batches_of(stores[0], run_id) == [5000, 2000]
    # MLflow logs 9,000 more points: the sync fills the open batch up to the grid first.
    grow(source, run_id, range(3500, 8000))
    import_mlflow(str(stores[0]), f"sqlite:///{source}")
    assert metric_batches_of(stores[0], run_id) == [5000, 2000, 3000, 5000, 1000]

    # The same sync dies while appending its second metric batch, then runs again.
    seen: list[int] = []

    def crash_on_second_batch(conn: Any, recorded: Any) -> None:
        seen.extend(1 for r in recorded if r.type == "MetricsLogged")
        if len(seen) == 2:
            raise _Crash

    log = client_module.open_tracking_store(str(stores[1])).store
    log.append_hooks.append(crash_on_second_batch)
    with pytest.raises(_Crash):
        import_mlflow(str(stores[1]), f"sqlite:///{source}")
    log.append_hooks.remove(crash_on_second_batch)
    assert metric_batches_of(stores[1], run_id) == [5000, 2000, 3000]
    import_mlflow(str(stores[1]), f"sqlite:///{source}")

    # Same events, ids, payloads and positions; same read models.
    assert stored_events(stores[1]) == stored_events(stores[0])
    assert projection_rows(stores[1]) == projection_rows(stores[0])
    assert_in_sync(stores[1], source)


def test_a_concurrent_writer_makes_the_import_fold_again(tmp_path: Path) -> None:
    source, run_id = grown_source(tmp_path)
    store = tmp_path / "evstore.db"
    import_mlflow(str(store), f"sqlite:///{source}")
    grow(source, run_id, range(3500, 6000))
    client = Client(str(store))
    writes: list[int] = []

    def user_logs_meanwhile(what: str, count: int) -> None:
        # While the import reads this run's points (the only run with 5,000-point batches),
        # the user logs to it in evstore.
        if what == "metric_points" and count == 5000 and not writes:
            writes.append(1)
            client.log_metric(run_id, "user_metric", 1.0)

    summary = import_mlflow(str(store), f"sqlite:///{source}", progress=user_logs_meanwhile)

    # The import's append met a newer stream version, folded again and finished.
    assert writes == [1]
    assert summary.skipped == []
    assert metric_batches_of(store, run_id) == [5000, 2000, 3000, 2000]
    assert [m.value for m in client.get_metric_history(run_id, "user_metric")] == [1.0]
    assert_in_sync(store, source, evstore_keys=frozenset({"user_metric"}))

    # A writer that never stops: the run is reported, the rest of the import goes on.
    grow(source, run_id, range(6000, 6100))
    summary = import_mlflow(str(store), f"sqlite:///{source}",
                            progress=lambda what, n: n == 5000 and client.log_metric(run_id, "user_metric", 2.0))  # fmt: skip
    [reason] = [r for w, r in summary.skipped if w == f"run {run_id}"]
    assert reason.startswith("another writer appended to it during the import")
    assert summary.runs == 14  # of 15
    assert metric_batches_of(store, run_id) == [5000, 2000, 3000, 2000]  # nothing half-done
    summary = import_mlflow(str(store), f"sqlite:///{source}")  # the writer stopped
    assert metric_batches_of(store, run_id) == [5000, 2000, 3000, 2000, 200]
    assert_in_sync(store, source, evstore_keys=frozenset({"user_metric"}))


def test_an_experiment_imported_from_another_mlflow_store_is_not_overwritten(tmp_path: Path) -> None:
    # Two MLflow stores both number their experiments from 0: experiment 1 of the second
    # is another experiment (another creation time), not a change of the first's.
    store = tmp_path / "evstore.db"
    import_mlflow(str(store), source_for(SQLITE_317), artifacts_root=str(FIXTURES / SQLITE_317))
    other = tmp_path / "other.db"
    shutil.copyfile(FIXTURES / SQLITE_317 / "mlflow.db", other)
    change_source(other, ("UPDATE experiments SET creation_time = 1 WHERE experiment_id = 1", ()),
                  ("UPDATE experiments SET name = 'theirs' WHERE experiment_id = 1", ()))  # fmt: skip

    summary = sync(store, other)

    assert ("experiment 1 (theirs)", ("the target store's experiment 1 was imported from another MLflow"
            " experiment ('v2_migration_demo', created at 1795711958305)")) in summary.skipped
    assert Client(str(store)).get_experiment("1").name == "v2_migration_demo"


# --- property: any sequence of changes, synced round by round, even when killed ----------

GRID = 3  # METRICS_PER_EVENT in these examples, so that batches cross grid lines often
T_LATE, T_ROUNDS = 1_600_000_000_000, 1_900_000_000_000
POINTS = st.lists(
    st.tuples(
        st.sampled_from(["metric_0", "metric_1", "other"]),
        st.floats(allow_infinity=False, width=64),  # NaN included
        st.integers(-3, 40),  # step
        st.booleans(),  # late: a timestamp before everything imported so far
        st.integers(0, 20),  # timestamp jitter (ties with other points happen)
    ),
    max_size=10,
)


def small_source(directory: Path) -> tuple[Path, str]:
    """An MLflow 3.17 store holding only Default and one run of 2 keys x 3 steps."""
    bench = load_bench()
    source = directory / "mlflow.db"
    shutil.copyfile(bench.TEMPLATE, source)
    change_source(source, *[(f'DELETE FROM "{table}"', ()) for table in bench.RUN_TABLES],
                  ("DELETE FROM experiment_tags", ()), ("DELETE FROM experiments WHERE experiment_id != 0", ()))  # fmt: skip
    _, [run_id] = bench.add_experiment(source, runs=1, keys=2, steps=3, name="prop")
    return source, run_id


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(POINTS, min_size=1, max_size=4), crash_round=st.integers(0, 4),
       crash_batch=st.integers(1, 4))  # fmt: skip
def test_any_growth_synced_round_by_round_equals_the_source(
    rounds: list[list[tuple[str, float, int, bool, int]]], crash_round: int, crash_batch: int,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(mlflow_import, "METRICS_PER_EVENT", GRID)
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    source, run_id = small_source(directory)
    store = directory / "evstore.db"
    import_mlflow(str(store), f"sqlite:///{source}")
    for number, points in enumerate(rounds):
        # MLflow logs this round's points (late ones sort before what was imported).
        log_points(source, run_id, [(k, v, (T_LATE if late else T_ROUNDS + 100 * number) + jitter, step)
                                    for k, v, step, late, jitter in points])  # fmt: skip
        if number == crash_round:
            # This round's sync dies inside its crash_batch-th metric append, then runs again.
            def crash(conn: Any, recorded: Any, seen: list[int] = []) -> None:  # noqa: B006 - one per round
                seen.extend(1 for r in recorded if r.type == "MetricsLogged")
                if len(seen) >= crash_batch:
                    raise _Crash

            log = client_module.open_tracking_store(str(store)).store
            log.append_hooks.append(crash)
            try:
                import_mlflow(str(store), f"sqlite:///{source}")
            except _Crash:
                pass
            finally:
                log.append_hooks.remove(crash)
        import_mlflow(str(store), f"sqlite:///{source}")

    # Everything MLflow holds is in evstore exactly once; importing again adds nothing.
    assert_in_sync(store, source)
    # No imported batch crosses a grid line, whatever the rounds and the crash.
    start = 0
    for size in metric_batches_of(store, run_id):
        assert start % GRID + size <= GRID, metric_batches_of(store, run_id)
        start += size
    # Without late points the imported order is MLflow's own order.
    if not any(late for points in rounds for _, _, _, late, _ in points):
        imported = [(p.key, p.timestamp, p.step) for r in run_events(store, run_id)
                    if r.type == "MetricsLogged" for p in r.event.points]  # fmt: skip
        assert imported == mlflow_rows(source, 'SELECT "key", timestamp, step FROM metrics WHERE run_uuid = ?'
                                       ' ORDER BY timestamp, step, "key", value, is_nan', (run_id,))  # fmt: skip
