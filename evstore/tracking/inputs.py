"""A run's inputs (MLflow's ``log_inputs``): datasets with their digests and contexts, and
logged models, as ``RunInputsLogged`` events; a part of the tracking service."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from evstore import entities
from evstore.entities import RunInputs
from evstore.errors import InvalidParameterValue
from evstore.events import DatasetInput, RunInputsLogged
from evstore.validation import check_text, optional_text, shown, tag_value, validate_key

CONTEXT_TAG = "mlflow.data.context"


def dataset_input(given: Any) -> DatasetInput:
    """A dataset input from MLflow's ``DatasetInput`` (``.dataset`` and ``.tags``), a dict
    of the same shape, or evstore's own."""
    if isinstance(given, DatasetInput):
        return given
    try:
        if isinstance(given, dict):
            dataset, tags = given["dataset"], given.get("tags") or []
            fields = {k: dataset.get(k) for k in ("name", "digest", "source_type", "source",
                                                  "schema", "profile")}  # fmt: skip
        else:
            dataset, tags = given.dataset, given.tags or []
            fields = {k: getattr(dataset, k, None) for k in ("name", "digest", "source_type",
                                                             "source", "schema", "profile")}  # fmt: skip
        pairs = tags.items() if isinstance(tags, dict) else [
            (t["key"], t["value"]) if isinstance(t, dict) else (t.key, t.value) for t in tags
        ]
    except (KeyError, AttributeError, TypeError):
        raise InvalidParameterValue(
            f"A dataset input needs a dataset (name, digest, source_type, source) and tags, not {shown(given)[:200]}"
        ) from None
    for required in ("name", "digest", "source_type", "source"):
        if not fields[required]:
            raise InvalidParameterValue(f"Missing value for required parameter 'dataset.{required}'")
        check_text(f"dataset {required}", fields[required])
    for optional in ("schema", "profile"):
        optional_text(f"dataset {optional}", fields[optional])
    clean = {validate_key("tag", k): tag_value(k, v) for k, v in pairs}
    return msgspec.convert({**fields, "tags": clean}, DatasetInput)


class InputsMixin:
    """``log_inputs`` and the reads of a run's inputs, for ``TrackingService``."""

    _store: Any
    reading: Callable[..., Any]
    _active_run: Callable[[Any, str], None]

    def log_inputs(self, run_id: str, datasets: Iterable[Any] | None = None,
                   models: Iterable[Any] | None = None) -> None:  # fmt: skip
        """Record datasets (and logged models) a run used; one it used already writes nothing."""
        wanted = [dataset_input(d) for d in datasets or []]
        model_ids = [check_text("model id", getattr(m, "model_id", m)) for m in models or []]
        with self._store.transaction() as conn:
            self._active_run(conn, run_id)
            held = {(name, digest) for name, digest in conn.execute(
                "SELECT name, digest FROM run_dataset_inputs WHERE run_id = ?", (run_id,))}  # fmt: skip
            fresh: list[DatasetInput] = []
            for d in wanted:
                if (d.name, d.digest) not in held:
                    held.add((d.name, d.digest))
                    fresh.append(d)
            used = {m for (m,) in conn.execute(
                "SELECT model_id FROM run_model_inputs WHERE run_id = ?", (run_id,))}  # fmt: skip
            new_models = list(dict.fromkeys(m for m in model_ids if m not in used))
            for model_id in new_models:
                self._model_for_write(conn, model_id)  # type: ignore[attr-defined]
            if fresh or new_models:
                self._store.append(run_id, [RunInputsLogged(datasets=fresh, models=new_models)])

    def run_inputs(self, run_id: str) -> tuple[list[DatasetInput], list[str]]:
        """The datasets a run used (first use first) and the logged models."""
        with self.reading() as conn:
            found = inputs_of(conn, [check_text("run id", run_id)]).get(run_id, RunInputs())
        datasets = [
            DatasetInput(**msgspec.structs.asdict(d.dataset), tags={t.key: t.value for t in d.tags})
            for d in found.dataset_inputs
        ]
        return datasets, [m.model_id for m in found.model_inputs]


def inputs_of(conn: Any, run_ids: list[str]) -> dict[str, RunInputs]:
    """What each of these runs used (runs that used nothing are left out), from ``conn``."""
    if not run_ids:
        return {}
    marks = ", ".join("?" * len(run_ids))
    datasets: dict[str, list[entities.DatasetInput]] = {}
    for run_id, *fields, tags in conn.execute(
        "SELECT run_id, name, digest, source_type, source, schema, profile, tags"
        f" FROM run_dataset_inputs WHERE run_id IN ({marks}) ORDER BY run_id, position, item", run_ids,
    ).fetchall():  # fmt: skip
        held = sorted(msgspec.json.decode(tags).items())
        datasets.setdefault(run_id, []).append(entities.DatasetInput(
            entities.Dataset(*fields), [entities.InputTag(k, v) for k, v in held]))  # fmt: skip
    models: dict[str, list[entities.LoggedModelInput]] = {}
    for run_id, model_id in conn.execute(
        f"SELECT run_id, model_id FROM run_model_inputs WHERE run_id IN ({marks})"
        " ORDER BY run_id, position, model_id", run_ids,
    ).fetchall():  # fmt: skip
        models.setdefault(run_id, []).append(entities.LoggedModelInput(model_id))
    return {r: RunInputs(datasets.get(r, []), models.get(r, [])) for r in {*datasets, *models}}
