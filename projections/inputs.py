"""A run's inputs: the datasets it used (with the input's tags) and the logged models."""

from __future__ import annotations

import msgspec

from evstore.events import RunInputsLogged
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent

_encode = msgspec.json.Encoder().encode


def inputs_logged(rec: RecordedEvent, out: Ops) -> None:
    """New inputs of the run; a dataset it already used keeps its first input's tags."""
    e: RunInputsLogged = rec.event  # type: ignore[assignment]
    out.extend("dataset", [
        (rec.stream_id, d.name, d.digest, d.source_type, d.source, d.schema, d.profile,
         _encode(dict(sorted(d.tags.items()))).decode(), rec.position, item)
        for item, d in enumerate(e.datasets)
    ])  # fmt: skip
    out.extend("model", [(rec.stream_id, model_id, rec.position) for model_id in e.models])


RUN_INPUTS = ReadModel(
    name="run_inputs",
    version=1,
    tables={
        "run_dataset_inputs": (
            (
                "CREATE TABLE {run_dataset_inputs} (run_id TEXT NOT NULL, name TEXT NOT NULL,"
                " digest TEXT NOT NULL, source_type TEXT, source TEXT, schema TEXT, profile TEXT,"
                " tags TEXT NOT NULL, position INTEGER NOT NULL, item INTEGER NOT NULL,"
                " PRIMARY KEY (run_id, name, digest))"
                " WITHOUT ROWID"
            ),
        ),
        "run_model_inputs": (
            (
                "CREATE TABLE {run_model_inputs} (run_id TEXT NOT NULL, model_id TEXT NOT NULL,"
                " position INTEGER NOT NULL, PRIMARY KEY (run_id, model_id)) WITHOUT ROWID"
            ),
        ),
    },
    statements={
        "dataset": "INSERT OR IGNORE INTO {run_dataset_inputs} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "model": "INSERT OR IGNORE INTO {run_model_inputs} VALUES (?, ?, ?)",
    },
    handlers={RunInputsLogged: inputs_logged},
)
