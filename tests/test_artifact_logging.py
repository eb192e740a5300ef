"""MlflowClient's object logging (text, dicts, figures, images, tables, parent runs) on both
clients: the local Client and a Client over ``evstore server`` run one suite."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import close_cached_stores

from evstore import Client, InvalidParameterValue, ResourceDoesNotExist
from evstore.artifact_logging import read_table

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from test_server import ServerProcess

    running = ServerProcess(tmp_path_factory.mktemp("server"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(params=["local", "remote"])
def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A local Client over a fresh store, or a Client over a running server."""
    if request.param == "local":
        yield Client(str(tmp_path / "evstore.db"))
        close_cached_stores(tmp_path)
    else:
        remote = Client(request.getfixturevalue("server").url)
        yield remote
        remote.close()


def new_run(client: Any, **tags: str) -> str:
    experiment = client.get_experiment_by_name("logging") or client.get_experiment(
        client.create_experiment("logging")
    )
    return str(client.create_run(experiment.experiment_id, tags=tags).info.run_id)


def test_text_dict_and_yaml_are_stored_as_mlflow_writes_them(any_client: Any) -> None:
    run_id = new_run(any_client)
    any_client.log_text(run_id, "héllo", "notes/a.txt")
    any_client.log_dict(run_id, {"b": 1, "when": object}, "d.json")
    any_client.log_dict(run_id, {"b": [1, 2]}, "d.yaml")
    assert any_client.read_artifact(run_id, "notes/a.txt") == "héllo".encode()
    assert json.loads(any_client.read_artifact(run_id, "d.json")) == {"b": 1, "when": str(object)}
    assert any_client.read_artifact(run_id, "d.yaml") == b"b:\n- 1\n- 2\n"
    with pytest.raises(InvalidParameterValue, match="must be relative|not allowed"):
        any_client.log_text(run_id, "x", "../escape.txt")


def test_images_by_file_and_by_key(any_client: Any) -> None:
    run_id = new_run(any_client)
    pixels = np.array([[0.0, 0.5], [1.0, 0.25]])
    any_client.log_image(run_id, pixels, "grey.png")
    stored = Image.open(io.BytesIO(any_client.read_artifact(run_id, "grey.png")))
    assert stored.mode == "L" and np.asarray(stored).tolist() == [[0, 127], [255, 63]]
    any_client.log_image(run_id, Image.new("RGB", (512, 128), "blue"), key="val/sample", step=3, timestamp=7)
    names = [f.path for f in any_client.list_artifacts(run_id, "images")]
    assert len(names) == 2
    full = next(n for n in names if n.endswith(".png"))
    assert re.fullmatch(r"images/val~sample\+step\+3\+timestamp\+7\+[0-9a-f-]{36}\.png", full)
    assert full.removesuffix(".png") + "+compressed.webp" in names
    compressed = Image.open(io.BytesIO(any_client.read_artifact(run_id, full.removesuffix(".png") + "+compressed.webp")))
    assert compressed.size == (256, 64)
    assert any_client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        ("not an image", {"artifact_file": "x.png"}, "Unsupported image object type"),
        (np.full((2, 2), 300), {"artifact_file": "x.png"}, "out of acceptable range"),
        (np.zeros((2, 2, 2)), {"artifact_file": "x.png"}, "Invalid channel length"),
        (np.zeros((2, 2)), {}, "exactly one of `artifact_file` or `key`"),
        (np.zeros((2, 2)), {"artifact_file": "x.png", "step": 1}, "cannot be used in conjunction"),
        (np.zeros((2, 2)), {"key": "bad#key"}, "may only contain"),
    ],
)
def test_bad_images_are_refused_and_store_nothing(
    any_client: Any, image: Any, kwargs: dict[str, Any], message: str
) -> None:
    run_id = new_run(any_client)
    with pytest.raises(InvalidParameterValue, match=message):
        any_client.log_image(run_id, image, **kwargs)
    assert any_client.list_artifacts(run_id) == []


def test_figures(any_client: Any) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_id = new_run(any_client)
    figure, axes = plt.subplots()
    axes.plot([0, 1], [0, 1])
    any_client.log_figure(run_id, figure, "plots/f.svg")
    plt.close(figure)
    assert b"<svg" in any_client.read_artifact(run_id, "plots/f.svg")
    go = pytest.importorskip("plotly.graph_objects")
    any_client.log_figure(run_id, go.Figure(go.Scatter(x=[0, 1], y=[2, 3])), "plotly.html")
    assert b"cdn.plot.ly" in any_client.read_artifact(run_id, "plotly.html")
    with pytest.raises(InvalidParameterValue, match="Unsupported file extension"):
        any_client.log_figure(run_id, go.Figure(), "plotly.txt")
    with pytest.raises(InvalidParameterValue, match="Unsupported figure object type"):
        any_client.log_figure(run_id, object(), "f.png")


def test_tables_append_and_are_listed_in_the_logged_artifacts_tag(any_client: Any) -> None:
    run_id = new_run(any_client)
    any_client.log_table(run_id, {"q": ["a"], "score": [0.5]}, "eval/t.json")
    any_client.log_table(run_id, pd.DataFrame({"q": ["b"], "score": [1.0]}), "eval/t.json")
    any_client.log_table(run_id, {"only": "scalars"}, "one.json")
    stored = json.loads(any_client.read_artifact(run_id, "eval/t.json"))
    assert stored == {"columns": ["q", "score"], "data": [["a", 0.5], ["b", 1.0]]}
    assert read_table(any_client.read_artifact(run_id, "one.json"), "one.json").to_dict("list") == {"only": ["scalars"]}
    listed = json.loads(any_client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert listed == [{"path": "eval/t.json", "type": "table"}, {"path": "one.json", "type": "table"}]
    with pytest.raises(InvalidParameterValue, match="'.json' or '.parquet'"):
        any_client.log_table(run_id, {"a": [1]}, "t.csv")
    with pytest.raises(InvalidParameterValue, match="DataFrame or a dictionary"):
        any_client.log_table(run_id, [1, 2], "t.json")


def test_get_parent_run(any_client: Any) -> None:
    parent = new_run(any_client)
    child = new_run(any_client, **{"mlflow.parentRunId": parent})
    found = any_client.get_parent_run(child)
    assert found is not None and found.info.run_id == parent
    assert any_client.get_parent_run(parent) is None


def test_delete_experiment_tag_locally(client: Client) -> None:
    experiment_id = client.create_experiment("tagged", tags={"a": "1", "b": "2"})
    client.delete_experiment_tag(experiment_id, "a")
    assert client.get_experiment(experiment_id).tags == {"b": "2"}
    head = client.store.head_position()
    with pytest.raises(ResourceDoesNotExist, match="No tag with name: a in experiment"):
        client.delete_experiment_tag(experiment_id, "a")
    with pytest.raises(ResourceDoesNotExist, match="No Experiment with id=404"):
        client.delete_experiment_tag("404", "b")
    client.delete_experiment(experiment_id)
    head = client.store.head_position()
    with pytest.raises(InvalidParameterValue, match="must be in the 'active' state"):
        client.delete_experiment_tag(experiment_id, "b")
    assert client.store.head_position() == head


def test_delete_experiment_tag_over_http(server: Any) -> None:
    # MLflow's experiments/delete-experiment-tag: the tag goes; a missing one is refused.
    remote = Client(server.url)
    experiment_id = remote.create_experiment("remote-tagged", tags={"a": "1", "b": "2"})
    remote.delete_experiment_tag(experiment_id, "a")
    assert remote.get_experiment(experiment_id).tags == {"b": "2"}
    with pytest.raises(ResourceDoesNotExist, match="No tag with name: a"):
        remote.delete_experiment_tag(experiment_id, "a")
    remote.close()
