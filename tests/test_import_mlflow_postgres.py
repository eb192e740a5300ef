"""`evstore import mlflow postgresql://...`: MLflow's own PostgreSQL database as a source.

The source is made by the real ``mlflow`` package (3.17, through SQLAlchemy and psycopg)
in a database of its own on the PostgreSQL server the tests use, then imported the way a
user would (the ``evstore`` command), and everything MLflow's own client reads back from
that database is compared with what ``evstore.Client`` returns. A re-import adds nothing,
and an unknown alembic revision is refused before anything is read.

The server: ``EVSTORE_TEST_POSTGRES_URL``, else postgres@127.0.0.1:5432/test. Where none
answers these tests skip with that reason, except under ``CI=true``, where it is a failure.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import POSTGRES_URL, drop_database_later, postgres_unavailable

from evstore import Client
from evstore.entities import ViewType
from evstore.errors import InvalidParameterValue, StoreError, StoreFormatError
from evstore.importers import open_source
from evstore.importers.mlflow_sql import KNOWN_REVISIONS, postgres_dsn, without_password
from evstore.integrity import verify
from evstore.stores import open_log
from evstore.tracking import service as client_module

SERVER = POSTGRES_URL
EVSTORE = os.path.join(os.path.dirname(sys.executable), "evstore")
# MLflow 3.17's SQLAlchemy store uses a loader SQLAlchemy 2.1 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")


def admin_connection() -> Any:
    """An autocommit connection to the test server, or the suite's one skip (a failure
    under CI)."""
    try:
        import psycopg
    except ImportError:
        postgres_unavailable("psycopg is not installed (pip install -e '.[test]')")
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        postgres_unavailable(f"none answers at {without_password(SERVER)} ({str(e).strip().splitlines()[0]})")


@pytest.fixture
def database() -> Iterator[str]:
    """A database of this test's own on the server, dropped afterwards; yields its URI."""
    admin = admin_connection()
    name = f"evstore_mlflow_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.close()
        drop_database_later(name)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv("EVSTORE_TRACKING_URI", raising=False)
    monkeypatch.delenv("EVSTORE_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    yield
    for cached in [p for p in client_module._stores if p.startswith(str(tmp_path))]:
        runner = client_module._stores.pop(cached)
        runner.detach()
        runner.store.close()


def mlflow_history(uri: str, tmp_path: Path) -> dict[str, Any]:
    """Write a typical history into MLflow's PostgreSQL store with the real mlflow client."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri="postgresql+psycopg://" + uri.split("://", 1)[1])
    artifacts = (tmp_path / "mlartifacts").as_uri()
    kept = client.create_experiment("pg-kept", artifact_location=artifacts, tags={"team": "vision"})
    gone = client.create_experiment("pg-gone", artifact_location=artifacts)
    parent = client.create_run(kept, run_name="parent", tags={"stage": "train"})
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param("lr", "0.01"), Param("layers", "4")],
                     tags=[RunTag("note", "ünïcode ✓")])  # fmt: skip
    base = 1_700_000_000_000
    for step in range(50):
        client.log_metric(pid, "loss", 1.0 / (step + 1), timestamp=base + step, step=step)
    client.log_batch(pid, metrics=[
        Metric("acc", float("nan"), base, 0), Metric("acc", 0.5, base + 1, 1),
        Metric("acc", math.inf, base + 2, 2), Metric("acc", 0.25, base + 2, 2),  # a tie in time
    ])  # fmt: skip
    client.log_text(pid, "hello from postgres", "notes/readme.txt")
    child = client.create_run(kept, run_name="child", tags={"mlflow.parentRunId": pid})
    client.log_metric(child.info.run_id, "loss", 0.1, timestamp=base, step=0)
    client.set_terminated(child.info.run_id, "FAILED", end_time=base + 10)
    deleted = client.create_run(kept, run_name="deleted")
    client.log_param(deleted.info.run_id, "p", "v")
    client.delete_run(deleted.info.run_id)
    client.set_terminated(pid, "FINISHED", end_time=base + 100)
    client.create_run(gone, run_name="in a deleted experiment")
    client.delete_experiment(gone)
    return {"experiments": [kept, gone], "parent": pid}


def read_through_mlflow(uri: str) -> dict[str, Any]:
    """Everything the real mlflow client reads back from the store, as plain values."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType as MlflowViewType

    client = MlflowClient(tracking_uri="postgresql+psycopg://" + uri.split("://", 1)[1])
    return _snapshot(client, MlflowViewType.ALL)


def _snapshot(client: Any, all_view: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for experiment in client.search_experiments(view_type=all_view):
        if experiment.experiment_id == "0":
            continue  # the Default experiment each store makes for itself
        runs = {}
        for run in client.search_runs([experiment.experiment_id], run_view_type=all_view):
            info, data = run.info, run.data
            histories = {
                key: sorted(
                    (m.timestamp, m.step, math.isnan(m.value), 0.0 if math.isnan(m.value) else m.value)
                    for m in client.get_metric_history(info.run_id, key)
                )
                for key in data.metrics
            }
            runs[info.run_id] = {
                "info": (info.run_name, info.status, info.start_time, info.end_time, info.lifecycle_stage),
                "params": data.params,
                "tags": data.tags,
                "latest": {k: "nan" if math.isnan(v) else v for k, v in data.metrics.items()},
                "histories": histories,
            }
        out[experiment.experiment_id] = {
            "name": experiment.name,
            "stage": experiment.lifecycle_stage,
            "tags": experiment.tags,
            "runs": runs,
        }
    return out


def evstore(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVSTORE_", "MLFLOW_"))}
    return subprocess.run(
        [EVSTORE, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_mlflow_postgres_store_imports_as_mlflow_reads_it(database: str, tmp_path: Path) -> None:
    made = mlflow_history(database, tmp_path)
    want = read_through_mlflow(database)
    assert set(want) == set(made["experiments"])

    store = tmp_path / "evstore.db"
    done = evstore("import", "mlflow", database, "--store", str(store), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    revision = next(r for r, s in KNOWN_REVISIONS.items() if s.mlflow_version == "3.17")
    assert f"(schema {revision})" in done.stdout
    got = _snapshot(Client(str(store)), ViewType.ALL)
    assert got == want

    parent = made["parent"]
    listed = {f.path: f.file_size for f in Client(str(store)).list_artifacts(parent, "notes")}
    assert listed == {"notes/readme.txt": len("hello from postgres")}

    log = open_log(store)
    try:
        head = log.head_position()
        again = evstore("import", "mlflow", database, "--store", str(store), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "; 0 new events" in again.stdout
        assert log.head_position() == head
        assert verify(log).ok
    finally:
        log.close()


def test_unknown_alembic_revision_is_refused_before_reading(database: str, tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('ffffffffffff')")
    with pytest.raises(StoreFormatError, match="revision 'ffffffffffff', which this importer does not know"):
        open_source(database)
    store = tmp_path / "evstore.db"
    refused = evstore("import", "mlflow", database, "--store", str(store), cwd=tmp_path)
    assert refused.returncode != 0
    assert "ffffffffffff" in refused.stderr and "Traceback" not in refused.stderr


def test_a_database_that_is_not_mlflows_is_refused(database: str) -> None:
    with pytest.raises(StoreFormatError, match="is not an MLflow tracking database"):
        open_source(database)


def test_an_unreachable_server_is_one_clear_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot read the MLflow store") as raised:
        open_source("postgresql://someone:s3cret@127.0.0.1:1/mlflow")
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


@pytest.mark.parametrize(
    ("given", "dsn"),
    [
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("postgresql+psycopg2://u:pw@h/db", "postgresql://u:pw@h/db"),
        ("POSTGRESQL+psycopg://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
    ],
)
def test_mlflow_spellings_of_a_postgres_uri(given: str, dsn: str) -> None:
    assert postgres_dsn(given) == dsn


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_passwords_are_never_shown(given: str, shown: str) -> None:
    assert without_password(given) == shown


def test_a_uri_that_is_not_postgres_is_refused() -> None:
    with pytest.raises(InvalidParameterValue, match="not a PostgreSQL URI"):
        postgres_dsn("mysql://u:pw@h/db")


def test_mlflow_postgres_models_inputs_and_registry_import_as_mlflow_reads_them(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput

    from evstore.importers.mlflow_import import import_mlflow

    # MLflow's registry looks a models:/ source up through the global tracking URI.
    uri = "postgresql+psycopg://" + database.split("://", 1)[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = mlflow.create_experiment("pg-models", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run_id = mlflow.create_run(experiment, run_name="train").info.run_id
    dataset = Dataset("toy", "d1g3st", "local", '{"uri": "x.csv"}', schema='{"a": 1}')
    mlflow.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
    model = mlflow.create_logged_model(experiment, name="clf", source_run_id=run_id, params={"C": "1"},
                                       tags={"owner": "ana"}, model_type="classifier")  # fmt: skip
    mlflow.finalize_logged_model(model.model_id, "READY")
    mlflow.log_outputs(run_id, [LoggedModelOutput(model.model_id, 2)])
    mlflow.create_registered_model("pg-model", tags={"team": "ml"}, description="on postgres")
    mlflow.create_model_version("pg-model", f"runs:/{run_id}/model", run_id=run_id)
    mlflow.create_model_version("pg-model", f"models:/{model.model_id}", model_id=model.model_id,
                                tags={"from": "logged model"})  # fmt: skip
    mlflow.set_registered_model_alias("pg-model", "champion", "1")
    mlflow.set_registered_model_alias("pg-model", "champion", "2")

    store = tmp_path / "evstore.db"
    summary = import_mlflow(str(store), database)
    assert (summary.logged_models, summary.dataset_inputs, summary.model_outputs) == (1, 1, 1)
    assert (summary.registered_models, summary.model_versions, summary.model_aliases) == (1, 2, 1)
    client = Client(str(store))
    want, got = mlflow.get_logged_model(model.model_id), client.get_logged_model(model.model_id)
    assert (got.name, got.status, got.params, got.tags, got.model_type, got.source_run_id,
            got.creation_timestamp) == (want.name, str(want.status), want.params, want.tags,
                                        want.model_type, want.source_run_id, want.creation_timestamp)  # fmt: skip
    run = mlflow.get_run(run_id)
    datasets, _ = client._transport.run_inputs(run_id)
    assert [(d.name, d.digest, d.source, d.schema, d.tags) for d in datasets] == [
        (d.dataset.name, d.dataset.digest, d.dataset.source, d.dataset.schema, {t.key: t.value for t in d.tags})
        for d in run.inputs.dataset_inputs]  # fmt: skip
    assert client._transport.run_outputs(run_id) == [(o.model_id, o.step) for o in run.outputs.model_outputs]
    registered, mine = mlflow.get_registered_model("pg-model"), client.get_registered_model("pg-model")
    assert (mine.description, mine.tags, mine.aliases, mine.creation_timestamp) == (
        registered.description, registered.tags, {"champion": "2"}, registered.creation_timestamp)
    for number in ("1", "2"):
        theirs, ours = mlflow.get_model_version("pg-model", number), client.get_model_version("pg-model", number)
        assert (ours.source, ours.run_id, ours.tags, ours.aliases, ours.creation_timestamp) == (
            theirs.source, theirs.run_id, theirs.tags, theirs.aliases, theirs.creation_timestamp)
    assert import_mlflow(str(store), database).events_appended == 0
