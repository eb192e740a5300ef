"""The read models evstore keeps: one module per model, each a ``ReadModel``.

``evstore.projection`` finds them through ``PROJECTIONS`` (named in
``evstore.registry``). To add one, write a module declaring a ``ReadModel`` and list it
here; it is built when a store is next opened (or by ``evstore rebuild`` on a big log).
"""

from __future__ import annotations

from evstore.projection import ReadModel
from projections.artifacts import ARTIFACTS
from projections.experiments import EXPERIMENTS
from projections.inputs import RUN_INPUTS
from projections.latest_metrics import LATEST_METRICS
from projections.logged_models import LOGGED_MODELS
from projections.metrics import METRICS
from projections.params import PARAMS
from projections.provenance import PROVENANCE
from projections.registry import REGISTRY
from projections.runs import RUNS
from projections.tags import TAGS

PROJECTIONS: list[ReadModel] = [
    EXPERIMENTS,
    RUNS,
    PARAMS,
    TAGS,
    METRICS,
    LATEST_METRICS,
    ARTIFACTS,
    PROVENANCE,
    LOGGED_MODELS,
    RUN_INPUTS,
    REGISTRY,
]
