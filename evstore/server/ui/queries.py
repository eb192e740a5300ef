"""The read-model queries only the UI asks: key lists, run counts, a run's family, the
registry's names and what a run logged and used."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from evstore.events import ArtifactRecorded, ModelVersionCreated, RunInputsLogged, RunOutputsLogged

#: Shown as columns when none are chosen: the keys most runs of the page hold.
DEFAULT_COLUMNS_PER_KIND = 5
_KEY_TABLES = {"params": "params", "metrics": "latest_metrics", "tags": "tags"}
_REDACTION_WORDS = ("Redact", "Erase")


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def run_counts(conn: Any) -> dict[str, int]:
    """Runs per experiment (every lifecycle stage)."""
    return dict(conn.execute("SELECT experiment_id, count(*) FROM runs GROUP BY experiment_id"))


def child_counts(conn: Any, run_ids: Sequence[str]) -> dict[str, int]:
    """How many runs name each of ``run_ids`` as their parent."""
    if not run_ids:
        return {}
    sql = (f"SELECT parent_run_id, count(*) FROM runs WHERE parent_run_id IN ({_marks(run_ids)})"
           " GROUP BY parent_run_id")  # fmt: skip
    return dict(conn.execute(sql, list(run_ids)))


def default_columns(conn: Any, run_ids: Sequence[str]) -> list[tuple[str, str]]:
    """A few metric and param keys held by the most runs of a page (tags are chosen)."""
    if not run_ids:
        return []
    chosen: list[tuple[str, str]] = []
    for kind in ("metrics", "params"):
        sql = (f"SELECT key FROM {_KEY_TABLES[kind]} WHERE run_id IN ({_marks(run_ids)})"
               " GROUP BY key ORDER BY count(*) DESC, key LIMIT ?")  # fmt: skip
        rows = conn.execute(sql, [*run_ids, DEFAULT_COLUMNS_PER_KIND]).fetchall()
        chosen += [(kind, key) for (key,) in sorted(rows)]
    return chosen


def experiment_keys(
    conn: Any, experiment_id: str, kind: str, contains: str, limit: int
) -> tuple[list[str], int]:
    """Distinct keys of one kind across an experiment's runs containing ``contains``: the
    first ``limit`` in order, and how many there are."""
    table = _KEY_TABLES[kind]
    pattern = "%" + contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    sql = (f"SELECT DISTINCT k.key FROM runs r JOIN {table} k ON k.run_id = r.run_id"
           " WHERE r.experiment_id = ? AND k.key LIKE ? ESCAPE '\\' ORDER BY k.key")  # fmt: skip
    keys = [key for (key,) in conn.execute(sql, (experiment_id, pattern))]
    return keys[:limit], len(keys)


def family(conn: Any, run_id: str, parent_id: str | None) -> dict[str, Any]:
    """A run's parent (id and name, if it exists) and its children, oldest first."""
    parent = None
    if parent_id:
        row = conn.execute("SELECT run_name FROM runs WHERE run_id = ?", (parent_id,)).fetchone()
        parent = {"run_id": parent_id, "run_name": row[0] if row else None}
    children = [
        {"run_id": r, "run_name": n, "status": s, "lifecycle_stage": stage}
        for r, n, s, stage in conn.execute(
            "SELECT run_id, run_name, status, lifecycle_stage FROM runs WHERE parent_run_id = ?"
            " ORDER BY start_time, run_id", (run_id,),
        )
    ]  # fmt: skip
    return {"parent": parent, "children": children}


def stream_positions(store: Any, run_id: str) -> list[tuple[int, int]]:
    """(position, recorded_at) of every event of a run: the time control's stops."""
    return list(store.stream_positions(run_id))


def first_positions(store: Any, run_ids: Sequence[str]) -> dict[str, int]:
    """The position each run's stream begins at."""
    found = {}
    for run_id in run_ids:
        positions = store.stream_positions(run_id)
        if positions:
            found[run_id] = positions[0][0]
    return found


def artifacts_as_of(store: Any, run_id: str, position: int) -> dict[str, tuple[int, str]]:
    """The artifacts a run had recorded up to a log position: path -> (size, sha256)."""
    entries: dict[str, tuple[int, str]] = {}
    for recorded in store.read_stream(run_id):
        if recorded.position > position:
            break
        event = recorded.event
        if isinstance(event, ArtifactRecorded):
            entries[event.path] = (event.size, event.sha256)
    return entries


def start_times(conn: Any, run_ids: Sequence[str]) -> dict[str, int]:
    """Each run's start time (epoch ms)."""
    if not run_ids:
        return {}
    sql = f"SELECT run_id, start_time FROM runs WHERE run_id IN ({_marks(run_ids)})"
    return dict(conn.execute(sql, list(run_ids)))


def read_models(conn: Any, head: int) -> list[dict[str, Any]]:
    """Each read model's checkpoint and how far it trails the head."""
    try:
        rows = conn.execute("SELECT name, checkpoint FROM projection_state ORDER BY name").fetchall()
    except sqlite3.OperationalError:
        return []
    return [{"name": name, "checkpoint": n, "behind": head - n} for name, n in rows]


def is_redaction(type_and_version: str) -> bool:
    """Whether an event type records a redaction (an erasure of what a law says must go)."""
    return any(word in type_and_version for word in _REDACTION_WORDS)


# --- the registry and a run's models ---------------------------------------------------------


def model_name(conn: Any, model_key: str) -> str | None:
    """The name a registered model's stream goes by now (None: deleted)."""
    row = conn.execute("SELECT name FROM registered_models WHERE model_key = ?", (model_key,)).fetchone()
    return None if row is None else str(row[0])


def run_names(conn: Any, run_ids: Sequence[str]) -> dict[str, str]:
    """Each run's name."""
    return _names(conn, "SELECT run_id, run_name FROM runs WHERE run_id", run_ids)


def logged_model_names(conn: Any, model_ids: Sequence[str]) -> dict[str, str]:
    """Each logged model's name."""
    return _names(conn, "SELECT model_id, name FROM logged_models WHERE model_id", model_ids)


def _names(conn: Any, select_where: str, ids: Sequence[str]) -> dict[str, str]:
    """{id: name} of ``select_where`` (a query ending in its id column) for ``ids``."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return {}
    return dict(conn.execute(f"{select_where} IN ({_marks(ids)})", ids))


def models_from_run(conn: Any, run_id: str) -> list[str]:
    """The logged models that name ``run_id`` as their source run, oldest first."""
    sql = "SELECT model_id FROM logged_models WHERE source_run_id = ? ORDER BY creation_time, model_id"
    return [m for (m,) in conn.execute(sql, (run_id,))]


def versions_from(conn: Any, run_id: str, model_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The registered versions made from a run or from any of ``model_ids``."""
    sql = ("SELECT m.name, v.version, v.model_id, v.model_key, v.run_id FROM model_versions v"
           " JOIN registered_models m ON m.model_key = v.model_key"
           f" WHERE v.run_id = ? OR v.model_id IN ({_marks(model_ids) or 'NULL'})"
           " ORDER BY m.name, v.version")  # fmt: skip
    return [{"name": n, "version": v, "model_id": m, "model_key": k, "run_id": r}
            for n, v, m, k, r in conn.execute(sql, [run_id, *model_ids])]  # fmt: skip


def version_position(store: Any, version: dict[str, Any]) -> int:
    """The log position a registered version was created at (from its model's stream)."""
    for recorded in store.read_stream(version["model_key"]):
        event = recorded.event
        if isinstance(event, ModelVersionCreated) and event.version_number == version["version"]:
            return int(recorded.position)
    return 0


def inputs_as_of(store: Any, run_id: str, position: int) -> tuple[list[Any], list[str], dict[str, int]]:
    """A run's dataset inputs, model inputs and model outputs (id -> step) up to a position."""
    datasets: dict[tuple[str, str], Any] = {}
    used: dict[str, None] = {}
    outputs: dict[str, int] = {}
    for recorded in store.read_stream(run_id):
        if recorded.position > position:
            break
        event = recorded.event
        if isinstance(event, RunInputsLogged):
            for d in event.datasets:
                datasets.setdefault((d.name, d.digest), d)
            used.update(dict.fromkeys(event.models))
        elif isinstance(event, RunOutputsLogged):
            outputs.update({m.model_id: m.step for m in event.models})
    return list(datasets.values()), list(used), outputs
