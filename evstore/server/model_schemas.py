"""Request bodies of MLflow 3's logged-model and run input/output endpoints.

A field named in the URL (``logged-models/{model_id}``) is filled from the path, so it
may be missing from the body.
"""

from __future__ import annotations

import msgspec

from evstore.server.schemas import Int32, Int64, KeyValue, _RunRequest


class CreateLoggedModel(msgspec.Struct):
    experiment_id: str
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class LoggedModelId(msgspec.Struct):
    """get and delete of one model."""

    model_id: str = ""
    allow_deleted: bool = False


class FinalizeLoggedModel(msgspec.Struct):
    status: str | int
    model_id: str = ""


class SetLoggedModelTags(msgspec.Struct):
    tags: list[KeyValue] = []
    model_id: str = ""


class DeleteLoggedModelTag(msgspec.Struct):
    model_id: str = ""
    tag_key: str = ""


class LogLoggedModelParams(msgspec.Struct):
    params: list[KeyValue] = []
    model_id: str = ""


class SearchDataset(msgspec.Struct):
    dataset_name: str
    dataset_digest: str | None = None


class SearchOrderBy(msgspec.Struct):
    field_name: str
    ascending: bool = True
    dataset_name: str | None = None
    dataset_digest: str | None = None


class SearchLoggedModels(msgspec.Struct):
    experiment_ids: list[str] = []
    filter: str | None = None
    datasets: list[SearchDataset] = []
    max_results: Int32 | None = None
    order_by: list[SearchOrderBy] = []
    page_token: str | None = None


class ModelOutput(msgspec.Struct):
    model_id: str
    step: Int64 = 0


class LogOutputs(_RunRequest):
    models: list[ModelOutput] = []  # noqa: RUF012 - a msgspec Struct copies it


class Dataset(msgspec.Struct):
    name: str = ""
    digest: str = ""
    source_type: str = ""
    source: str = ""
    schema: str | None = None
    profile: str | None = None


class DatasetInputRequest(msgspec.Struct):
    dataset: Dataset
    tags: list[KeyValue] = []


class ModelInput(msgspec.Struct):
    model_id: str


class LogInputs(_RunRequest):
    datasets: list[DatasetInputRequest] = []  # noqa: RUF012 - a msgspec Struct copies it
    models: list[ModelInput] = []  # noqa: RUF012
