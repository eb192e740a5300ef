"""``import evstore as mlflow`` holds for a real MLflow script.

One MLflow-style script (fluent and client calls, a matplotlib figure, images, tables,
nested runs, experiment tags, a search into a DataFrame) runs twice in fresh processes:
with ``import mlflow`` on a SQLite store and with ``import evstore as mlflow``. Each run
prints what it observed with ids and times normalized; the two must agree field by field,
artifact bytes included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from forked import run_python

pytest.importorskip("mlflow")
pytest.importorskip("matplotlib")
pytest.importorskip("PIL")
pytest.importorskip("pandas")

SCRIPT = r'''
import hashlib, importlib, json, os, re, sys, tempfile
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

mlflow = importlib.import_module(sys.argv[1])
mlflow.set_tracking_uri(sys.argv[2])
artifacts = importlib.import_module(sys.argv[1] + ".artifacts")
out = {}

experiment = mlflow.set_experiment("parity")
mlflow.set_experiment_tag("team", "evstore")
mlflow.set_experiment_tags({"stage": "dev", "drop": "me"})
mlflow.delete_experiment_tag("drop")
client = mlflow.MlflowClient()

with mlflow.start_run(run_name="parent", tags={"kind": "sweep"}, description="a parent") as parent:
    mlflow.log_params({"lr": 0.01, "epochs": 3})
    for step, loss in enumerate([1.0, 0.5, 0.25]):
        mlflow.log_metric("loss", loss, step=step)
    mlflow.log_metric("whole_step", 1.0, step=2.0)
    mlflow.set_tag("maybe", None)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    mlflow.log_figure(fig, "plots/line.png")
    plt.close(fig)
    mlflow.log_image(np.zeros((8, 6, 3), dtype=np.uint8), "images/black.png")
    mlflow.log_image(Image.new("RGB", (40, 20), "red"), key="samples/red", step=1)
    mlflow.log_table({"q": ["a", "b"], "score": [0.5, 0.75]}, "eval/table.json")
    mlflow.log_table(pd.DataFrame({"q": ["c"], "score": [1.0]}), "eval/table.json")
    mlflow.log_text("hello", "notes/hello.txt")
    mlflow.log_dict({"a": 1, "b": [1, 2]}, "config.json")
    mlflow.log_dict({"a": 1, "b": "x"}, "config.yaml")
    out["load_text"] = artifacts.load_text(mlflow.get_artifact_uri("notes/hello.txt"))
    tail = "/" + parent.info.run_id + "/artifacts"
    out["artifact_uri"] = [mlflow.get_artifact_uri().endswith(tail),
                           mlflow.get_artifact_uri("a/b.txt").endswith(tail + "/a/b.txt")]
    with mlflow.start_run(run_name="child", nested=True) as child:
        mlflow.log_metric("acc", 0.9)
    client.log_text(child.info.run_id, "from client", "client/note.txt")
    client.log_dict(child.info.run_id, {"k": [1, 2.5]}, "client/dict.json")
    client.log_image(child.info.run_id, np.linspace(0, 1, 12).reshape(3, 4), "client/grey.png")
    client.log_table(child.info.run_id, pd.DataFrame({"x": [1, 2], "y": ["u", "v"]}), "client/t.json")
    fig, ax = plt.subplots(figsize=(1, 1))
    client.log_figure(child.info.run_id, fig, "client/fig.png")
    plt.close(fig)
    out["parent_of_child"] = mlflow.get_parent_run(child.info.run_id).info.run_name
    out["parent_of_parent"] = client.get_parent_run(parent.info.run_id)
    out["table"] = mlflow.load_table("eval/table.json").to_dict("list")

mlflow.start_run(run_name="failed")
mlflow.log_metric("x", 1.0)
mlflow.end_run(status="FAILED")

names = {}
for run in mlflow.search_runs(search_all_experiments=True, output_format="list"):
    names[run.info.run_id] = run.info.run_name


def normal(value):
    if isinstance(value, str):
        for run_id, name in names.items():
            value = value.replace(run_id, "<" + name + ">")
        value = re.sub(r"\+timestamp\+\d+\+[0-9a-f-]{36}", "+timestamp+T+UUID", value)
    return value


def files(run_id, path=None):
    found = {}
    for entry in client.list_artifacts(run_id, path):
        if entry.is_dir:
            found.update(files(run_id, entry.path))
        else:
            with tempfile.TemporaryDirectory() as folder:
                local = client.download_artifacts(run_id, entry.path, folder)
                with open(local, "rb") as f:
                    found[normal(entry.path)] = hashlib.sha256(f.read()).hexdigest()
    return found


IGNORED_TAGS = {"mlflow.source.name", "mlflow.source.git.commit"}
runs = {}
for run_id, name in names.items():
    run = client.get_run(run_id)
    runs[name] = {
        "status": run.info.status,
        "ended": run.info.end_time is not None,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": {k: normal(v) for k, v in run.data.tags.items() if k not in IGNORED_TAGS},
        "artifacts": files(run_id),
    }
out["runs"] = runs
out["loss"] = [[m.step, m.value] for m in client.get_metric_history(parent.info.run_id, "loss")]
out["whole_step"] = [[m.step, m.value] for m in client.get_metric_history(parent.info.run_id, "whole_step")]
exp = mlflow.get_experiment(experiment.experiment_id)
out["experiment_tags"] = {k: v for k, v in exp.tags.items() if not k.startswith("mlflow.")}

frame = mlflow.search_runs(order_by=["attributes.run_name ASC"])
out["frame_columns"] = sorted(frame.columns)
out["frame_info_columns"] = list(frame.columns[:6])
out["frame_dtypes"] = {c: str(t) for c, t in frame.dtypes.items()}
rows = []
for row in frame.to_dict("records"):
    clean = {}
    for column, value in row.items():
        if column in IGNORED_TAGS or column.removeprefix("tags.") in IGNORED_TAGS:
            continue
        if column in ("start_time", "end_time"):
            value = None if pd.isna(value) else "T"
        elif isinstance(value, float) and value != value:
            value = "NaN"
        elif column == "artifact_uri":
            value = value.endswith("/" + row["run_id"] + "/artifacts")
        clean[column] = normal(value) if isinstance(value, str) else value
    rows.append(clean)
out["frame_rows"] = rows
out["empty_frame"] = {c: str(t) for c, t in mlflow.search_runs(experiment_names=["none"]).dtypes.items()}
print("PARITY-JSON:" + json.dumps(out, sort_keys=True, default=str))
'''


def run_script(module: str, uri: str, folder: Path) -> dict[str, Any]:
    """Run SCRIPT with ``import <module> as mlflow`` in a fresh process inside ``folder``."""
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVSTORE_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PYTHONWARNINGS"] = "ignore"
    script = folder / "script.py"
    script.write_text(SCRIPT)
    done = run_python(script, module, uri, cwd=folder, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("PARITY-JSON:"))
    return json.loads(line[len("PARITY-JSON:") :])  # type: ignore[no-any-return]


def test_one_mlflow_script_gives_the_same_results_on_mlflow_and_evstore(tmp_path: Path) -> None:
    expected = run_script("mlflow", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", tmp_path / "mlflow")
    actual = run_script("evstore", str(tmp_path / "evstore" / "evstore.db"), tmp_path / "evstore")
    assert sorted(actual) == sorted(expected)
    differing = {f: (actual[f], expected[f]) for f in expected if actual[f] != expected[f]}
    assert not differing, json.dumps(differing, indent=1)[:6000]
    # the script did what it says: the checks above compared something
    parent = expected["runs"]["parent"]
    assert "plots/line.png" in parent["artifacts"] and "eval/table.json" in parent["artifacts"]
    assert any(p.startswith("images/samples~red+step+1+") for p in parent["artifacts"])
    assert parent["tags"]["mlflow.loggedImages"] == "True" and parent["tags"]["maybe"] == "None"
    assert expected["table"] == {"q": ["a", "b", "c"], "score": [0.5, 0.75, 1.0]}
    assert expected["parent_of_child"] == "parent" and expected["parent_of_parent"] is None
    assert [r["tags.mlflow.runName"] for r in expected["frame_rows"]] == ["child", "failed", "parent"]
