"""Golden files: every stored payload and every old store ever written stays readable.

``tests/fixtures/events/<Type>/v<N>.json`` are payloads as some version of evstore
stored them; each must decode, through today's upcaster chain, into the current events
written out below. ``tests/fixtures/stores/<name>/`` are whole stores written before a
schema bump; each must open with today's code, verify, rebuild its read models, and
mean what its ``expected.json`` says. Fixtures are never edited: stores are copied to ``tmp_path``
before they are opened (opening a WAL store writes next to it).
"""

from __future__ import annotations

import base64
import json
import math
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import history_points, nan_safe

from evstore import codec
from evstore.events import EVENT_TYPES
from evstore.integrity import verify
from evstore.rebuild import rebuild
from evstore.stores import open_log
from evstore.stores.base import EventStore

FIXTURES = Path(__file__).parent / "fixtures"
EVENTS_DIR = FIXTURES / "events"
STORES_DIR = FIXTURES / "stores"

RUN_A = "a" * 32
RUN_C = "c" * 32
T0 = 1_700_000_000_000
NAN = math.nan
INF = math.inf

# --- golden payloads ----------------------------------------------------------------

#: For each golden payload file: the current events it must decode to, as
#: (type name, msgspec.to_builtins(event)). A new golden file needs an entry here.
EXPECTED_EVENTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "ArtifactRecorded/v1.json": [
        ("ArtifactRecorded", {"path": "model/config.txt", "size": 11,
            "sha256": "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"}),
    ],
    "ExperimentCreated/v1.json": [
        ("ExperimentCreated", {"experiment_id": "0", "name": "Default",
            "artifact_location": "evstore-artifacts/0", "creation_time": T0, "tags": {}}),
    ],
    "ExperimentDeleted/v1.json": [
        ("ExperimentDeleted", {"experiment_id": "2", "deleted_time": T0 + 55}),
    ],
    "ExperimentRenamed/v1.json": [
        ("ExperimentRenamed", {"experiment_id": "1", "name": "golden-renamed"}),
    ],
    "ExperimentRestored/v1.json": [
        ("ExperimentRestored", {"experiment_id": "2", "restored_time": T0 + 56}),
    ],
    "ExperimentTagDeleted/v1.json": [
        ("ExperimentTagDeleted", {"experiment_id": "1", "key": "owner"}),
    ],
    "ExperimentTagSet/v1.json": [
        ("ExperimentTagSet", {"experiment_id": "1", "key": "stage", "value": "dev"}),
    ],
    # v1 points had no context: the chain fills model_id, dataset_name, dataset_digest
    # with None.
    "MetricsLogged/v1.json": [
        ("MetricsLogged", {"points": [
            ["loss", 1.0, 0, T0 + 20, None, None, None],
            ["loss", 0.5, 1, T0 + 21, None, None, None],
            ["loss", 0.25, 1, T0 + 22, None, None, None],
            ["loss", NAN, 2, T0 + 23, None, None, None],
            ["acc", INF, -1, T0 + 24, None, None, None],
            ["acc", -INF, 0, T0 + 25, None, None, None],
            ["val loss", 0.0, 0, T0 + 26, None, None, None],
        ]}),
    ],
    "MetricsLogged/v2.json": [
        ("MetricsLogged", {"points": [["acc", 0.9, 5, T0 + 31, "m-7f3a", "eval", "d41d8cd9"]]}),
    ],
    "ParamsLogged/v1.json": [
        ("ParamsLogged", {"params": {"lr": "0.01", "optimizer": "adam", "long": "x" * 7000,
            "key with space/slash": "ünïcode"}}),
    ],
    "RunDeleted/v1.json": [("RunDeleted", {"deleted_time": T0 + 52})],
    "RunRenamed/v1.json": [("RunRenamed", {"run_name": "first-renamed"})],
    "RunRestored/v1.json": [("RunRestored", {"restored_time": T0 + 53})],
    # v1 carried the initial tags inside RunStarted: the chain splits them out, in order.
    "RunStarted/v1.json": [
        ("RunStarted", {"experiment_id": "1", "run_name": "first", "user_id": "alice",
            "start_time": T0 + 10, "parent_run_id": None,
            "artifact_uri": f"evstore-artifacts/1/{RUN_A}", "status": "RUNNING"}),
        ("TagSet", {"key": "mlflow.user", "value": "alice"}),
        ("TagSet", {"key": "mlflow.runName", "value": "first"}),
        ("TagSet", {"key": "team", "value": "core"}),
    ],
    "RunStarted/v2.json": [
        ("RunStarted", {"experiment_id": "2", "run_name": "gone", "user_id": "carol",
            "start_time": T0 + 51, "parent_run_id": None,
            "artifact_uri": f"evstore-artifacts/2/{RUN_C}", "status": "RUNNING"}),
    ],
    "RunStatusChanged/v1.json": [
        ("RunStatusChanged", {"status": "FAILED", "end_time": T0 + 32}),
    ],
    "TagDeleted/v1.json": [("TagDeleted", {"key": "temp"})],
    "TagSet/v1.json": [("TagSet", {"key": "temp", "value": "to-delete"})],
    "Redacted/v1.json": [
        ("Redacted", {"position": 4, "target": "param", "reason": "erasure request 17",
            "original_sha256": "9f" * 32, "redacted_sha256": "0c" * 32, "key": "long"}),
    ],
    "UserAdded/v1.json": [("UserAdded", {"name": "alice", "token_sha256": "5e" * 32, "admin": True})],
    "UserTokenRotated/v1.json": [("UserTokenRotated", {"name": "alice", "token_sha256": "a7" * 32})],
    "UserDisabled/v1.json": [("UserDisabled", {"name": "alice"})],
    "UserDeleted/v1.json": [("UserDeleted", {"name": "alice"})],
    "UserAdminChanged/v1.json": [("UserAdminChanged", {"name": "alice", "admin": False})],
    "UserPasswordSet/v1.json": [
        ("UserPasswordSet", {"name": "alice", "password_hash": "scrypt$16384$8$1$c2FsdA$aGFzaA"}),
    ],
    "ExperimentPermissionGranted/v1.json": [
        ("ExperimentPermissionGranted", {"experiment_id": "1", "name": "alice", "permission": "EDIT"}),
    ],
    "ExperimentPermissionRevoked/v1.json": [
        ("ExperimentPermissionRevoked", {"experiment_id": "1", "name": "alice"}),
    ],
    "RegisteredModelPermissionGranted/v1.json": [
        ("RegisteredModelPermissionGranted", {"model_key": "registered-model-5d1c", "model_name": "churn",
                                              "name": "alice", "permission": "MANAGE"}),
    ],
    "RegisteredModelPermissionRevoked/v1.json": [
        ("RegisteredModelPermissionRevoked", {"model_key": "registered-model-5d1c", "model_name": "churn",
                                              "name": "alice"}),
    ],
    "LoggedModelCreated/v1.json": [
        ("LoggedModelCreated", {"experiment_id": "1", "name": "clf",
            "artifact_location": "mlflow-artifacts:/1/models/m-7f3a/artifacts",
            "creation_time": T0 + 60, "source_run_id": RUN_A, "model_type": "classifier"}),
    ],
    "LoggedModelFinalized/v1.json": [
        ("LoggedModelFinalized", {"status": "READY", "status_message": ""}),
    ],
    "LoggedModelTagSet/v1.json": [("LoggedModelTagSet", {"key": "stage", "value": "candidate"})],
    "LoggedModelTagDeleted/v1.json": [("LoggedModelTagDeleted", {"key": "stage"})],
    "LoggedModelParamsLogged/v1.json": [("LoggedModelParamsLogged", {"params": {"C": "1.0"}})],
    "LoggedModelDeleted/v1.json": [("LoggedModelDeleted", {"deleted_time": T0 + 61})],
    "RunOutputsLogged/v1.json": [("RunOutputsLogged", {"models": [{"model_id": "m-7f3a", "step": 0}]})],
    "RunInputsLogged/v1.json": [
        ("RunInputsLogged", {"datasets": [{"name": "train", "digest": "4fb5574f", "source_type": "s3",
            "source": '{"uri": "s3://bucket/data.csv"}', "schema": None,
            "profile": '{"num_rows": 2}', "tags": {"mlflow.data.context": "training"}}],
            "models": ["m-7f3a"]}),
    ],
    "RegisteredModelCreated/v1.json": [("RegisteredModelCreated", {"name": "churn", "creation_time": T0 + 70, "description": "churn classifier"})],
    "RegisteredModelRenamed/v1.json": [("RegisteredModelRenamed", {"name": "churn-v2"})],
    "RegisteredModelDescribed/v1.json": [("RegisteredModelDescribed", {"description": "retrained monthly"})],
    "RegisteredModelTagSet/v1.json": [("RegisteredModelTagSet", {"key": "team", "value": "ml"})],
    "RegisteredModelTagDeleted/v1.json": [("RegisteredModelTagDeleted", {"key": "team"})],
    "RegisteredModelDeleted/v1.json": [("RegisteredModelDeleted", {"deleted_time": T0 + 79})],
    "RegisteredModelAliasSet/v1.json": [("RegisteredModelAliasSet", {"alias": "champion", "version_number": 2})],
    "RegisteredModelAliasDeleted/v1.json": [("RegisteredModelAliasDeleted", {"alias": "champion"})],
    "ModelVersionCreated/v1.json": [("ModelVersionCreated", {"version_number": 2, "source": "models:/m-7f3a", "creation_time": T0 + 71, "run_id": RUN_A, "model_id": "m-7f3a", "run_link": "", "description": "", "user_id": "alice"})],
    "ModelVersionDescribed/v1.json": [("ModelVersionDescribed", {"version_number": 2, "description": "retrained"})],
    "ModelVersionStageChanged/v1.json": [("ModelVersionStageChanged", {"version_number": 2, "stage": "Production"})],
    "ModelVersionTagSet/v1.json": [("ModelVersionTagSet", {"version_number": 2, "key": "validated", "value": "yes"})],
    "ModelVersionTagDeleted/v1.json": [("ModelVersionTagDeleted", {"version_number": 2, "key": "validated"})],
    "ModelVersionDeleted/v1.json": [("ModelVersionDeleted", {"version_number": 2, "deleted_time": T0 + 78})],
}  # fmt: skip


def golden_payload_files() -> list[str]:
    """Every golden payload file, as '<Type>/v<N>.json'."""
    return sorted(p.relative_to(EVENTS_DIR).as_posix() for p in EVENTS_DIR.glob("*/v*.json"))


@pytest.mark.parametrize("name", golden_payload_files())
def test_golden_payload_decodes_to_the_expected_current_events(name: str) -> None:
    assert name in EXPECTED_EVENTS, (
        f"golden file tests/fixtures/events/{name} has no expectation:"
        " add what it must decode to in EXPECTED_EVENTS in tests/test_golden.py"
    )
    stored = json.loads((EVENTS_DIR / name).read_text())
    type_dir, file_name = name.split("/")
    assert (stored["type"], f"v{stored['version']}.json") == (type_dir, file_name)

    payload = base64.b64decode(stored["payload_msgpack_base64"])
    events = codec.decode(stored["type"], stored["version"], payload)

    # Every event is a current, registered class: nothing came back unknown.
    for event in events:
        assert EVENT_TYPES.get(type(event).__name__) is type(event), event
    decoded = [(type(event).__name__, msgspec.to_builtins(event)) for event in events]
    assert nan_safe(decoded) == nan_safe(EXPECTED_EVENTS[name])


def test_every_expectation_has_its_golden_file() -> None:
    stale = sorted(set(EXPECTED_EVENTS) - set(golden_payload_files()))
    assert not stale, (
        f"expectations without a golden file (golden files are never deleted): {stale}"
    )


def test_every_version_of_every_type_has_a_golden_payload() -> None:
    missing = [
        f"tests/fixtures/events/{name}/v{version}.json"
        for name, cls in sorted(EVENT_TYPES.items())
        for version in range(1, cls.version + 1)
        if not (EVENTS_DIR / name / f"v{version}.json").exists()
    ]
    assert not missing, (
        f"missing golden payloads: {', '.join(missing)}."
        " Write them with `python tests/golden.py events` at the version they describe."
    )


# --- golden stores ------------------------------------------------------------------

#: The read-model tables (issue 4) and the columns the queryable result is built from.
TABLES: dict[str, tuple[str, ...]] = {
    "experiments": ("experiment_id", "name", "artifact_location", "lifecycle_stage",
                    "creation_time", "last_update_time"),
    "experiment_tags": ("experiment_id", "key", "value"),
    "runs": ("run_id", "experiment_id", "run_name", "user_id", "status", "start_time",
             "end_time", "lifecycle_stage", "parent_run_id", "artifact_uri", "deleted_time"),
    "params": ("run_id", "key", "value"),
    "tags": ("run_id", "key", "value"),
    "latest_metrics": ("run_id", "key", "value", "step", "timestamp"),
    "artifacts": ("run_id", "path", "size", "sha256"),
}  # fmt: skip

Rows = dict[str, list[dict[str, Any]]]


def golden_stores() -> list[str]:
    """Every golden store folder name."""
    return sorted(p.name for p in STORES_DIR.iterdir() if (p / "store.db").exists())


def copy_golden_store(name: str, target: Path) -> Path:
    """Copy a golden store's files into ``target``; the fixture itself is never opened."""
    for path in (STORES_DIR / name).iterdir():
        if path.name.startswith("store.db"):  # with -wal / -shm, should a store have them
            shutil.copyfile(path, target / path.name)
    return target / "store.db"


def read_model_tables(store: EventStore) -> Rows:
    """Rebuild every read model from the log, then read the tables' rows back."""
    summary = rebuild(store)
    assert summary.unknown_skipped == 0
    assert summary.head_position == store.head_position()
    tables: Rows = {}
    for table, columns in TABLES.items():
        rows = store.query(f"SELECT {', '.join(columns)} FROM {table}")  # type: ignore[attr-defined]
        tables[table] = [dict(zip(columns, row, strict=True)) for row in rows]
    # The metric history is packed per series: read back through its reader, in log order.
    columns = ("run_id", "key", "step", "timestamp", "value")
    tables["metrics"] = [dict(zip(columns, point, strict=True)) for point in history_points(store)]
    return tables


@pytest.mark.parametrize("name", golden_stores())
def test_golden_store_opens_verifies_and_means_what_it_meant(name: str, tmp_path: Path) -> None:
    fixture_bytes = (STORES_DIR / name / "store.db").read_bytes()
    expected = json.loads((STORES_DIR / name / "expected.json").read_text())

    store = open_log(copy_golden_store(name, tmp_path))
    try:
        # The hash chain written by the old code still verifies with today's code; then
        # today's read models are rebuilt from the old events.
        report = verify(store)
        assert report.ok, report
        assert (report.unknown_events, report.events) == (0, store.head_position())

        tables = read_model_tables(store)
    finally:
        store.close()
    assert queryable_result(tables) == expected

    # The fixture itself was only read.
    assert (STORES_DIR / name / "store.db").read_bytes() == fixture_bytes
    assert sorted(p.name for p in (STORES_DIR / name).iterdir()) == ["expected.json", "store.db"]


def queryable_result(tables: Rows) -> dict[str, Any]:
    """The read-model rows in expected.json's shape (NaN and infinities as strings)."""
    by_run: dict[str, dict[str, Any]] = {}
    for row in tables["runs"]:
        by_run[row["run_id"]] = {
            **{c: row[c] for c in ("run_id", "experiment_id", "run_name", "user_id", "status",
                                   "start_time", "end_time", "lifecycle_stage", "parent_run_id")},
            "params": {}, "tags": {}, "metrics": {}, "latest_metrics": {}, "artifacts": [],
        }  # fmt: skip
    for table in ("params", "tags"):
        for row in sorted(tables[table], key=lambda r: r["key"]):
            by_run[row["run_id"]][table][row["key"]] = row["value"]
    for row in tables["metrics"]:  # each series in the order its points were logged
        history = by_run[row["run_id"]]["metrics"].setdefault(row["key"], [])
        history.append([row["timestamp"], row["step"], _stored_float(row["value"])])
    for row in tables["latest_metrics"]:
        by_run[row["run_id"]]["latest_metrics"][row["key"]] = _stored_float(row["value"])
    for row in sorted(tables["artifacts"], key=lambda r: r["path"]):
        by_run[row["run_id"]]["artifacts"].append(
            {"path": row["path"], "size": row["size"], "sha256": row["sha256"]}
        )
    experiments = []
    for row in sorted(tables["experiments"], key=lambda r: r["experiment_id"]):
        tags = {
            t["key"]: t["value"]
            for t in sorted(tables["experiment_tags"], key=lambda t: t["key"])
            if t["experiment_id"] == row["experiment_id"]
        }
        experiments.append(
            {c: row[c] for c in ("experiment_id", "name", "lifecycle_stage", "creation_time")}
            | {"tags": tags}
        )
    return {"experiments": experiments, "runs": [by_run[k] for k in sorted(by_run)]}


def _stored_float(value: float | None) -> float | str:
    """A metric value as expected.json writes it; SQLite stores NaN as NULL."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value
