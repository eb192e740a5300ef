"""The tracking domain as versioned events.

Every event type is a frozen msgspec Struct named subject + past-tense verb. The class
name is the stored type name and never changes; the class always describes the newest
version of the event and carries that number in ``version``. Older shapes live only as
dicts inside ``upcasters/``.

Experiment events carry their ``experiment_id``. Run events belong to the run's stream,
whose id is the run id, so they do not repeat it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

EVENT_TYPES: dict[str, type[Event]] = {}

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event; subclasses register themselves by class name."""

    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EVENT_TYPES[cls.__name__] = cls


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event whose type or version this code does not know: a newer evstore wrote it."""

    type: str
    version: int
    payload: bytes


# --- experiments -------------------------------------------------------------------


class ExperimentCreated(Event, frozen=True):
    experiment_id: str
    name: str
    artifact_location: str
    creation_time: int
    tags: dict[str, str] = {}


class ExperimentRenamed(Event, frozen=True):
    experiment_id: str
    name: str


class ExperimentTagSet(Event, frozen=True):
    experiment_id: str
    key: str
    value: str


class ExperimentTagDeleted(Event, frozen=True):
    experiment_id: str
    key: str


class ExperimentDeleted(Event, frozen=True):
    experiment_id: str
    deleted_time: int


class ExperimentRestored(Event, frozen=True):
    experiment_id: str
    restored_time: int


# --- runs --------------------------------------------------------------------------


class RunStarted(Event, frozen=True):
    """A run began. v2: initial tags are separate TagSet events appended with it."""

    version: ClassVar[int] = 2

    experiment_id: str
    run_name: str
    user_id: str
    start_time: int
    parent_run_id: str | None = None
    artifact_uri: str = ""
    status: str = "RUNNING"


class ParamsLogged(Event, frozen=True):
    params: dict[str, str]


class MetricPoint(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One metric value, stored as a compact array.

    ``model_id``, ``dataset_name`` and ``dataset_digest`` say what the value measured, as
    MLflow 3 records for metrics of logged models and evaluation datasets. Not tracked
    by the garbage collector (``gc=False``: its fields hold no containers, so it can
    close no cycle): a batch makes thousands, which would each cost a collection's pass.
    """

    key: str
    value: float
    step: int
    timestamp: int
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class MetricsLogged(Event, frozen=True):
    """A batch of metric points. v2: points carry model and dataset context."""

    version: ClassVar[int] = 2

    points: list[MetricPoint]


class TagSet(Event, frozen=True):
    key: str
    value: str


class TagDeleted(Event, frozen=True):
    key: str


class ArtifactRecorded(Event, frozen=True):
    path: str
    size: int
    sha256: str


class RunStatusChanged(Event, frozen=True):
    status: str
    end_time: int | None = None


class RunRenamed(Event, frozen=True):
    run_name: str


class RunDeleted(Event, frozen=True):
    deleted_time: int


class RunRestored(Event, frozen=True):
    restored_time: int


# --- users (the stream "users") ------------------------------------------------------


class UserAdded(Event, frozen=True):
    """A user who may call the server; only the sha256 of their token is kept."""

    name: str
    token_sha256: str
    admin: bool = False


class UserTokenRotated(Event, frozen=True):
    """A user's token replaced: the old one is refused from now on."""

    name: str
    token_sha256: str


class UserDisabled(Event, frozen=True):
    """A user refused from now on, whatever they send; their history stays theirs."""

    name: str


class UserDeleted(Event, frozen=True):
    """A user removed (MLflow's ``users/delete``): refused, and the name free again."""

    name: str


class UserAdminChanged(Event, frozen=True):
    """A user made an admin (who may manage users and grants, and read everything) or not."""

    name: str
    admin: bool


class UserPasswordSet(Event, frozen=True):
    """A user's password (MLflow's basic-auth API), kept as a salted scrypt hash."""

    name: str
    password_hash: str


class ExperimentPermissionGranted(Event, frozen=True):
    """A user's permission on one experiment: READ, EDIT, MANAGE or NO_PERMISSIONS."""

    experiment_id: str
    name: str
    permission: str


class ExperimentPermissionRevoked(Event, frozen=True):
    """A user's grant on one experiment removed: the default permission applies again."""

    experiment_id: str
    name: str


class RegisteredModelPermissionGranted(Event, frozen=True):
    """A user's permission on one registered model (its stream, so it follows a rename and
    dies with the model): READ, EDIT, MANAGE or NO_PERMISSIONS."""

    model_key: str
    model_name: str
    name: str
    permission: str


class RegisteredModelPermissionRevoked(Event, frozen=True):
    """A user's grant on one registered model removed: the default permission applies again."""

    model_key: str
    model_name: str
    name: str


# --- erasure -----------------------------------------------------------------------


class Redacted(Event, frozen=True):
    """Values of an earlier event of this stream were erased from its stored payload.

    ``target`` says what: ``param`` or ``tag`` (the value of ``key`` was replaced by
    ``[redacted]``) or ``event`` (the whole payload was erased). The link of the event at
    ``position`` covers ``original_sha256``, the digest of the payload it was appended
    with; ``redacted_sha256`` is the digest of the payload this redaction left. Who and
    when are the metadata and time of this event's commit.
    """

    position: int
    target: str
    reason: str
    original_sha256: str
    redacted_sha256: str
    key: str | None = None


class ErasedEvent(msgspec.Struct, frozen=True):
    """An event whose whole payload was erased (``evstore redact --position``): read
    models skip it, as if it had not been appended; its place in the chain stays."""

    type: str
    version: int


# --- logged models (MLflow 3; each model's stream id is its model id, ``m-<hex>``) ----------


class LoggedModelCreated(Event, frozen=True):
    """A logged model began (status PENDING); its initial tags and params are
    ``LoggedModelTagSet`` and ``LoggedModelParamsLogged`` events appended with it."""

    experiment_id: str
    name: str
    artifact_location: str
    creation_time: int
    source_run_id: str | None = None
    model_type: str = ""


class LoggedModelFinalized(Event, frozen=True):
    """A logged model's upload ended: ``status`` READY or FAILED."""

    status: str
    status_message: str = ""


class LoggedModelTagSet(Event, frozen=True):
    key: str
    value: str


class LoggedModelTagDeleted(Event, frozen=True):
    key: str


class LoggedModelParamsLogged(Event, frozen=True):
    params: dict[str, str]


class LoggedModelDeleted(Event, frozen=True):
    deleted_time: int


class ModelOutput(msgspec.Struct, frozen=True):
    """A logged model a run produced, at a step."""

    model_id: str
    step: int = 0


class RunOutputsLogged(Event, frozen=True):
    """Logged models a run produced (MLflow's ``runs/outputs``)."""

    models: list[ModelOutput]


class DatasetInput(msgspec.Struct, frozen=True):
    """A dataset a run used (MLflow's ``DatasetInput``): the dataset and the input's tags
    (``mlflow.data.context``: training, eval, ...)."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None
    tags: dict[str, str] = {}


class RunInputsLogged(Event, frozen=True):
    """Datasets and logged models a run used (MLflow's ``runs/log-inputs``)."""

    datasets: list[DatasetInput] = []
    models: list[str] = []


# --- the model registry (each registered model's stream id is ``registered-model-<hex>``;
# its name is an attribute, so a rename keeps its history in one stream) -------------------


class RegisteredModelCreated(Event, frozen=True):
    """A registered model; initial tags are ``RegisteredModelTagSet`` events appended with it."""

    name: str
    creation_time: int
    description: str = ""


class RegisteredModelRenamed(Event, frozen=True):
    name: str


class RegisteredModelDescribed(Event, frozen=True):
    """A registered model's description set (MLflow's ``registered-models/update``)."""

    description: str


class RegisteredModelTagSet(Event, frozen=True):
    key: str
    value: str


class RegisteredModelTagDeleted(Event, frozen=True):
    key: str


class RegisteredModelDeleted(Event, frozen=True):
    """A registered model deleted with its versions and aliases; its name is free again."""

    deleted_time: int


class RegisteredModelAliasSet(Event, frozen=True):
    """An alias pointed at a version (moved there if it pointed elsewhere)."""

    alias: str
    version_number: int


class RegisteredModelAliasDeleted(Event, frozen=True):
    alias: str


class ModelVersionCreated(Event, frozen=True):
    """A new version of a registered model: from a logged model (``model_id``), a run
    (``run_id``) or any source URI."""

    version_number: int
    source: str
    creation_time: int
    run_id: str | None = None
    model_id: str | None = None
    run_link: str = ""
    description: str = ""
    user_id: str = ""


class ModelVersionDescribed(Event, frozen=True):
    version_number: int
    description: str


class ModelVersionStageChanged(Event, frozen=True):
    """A version moved to a stage (None, Staging, Production, Archived): deprecated in
    MLflow, still called."""

    version_number: int
    stage: str


class ModelVersionTagSet(Event, frozen=True):
    version_number: int
    key: str
    value: str


class ModelVersionTagDeleted(Event, frozen=True):
    version_number: int
    key: str


class ModelVersionDeleted(Event, frozen=True):
    version_number: int
    deleted_time: int
