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
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from evstore import Client
from evstore import client as client_module
from evstore.entities import ViewType
from evstore.importers import FILE_STORE_REVISION, KNOWN_REVISIONS
from evstore.importers.mlflow_import import import_mlflow
from evstore.integrity import verify
from evstore.stores import open_log

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "mlflow"
FOLDERS = ["mlflow-3.17-sqlite", "mlflow-3.17-file", "mlflow-2.22-sqlite"]
EVSTORE = os.path.join(os.path.dirname(sys.executable), "evstore")
SUMMARY = re.compile(
    r"imported from (?P<source>\S+) \(schema (?P<revision>[^)]+)\): (?P<experiments>\d+)"
    r" experiments, (?P<runs>\d+) runs, (?P<metric_points>\d+) metric points, (?P<params>\d+)"
    r" params, (?P<tags>\d+) tags, (?P<artifacts>\d+) artifacts; (?P<new_events>\d+) new events"
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
    """``evstore ARGS`` as its own process."""
    return subprocess.run(
        [EVSTORE, *args], capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=300,
        check=False,
    )


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
    for cached in [p for p in client_module._stores if p.startswith(str(tmp_path))]:
        runner = client_module._stores.pop(cached)
        runner.detach()
        runner.store.close()


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
    # experiments.last_update_time is when evstore recorded the change, not MLflow's time.
    selects = {
        "experiments": "SELECT experiment_id, name, artifact_location, lifecycle_stage,"
        " creation_time FROM experiments",
        **{t: f"SELECT * FROM {t}" for t in ("experiment_tags", "runs", "params", "tags",
                                             "metrics", "latest_metrics", "artifacts")},
    }  # fmt: skip
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

    # The same import as a process, SIGKILLed once half of its events are in.
    store = tmp_path / "evstore.db"
    process = subprocess.Popen(
        [EVSTORE, "import", "mlflow", uri, "--store", str(store), "--artifacts-root", str(artifacts)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(), cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while head_of(store) < total // 2:
            assert process.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import made no progress"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = head_of(store)
    assert total // 2 <= killed_at < total, (killed_at, total)

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

    done = run_cli("import", "mlflow", f"sqlite:///{source}", "--store", str(store), cwd=tmp_path)

    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "'deadbeef0000'" in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert head_of(store) == 0


# --- 5. evstore history shows MLflow's own times ------------------------------------------

HISTORY_ROW = re.compile(r"^\s*(\d+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\w+)\s")


def shown(ms: int) -> str:
    """A time as ``evstore history`` prints it (UTC, to the second)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


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


# --- known gap: re-importing a source that changed since -------------------------------


def _changed_fixture(tmp_path: Path, change: str, params: tuple[Any, ...]) -> tuple[str, str]:
    """Import a copy of the 3.17 SQLite fixture, then change the copy; (source, store)."""
    source, store = tmp_path / "mlflow.db", str(tmp_path / "evstore.db")
    shutil.copyfile(FIXTURES / "mlflow-3.17-sqlite" / "mlflow.db", source)
    import_mlflow(store, f"sqlite:///{source}", artifacts_root=str(FIXTURES / "mlflow-3.17-sqlite"))
    conn = sqlite3.connect(source)
    with conn:
        conn.execute(change, params)
    conn.close()
    return f"sqlite:///{source}", store


RUNNING_RUN = "f483a38ed8a844d4a56b7af7e8e578b4"  # solo-4, still RUNNING in the fixture


@pytest.mark.xfail(strict=True, reason="known gap: batch ids are per position, so a re-import"
                   " after MLflow logged more points reports 0 new events and drops them")  # fmt: skip
def test_reimport_brings_points_logged_since(tmp_path: Path) -> None:
    source, store = _changed_fixture(
        tmp_path, "INSERT INTO metrics VALUES ('score', 0.5, 1700000339600, ?, 5, 0)", (RUNNING_RUN,)
    )
    import_mlflow(store, source)
    assert len(Client(store).get_metric_history(RUNNING_RUN, "score")) == 4


@pytest.mark.xfail(strict=True, reason="known gap: a run's start batch gets one more event, so"
                   " the re-import stops on EventIdConflict instead of setting the new tag")  # fmt: skip
def test_reimport_brings_tags_set_since(tmp_path: Path) -> None:
    source, store = _changed_fixture(
        tmp_path, "INSERT INTO tags VALUES ('reviewed', 'yes', ?)", (RUNNING_RUN,)
    )
    import_mlflow(store, source)
    assert Client(store).get_run(RUNNING_RUN).data.tags["reviewed"] == "yes"
