"""Request bodies of MLflow's model-registry endpoints (``registered-models/``,
``model-versions/``)."""

from __future__ import annotations

import msgspec

from evstore.server.schemas import Int32, KeyValue


class CreateRegisteredModel(msgspec.Struct):
    name: str = ""
    tags: list[KeyValue] = []
    description: str | None = None


class RegisteredModelName(msgspec.Struct):
    """get and delete of one registered model."""

    name: str = ""


class RenameRegisteredModel(msgspec.Struct):
    name: str = ""
    new_name: str = ""


class UpdateRegisteredModel(msgspec.Struct):
    name: str = ""
    description: str | None = None


class SearchRegisteredModels(msgspec.Struct):
    filter: str | None = None
    max_results: Int32 = 100
    order_by: list[str] = []
    page_token: str | None = None


class RegisteredModelTag(msgspec.Struct):
    name: str = ""
    key: str = ""
    value: str = ""


class Alias(msgspec.Struct):
    name: str = ""
    alias: str = ""
    version: str = ""


class GetLatestVersions(msgspec.Struct):
    name: str = ""
    stages: list[str] = []


class CreateModelVersion(msgspec.Struct):
    name: str = ""
    source: str = ""
    run_id: str | None = None
    tags: list[KeyValue] = []
    run_link: str | None = None
    description: str | None = None
    model_id: str | None = None


class ModelVersionId(msgspec.Struct):
    """get, delete and get-download-uri of one version."""

    name: str = ""
    version: str = ""


class UpdateModelVersion(msgspec.Struct):
    name: str = ""
    version: str = ""
    description: str | None = None


class TransitionStage(msgspec.Struct):
    name: str = ""
    version: str = ""
    stage: str = ""
    archive_existing_versions: bool = False


class ModelVersionTag(msgspec.Struct):
    name: str = ""
    version: str = ""
    key: str = ""
    value: str = ""


class SearchModelVersions(msgspec.Struct):
    filter: str | None = None
    max_results: Int32 = 10_000
    order_by: list[str] = []
    page_token: str | None = None
