"""The seed example: an MLflow script, unchanged but for its import, run as its own process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evstore import Client
from evstore.tracking import service as client_module

#: The MLflow seed script of the project, verbatim; only the import line is changed.
SEED_SCRIPT = """\
import evstore as mlflow

mlflow.set_experiment("v2_migration_demo")
with mlflow.start_run():
    mlflow.log_param("learning_rate", 0.01)
    mlflow.log_param("optimizer", "adam")
    mlflow.log_metric("accuracy", 0.95)
    mlflow.log_artifact("model_config.txt")
"""
CONFIG = b"learning_rate: 0.01\noptimizer: adam\nlayers: [64, 32]\n"


def _env() -> dict[str, str]:
    """The test's environment without a tracking URI, so the default ./evstore.db is used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVSTORE_", "MLFLOW_"))}
    return env


def _evstore_cli() -> str:
    return os.path.join(os.path.dirname(sys.executable), "evstore")


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Path]:
    """tmp_path after running the seed script there as a subprocess."""
    (tmp_path / "seed_script.py").write_text(SEED_SCRIPT)
    (tmp_path / "model_config.txt").write_bytes(CONFIG)
    done = subprocess.run(
        [sys.executable, "seed_script.py"], cwd=tmp_path, env=_env(),
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # the library never prints
    yield tmp_path
    runner = client_module._stores.pop(os.path.abspath(tmp_path / "evstore.db"), None)
    if runner is not None:
        runner.detach()
        runner.store.close()


def test_seed_script_logs_the_run(seeded: Path) -> None:
    # the default store is ./evstore.db in the working directory
    assert (seeded / "evstore.db").exists()
    client = Client(str(seeded / "evstore.db"))
    experiment = client.get_experiment_by_name("v2_migration_demo")
    assert experiment is not None and experiment.lifecycle_stage == "active"
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.end_time is not None and run.info.end_time >= run.info.start_time
    assert run.data.params == {"learning_rate": "0.01", "optimizer": "adam"}
    assert run.data.metrics == {"accuracy": 0.95}
    (point,) = client.get_metric_history(run_id, "accuracy")
    assert (point.value, point.step) == (0.95, 0)
    assert run.data.tags["mlflow.source.name"] == "seed_script.py"
    # the artifact: listed, downloaded byte for byte, sha256 as recorded
    (entry,) = client.list_artifacts(run_id)
    assert (entry.path, entry.is_dir, entry.file_size) == ("model_config.txt", False, len(CONFIG))
    local = client.download_artifacts(run_id, "model_config.txt", str(seeded / "downloaded"))
    assert Path(local).read_bytes() == CONFIG
    sha = hashlib.sha256(CONFIG).hexdigest()
    assert client.artifact_digest(run_id, "model_config.txt") == (len(CONFIG), sha)
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == sha
    # stored content-addressed under the store's artifact root, next to the store
    assert (seeded / "evstore-artifacts" / "objects" / sha[:2] / sha).read_bytes() == CONFIG


def test_seed_script_store_verifies(seeded: Path) -> None:
    done = subprocess.run(
        [_evstore_cli(), "verify"], cwd=seeded, env=_env(),
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ")


def test_seed_script_runs_again_on_the_same_store(seeded: Path) -> None:
    done = subprocess.run(
        [sys.executable, "seed_script.py"], cwd=seeded, env=_env(),
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client = Client(str(seeded / "evstore.db"))
    experiment = client.get_experiment_by_name("v2_migration_demo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert len(client.search_experiments()) == 2  # Default and v2_migration_demo, once
