"""The request bodies of MLflow's REST API, as msgspec Structs.

Every request is decoded into one of these (JSON bodies and GET query strings alike)
before anything is written, so a wrong type or a missing field is a 400 that names the
field, never a 500 or half a write. Unknown fields are ignored, as MLflow's server does.
``run_uuid`` (MLflow's old name) is folded into ``run_id``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from evstore.entities import Metric

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Int32 = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class _RunRequest(msgspec.Struct, kw_only=True):
    """A request naming one run by ``run_id`` or ``run_uuid``."""

    run_id: str = ""
    run_uuid: str = ""

    def __post_init__(self) -> None:
        self.run_id = self.run_id or self.run_uuid
        self.run_uuid = ""
        if not self.run_id:
            raise ValueError("Missing value for required parameter 'run_id'")


class KeyValue(msgspec.Struct):
    """A tag or param: ``{"key": ..., "value": ...}``."""

    key: str
    value: str


# --- experiments ------------------------------------------------------------------------


class GetExperimentByName(msgspec.Struct):
    experiment_name: str


class CreateExperiment(msgspec.Struct):
    name: str
    artifact_location: str | None = None
    tags: list[KeyValue] = []


class ExperimentId(msgspec.Struct):
    """get, delete and restore of one experiment."""

    experiment_id: str


class UpdateExperiment(msgspec.Struct):
    experiment_id: str
    new_name: str


class SetExperimentTag(msgspec.Struct):
    experiment_id: str
    key: str
    value: str


class DeleteExperimentTag(msgspec.Struct):
    experiment_id: str
    key: str


class SearchExperiments(msgspec.Struct):
    max_results: Int32 = 1000
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = []
    view_type: str = "ACTIVE_ONLY"


# --- runs -------------------------------------------------------------------------------


class CreateRun(msgspec.Struct):
    experiment_id: str = "0"
    user_id: str | None = None
    run_name: str | None = None
    start_time: Int64 | None = None
    tags: list[KeyValue] = []


class GetRun(_RunRequest):
    pass


class RunId(_RunRequest):
    """delete and restore of one run."""


class UpdateRun(_RunRequest):
    status: str | None = None
    end_time: Int64 | None = None
    run_name: str | None = None


class LogMetric(_RunRequest):
    key: str
    value: float
    timestamp: Int64
    step: Int64 = 0
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class LogParam(_RunRequest):
    key: str
    value: str


class SetTag(_RunRequest):
    key: str
    value: str


class DeleteTag(_RunRequest):
    key: str


class LogBatch(_RunRequest):
    metrics: list[Metric] = []  # decoded straight into the entity the service takes
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class SearchRuns(msgspec.Struct):
    experiment_ids: list[str] = []
    filter: str = ""
    run_view_type: str = "ACTIVE_ONLY"
    max_results: Int32 = 1000
    order_by: list[str] = []
    page_token: str | None = None


class GetMetricHistory(_RunRequest):
    metric_key: str
    max_results: Int32 | None = None
    page_token: str | None = None


#: Query parameters that repeat (``?order_by=a&order_by=b``) and so decode as lists.
LIST_QUERY_FIELDS = frozenset({"order_by", "experiment_ids"})
