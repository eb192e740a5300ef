"""Writes the golden stores and golden event payloads kept under tests/fixtures/.

Run it only at a schema bump, *before* changing the event classes:

    python tests/golden.py store tests/fixtures/stores/<name>
    python tests/golden.py events      (payloads and shape fingerprints)

The store's content is fixed here as plain data (``CONTENT``); ``expected.json`` is the
queryable result that data means (experiments, runs, params, tags, metric histories,
artifacts), which stays the same whatever the event shapes become. Files already under
tests/fixtures/ are never overwritten.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
from typing import Any

RUN_A = "a" * 32
RUN_B = "b" * 32
RUN_C = "c" * 32
T0 = 1_700_000_000_000

# Each entry: (stream, [(event type, fields)]). Written with fixed event ids and times.
CONTENT: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    ("experiment-0", [("ExperimentCreated", {"experiment_id": "0", "name": "Default",
        "artifact_location": "evstore-artifacts/0", "creation_time": T0})]),
    ("experiment-1", [("ExperimentCreated", {"experiment_id": "1", "name": "golden",
        "artifact_location": "evstore-artifacts/1", "creation_time": T0 + 1,
        "tags": {"owner": "ml-team"}})]),
    (RUN_A, [("RunStarted", {"experiment_id": "1", "run_name": "first", "user_id": "alice",
        "start_time": T0 + 10, "artifact_uri": "evstore-artifacts/1/" + RUN_A,
        "tags": {"mlflow.user": "alice", "mlflow.runName": "first", "team": "core"}})]),
    (RUN_A, [("ParamsLogged", {"params": {"lr": "0.01", "optimizer": "adam",
        "long": "x" * 7000, "key with space/slash": "ünïcode"}})]),
    (RUN_A, [("MetricsLogged", {"points": [
        ["loss", 1.0, 0, T0 + 20], ["loss", 0.5, 1, T0 + 21], ["loss", 0.25, 1, T0 + 22],
        ["loss", math.nan, 2, T0 + 23], ["acc", math.inf, -1, T0 + 24],
        ["acc", -math.inf, 0, T0 + 25], ["val loss", 0.0, 0, T0 + 26]]})]),
    (RUN_A, [("TagSet", {"key": "temp", "value": "to-delete"})]),
    (RUN_A, [("TagDeleted", {"key": "temp"})]),
    (RUN_A, [("ArtifactRecorded", {"path": "model/config.txt", "size": 11,
        "sha256": "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"})]),
    (RUN_A, [("RunRenamed", {"run_name": "first-renamed"})]),
    (RUN_B, [("RunStarted", {"experiment_id": "1", "run_name": "child", "user_id": "bob",
        "start_time": T0 + 30, "parent_run_id": RUN_A,
        "artifact_uri": "evstore-artifacts/1/" + RUN_B,
        "tags": {"mlflow.parentRunId": RUN_A, "mlflow.runName": "child"}})]),
    (RUN_B, [("MetricsLogged", {"points": [["acc", 0.9, 5, T0 + 31, "m-7f3a", "eval", "d41d8cd9"]]})]),
    (RUN_B, [("RunStatusChanged", {"status": "FAILED", "end_time": T0 + 32})]),
    (RUN_A, [("RunStatusChanged", {"status": "FINISHED", "end_time": T0 + 40})]),
    ("experiment-1", [("ExperimentRenamed", {"experiment_id": "1", "name": "golden-renamed"})]),
    ("experiment-1", [("ExperimentTagSet", {"experiment_id": "1", "key": "stage", "value": "dev"})]),
    ("experiment-1", [("ExperimentTagDeleted", {"experiment_id": "1", "key": "owner"})]),
    ("experiment-2", [("ExperimentCreated", {"experiment_id": "2", "name": "doomed",
        "artifact_location": "evstore-artifacts/2", "creation_time": T0 + 50})]),
    (RUN_C, [("RunStarted", {"experiment_id": "2", "run_name": "gone", "user_id": "carol",
        "start_time": T0 + 51, "artifact_uri": "evstore-artifacts/2/" + RUN_C,
        "tags": {"mlflow.runName": "gone"}})]),
    (RUN_C, [("RunDeleted", {"deleted_time": T0 + 52})]),
    (RUN_C, [("RunRestored", {"restored_time": T0 + 53})]),
    (RUN_C, [("RunDeleted", {"deleted_time": T0 + 54})]),
    ("experiment-2", [("ExperimentDeleted", {"experiment_id": "2", "deleted_time": T0 + 55})]),
    ("experiment-2", [("ExperimentRestored", {"experiment_id": "2", "restored_time": T0 + 56})]),
    ("experiment-2", [("ExperimentDeleted", {"experiment_id": "2", "deleted_time": T0 + 57})]),
]

#: Samples of event types the golden store does not hold (for ``events`` only).
SAMPLES_OUTSIDE_THE_STORE: dict[str, dict[str, Any]] = {
    "Redacted": {"position": 4, "target": "param", "key": "long", "reason": "erasure request 17",
                 "original_sha256": "9f" * 32, "redacted_sha256": "0c" * 32},
    "UserAdded": {"name": "alice", "token_sha256": "5e" * 32, "admin": True},
    "UserTokenRotated": {"name": "alice", "token_sha256": "a7" * 32},
    "UserDisabled": {"name": "alice"},
    "UserDeleted": {"name": "alice"},
    "UserAdminChanged": {"name": "alice", "admin": False},
    "UserPasswordSet": {"name": "alice", "password_hash": "scrypt$16384$8$1$c2FsdA$aGFzaA"},
    "ExperimentPermissionGranted": {"experiment_id": "1", "name": "alice", "permission": "EDIT"},
    "ExperimentPermissionRevoked": {"experiment_id": "1", "name": "alice"},
    "RegisteredModelPermissionGranted": {"model_key": "registered-model-5d1c", "model_name": "churn",
                                         "name": "alice", "permission": "MANAGE"},
    "RegisteredModelPermissionRevoked": {"model_key": "registered-model-5d1c", "model_name": "churn",
                                         "name": "alice"},
    "LoggedModelCreated": {"experiment_id": "1", "name": "clf",
                           "artifact_location": "mlflow-artifacts:/1/models/m-7f3a/artifacts",
                           "creation_time": T0 + 60, "source_run_id": RUN_A,
                           "model_type": "classifier"},
    "LoggedModelFinalized": {"status": "READY", "status_message": ""},
    "LoggedModelTagSet": {"key": "stage", "value": "candidate"},
    "LoggedModelTagDeleted": {"key": "stage"},
    "LoggedModelParamsLogged": {"params": {"C": "1.0"}},
    "LoggedModelDeleted": {"deleted_time": T0 + 61},
    "RunOutputsLogged": {"models": [{"model_id": "m-7f3a", "step": 0}]},
    "RunInputsLogged": {"datasets": [{"name": "train", "digest": "4fb5574f", "source_type": "s3",
                        "source": '{"uri": "s3://bucket/data.csv"}', "schema": None,
                        "profile": '{"num_rows": 2}', "tags": {"mlflow.data.context": "training"}}],
                        "models": ["m-7f3a"]},
    "RegisteredModelCreated": {"name": "churn", "creation_time": T0 + 70, "description": "churn classifier"},
    "RegisteredModelRenamed": {"name": "churn-v2"},
    "RegisteredModelDescribed": {"description": "retrained monthly"},
    "RegisteredModelTagSet": {"key": "team", "value": "ml"},
    "RegisteredModelTagDeleted": {"key": "team"},
    "RegisteredModelDeleted": {"deleted_time": T0 + 79},
    "RegisteredModelAliasSet": {"alias": "champion", "version_number": 2},
    "RegisteredModelAliasDeleted": {"alias": "champion"},
    "ModelVersionCreated": {"version_number": 2, "source": "models:/m-7f3a", "creation_time": T0 + 71, "run_id": RUN_A, "model_id": "m-7f3a", "run_link": "", "description": "", "user_id": "alice"},
    "ModelVersionDescribed": {"version_number": 2, "description": "retrained"},
    "ModelVersionStageChanged": {"version_number": 2, "stage": "Production"},
    "ModelVersionTagSet": {"version_number": 2, "key": "validated", "value": "yes"},
    "ModelVersionTagDeleted": {"version_number": 2, "key": "validated"},
    "ModelVersionDeleted": {"version_number": 2, "deleted_time": T0 + 78},
}

EXPECTED: dict[str, Any] = {
    "experiments": [
        {"experiment_id": "0", "name": "Default", "lifecycle_stage": "active",
         "creation_time": T0, "tags": {}},
        {"experiment_id": "1", "name": "golden-renamed", "lifecycle_stage": "active",
         "creation_time": T0 + 1, "tags": {"stage": "dev"}},
        {"experiment_id": "2", "name": "doomed", "lifecycle_stage": "deleted",
         "creation_time": T0 + 50, "tags": {}},
    ],
    "runs": [
        {"run_id": RUN_A, "experiment_id": "1", "run_name": "first-renamed", "user_id": "alice",
         "status": "FINISHED", "start_time": T0 + 10, "end_time": T0 + 40,
         "lifecycle_stage": "active", "parent_run_id": None,
         "params": {"lr": "0.01", "optimizer": "adam", "long": "x" * 7000,
                    "key with space/slash": "ünïcode"},
         "tags": {"mlflow.user": "alice", "mlflow.runName": "first-renamed", "team": "core"},
         "metrics": {
             "loss": [[T0 + 20, 0, 1.0], [T0 + 21, 1, 0.5], [T0 + 22, 1, 0.25],
                      [T0 + 23, 2, "NaN"]],
             "acc": [[T0 + 24, -1, "Infinity"], [T0 + 25, 0, "-Infinity"]],
             "val loss": [[T0 + 26, 0, 0.0]]},
         "latest_metrics": {"loss": "NaN", "acc": "-Infinity", "val loss": 0.0},
         "artifacts": [{"path": "model/config.txt", "size": 11,
                        "sha256": "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"}]},
        {"run_id": RUN_B, "experiment_id": "1", "run_name": "child", "user_id": "bob",
         "status": "FAILED", "start_time": T0 + 30, "end_time": T0 + 32,
         "lifecycle_stage": "active", "parent_run_id": RUN_A, "params": {},
         "tags": {"mlflow.parentRunId": RUN_A, "mlflow.runName": "child"},
         "metrics": {"acc": [[T0 + 31, 5, 0.9]]}, "latest_metrics": {"acc": 0.9},
         "artifacts": []},
        {"run_id": RUN_C, "experiment_id": "2", "run_name": "gone", "user_id": "carol",
         "status": "RUNNING", "start_time": T0 + 51, "end_time": None,
         "lifecycle_stage": "deleted", "parent_run_id": None, "params": {},
         "tags": {"mlflow.runName": "gone"}, "metrics": {}, "latest_metrics": {},
         "artifacts": []},
    ],
}  # fmt: skip


def _field_names(cls: type) -> set[str]:
    import msgspec

    return {field.name for field in msgspec.structs.fields(cls)}


def write_store(folder: str) -> None:
    """Write CONTENT as a store with today's event classes, plus expected.json."""
    import msgspec

    from evstore.events import EVENT_TYPES
    from evstore.stores import open_log

    os.makedirs(folder, exist_ok=False)
    log = open_log(os.path.join(folder, "store.db"))
    counter = 0
    for stream, events in CONTENT:
        built = []
        for name, fields in events:
            if name == "RunStarted" and "tags" not in _field_names(EVENT_TYPES[name]):
                tags = fields.get("tags", {})
                fields = {k: v for k, v in fields.items() if k != "tags"}
                built.append(msgspec.convert(fields, EVENT_TYPES[name]))
                built += [EVENT_TYPES["TagSet"](key=k, value=v) for k, v in tags.items()]
            else:
                built.append(msgspec.convert(fields, EVENT_TYPES[name]))
        ids = [f"golden-{counter + i:04d}" for i in range(len(built))]
        counter += len(built)
        log.append(stream, built, event_ids=ids, metadata={"user": "golden", "host": "golden"})
    log.close()
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(EXPECTED, f, indent=1, sort_keys=True)


def write_events(root: str) -> None:
    """Write, per event type at its current version, a stored payload and the shape
    fingerprint (``v<N>.json``, ``v<N>.shape.sha256``), where not there yet."""
    import msgspec

    from evstore import codec
    from evstore.events import EVENT_TYPES

    samples: dict[str, dict[str, Any]] = dict(SAMPLES_OUTSIDE_THE_STORE)
    for _, events in CONTENT:
        for name, fields in events:
            samples[name] = fields  # the last sample of each type
    for name, cls in EVENT_TYPES.items():
        shape = os.path.join(root, name, f"v{cls.version}.shape.sha256")
        if not os.path.exists(shape):
            os.makedirs(os.path.dirname(shape), exist_ok=True)
            with open(shape, "w") as f:
                f.write(codec.schema_fingerprint(cls) + "\n")
        path = os.path.join(root, name, f"v{cls.version}.json")
        if os.path.exists(path) or name not in samples:
            continue
        fields = {k: v for k, v in samples[name].items() if k in _field_names(cls)}
        payload = codec.encode(msgspec.convert(fields, cls))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(
                {"type": name, "version": cls.version,
                 "payload_msgpack_base64": base64.b64encode(payload).decode()},
                f, indent=1,
            )  # fmt: skip


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.argv[1:2] == ["store"]:
        write_store(sys.argv[2])
    elif sys.argv[1:2] == ["events"]:
        write_events(os.path.join(here, "fixtures", "events"))
    else:
        sys.exit(__doc__)
