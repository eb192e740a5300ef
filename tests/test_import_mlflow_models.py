"""`evstore import mlflow` brings logged models, run inputs and outputs, and the model
registry (tests/fixtures/mlflow-models/, made by its make_fixtures.py with mlflow 3.17.2).

Each fixture's ``manifest.json`` is what MLflow's own client read back. The store is
imported, then what ``evstore.Client`` returns is compared with it field by field. Then:
a re-import adds nothing, an import that dies at any append and runs again ends with the
same log as a clean one, changes made in MLflow since are synced as events (and the
history keeps both positions of a moved alias), and bad source content is reported.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_here import run_here
from conftest import close_cached_stores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstore import Client
from evstore.errors import ResourceDoesNotExist
from evstore.importers.mlflow_import import import_mlflow
from evstore.importers.mlflow_source import model_id_of
from evstore.importers.mlflow_yaml import NESTED, parse_flat_yaml
from evstore.integrity import verify
from evstore.model_history import model_changes
from evstore.stores import open_log
from evstore.tracking import service as client_module

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mlflow-models"
SQLITE, FILES = "mlflow-3.17-sqlite", "mlflow-3.17-file"
FOLDERS = [SQLITE, FILES]
NAME = "iris-classifier"


def manifest(folder: str) -> dict[str, Any]:
    """The fixture's ground truth, as MLflow's client read it back."""
    return json.loads((FIXTURES / folder / "manifest.json").read_text(encoding="utf-8"))


def source_for(folder: str, root: Path = FIXTURES) -> str:
    path = root / folder / manifest(folder)["tracking_uri_relative"]
    return f"sqlite:///{path}" if manifest(folder)["backend"] == "sqlite" else str(path)


def imported(folder: str, store: Path, root: Path = FIXTURES) -> Any:
    """Import a fixture (from ``root``) into ``store``; its summary."""
    return import_mlflow(str(store), source_for(folder, root), artifacts_root=str(root / folder))


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No store or artifact root from the environment; close the stores this test opened."""
    monkeypatch.delenv("EVSTORE_TRACKING_URI", raising=False)
    monkeypatch.delenv("EVSTORE_ARTIFACT_ROOT", raising=False)
    yield
    close_cached_stores(tmp_path)


def stored_events(store_path: Path) -> list[tuple[Any, ...]]:
    """(position, stream, version, event id, type, payload) of every event."""
    log = open_log(store_path)
    try:
        return [(r.position, r.stream_id, r.stream_version, r.event_id, r.type, r.payload)
                for batch in log.read_raw() for r in batch]  # fmt: skip
    finally:
        log.close()


# --- the manifest, field by field ----------------------------------------------------------


def mismatches(client: Client, folder: str) -> list[str]:
    """Every difference between the manifest and what the client returns."""
    expected, out = manifest(folder), []

    def check(where: str, field: str, want: Any, got: Any) -> None:
        if want != got:
            out.append(f"{where}: {field}: manifest {want!r} != evstore {got!r}")

    experiment_id = expected["experiment_id"]
    found = {m.model_id: m for m in client.search_logged_models([experiment_id])}
    check("logged models", "ids", sorted(m["model_id"] for m in expected["logged_models"]), sorted(found))
    for want in expected["logged_models"]:
        where = f"logged model {want['model_id']}"
        got = client.get_logged_model(want["model_id"])
        for field in ("experiment_id", "name", "artifact_location", "model_type", "source_run_id",
                      "tags", "params", "status_message", "creation_timestamp",
                      "last_updated_timestamp"):  # fmt: skip
            check(where, field, want[field], getattr(got, field))
        check(where, "status", want["status"], got.status)
        metrics = sorted([m.key, m.value, m.step, m.timestamp, run, name or "", digest or ""]
                         for m, run, name, digest in got.metrics)  # fmt: skip
        check(where, "metrics", want["metrics"], metrics)
    for want in expected["runs"]:
        where = f"run {want['run_id']} ({want['run_name']})"
        datasets, models = client._transport.run_inputs(want["run_id"])
        got = [{"name": d.name, "digest": d.digest, "source_type": d.source_type, "source": d.source,
                "schema": d.schema, "profile": d.profile, "tags": d.tags} for d in datasets]  # fmt: skip
        by_name = sorted(want["dataset_inputs"], key=lambda d: (d["name"], d["digest"]))
        check(where, "dataset inputs", by_name, sorted(got, key=lambda d: (d["name"], d["digest"])))
        check(where, "model inputs", sorted(want["model_inputs"]), sorted(models))
        check(where, "model outputs", want["model_outputs"], [list(o) for o in client._transport.run_outputs(want["run_id"])])
    names = [m.name for m in client.search_registered_models()]
    check("registry", "names", [m["name"] for m in expected["registered_models"]], names)
    for want in expected["registered_models"]:
        where = f"registered model {want['name']}"
        got = client.get_registered_model(want["name"])
        for field in ("description", "tags", "aliases", "creation_timestamp", "last_updated_timestamp"):
            check(where, field, want[field], getattr(got, field))
        versions = client.search_model_versions(f"name = '{want['name']}'")
        check(where, "versions", [v["version"] for v in want["versions"]], sorted((v.version for v in versions), key=int))
        for version in want["versions"]:
            at = f"{where} version {version['version']}"
            mv = client.get_model_version(want["name"], version["version"])
            for field in ("creation_timestamp", "description", "user_id", "current_stage", "source",
                          "run_id", "run_link", "status", "tags", "aliases"):  # fmt: skip
                check(at, field, version[field], getattr(mv, field))
            # MLflow's SQL store keeps no model id on a version; evstore reads it from the
            # models:/ source, as its own registry does for a version registered live.
            check(at, "model_id", version["model_id"] or model_id_of(version["source"]), mv.model_id)
            # MLflow's last update of a version is its stage change, if any: imported with
            # that time. A description's change has no time of its own in MLflow's tables.
            if not version["description"]:
                check(at, "last_updated_timestamp", version["last_updated_timestamp"], mv.last_updated_timestamp)
    return out


@pytest.mark.parametrize("folder", FOLDERS)
def test_import_equals_the_manifest(folder: str, tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    summary = imported(folder, store)
    assert summary.skipped == []
    assert (summary.logged_models, summary.registered_models, summary.model_versions) == (3, 1, 3)
    assert (summary.dataset_inputs, summary.model_inputs, summary.model_outputs, summary.model_aliases) == (2, 1, 1, 2)
    assert summary.not_imported == {}
    client = Client(str(store))
    assert mismatches(client, folder) == []
    assert verify(client.store).ok


@pytest.mark.parametrize("folder", FOLDERS)
def test_deleted_things_stay_deleted_and_numbers_go_on(folder: str, tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    imported(folder, store)
    client = Client(str(store))
    # The model MLflow deleted: gone from reads, kept in the log.
    dropped = [m for m in client.store.read_all() if type(m.event).__name__ == "LoggedModelDeleted"]
    assert len(dropped) == 1
    with pytest.raises(ResourceDoesNotExist):
        client.get_logged_model(dropped[0].stream_id)
    assert client.get_logged_model(dropped[0].stream_id, allow_deleted=True).name == "dropped"
    # Version 4 was deleted in MLflow; the next version registered here is 5, as MLflow's.
    with pytest.raises(ResourceDoesNotExist):
        client.get_model_version(NAME, "4")
    run_id = manifest(folder)["runs"][1]["run_id"]
    assert client.create_model_version(NAME, f"runs:/{run_id}/model", run_id=run_id).version == "5"
    assert client.get_model_version_by_alias(NAME, "champion").version == "2"


@pytest.mark.parametrize("folder", FOLDERS)
def test_model_artifacts_come_over_byte_for_byte(folder: str, tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    imported(folder, store)
    client = Client(str(store))
    (model,) = [m for m in manifest(folder)["logged_models"] if m["name"] == "clf"]
    # Recorded under /tmp/evstore-mlflow-models/ (where make_fixtures.py wrote it).
    local = FIXTURES / model["artifact_location"].split("/evstore-mlflow-models/", 1)[1]
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert "MLmodel" in files
    for path in files:
        size, sha = client._transport.model_artifact_digest(model["model_id"], path)
        data = (local / path).read_bytes()
        assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest()), path


def test_history_shows_mlflow_times_and_the_cli_summary_names_every_kind(tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    done = run_here("import", "mlflow", source_for(SQLITE), "--store", store,
                    "--artifacts-root", FIXTURES / SQLITE)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.stdout.splitlines()[0]
    for kind in ("3 logged models", "2 dataset inputs", "1 model inputs", "1 model outputs",
                 "1 registered models", "3 model versions", "2 aliases"):  # fmt: skip
        assert kind in line, line
    assert "not imported" not in done.stdout
    expected = manifest(SQLITE)["registered_models"][0]
    rows = model_changes(open_log(store), NAME)
    assert rows[0]["type"] == "RegisteredModelCreated"
    assert rows[0]["occurred_at"] == expected["creation_timestamp"]
    created = {r["changes"][0]["what"]: r["occurred_at"] for r in rows if r["type"] == "ModelVersionCreated"}
    assert list(created.values()) == [v["creation_timestamp"] for v in expected["versions"]] + [created[max(created)]]
    shown = run_here("history", "--model", NAME, "--store", store)
    assert shown.returncode == 0, shown.stderr
    assert "champion" in shown.stdout and "Production" in shown.stdout


def test_the_server_shows_the_imported_models_to_mlflows_client(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from servers import ThreadServer

    (tmp_path / "server").mkdir()
    imported(SQLITE, tmp_path / "server" / "server.db")
    server = ThreadServer(tmp_path / "server")
    try:
        mlflow = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        expected = manifest(SQLITE)
        train, plain = expected["runs"]
        run = mlflow.get_run(train["run_id"])
        assert sorted((d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"])
                      for d in run.inputs.dataset_inputs) == [("toy-eval", "eval"), ("toy-train", "training")]  # fmt: skip
        assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [tuple(train["model_outputs"][0])]
        assert [m.model_id for m in mlflow.get_run(plain["run_id"]).inputs.model_inputs] == plain["model_inputs"]
        champion = mlflow.get_model_version_by_alias(NAME, "champion")
        assert (champion.version, champion.current_stage) == ("2", "Production")
        clf = next(m for m in expected["logged_models"] if m["name"] == "clf")
        assert mlflow.get_logged_model(clf["model_id"]).params == clf["params"]
    finally:
        server.stop()


# --- re-import and resume -----------------------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS)
def test_reimport_adds_zero_events(folder: str, tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    first = imported(folder, store)
    before = stored_events(store)
    assert first.events_appended == len(before) > 0
    again = imported(folder, store)
    assert again.events_appended == 0 and again.skipped == []
    assert (again.logged_models, again.model_versions) == (first.logged_models, first.model_versions)
    assert stored_events(store) == before


class _Crash(Exception):
    pass


def test_an_import_dying_at_any_append_resumes_to_a_clean_import(tmp_path: Path) -> None:
    clean = tmp_path / "clean.db"
    imported(SQLITE, clean)
    reference = stored_events(clean)
    commits = 0

    def count(conn: Any, recorded: Any) -> None:
        nonlocal commits
        commits += 1

    # How many appends a clean import makes, then die before each of them in turn.
    probe = tmp_path / "probe.db"
    log = client_module.open_tracking_store(str(probe)).store
    log.append_hooks.append(count)
    imported(SQLITE, probe)
    log.append_hooks.remove(count)
    appends = commits
    assert appends > 10
    for dying in range(1, appends, 3):
        store = tmp_path / f"dies-at-{dying}.db"
        seen = 0

        def crash(conn: Any, recorded: Any, dying: int = dying) -> None:
            nonlocal seen
            seen += 1
            if seen == dying:
                raise _Crash

        log = client_module.open_tracking_store(str(store)).store
        log.append_hooks.append(crash)
        with pytest.raises(_Crash):
            imported(SQLITE, store)
        log.append_hooks.remove(crash)
        imported(SQLITE, store)
        assert stored_events(store) == reference, f"died at append {dying}"


# --- changes made in MLflow since the last import ------------------------------------------


def copied(folder: str, tmp_path: Path) -> Path:
    """A writable copy of a fixture folder; returns the root holding it."""
    root = tmp_path / "source"
    shutil.copytree(FIXTURES / folder, root / folder)
    return root


def test_reimport_syncs_registry_changes_and_history_keeps_both_alias_positions(tmp_path: Path) -> None:
    root, store = copied(SQLITE, tmp_path), tmp_path / "evstore.db"
    imported(SQLITE, store, root)
    # In MLflow: champion moves to 3, a tag changes, one is deleted, version 3 goes to
    # Staging and gets a description, the model a new description, and a new version 5.
    db = sqlite3.connect(root / SQLITE / "mlflow.db")
    with db:
        db.execute("UPDATE registered_model_aliases SET version = 3 WHERE alias = 'champion'")
        db.execute("UPDATE registered_model_tags SET value = 'platform' WHERE key = 'owner'")
        db.execute("DELETE FROM model_version_tags WHERE version = 2 AND key = 'validated'")
        db.execute("UPDATE model_versions SET current_stage = 'Staging', description = 'next',"
                   " last_updated_time = 1900000000000 WHERE version = 3")  # fmt: skip
        db.execute("UPDATE registered_models SET description = 'Still a toy.'")
        db.execute("INSERT INTO model_versions (name, version, creation_time, last_updated_time,"
                   " current_stage, source, status, workspace) SELECT name, 5, 1900000000001,"
                   " 1900000000001, 'None', 'runs:/x/model', 'READY', workspace FROM registered_models")  # fmt: skip
    db.close()
    summary = imported(SQLITE, store, root)
    assert summary.skipped == []
    client = Client(str(store))
    model = client.get_registered_model(NAME)
    assert (model.aliases["champion"], model.tags["owner"], model.description) == ("3", "platform", "Still a toy.")
    assert client.get_model_version(NAME, "2").tags == {"from": "logged model"}
    three = client.get_model_version(NAME, "3")
    assert (three.current_stage, three.description) == ("Staging", "next")
    assert client.get_model_version(NAME, "5").source == "runs:/x/model"
    new_types = sorted(type(r.event).__name__ for r in client.store.read_all() if r.position > summary_head(store, summary))
    assert new_types == sorted(["RegisteredModelDescribed", "RegisteredModelTagSet", "ModelVersionTagDeleted",
                                "ModelVersionDescribed", "ModelVersionStageChanged", "ModelVersionCreated",
                                "RegisteredModelAliasSet"])  # fmt: skip
    champion = [c["after"] for r in model_changes(client.store, NAME) for c in r["changes"]
                if c["what"] == "alias champion"]  # fmt: skip
    assert champion == ["2", "3"] or champion == ["version 2", "version 3"], champion
    assert imported(SQLITE, store, root).events_appended == 0


def summary_head(store: Path, summary: Any) -> int:
    """The head position before an import that appended ``summary.events_appended``."""
    return len(stored_events(store)) - summary.events_appended


def test_reimport_syncs_logged_model_and_input_changes(tmp_path: Path) -> None:
    root, store = copied(SQLITE, tmp_path), tmp_path / "evstore.db"
    imported(SQLITE, store, root)
    draft = next(m for m in manifest(SQLITE)["logged_models"] if m["name"] == "draft")
    plain = manifest(SQLITE)["runs"][1]["run_id"]
    db = sqlite3.connect(root / SQLITE / "mlflow.db")
    with db:  # the draft is finalized and retagged; the plain run produced it at step 3
        db.execute("UPDATE logged_models SET status = 2, last_updated_timestamp_ms = 1900000000000"
                   " WHERE model_id = ?", (draft["model_id"],))  # fmt: skip
        db.execute("UPDATE logged_model_tags SET tag_value = 'false' WHERE model_id = ?", (draft["model_id"],))
        db.execute("INSERT INTO inputs VALUES ('u1', 'RUN_OUTPUT', ?, 'MODEL_OUTPUT', ?, 3)",
                   (plain, draft["model_id"]))  # fmt: skip
    db.close()
    summary = imported(SQLITE, store, root)
    assert summary.events_appended == 3 and summary.skipped == []
    client = Client(str(store))
    model = client.get_logged_model(draft["model_id"])
    assert (model.status, model.tags) == ("READY", {"wip": "false"})
    assert client._transport.run_outputs(plain) == [(draft["model_id"], 3)]


# --- bad source content ----------------------------------------------------------------------


def test_bad_registry_content_is_reported_not_raised(tmp_path: Path) -> None:
    root, store = copied(FILES, tmp_path), tmp_path / "evstore.db"
    registry = root / FILES / "mlruns" / "models" / NAME
    (registry / "aliases" / "champion").write_text("two")
    (registry / "aliases" / "latest").write_text("1")  # a reserved alias: the model is refused
    (root / FILES / "mlruns" / "models" / "no-meta").mkdir()
    summary = imported(FILES, store, root)
    reasons = dict(summary.skipped)
    assert "it names no version number ('two')" in reasons[f"registered model {NAME} alias champion"]
    assert "reserved" in reasons[f"registered model {NAME}"]
    assert any(what.endswith("no-meta") for what in reasons)
    assert summary.registered_models == 0 and summary.logged_models == 3
    # The rest came over; the CLI says the same in lines, without a traceback.
    done = run_here("import", "mlflow", source_for(FILES, root), "--store", tmp_path / "cli.db",
                    "--artifacts-root", root / FILES)  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert f"skipped registered model {NAME}: " in done.stdout


def test_a_target_model_of_the_same_name_is_not_overwritten(tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    Client(str(store)).create_registered_model(NAME, description="ours")
    summary = imported(SQLITE, store)
    assert dict(summary.skipped)[f"registered model {NAME}"] == (
        "the target store has another registered model with this name")
    assert Client(str(store)).get_registered_model(NAME).description == "ours"
    assert summary.logged_models == 3  # the rest came over


def test_unreadable_input_meta_is_reported_and_the_rest_imported(tmp_path: Path) -> None:
    root, store = copied(FILES, tmp_path), tmp_path / "evstore.db"
    meta = next((root / FILES / "mlruns").glob("*/*/inputs/*/meta.yaml"))
    meta.write_text("tags:\n  a: &anchor x\n")
    summary = imported(FILES, store, root)
    run_id = meta.parent.parent.parent.name
    assert "unsupported YAML construct" in dict(summary.skipped)[f"run {run_id} inputs and outputs"]
    assert summary.runs == 2 and summary.registered_models == 1


# --- an input's meta.yaml: its tags are a nested mapping ------------------------------------

TAG_KEYS = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True), st.text(max_size=20))
TAG_VALUES = st.one_of(st.text(max_size=300), st.text(alphabet="ab \n\t'\"#:-\\\r\x85\u2028é模", max_size=200))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=4))
def test_input_tags_read_as_pyyaml_reads_them_or_are_refused(tags: dict[str, str]) -> None:
    yaml = pytest.importorskip("yaml")  # only the test needs PyYAML; the reader does not
    # MLflow's file store writes an input's meta.yaml with its tags as a nested mapping.
    data = {"destination_id": "r", "destination_type": "RUN", "source_id": "d",
            "source_type": "DATASET", "tags": tags}  # fmt: skip
    text = yaml.safe_dump(data, default_flow_style=False, allow_unicode=True, sort_keys=True)
    try:
        read = parse_flat_yaml(text, nested=True)
    except ValueError:
        return  # refused (a block scalar, say): reported by the import, never misread
    assert {k: v for k, v in read.items() if k != "tags"} == {k: v for k, v in data.items() if k != "tags"}
    # Read exactly as PyYAML reads it, or not read at all (keys it had to quote).
    assert read["tags"] == yaml.safe_load(text)["tags"] or read["tags"] is NESTED
    if all(k.isidentifier() and v.isalnum() for k, v in tags.items()):
        assert read["tags"] == tags


def test_a_point_linked_to_two_models_keeps_one_link_and_says_so(tmp_path: Path) -> None:
    root, store = copied(FILES, tmp_path), tmp_path / "evstore.db"
    models = {m["name"]: m["model_id"] for m in manifest(FILES)["logged_models"]}
    folder = next((root / FILES / "mlruns").glob(f"*/models/{models['clf']}"))
    (folder.parent / models["draft"] / "metrics").mkdir(exist_ok=True)
    shutil.copyfile(folder / "metrics" / "loss", folder.parent / models["draft"] / "metrics" / "loss")
    summary = imported(FILES, store, root)
    assert summary.not_imported == {"metric links to a second logged model": 1}
    kept = min(models["clf"], models["draft"])
    client = Client(str(store))
    assert [m.key for m, *_ in client.get_logged_model(kept).metrics].count("loss") == 1
    other = max(models["clf"], models["draft"])
    assert "loss" not in [m.key for m, *_ in client.get_logged_model(other).metrics]


def test_an_mlflow_2_store_brings_its_registry_and_dataset_inputs(tmp_path: Path) -> None:
    # MLflow 2.22's schema: no workspaces, no logged models; written here with plain SQL.
    source = tmp_path / "mlflow.db"
    shutil.copyfile(FIXTURES.parent / "mlflow" / "mlflow-2.22-sqlite" / "mlflow.db", source)
    db = sqlite3.connect(source)
    with db:
        run_id, experiment_id = db.execute("SELECT run_uuid, experiment_id FROM runs LIMIT 1").fetchone()
        db.execute("INSERT INTO registered_models VALUES ('old', 10, 30, 'from MLflow 2')")
        db.execute("INSERT INTO registered_model_tags VALUES ('k', 'v', 'old')")
        db.execute("INSERT INTO model_versions (name, version, creation_time, last_updated_time, current_stage,"
                   " source, run_id, status) VALUES ('old', 1, 20, 30, 'Staging', ?, ?, 'READY')",
                   (f"runs:/{run_id}/model", run_id))  # fmt: skip
        db.execute("INSERT INTO registered_model_aliases VALUES ('prod', 1, 'old')")
        db.execute("INSERT INTO datasets VALUES ('d1', ?, 'set', 'abc', 'local', '{}', NULL, NULL)", (experiment_id,))
        db.execute("INSERT INTO inputs VALUES ('i1', 'DATASET', 'd1', 'RUN', ?)", (run_id,))
        db.execute("INSERT INTO input_tags VALUES ('i1', 'mlflow.data.context', 'eval')")
    db.close()
    summary = import_mlflow(str(tmp_path / "evstore.db"), f"sqlite:///{source}")
    assert (summary.registered_models, summary.model_versions, summary.model_aliases, summary.dataset_inputs) == (1, 1, 1, 1)
    client = Client(str(tmp_path / "evstore.db"))
    model = client.get_registered_model("old")
    assert (model.creation_timestamp, model.description, model.tags, model.aliases) == (10, "from MLflow 2", {"k": "v"}, {"prod": "1"})
    version = client.get_model_version("old", "1")
    assert (version.current_stage, version.run_id, version.creation_timestamp) == ("Staging", run_id, 20)
    (dataset,), _ = client._transport.run_inputs(run_id)
    assert (dataset.name, dataset.digest, dataset.tags) == ("set", "abc", {"mlflow.data.context": "eval"})


def test_a_model_deleted_in_the_target_is_not_brought_back(tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    imported(SQLITE, store)
    Client(str(store)).delete_registered_model(NAME)
    head = len(stored_events(store))
    summary = imported(SQLITE, store)
    assert dict(summary.skipped)[f"registered model {NAME}"] == "it was deleted in the target store after an import"
    assert len(stored_events(store)) == head
    with pytest.raises(ResourceDoesNotExist):
        Client(str(store)).get_registered_model(NAME)
