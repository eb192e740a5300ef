"""The README's main job: the seed example and a small sweep, logged like MLflow users do."""

from __future__ import annotations

import math
import os
import tempfile

import evstore


def run_demo(store: str) -> str:
    """Log the seed run and a 3-run sweep with per-step curves; returns the seed run's id."""
    evstore.set_tracking_uri(store)
    evstore.set_experiment("v2_migration_demo")
    with evstore.start_run(run_name="seed") as run, tempfile.TemporaryDirectory() as tmp:
        evstore.log_param("learning_rate", 0.01)
        evstore.log_param("optimizer", "adam")
        evstore.log_metric("accuracy", 0.95)
        config = os.path.join(tmp, "model_config.txt")
        with open(config, "w") as f:
            f.write("lr=0.01\noptimizer=adam\n")
        evstore.log_artifact(config)
        seed_run_id = run.info.run_id
    evstore.set_experiment("sweep")
    with evstore.start_run(run_name="grid-search"):
        for lr in (0.1, 0.01, 0.001):
            with evstore.start_run(run_name=f"lr={lr}", nested=True):
                evstore.log_params({"learning_rate": lr, "epochs": 20})
                for step in range(20):
                    loss = math.exp(-lr * 40 * (step + 1)) + 0.05
                    evstore.log_metrics({"loss": loss, "accuracy": 1 - loss}, step=step)
    return seed_run_id
