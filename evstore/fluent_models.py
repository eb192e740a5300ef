"""The fluent API's registry and logged-model functions, with MLflow's names
(``mlflow.register_model``, ``mlflow.search_model_versions``, ...)."""

from __future__ import annotations

from typing import Any

from evstore.errors import ResourceAlreadyExists


def _client() -> Any:
    from evstore.fluent import _client as current

    return current()


def register_model(model_uri: str, name: str, tags: dict[str, Any] | None = None) -> Any:
    """Register a model (``models:/<model_id>``, ``runs:/<run_id>/<path>`` or any URI) as the
    next version of ``name``, creating the registered model if it does not exist."""
    client = _client()
    try:
        client.create_registered_model(name)
    except ResourceAlreadyExists:
        pass
    run_id = model_id = None
    if model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").split("/")[0]
    elif model_uri.startswith("models:/m-"):  # a logged model, named as MLflow's fluent API names it
        model_id = model_uri.removeprefix("models:/").split("/")[0]
    return client.create_model_version(name, model_uri, run_id, tags, model_id=model_id)


def search_registered_models(filter_string: str | None = None, max_results: int = 100,
                             order_by: list[str] | None = None) -> list[Any]:  # fmt: skip
    """Registered models matching a filter (one page of ``max_results``)."""
    return list(_client().search_registered_models(filter_string, max_results, order_by))


def search_model_versions(filter_string: str | None = None, max_results: int = 10_000,
                          order_by: list[str] | None = None) -> list[Any]:  # fmt: skip
    """Model versions matching a filter (one page of ``max_results``)."""
    return list(_client().search_model_versions(filter_string, max_results, order_by))


def search_logged_models(experiment_ids: list[str] | None = None, filter_string: str | None = None,
                         max_results: int | None = None) -> list[Any]:  # fmt: skip
    """Logged models of experiments (the active one by default) matching a filter."""
    from evstore.fluent import _experiment_id

    ids = experiment_ids if experiment_ids is not None else [_experiment_id()]
    client = _client()
    if max_results is not None:
        return list(client.search_logged_models(ids, filter_string, None, max_results))
    found: list[Any] = []
    token = None
    while True:  # every page, as MLflow's fluent search does without max_results
        page = client.search_logged_models(ids, filter_string, None, None, None, token)
        found += page
        token = page.token
        if not token:
            return found
