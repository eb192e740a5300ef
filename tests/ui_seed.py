"""A store for the UI's browser tests and screenshots: nested, deleted, imported and hostile
runs, and a registered model whose name and description are markup.

Written through the public Client, as a user's training script would; the imported runs
come from a copy of a real MLflow 3.17 SQLite store (tests/fixtures/mlflow/).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from evstore import Client
from evstore.entities import Metric, Param, RunTag

HOSTILE = "<img src=x onerror=alert(1)>"
#: A registered model's name: markup, and a slash its address must carry.
HOSTILE_MODEL = "<script>alert('model')</script>"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mlflow" / "mlflow-3.17-sqlite"
STEPS = 300


@dataclass
class Seeded:
    """The ids the tests look for."""

    store: str
    experiment_id: str = ""
    parent: str = ""
    children: list[str] = field(default_factory=list)
    deleted: str = ""
    hostile: str = ""
    edited: str = ""
    #: The log position right after ``edited`` was first logged (before its later changes).
    edited_position: int = 0
    imported_experiment: str = ""
    imported_run: str = ""
    many: list[str] = field(default_factory=list)


def png(width: int = 8, height: int = 8) -> bytes:
    """A small valid PNG (a red-to-blue gradient), without an imaging library."""
    rows = b"".join(
        b"\0" + b"".join(bytes((255 - 255 * x // width, 40, 255 * x // width)) for x in range(width)) for _ in range(height)
    )
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _curve(client: Client, run_id: str, lr: float, steps: int = STEPS) -> None:
    t0 = int(time.time() * 1000) - steps * 1000
    points = []
    for step in range(steps):
        loss = 0.1 + 2.0 * math.exp(-lr * 20 * step / steps) + 0.04 * math.sin(step / 7)
        points += [Metric("loss", loss, t0 + step * 1000, step),
                   Metric("accuracy", 1 - loss / 2.2, t0 + step * 1000, step)]  # fmt: skip
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i : i + 1000])


def seed(store: str) -> Seeded:
    """Fill ``store`` (a path) with what the UI tests look at."""
    client = Client(store)
    out = Seeded(store)
    out.experiment_id = client.create_experiment("vision")
    parent = client.create_run(out.experiment_id, run_name="sweep", tags={"team": "vision"})
    out.parent = parent.info.run_id
    for lr in (0.1, 0.03, 0.01):
        child = client.create_run(
            out.experiment_id, run_name=f"lr={lr}", tags={"mlflow.parentRunId": out.parent}
        )
        run_id = child.info.run_id
        client.log_batch(run_id, params=[Param("lr", str(lr)), Param("optimizer", "adam"),
                                         Param("epochs", "30")])  # fmt: skip
        _curve(client, run_id, lr * 10)
        client.set_terminated(run_id, "FINISHED")
        out.children.append(run_id)
    client.set_terminated(out.parent, "FINISHED")

    deleted = client.create_run(out.experiment_id, run_name="abandoned")
    client.log_param(deleted.info.run_id, "lr", "9.9")
    client.delete_run(deleted.info.run_id)
    out.deleted = deleted.info.run_id

    # A run whose every name is hostile markup: the UI must show it as text.
    # (keys allow no markup characters, as in MLflow; their values and names do.)
    hostile = client.create_run(out.experiment_id, run_name=HOSTILE, tags={"note": HOSTILE})
    out.hostile = hostile.info.run_id
    client.log_batch(out.hostile, params=[Param("comment", HOSTILE)])
    client.create_registered_model(HOSTILE_MODEL, tags={"note": HOSTILE}, description=HOSTILE)
    client.create_model_version(HOSTILE_MODEL, f"runs:/{out.hostile}/model", run_id=out.hostile,
                                tags={"note": HOSTILE})  # fmt: skip
    client.set_registered_model_alias(HOSTILE_MODEL, "champion", 1)
    client.log_metric(out.hostile, "loss", 1.0, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        hostile_file = os.path.join(tmp, HOSTILE)
        Path(hostile_file).write_text(HOSTILE)
        client.log_artifact(out.hostile, hostile_file)

    # A run edited after the fact: the audit trail and "as of" must show both states.
    edited = client.create_run(out.experiment_id, run_name="first-name")
    out.edited = edited.info.run_id
    client.log_batch(out.edited, params=[Param("lr", "0.5")], tags=[RunTag("stage", "draft")])
    client.log_metric(out.edited, "loss", 3.0, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        (artifacts / "notes.txt").write_text("first line\nsecond line\n")
        (artifacts / "config.yaml").write_text("model:\n  depth: 12\n  width: 256\n")
        (artifacts / "summary.json").write_text(json.dumps({"best": 0.91, "epochs": [1, 2, 3]}))
        (artifacts / "predictions.csv").write_text("id,label,score\n1,cat,0.9\n2,dog,0.8\n")
        (artifacts / "plot.png").write_bytes(png(32, 16))
        (artifacts / "model").mkdir()
        (artifacts / "model" / "MLmodel").write_text("flavors:\n  python_function: {}\n")
        client.log_artifacts(out.edited, str(artifacts))
    out.edited_position = client.store.head_position()
    client.set_tag(out.edited, "stage", "final")
    client.update_run(out.edited, name="renamed")
    client.log_metric(out.edited, "loss", 1.5, step=1)
    client.set_terminated(out.edited, "FINISHED")

    # Imported from a real MLflow store (a copy: fixtures are never written).
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(FIXTURE, os.path.join(tmp, "mlflow"))
        from evstore.importers.mlflow_import import import_mlflow

        import_mlflow(store, f"sqlite:///{tmp}/mlflow/mlflow.db", artifacts_root=f"{tmp}/mlflow")
    client.close()
    client = Client(store)
    for experiment in client.search_experiments():
        if experiment.experiment_id not in ("0", out.experiment_id):
            runs = client.search_runs([experiment.experiment_id])
            if runs:
                out.imported_experiment, out.imported_run = experiment.experiment_id, runs[0].info.run_id
                break

    many = client.create_experiment("many")
    for i in range(60):
        run = client.create_run(many, run_name=f"trial-{i:02d}")
        client.log_batch(run.info.run_id, metrics=[Metric("score", (i * 37) % 60 / 60, 0, 0)],
                         params=[Param("seed", str(i))])  # fmt: skip
        out.many.append(run.info.run_id)
    return out


def seed_in_child(directory: Path) -> dict[str, object]:
    """Seed ``directory/server.db`` (artifacts under ``directory/artifacts``, where the test
    server keeps them) in a child process, so no store stays open here; the ids as a dict."""
    from forked import run_python

    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, EVSTORE_ARTIFACT_ROOT=str(directory / "artifacts"))
    code = ("import dataclasses, json; from ui_seed import seed;"
            f" print(json.dumps(dataclasses.asdict(seed({str(directory / 'server.db')!r}))))")  # fmt: skip
    done = run_python(code, cwd=Path(__file__).parent, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"seeding the UI store failed:\n{done.stderr}")
    seeded: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    seeded["directory"] = directory
    return seeded
