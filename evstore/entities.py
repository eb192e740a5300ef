"""What the tracking API returns, in MLflow's shapes and field orders.

``Metric(key, value, timestamp, step)``, ``Param(key, value)`` and ``RunTag(key, value)``
take MLflow's positional order, so ``log_batch`` code moves over unchanged. Ids are
strings (run ids 32 hex characters, experiment ids decimal); times are integer ms.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class ViewType:
    """Which lifecycle stages a search returns, as MLflow numbers them."""

    ACTIVE_ONLY = 1
    DELETED_ONLY = 2
    ALL = 3

    #: MLflow's names for the view types.
    CODES: ClassVar[dict[str, int]] = {"ACTIVE_ONLY": 1, "DELETED_ONLY": 2, "ALL": 3}

    @classmethod
    def from_string(cls, value: str) -> int:
        """The number of one of MLflow's view type names."""
        return cls.CODES[value.upper()]


class RunStatus:
    """The run statuses MLflow knows."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class LifecycleStage:
    """Soft-delete state of runs and experiments."""

    ACTIVE = "active"
    DELETED = "deleted"


class Metric(msgspec.Struct, frozen=True, gc=False):
    """One metric point, with MLflow 3's optional model and dataset context."""

    key: str
    value: float
    timestamp: int
    step: int = 0
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class Param(msgspec.Struct, frozen=True, gc=False):
    """One param."""

    key: str
    value: str


class RunTag(msgspec.Struct, frozen=True, gc=False):
    """One run tag."""

    key: str
    value: str


class ExperimentTag(msgspec.Struct, frozen=True, gc=False):
    """One experiment tag."""

    key: str
    value: str


class Experiment(msgspec.Struct, frozen=True):
    """An experiment: a named group of runs."""

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    tags: dict[str, str]
    creation_time: int | None = None
    last_update_time: int | None = None


class RunInfo(msgspec.Struct, frozen=True):
    """A run's attributes."""

    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str

    @property
    def run_uuid(self) -> str:
        """MLflow's older name for ``run_id``."""
        return self.run_id


class RunData(msgspec.Struct, frozen=True):
    """A run's params, latest metrics and tags, as dicts; ``latest_metrics`` holds each
    latest metric with its step and timestamp (MLflow's ``_metric_objs``)."""

    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    latest_metrics: list[Metric] = msgspec.field(default_factory=list)


class Dataset(msgspec.Struct, frozen=True):
    """A dataset a run used, as MLflow's ``Dataset``."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None


class InputTag(msgspec.Struct, frozen=True):
    """A tag of a dataset input (``mlflow.data.context``: training, eval, ...)."""

    key: str
    value: str


class DatasetInput(msgspec.Struct, frozen=True):
    """A dataset with the tags of its use by a run, as MLflow's ``DatasetInput``."""

    dataset: Dataset
    tags: list[InputTag] = msgspec.field(default_factory=list)


class LoggedModelInput(msgspec.Struct, frozen=True):
    """A logged model a run used."""

    model_id: str


class LoggedModelOutput(msgspec.Struct, frozen=True):
    """A logged model a run produced, at a step."""

    model_id: str
    step: int = 0


class RunInputs(msgspec.Struct, frozen=True):
    """What a run used: datasets (first use first) and logged models."""

    dataset_inputs: list[DatasetInput] = msgspec.field(default_factory=list)
    model_inputs: list[LoggedModelInput] = msgspec.field(default_factory=list)


class RunOutputs(msgspec.Struct, frozen=True):
    """What a run produced: logged models."""

    model_outputs: list[LoggedModelOutput] = msgspec.field(default_factory=list)


class Run(msgspec.Struct, frozen=True):
    """A run: ``.info``, ``.data``, and MLflow 3's ``.inputs`` and ``.outputs``."""

    info: RunInfo
    data: RunData
    inputs: RunInputs = msgspec.field(default_factory=RunInputs)
    outputs: RunOutputs = msgspec.field(default_factory=RunOutputs)

    def to_dictionary(self) -> dict[str, Any]:
        """The run as plain data, as MLflow's ``Run.to_dictionary`` (inputs and outputs
        only when the run has some)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        del out["data"]["latest_metrics"]
        if self.inputs == RunInputs():
            del out["inputs"]
        else:
            for given in out["inputs"]["dataset_inputs"]:
                given["tags"] = {t["key"]: t["value"] for t in given["tags"]}
        if self.outputs == RunOutputs():
            del out["outputs"]
        return out


class FileInfo(msgspec.Struct, frozen=True):
    """An artifact listing entry; ``file_size`` is None for directories."""

    path: str
    is_dir: bool
    file_size: int | None


class PagedList(list):  # type: ignore[type-arg]
    """A page of results with the token for the next page (None on the last)."""

    def __init__(self, items: Any, token: str | None) -> None:
        super().__init__(items)
        self.token = token
