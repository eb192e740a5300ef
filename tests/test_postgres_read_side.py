"""The read side on PostgreSQL, beyond the contract suites that run on both backends: the
role ``evstore init`` prints serves the tracking API, and what PostgreSQL cannot hold is
refused whole."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import PostgresDatabase, close_cached_stores
from typer.testing import CliRunner

from evstore import Client
from evstore.cli import app
from evstore.errors import InvalidParameterValue
from evstore.projection import open_store
from evstore.stores.postgres_readmodels import translate


def test_the_role_evstore_init_prints_serves_the_tracking_api_and_changes_no_table(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    uri = postgres_database.new_store_uri()
    # The owner makes the store and its read models, and is told how to make the role.
    done = CliRunner().invoke(app, ["init", "--store", uri])
    assert done.exit_code == 0, done.output
    role = f"evstore_app_{uuid.uuid4().hex[:8]}"
    statements = [line.strip().rstrip(";").replace('"evstore_app"', f'"{role}"')
                  for line in done.output.splitlines() if line.startswith("  ")]  # fmt: skip
    assert any("UPDATE, DELETE ON" in s and '."runs"' in s for s in statements), statements
    as_role = uri.replace("postgresql://postgres@", f"postgresql://{role}@")
    with postgres_database.connect() as admin:
        try:
            for statement in statements:
                admin.execute(statement)
            # The role logs and reads through the tracking API, read models kept inline.
            client = Client(as_role)
            try:
                run_id = client.create_run(client.create_experiment("e")).info.run_id
                client.log_param(run_id, "lr", "0.1")
                for step in range(3):
                    client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
                assert [r.info.run_id for r in client.search_runs(
                    ["1"], "params.lr = '0.1' and metrics.loss < 1")] == [run_id]  # fmt: skip
                assert len(client.get_metric_history(run_id, "loss")) == 3
            finally:
                close_cached_stores(as_role)
            # ...and can change neither the log nor the shape of the read models.
            with psycopg.connect(as_role, autocommit=True) as conn:
                for sql in ("UPDATE events SET version = version", "DELETE FROM commits",
                            "DROP TABLE runs", "ALTER TABLE params ADD COLUMN x text",
                            "CREATE TABLE mine (x text)"):  # fmt: skip
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(sql)
        finally:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


def test_a_nul_character_postgresql_cannot_hold_refuses_the_append_whole(
    postgres_database: PostgresDatabase,
) -> None:
    from evstore.events import RunStarted, TagSet

    runner = open_store(postgres_database.new_store_uri())
    try:
        store = runner.store
        store.append("r" * 32, [RunStarted(experiment_id="1", run_name="r", user_id="u", start_time=1)])
        # The caller's value, refused as such (a 400 on the server), not a failed projection.
        with pytest.raises(InvalidParameterValue, match="NUL"):
            store.append("r" * 32, [TagSet(key="k", value="a\x00b")])
        assert store.head_position() == 1
        runner.check_fresh()
    finally:
        runner.store.close()


def test_a_nul_in_a_registered_models_text_is_the_callers_error_and_stores_nothing(
    postgres_database: PostgresDatabase,
) -> None:
    uri = postgres_database.new_store_uri()
    client = Client(uri)
    try:
        client.create_registered_model("M")
        before = client.store.head_position()
        for write in (lambda: client.update_registered_model("M", description="a\x00b"),
                      lambda: client.set_registered_model_tag("M", "k", "a\x00b"),
                      lambda: client.create_registered_model("N\x00")):  # fmt: skip
            with pytest.raises(InvalidParameterValue, match="NUL"):
                write()
        assert client.store.head_position() == before
        assert client.get_registered_model("M").description in (None, "")
    finally:
        close_cached_stores(uri)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT x FROM t WHERE a = ? AND b LIKE 'a%'", "SELECT x FROM t WHERE a = %s AND b LIKE 'a%%'"),
        ("SELECT '?' FROM t WHERE a = ?", "SELECT '?' FROM t WHERE a = %s"),
        ("SELECT x FROM t WHERE a = %s", "SELECT x FROM t WHERE a = %s"),  # PostgreSQL's own
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b REAL, c BLOB) WITHOUT ROWID",
         "CREATE TABLE t (a bigint PRIMARY KEY, b double precision, c bytea)"),
        ("BEGIN IMMEDIATE", "BEGIN"),
        ("INSERT OR REPLACE INTO t VALUES (?, ?, ?)",
         "INSERT INTO t VALUES (%s, %s, %s) ON CONFLICT (k) DO UPDATE SET a = excluded.a, b = excluded.b"),
        ("INSERT INTO t VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET a = a + 1 WHERE b > excluded.b",
         "INSERT INTO t VALUES (%s, %s, %s) ON CONFLICT (k) DO UPDATE SET a = t.a + 1 WHERE t.b > excluded.b"),
    ],
)  # fmt: skip
def test_read_side_sql_is_rewritten_into_postgresqls_dialect(sqlite: str, postgres: str) -> None:
    columns = [("k", True), ("a", False), ("b", False)]
    statement = translate(sqlite, lambda table: columns)
    assert statement.text == postgres and statement.row is None


def test_an_upsert_of_many_rows_runs_row_by_row_in_order() -> None:
    columns = [("k", True), ("a", False)]
    statement = translate("INSERT OR REPLACE INTO t VALUES (?, ?), (?, ?)", lambda table: columns)
    assert statement.row == "INSERT INTO t VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET a = excluded.a"
    assert statement.width == 2


def test_a_redaction_erases_the_value_from_the_log_and_the_read_models_and_verifies(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evstore.integrity import verify
    from evstore.redaction import redact

    monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    uri = postgres_database.new_store_uri()
    client = Client(uri)
    try:
        run_id = client.create_run("0").info.run_id
        client.log_param(run_id, "token", "s3cret-value")
        client.log_param(run_id, "lr", "0.1")
        report = redact(client.store, run_id=run_id, param="token", reason="leaked")
        assert report.purge_problem is None and report.rebuilt == ["params"]
        assert client.get_run(run_id).data.params == {"token": "[redacted]", "lr": "0.1"}
        assert verify(client.store).ok
        # No table of the store holds the value any more, the log's included.
        schema = uri.rsplit("%3D", 1)[1]
        with postgres_database.connect() as raw:
            raw.execute(f"SET search_path TO {schema}")
            assert raw.execute(
                "SELECT count(*) FROM events WHERE position('s3cret'::bytea in payload) > 0"
            ).fetchone() == (0,)
            assert raw.execute("SELECT count(*) FROM params WHERE value LIKE '%s3cret%'").fetchone() == (0,)
    finally:
        close_cached_stores(uri)


@pytest.mark.parametrize("variable", ["EVSTORE_TRACKING_URI", "MLFLOW_TRACKING_URI"])
def test_the_fluent_api_tracks_to_the_database_the_environment_names(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:  # fmt: skip
    import evstore as mlflow
    from evstore import fluent

    uri = postgres_database.new_store_uri()
    for name in ("EVSTORE_TRACKING_URI", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                 "EVSTORE_EXPERIMENT_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, uri)
    monkeypatch.setenv("EVSTORE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    fluent.reset()
    try:
        mlflow.set_experiment("fluent")
        with mlflow.start_run() as run:
            mlflow.log_param("lr", "0.1")
            mlflow.log_metric("loss", 0.5, step=1)
        found = Client(uri).get_run(run.info.run_id)
        assert (found.data.params, found.data.metrics) == ({"lr": "0.1"}, {"loss": 0.5})
        assert found.info.status == "FINISHED"
    finally:
        fluent.reset()
        close_cached_stores(uri)
