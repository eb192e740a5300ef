"""The MLflow source readers against real MLflow stores (tests/fixtures/mlflow/).

Each fixture's ``manifest.json`` is what MLflow's own client read back from the store;
reading the same store through ``open_source`` must give the same values, field by field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstore.errors import InvalidParameterValue, StoreError, StoreFormatError
from evstore.events import MetricPoint
from evstore.importers import (
    FILE_STORE_REVISION,
    KNOWN_REVISIONS,
    ArtifactFile,
    Experiment,
    MlflowSource,
    Run,
    open_source,
)
from evstore.importers.mlflow_sql import SqlSource
from evstore.importers.mlflow_yaml import NESTED, parse_flat_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "mlflow"
STORES = {
    "mlflow-3.17-sqlite": "mlflow.db",
    "mlflow-3.17-file": "mlruns",
    "mlflow-2.22-sqlite": "mlflow.db",
}
REVISIONS = {
    "mlflow-3.17-sqlite": "dc11669786a5",
    "mlflow-3.17-file": FILE_STORE_REVISION,
    "mlflow-2.22-sqlite": "0584bdc529eb",
}


def manifest(folder: str) -> dict[str, Any]:
    """The ground truth MLflow's client read from the fixture."""
    return json.loads((FIXTURES / folder / "manifest.json").read_text(encoding="utf-8"))


def writable_copy(folder: str, tmp_path: Path) -> Path:
    """A copy of a fixture folder that a test may change (the fixtures are read-only)."""
    target = tmp_path / folder
    shutil.copytree(FIXTURES / folder, target, copy_function=shutil.copyfile)
    for directory, _, files in os.walk(target):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return target


def as_manifest_float(value: float) -> float | str:
    """A float as manifest.json writes it: NaN and the infinities as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def latest_by_mlflow_rule(points: list[MetricPoint]) -> MetricPoint:
    """MLflow's latest value of a metric: the greatest (step, timestamp, value)."""
    return max(points, key=lambda p: (p.step, p.timestamp, p.value))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


class Mismatches:
    """Collects every difference, each naming where, the field and both values."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, where: str, field: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            self.found.append(
                f"{where}: {field}: manifest has {expected!r}, reader gave {actual!r}"
            )

    def assert_none(self) -> None:
        assert not self.found, f"{len(self.found)} mismatches:\n" + "\n".join(self.found)


def read_run(source: MlflowSource, run: Run, artifacts_root: Path) -> dict[str, Any]:
    """Everything the manifest records about a run, read through the source."""
    history: dict[str, list[MetricPoint]] = {}
    for point in source.metric_points(run):
        history.setdefault(point.key, []).append(point)
    artifacts = [
        {
            "path": item.path,
            "sha256": sha256_of(item.local_path),
            "size": os.path.getsize(item.local_path),
        }
        for item in source.artifacts(run, artifacts_root)
        if item.local_path is not None
    ]
    return {
        "run_name": run.run_name,
        "status": run.status,
        "lifecycle_stage": run.lifecycle_stage,
        "start_time": run.start_time,
        "end_time": run.end_time,
        "user_id": run.user_id,
        "params": run.params,
        "tags": run.tags,
        "latest_metrics": {
            key: as_manifest_float(latest_by_mlflow_rule(points).value)
            for key, points in history.items()
        },
        "metric_history": {
            key: [[p.timestamp, p.step, as_manifest_float(p.value)] for p in points]
            for key, points in history.items()
        },
        "artifacts": artifacts,
    }


@pytest.fixture(params=sorted(STORES))
def fixture_folder(request: pytest.FixtureRequest) -> str:
    """The name of one fixture folder, once per real MLflow store."""
    return str(request.param)


@pytest.fixture
def source(fixture_folder: str) -> Iterator[MlflowSource]:
    """The fixture's store opened through ``open_source``."""
    with open_source(FIXTURES / fixture_folder / STORES[fixture_folder]) as opened:
        yield opened


# --- the manifest, field by field ----------------------------------------------------


def test_every_fixture_reads_back_as_mlflow_reads_it(
    fixture_folder: str, source: MlflowSource
) -> None:
    truth = manifest(fixture_folder)
    mismatches = Mismatches()
    assert source.schema_revision == REVISIONS[fixture_folder]

    experiments = list(source.experiments())
    mismatches.check(
        "store",
        "experiment ids",
        [e["experiment_id"] for e in truth["experiments"]],
        [e.experiment_id for e in experiments],
    )
    by_id = {e.experiment_id: e for e in experiments}
    for expected in truth["experiments"]:
        experiment = by_id.get(expected["experiment_id"])
        if experiment is None:
            continue
        where = f"experiment {experiment.experiment_id}"
        for field in ("name", "lifecycle_stage", "tags"):
            mismatches.check(where, field, expected[field], getattr(experiment, field))

        runs = {run.run_id: run for run in source.runs(experiment)}
        mismatches.check(
            where, "run ids", sorted(r["run_id"] for r in expected["runs"]), sorted(runs)
        )
        for expected_run in expected["runs"]:
            run = runs.get(expected_run["run_id"])
            if run is None:
                continue
            actual = read_run(source, run, FIXTURES / fixture_folder)
            for field, value in actual.items():
                mismatches.check(
                    f"run {run.run_id} ({run.run_name})", field, expected_run[field], value
                )
    mismatches.assert_none()
    assert source.skipped == []


#: Runs whose recorded artifact location has no counterpart in the copied fixture: the
#: deleted experiment's location, /srv/mlflow/<folder>/mlruns/3, was never created (MLflow
#: creates it on the first upload). The reader cannot tell "never uploaded" from "lost",
#: so it reports them; the manifest (read on the original machine) lists no artifacts.
UNLOCATED = {
    "mlflow-3.17-sqlite": {"old-0", "old-1"},
    "mlflow-3.17-file": set(),
    "mlflow-2.22-sqlite": {"old-0", "old-1"},
}


def test_only_runs_whose_location_was_never_created_are_reported(
    fixture_folder: str, source: MlflowSource
) -> None:
    reported = {
        run.run_name: [
            (a.path, a.local_path)
            for a in source.artifacts(run, FIXTURES / fixture_folder)
            if a.missing
        ]
        for experiment in source.experiments()
        for run in source.runs(experiment)
    }
    assert {name for name, missing in reported.items() if missing} == UNLOCATED[fixture_folder]
    assert all(reported[name] == [("", None)] for name in UNLOCATED[fixture_folder])


def test_records_carry_what_the_import_needs(source: MlflowSource) -> None:
    for experiment in source.experiments():
        assert experiment.creation_time is not None and experiment.artifact_location
        assert (experiment.deleted_time is not None) == (experiment.lifecycle_stage == "deleted")
        for run in source.runs(experiment):
            assert run.experiment_id == experiment.experiment_id
            assert run.parent_run_id == run.tags.get("mlflow.parentRunId")
            assert (run.deleted_time is not None) == (run.lifecycle_stage == "deleted")
            assert run.artifact_uri.rstrip("/").endswith(f"{run.run_id}/artifacts")


def test_iteration_order_is_deterministic(source: MlflowSource) -> None:
    experiments = list(source.experiments())
    assert [int(e.experiment_id) for e in experiments] == sorted(
        int(e.experiment_id) for e in experiments
    )
    for experiment in experiments:
        runs = list(source.runs(experiment))
        keys = [(r.start_time, r.run_id) for r in runs]
        assert keys == sorted(keys)
        assert [r.run_id for r in source.runs(experiment)] == [r.run_id for r in runs]
        for run in runs:
            first = list(source.metric_points(run))
            assert [repr(p) for p in source.metric_points(run)] == [repr(p) for p in first]


def test_parent_runs_come_from_the_parent_run_id_tag(source: MlflowSource) -> None:
    runs = [run for e in source.experiments() for run in source.runs(e)]
    names = {run.run_id: run.run_name for run in runs}
    children = {
        run.run_name: names.get(run.parent_run_id or "") for run in runs if run.parent_run_id
    }
    assert children == {f"trial-{i}": "parent-search" for i in range(4)}


def test_nan_infinities_negative_and_repeated_steps_are_kept(
    fixture_folder: str, source: MlflowSource
) -> None:
    runs = {run.run_name: run for e in source.experiments() for run in source.runs(e)}
    weird = [p for p in source.metric_points(runs["solo-1"]) if p.key == "weird"]
    assert [p.step for p in weird] == [1, 2, 3]
    assert math.isnan(weird[0].value)
    if fixture_folder.endswith("-file"):
        assert (weird[1].value, weird[2].value) == (math.inf, -math.inf)
    else:  # MLflow's SQL store writes +-inf as the largest double; that is what is there
        assert (weird[1].value, weird[2].value) == (1.7976931348623157e308, -1.7976931348623157e308)
    score = [p for p in source.metric_points(runs["solo-0"]) if p.key == "score"]
    assert [p.step for p in score] == [0, 0, -3]


def test_metric_batches_are_the_points_cut_in_order(source: MlflowSource) -> None:
    runs = [run for experiment in source.experiments() for run in source.runs(experiment)]
    for run in runs:
        points = [repr(p) for p in source.metric_points(run)]
        for size in (1, 2, 7, 10_000):  # small sizes put a NaN alone and among numbers
            batches = list(source.metric_batches(run, size))
            assert all(0 < len(batch) <= size for batch in batches)
            assert [repr(p) for batch in batches for p in batch] == points
    with pytest.raises(InvalidParameterValue):
        next(source.metric_batches(runs[0], 0))


# --- schema revisions ----------------------------------------------------------------


def test_known_revisions_are_the_fixture_heads() -> None:
    assert set(KNOWN_REVISIONS) == {"dc11669786a5", "0584bdc529eb"}


def test_an_unknown_revision_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    # A copy of a real store, moved to a revision this reader has never seen.
    db = writable_copy("mlflow-3.17-sqlite", tmp_path) / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffffeeee0001'")
    connection.close()

    # The reader's own statements are traced: only the revision is ever asked for.
    connection = sqlite3.connect(db)
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    with pytest.raises(StoreFormatError, match="ffffeeee0001") as refused:
        SqlSource(connection, f"sqlite:///{db}")
    connection.close()
    assert statements == ["SELECT version_num FROM alembic_version"]
    assert "dc11669786a5" in str(refused.value) and "nothing was read" in str(refused.value)

    # And through open_source, the same refusal.
    with pytest.raises(StoreFormatError, match="ffffeeee0001"):
        open_source(f"sqlite:///{db}")


def test_a_database_that_is_not_mlflow_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreFormatError, match="not an MLflow tracking database"):
        open_source(empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(StoreFormatError, match="neither"):
        open_source(text)


# --- opening sources ------------------------------------------------------------------


def test_sources_open_from_paths_and_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    db = FIXTURES / "mlflow-3.17-sqlite" / "mlflow.db"
    mlruns = FIXTURES / "mlflow-3.17-file" / "mlruns"
    for spelling in (str(db), f"sqlite:///{db}", "sqlite:///mlflow-3.17-sqlite/mlflow.db"):
        with open_source(spelling) as opened:
            assert opened.uri == f"sqlite:///{db}"
    for spelling in (
        str(mlruns),
        mlruns.as_uri(),
        "mlflow-3.17-file/mlruns",
        "file:mlflow-3.17-file/mlruns",
    ):
        with open_source(spelling) as opened:
            assert opened.uri == mlruns.as_uri()
            assert opened.schema_revision == FILE_STORE_REVISION


@pytest.mark.parametrize(
    "spelling, error, message",
    [
        ("postgresql://u@127.0.0.1:1/mlflow", StoreError, "cannot read the MLflow store"),
        ("mysql+pymysql://u@host/mlflow", InvalidParameterValue, "not supported yet"),
        ("sqlite://relative.db", InvalidParameterValue, "three slashes"),
        ("s3://bucket/mlruns", InvalidParameterValue, "unsupported MLflow store URI"),
        ("no/such/mlruns", InvalidParameterValue, "no such file"),
        ("mlflow-3.17-file", StoreFormatError, "did you mean"),
    ],
)
def test_bad_sources_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, spelling: str, error: type[Exception], message: str
) -> None:
    monkeypatch.chdir(FIXTURES)
    with pytest.raises(error, match=message):
        open_source(spelling)


# --- artifacts ------------------------------------------------------------------------


def artifacts_by_run(source: MlflowSource, root: Path | None) -> dict[str, list[ArtifactFile]]:
    return {
        run.run_name: list(source.artifacts(run, root))
        for experiment in source.experiments()
        for run in source.runs(experiment)
    }


@pytest.mark.parametrize("root", ["{folder}", "{folder}/mlartifacts", "."])
def test_artifacts_root_may_be_any_ancestor_of_the_copied_tree(root: str) -> None:
    folder = "mlflow-3.17-sqlite"
    with open_source(FIXTURES / folder / "mlflow.db") as source:
        found = artifacts_by_run(source, FIXTURES / root.format(folder=folder))
    present = {name: [a.path for a in items if not a.missing] for name, items in found.items()}
    assert present["solo-3"] == ["plots/curve.png", "summary.json"]
    assert present["powerful-crane-40"] == ["model_config.txt"]
    assert sum(len(paths) for paths in present.values()) == 3


def test_the_file_store_finds_its_artifacts_without_a_root() -> None:
    with open_source(FIXTURES / "mlflow-3.17-file" / "mlruns") as source:
        found = artifacts_by_run(source, None)
    assert [a.path for a in found["solo-3"]] == ["plots/curve.png", "summary.json"]
    assert not any(a.missing for items in found.values() for a in items)


def test_artifacts_of_a_location_that_is_gone_are_reported_not_raised(tmp_path: Path) -> None:
    # Without a root, the recorded /srv/mlflow/... locations do not exist on this machine.
    with open_source(FIXTURES / "mlflow-3.17-sqlite" / "mlflow.db") as source:
        found = artifacts_by_run(source, None)
    assert all(
        len(items) == 1 and items[0].path == "" and items[0].missing for items in found.values()
    )
    assert "/srv/mlflow/mlflow-3.17-sqlite/mlartifacts/sweep/" in (
        found["solo-3"][0].missing_reason or ""
    )

    # With a root, but the sweep experiment's artifacts lost: its runs are reported.
    copy = writable_copy("mlflow-3.17-sqlite", tmp_path)
    shutil.rmtree(copy / "mlartifacts" / "sweep")
    with open_source(copy / "mlflow.db") as source:
        found = artifacts_by_run(source, copy)
    assert [a.path for a in found["powerful-crane-40"]] == ["model_config.txt"]
    assert [(a.path, a.local_path) for a in found["solo-3"]] == [("", None)]
    assert "not found" in (found["solo-3"][0].missing_reason or "")


def test_a_missing_artifact_file_is_reported_with_its_path(tmp_path: Path) -> None:
    copy = writable_copy("mlflow-3.17-file", tmp_path)
    artifacts = next(copy.glob("mlruns/*/7c57915f65714ca6bbbeb1a039b2e96c/artifacts"))
    (artifacts / "summary.json").unlink()
    (artifacts / "summary.json").symlink_to(artifacts / "gone.json")
    with open_source(copy / "mlruns") as source:
        found = artifacts_by_run(source, None)["solo-3"]
    assert [(a.path, a.missing) for a in found] == [
        ("plots/curve.png", False),
        ("summary.json", True),
    ]
    assert "broken symbolic link" in (found[1].missing_reason or "")


def test_artifacts_of_a_deleted_experiment_are_found_in_the_trash(tmp_path: Path) -> None:
    copy = writable_copy("mlflow-3.17-file", tmp_path)
    run_dir = next(copy.glob("mlruns/.trash/*/5c2dfb96ea8143e7b86081b5a2f59633"))
    (run_dir / "artifacts" / "a").mkdir(parents=True)
    (run_dir / "artifacts" / "a" / "b.txt").write_text("kept", encoding="utf-8")
    with open_source(copy / "mlruns") as source:
        found = artifacts_by_run(source, copy)["old-0"]
    assert [(a.path, Path(a.local_path or "").read_text(encoding="utf-8")) for a in found] == [
        ("a/b.txt", "kept")
    ]


# --- store details the fixtures do not show -------------------------------------------


def test_sql_metric_context_comes_from_logged_model_metrics(tmp_path: Path) -> None:
    db = writable_copy("mlflow-3.17-sqlite", tmp_path) / "mlflow.db"
    run_id = "79cd2714be0b4cfda20644ef6bf4177e"  # solo-0
    with sqlite3.connect(db) as connection:
        timestamp, step, value = connection.execute(
            "SELECT timestamp, step, value FROM metrics WHERE run_uuid = ? AND step = -3", (run_id,)
        ).fetchone()
        connection.execute(
            "INSERT INTO logged_model_metrics VALUES "
            "(?, 'score', ?, ?, ?, 2, ?, NULL, 'eval', 'abc123')",
            ("m-1", timestamp, step, value, run_id),
        )
    connection.close()
    with open_source(db) as source:
        runs = {r.run_id: r for e in source.experiments() for r in source.runs(e)}
        points = list(source.metric_points(runs[run_id]))
    with_context = [p for p in points if p.model_id is not None]
    assert [(p.step, p.model_id, p.dataset_name, p.dataset_digest) for p in with_context] == [
        (-3, "m-1", "eval", "abc123")
    ]
    assert len(points) == 3


def test_file_store_lines_keep_dataset_context_and_bad_lines_are_named(tmp_path: Path) -> None:
    copy = writable_copy("mlflow-3.17-file", tmp_path)
    run_dir = next(copy.glob("mlruns/*/e782b5972ccf4f59b21b6a37bd14e9d6"))  # solo-0
    with open(run_dir / "metrics" / "score", "a", encoding="utf-8") as f:
        f.write("1700000339600 0.5 7 eval-set d1g3st\n")
    with open_source(copy / "mlruns") as source:
        run = next(
            r for e in source.experiments() for r in source.runs(e) if r.run_id == run_dir.name
        )
        last = list(source.metric_points(run))[-1]
        assert (last.step, last.value, last.dataset_name, last.dataset_digest) == (
            7,
            0.5,
            "eval-set",
            "d1g3st",
        )
        with open(run_dir / "metrics" / "score", "a", encoding="utf-8") as f:
            f.write("1700000339601 0.5 7 extra\n")
        with pytest.raises(StoreFormatError, match=r"score:5: malformed metric line"):
            list(source.metric_points(run))


POINTS = st.lists(
    st.tuples(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**40), 2**40),  # steps, negative ones included
        st.integers(0, 2**45),  # timestamps in ms
    ),
    min_size=1,
    max_size=30,
)


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(points=POINTS)
def test_file_store_values_read_back_exactly(tmp_path: Path, points: list[Any]) -> None:
    copy = tmp_path / "mlflow-3.17-file"  # one copy for all examples
    if not copy.exists():
        writable_copy("mlflow-3.17-file", tmp_path)
    run_dir = next(copy.glob("mlruns/*/e782b5972ccf4f59b21b6a37bd14e9d6"))
    # As MLflow's FileStore writes a point: f"{timestamp} {value} {step}\n".
    with open(run_dir / "metrics" / "score", "w", encoding="utf-8") as f:
        f.writelines(f"{ts} {value} {step}\n" for value, step, ts in points)
    with open_source(copy / "mlruns") as source:
        run = next(
            r for e in source.experiments() for r in source.runs(e) if r.run_id == run_dir.name
        )
        read = [p for p in source.metric_points(run) if p.key == "score"]
    assert [(p.step, p.timestamp) for p in read] == [(step, ts) for _, step, ts in points]
    assert all(same_value(p.value, value) for p, (value, _, _) in zip(read, points, strict=True))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(points=POINTS)
def test_sql_store_values_read_back_as_mlflow_stored_them(
    tmp_path: Path, points: list[Any]
) -> None:
    db = tmp_path / "mlflow-3.17-sqlite" / "mlflow.db"  # one copy for all examples
    if not db.exists():
        writable_copy("mlflow-3.17-sqlite", tmp_path)
    run_id = "79cd2714be0b4cfda20644ef6bf4177e"
    # As MLflow's SqlAlchemyStore writes a point: NaN as 0 with is_nan, +-inf clamped to
    # the largest double; the primary key drops exact duplicates.
    rows = {
        (
            "score",
            0.0 if math.isnan(v) else max(min(v, 1.7976931348623157e308), -1.7976931348623157e308),
            ts, step, int(math.isnan(v)),
        )
        for v, step, ts in points
    }  # fmt: skip
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM metrics WHERE run_uuid = ?", (run_id,))
        connection.executemany(
            "INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(*row, run_id) for row in rows],
        )
    connection.close()
    with open_source(db) as source:
        run = next(r for e in source.experiments() for r in source.runs(e) if r.run_id == run_id)
        read = list(source.metric_points(run))
    expected = sorted(rows, key=lambda r: (r[2], r[3], r[1], r[4]))  # MLflow's history order
    assert [(p.timestamp, p.step) for p in read] == [(r[2], r[3]) for r in expected]
    for point, (_, value, _, _, is_nan) in zip(read, expected, strict=True):
        assert same_value(point.value, math.nan if is_nan else value)


def test_unreadable_run_directories_are_skipped_with_a_reason(tmp_path: Path) -> None:
    copy = writable_copy("mlflow-3.17-file", tmp_path)
    experiment_dir = next(copy.glob("mlruns/*/e782b5972ccf4f59b21b6a37bd14e9d6")).parent
    (experiment_dir / "0123456789abcdef0123456789abcdef").mkdir()
    with open_source(copy / "mlruns") as source:
        names = [r.run_name for e in source.experiments() for r in source.runs(e)]
        assert len(names) == 14
        assert [(Path(what).name, why) for what, why in source.skipped] == [
            ("0123456789abcdef0123456789abcdef", "no meta.yaml: not a run MLflow can read")
        ]


def test_records_are_plain_structs() -> None:
    experiment = Experiment(
        experiment_id="1", name="e", artifact_location="/a", lifecycle_stage="deleted",
        creation_time=1, last_update_time=5, tags={},
    )  # fmt: skip
    assert experiment.deleted_time == 5 and experiment.workspace is None
    assert ArtifactFile("x", None, "gone").missing


# --- the meta.yaml reader ---------------------------------------------------------------

META_KEYS = st.sampled_from(
    ["name", "artifact_location", "run_name", "user_id", "experiment_id", "tags"]
)
AWKWARD_TEXT = st.text(alphabet="ab \n\t'\"#:-\\\r\x85\u2028\u2029é模", max_size=200)
META_VALUES = st.one_of(
    st.text(max_size=300),
    AWKWARD_TEXT,
    st.integers(),
    st.none(),
    st.booleans(),
    st.builds(dict),
    st.builds(list),
    st.dictionaries(st.text(max_size=100), st.text(max_size=100), min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(META_KEYS, META_VALUES))
def test_meta_yaml_reads_as_pyyaml_reads_what_mlflow_writes(data: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")  # only this test needs PyYAML; the reader does not
    # MLflow's write_yaml: safe_dump, block style, unicode as is, keys sorted.
    text = yaml.safe_dump(data, default_flow_style=False, allow_unicode=True, sort_keys=True)
    expected = {
        key: NESTED if isinstance(value, (dict, list)) and value else value
        for key, value in yaml.safe_load(text).items()
    }
    assert parse_flat_yaml(text) == expected


def test_meta_yaml_of_a_deleted_experiment_with_tags() -> None:
    text = (
        "artifact_location: file:///srv/x\ncreation_time: 1\nexperiment_id: '7'\n"
        "lifecycle_stage: deleted\nname: 'a: b'\ntags:\n  team: vision\n  'odd key': |-\n"
        "    two\n    lines\nworkspace: default\n"
    )
    assert parse_flat_yaml(text) == {
        "artifact_location": "file:///srv/x",
        "creation_time": 1,
        "experiment_id": "7",
        "lifecycle_stage": "deleted",
        "name": "a: b",
        "tags": NESTED,
        "workspace": "default",
    }
    with pytest.raises(ValueError, match="line 1"):
        parse_flat_yaml("name: &anchor x\n")
