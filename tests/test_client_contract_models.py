"""The Client contract for MLflow 3's models: logged models, a run's inputs and outputs, the
model registry.

The same tests as ``test_client_contract`` (its ``client`` fixture and transports: ``local``,
``remote`` through a server on a thread, ``postgres``), so each transport must answer every
call alike. Refused writes are checked twice: the error, and that the log's head did not move.
"""

from __future__ import annotations

import pytest
import test_client_contract as contract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstore import Client, InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from evstore.entities import Dataset, DatasetInput, InputTag, LoggedModelInput, LoggedModelOutput

# The contract's own client fixture and transports, so both files run over the same three.
client = contract.client
pytest_generate_tests = contract.pytest_generate_tests
head = contract.head

# --- the registry -------------------------------------------------------------------------


def test_a_registered_models_lifecycle(client: Client) -> None:
    created = client.create_registered_model("clf", tags={"team": "vision", "n": 3}, description="first")
    assert (created.name, created.description, created.tags) == ("clf", "first", {"team": "vision", "n": "3"})
    assert created.creation_timestamp == created.last_updated_timestamp > 1_600_000_000_000
    assert client.get_registered_model("clf") == created

    client.set_registered_model_tag("clf", "stage", "beta")
    client.delete_registered_model_tag("clf", "n")
    client.delete_registered_model_tag("clf", "never-set")  # nothing to do, as MLflow
    updated = client.update_registered_model("clf", description="second")
    assert (updated.description, updated.tags) == ("second", {"team": "vision", "stage": "beta"})

    renamed = client.rename_registered_model("clf", "classifier")
    assert renamed.name == "classifier" and renamed.tags == updated.tags
    with pytest.raises(ResourceDoesNotExist, match="clf"):
        client.get_registered_model("clf")

    client.delete_registered_model("classifier")
    with pytest.raises(ResourceDoesNotExist):
        client.get_registered_model("classifier")


def test_registry_refusals_change_nothing(client: Client) -> None:
    client.create_registered_model("taken")
    before = head(client)
    with pytest.raises(ResourceAlreadyExists, match="taken"):
        client.create_registered_model("taken")
    with pytest.raises(InvalidParameterValue, match="name"):
        client.create_registered_model("")
    with pytest.raises(ResourceDoesNotExist):
        client.set_registered_model_tag("missing", "k", "v")
    with pytest.raises(ResourceDoesNotExist):
        client.create_model_version("missing", "s3://bucket/model")
    with pytest.raises(ResourceDoesNotExist, match="version=1"):
        client.get_model_version("taken", 1)
    with pytest.raises(InvalidParameterValue, match="version"):
        client.get_model_version("taken", "one")
    with pytest.raises(InvalidParameterValue, match="reserved"):
        client.set_registered_model_alias("taken", "latest", 1)
    with pytest.raises(InvalidParameterValue, match="max_results"):
        client.search_registered_models(max_results=1001)
    assert head(client) == before


def test_search_registered_models_filters_orders_and_pages(client: Client) -> None:
    for name in ("b-model", "a-model", "c-other"):
        client.create_registered_model(name, tags={"kind": name[0]})
    assert [m.name for m in client.search_registered_models()] == ["a-model", "b-model", "c-other"]
    assert [m.name for m in client.search_registered_models("name LIKE '%model'", order_by=["name DESC"])] == [
        "b-model", "a-model",
    ]  # fmt: skip
    assert [m.name for m in client.search_registered_models("tags.kind = 'c'")] == ["c-other"]
    first = client.search_registered_models(max_results=2)
    assert [m.name for m in first] == ["a-model", "b-model"] and first.token
    rest = client.search_registered_models(max_results=2, page_token=first.token)
    assert [m.name for m in rest] == ["c-other"] and rest.token is None


def test_versions_stages_and_aliases(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    client.create_registered_model("clf")
    one = client.create_model_version("clf", f"runs:/{run_id}/model", run_id, tags={"t": "1"}, description="d")
    assert (one.version, one.run_id, one.source, one.tags, one.description, one.current_stage) == (
        "1", run_id, f"runs:/{run_id}/model", {"t": "1"}, "d", "None",
    )  # fmt: skip
    two = client.create_model_version("clf", f"runs:/{run_id}/model", run_id)
    assert two.version == "2" and two.run_id == run_id
    assert client.get_model_version("clf", "1") == one

    client.set_model_version_tag("clf", 2, "ok", True)
    client.delete_model_version_tag("clf", 1, "t")
    assert client.update_model_version("clf", 1, "better").description == "better"
    assert client.get_model_version("clf", 2).tags == {"ok": "True"}
    assert client.get_model_version("clf", 1).tags == {}

    # stages: archive_existing_versions moves the other Production version to Archived
    client.transition_model_version_stage("clf", 1, "production")
    moved = client.transition_model_version_stage("clf", 2, "Production", archive_existing_versions=True)
    assert moved.current_stage == "Production"
    assert client.get_model_version("clf", 1).current_stage == "Archived"
    assert [(v.version, v.current_stage) for v in client.get_latest_versions("clf")] == [
        ("1", "Archived"), ("2", "Production"),
    ]  # fmt: skip
    assert [v.version for v in client.get_latest_versions("clf", ["Production"])] == ["2"]

    # an alias points at one version, moves, and goes
    client.set_registered_model_alias("clf", "champion", 1)
    assert client.get_model_version_by_alias("clf", "champion").version == "1"
    client.set_registered_model_alias("clf", "champion", "2")
    found = client.get_model_version_by_alias("clf", "champion")
    assert (found.version, found.aliases) == ("2", ["champion"])
    assert client.get_registered_model("clf").aliases == {"champion": "2"}
    client.delete_registered_model_alias("clf", "champion")
    with pytest.raises(InvalidParameterValue, match="champion"):
        client.get_model_version_by_alias("clf", "champion")

    uri = client.get_model_version_download_uri("clf", 1)
    assert uri.endswith(f"{run_id}/artifacts/model")
    client.delete_model_version("clf", 1)
    with pytest.raises(ResourceDoesNotExist):
        client.get_model_version("clf", 1)
    assert client.create_model_version("clf", "s3://bucket/m").version == "3"  # numbers never return


def test_search_model_versions_filters_orders_and_pages(client: Client) -> None:
    run_a, run_b = (client.create_run("0").info.run_id for _ in range(2))
    for name in ("first", "second"):
        client.create_registered_model(name)
        client.create_model_version(name, f"runs:/{run_a}/m", run_a)
        client.create_model_version(name, f"runs:/{run_b}/m", run_b, tags={"good": "yes"})
    assert {(v.name, v.version) for v in client.search_model_versions(f"run_id = '{run_b}'")} == {
        ("first", "2"), ("second", "2"),
    }  # fmt: skip
    ordered = client.search_model_versions("name = 'first'", order_by=["version_number ASC"])
    assert [v.version for v in ordered] == ["1", "2"]
    assert [(v.name, v.version) for v in client.search_model_versions(
        "tags.good = 'yes'", order_by=["name DESC"])] == [("second", "2"), ("first", "2")]  # fmt: skip
    page = client.search_model_versions(max_results=3, order_by=["name ASC", "version_number ASC"])
    assert [(v.name, v.version) for v in page] == [("first", "1"), ("first", "2"), ("second", "1")]
    rest = client.search_model_versions(max_results=3, order_by=["name ASC", "version_number ASC"],
                                        page_token=page.token)  # fmt: skip
    assert [(v.name, v.version) for v in rest] == [("second", "2")] and rest.token is None


# No NUL: a PostgreSQL store refuses it as the caller's error (test_postgres_read_side).
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(description=TEXT, value=TEXT)
def test_registry_text_round_trips(client: Client, description: str, value: str) -> None:
    name = f"rt-{len(client.search_registered_models(max_results=1000))}"
    client.create_registered_model(name, tags={"k": value}, description=description)
    found = client.get_registered_model(name)
    assert (found.description, found.tags) == (description, {"k": value})


# --- logged models ------------------------------------------------------------------------


def test_a_logged_models_lifecycle(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    model = client.create_logged_model("0", "net", run_id, tags={"a": "1"}, params={"lr": 0.1}, model_type="nn")
    assert model.model_id.startswith("m-") and model.status == "PENDING"
    assert (model.name, model.source_run_id, model.tags, model.params, model.model_type) == (
        "net", run_id, {"a": "1"}, {"lr": "0.1"}, "nn",
    )  # fmt: skip
    ready = client.finalize_logged_model(model.model_id, "LOGGED_MODEL_READY")
    assert ready.status == "READY"
    client.set_logged_model_tags(model.model_id, {"b": "2"})
    client.delete_logged_model_tag(model.model_id, "a")
    client.log_model_params(model.model_id, {"lr": "0.5", "depth": 3})  # a logged key keeps its value
    client.log_metric(run_id, "acc", 0.75, timestamp=5, step=1, model_id=model.model_id,
                      dataset_name="eval", dataset_digest="d1")  # fmt: skip
    found = client.get_logged_model(model.model_id)
    assert (found.tags, found.params) == ({"b": "2"}, {"lr": "0.1", "depth": "3"})
    assert [(m.key, m.value, m.step, run, name, digest) for m, run, name, digest in found.metrics] == [
        ("acc", 0.75, 1, run_id, "eval", "d1"),
    ]  # fmt: skip

    client.delete_logged_model(model.model_id)
    with pytest.raises(ResourceDoesNotExist, match=model.model_id):
        client.get_logged_model(model.model_id)
    assert client.get_logged_model(model.model_id, allow_deleted=True).model_id == model.model_id


def test_logged_model_refusals_change_nothing(client: Client) -> None:
    model_id = client.create_logged_model("0", "net").model_id
    before = head(client)
    with pytest.raises(ResourceDoesNotExist):
        client.create_logged_model("42", "net")
    with pytest.raises(ResourceDoesNotExist):
        client.get_logged_model("m-00000000000000000000000000000000")
    with pytest.raises(InvalidParameterValue, match="status"):
        client.finalize_logged_model(model_id, "DONE")
    with pytest.raises(ResourceDoesNotExist, match="nope"):
        client.delete_logged_model_tag(model_id, "nope")
    with pytest.raises(ResourceDoesNotExist):
        client.log_outputs("0" * 32, [(model_id, 0)])
    assert head(client) == before


def test_search_logged_models_filters_orders_and_pages(client: Client) -> None:
    experiment_id = client.create_experiment("models")
    run_id = client.create_run(experiment_id).info.run_id
    ids = {}
    for name, acc in (("a", 0.5), ("b", 0.9), ("c", 0.7)):
        ids[name] = client.create_logged_model(experiment_id, name, params={"p": name}).model_id
        client.log_metric(run_id, "acc", acc, model_id=ids[name])
    client.finalize_logged_model(ids["b"], "READY")
    assert [m.name for m in client.search_logged_models([experiment_id], "params.p = 'b'")] == ["b"]
    assert [m.name for m in client.search_logged_models([experiment_id], "metrics.acc > 0.6",
            order_by=[{"field_name": "metrics.acc", "ascending": False}])] == ["b", "c"]  # fmt: skip
    assert [m.name for m in client.search_logged_models([experiment_id], "status = 'LOGGED_MODEL_READY'")] == ["b"]
    by_name = [{"field_name": "name", "ascending": True}]
    page = client.search_logged_models([experiment_id], max_results=2, order_by=by_name)
    assert [m.name for m in page] == ["a", "b"] and page.token
    rest = client.search_logged_models([experiment_id], max_results=2, order_by=by_name, page_token=page.token)
    assert [m.name for m in rest] == ["c"] and rest.token is None


def test_a_version_of_a_logged_model(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    model_id = client.create_logged_model("0", "net", run_id).model_id
    client.create_registered_model("clf")
    version = client.create_model_version("clf", f"models:/{model_id}", model_id=model_id)
    assert (version.version, version.model_id, version.run_id) == ("1", model_id, run_id)
    assert client.get_logged_model(model_id).tags["mlflow.modelVersions"] == '[{"name": "clf", "version": 1}]'
    assert client.get_model_version_download_uri("clf", 1).endswith(f"models/{model_id}/artifacts")


# --- a run's inputs and outputs -----------------------------------------------------------


def test_inputs_and_outputs_show_on_the_run_and_in_search(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    model_id = client.create_logged_model("0", "net", run_id).model_id
    train = DatasetInput(Dataset("iris", "abc", "local", '{"uri": "/data"}', '{"cols": 4}'),
                         [InputTag("mlflow.data.context", "training")])  # fmt: skip
    evaluation = {"dataset": {"name": "iris", "digest": "def", "source_type": "local", "source": "{}"},
                  "tags": [{"key": "mlflow.data.context", "value": "eval"}]}  # fmt: skip
    client.log_inputs(run_id, [train, evaluation], [LoggedModelInput(model_id)])
    client.log_outputs(run_id, [LoggedModelOutput(model_id, 3)])
    before = head(client)
    client.log_inputs(run_id, [train])  # used already: a retry writes nothing
    client.log_outputs(run_id, [(model_id, 3)])
    assert head(client) == before

    run = client.get_run(run_id)
    assert run.inputs.dataset_inputs == [
        train,
        DatasetInput(Dataset("iris", "def", "local", "{}"), [InputTag("mlflow.data.context", "eval")]),
    ]
    assert run.inputs.model_inputs == [LoggedModelInput(model_id)]
    assert run.outputs.model_outputs == [LoggedModelOutput(model_id, 3)]
    # a search answers the same inputs and outputs as get_run (MLflow 3.17 does)
    (found,) = client.search_runs(["0"], f"attributes.run_id = '{run_id}'")
    assert (found.inputs, found.outputs) == (run.inputs, run.outputs)
    assert run.to_dictionary()["inputs"]["dataset_inputs"][0]["tags"] == {"mlflow.data.context": "training"}
    other = client.create_run("0").info.run_id
    assert client.get_run(other).inputs.dataset_inputs == []
    assert "inputs" not in client.get_run(other).to_dictionary()


def test_bad_inputs_are_refused_and_change_nothing(client: Client) -> None:
    run_id = client.create_run("0").info.run_id
    before = head(client)
    with pytest.raises(InvalidParameterValue, match="dataset"):
        client.log_inputs(run_id, [{"dataset": {"name": "x"}, "tags": []}])
    with pytest.raises(InvalidParameterValue):
        client.log_inputs(run_id, ["not a dataset"])
    with pytest.raises(ResourceDoesNotExist):
        client.log_inputs(run_id, models=["m-00000000000000000000000000000000"])
    with pytest.raises(ResourceDoesNotExist):
        client.log_inputs("0" * 32, [DatasetInput(Dataset("d", "1", "local", "{}"))])
    with pytest.raises(InvalidParameterValue, match="pairs"):
        client.log_outputs(run_id, [("m-1",)])
    assert head(client) == before
