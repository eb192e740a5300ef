"""Reading the tracking projections into MLflow-shaped entities, in bulk.

Every function takes a DB-API connection to a store whose projections are fresh.
Several runs load with one query per table, never one query per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isnan
from typing import Any

import msgspec

from evstore.entities import Experiment, FileInfo, Metric, Run, RunData, RunInfo
from evstore.points import NAN, unpack

#: One run as a row of ``runs r``: the columns of its ``RunInfo`` in field order, then
#: its params and its tags, each as one JSON object (strings only: exact in JSON) that
#: msgspec decodes, which costs far less than a row per key.
RUN_ROW = (
    "r.run_id, r.experiment_id, r.run_name, r.user_id, r.status, r.start_time, r.end_time,"
    " r.lifecycle_stage, r.artifact_uri,"
    " (SELECT json_group_object(key, value) FROM params p WHERE p.run_id = r.run_id),"
    " (SELECT json_group_object(key, value) FROM tags t WHERE t.run_id = r.run_id)"
)
_EXPERIMENT_COLUMNS = (
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time"
)


def _chunks(ids: Sequence[str], size: int = 900) -> list[Sequence[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _in(
    conn: Any, sql: str, ids: Sequence[str], leading: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.execute(sql.format(marks=marks), (*leading, *chunk)).fetchall())
    return rows


def load_runs(conn: Any, run_ids: Sequence[str]) -> list[Run]:
    """Runs with their params, latest metrics and tags, in the order of ``run_ids``.

    Metric values come row by row: SQLite writes floats into JSON with 15 digits, which
    do not always read back as the same float, and infinities as a bare Inf.
    """
    if not run_ids:
        return []
    found = {
        row[0]: row
        for row in _in(conn, f"SELECT {RUN_ROW} FROM runs r WHERE r.run_id IN ({{marks}})", run_ids)
    }
    metrics: dict[str, dict[str, float]] = {run_id: {} for run_id in found}
    latest: dict[str, list[Metric]] = {run_id: [] for run_id in found}
    sql = "SELECT run_id, key, value, timestamp, step FROM latest_metrics WHERE run_id IN ({marks})"
    for run_id, key, value, timestamp, step in _in(conn, sql, list(metrics)):
        value = NAN if value is None else value
        metrics[run_id][key] = value
        latest[run_id].append(Metric(key, value, timestamp, step))
    decode = _decode_object
    return [
        Run(RunInfo(*row[:9]),
            RunData(decode(row[9]), metrics[row[0]], decode(row[10]), latest[row[0]]))
        for row in (found[run_id] for run_id in run_ids if run_id in found)
    ]  # fmt: skip


_decode_object = msgspec.json.Decoder(dict[str, str]).decode


def run_provenance(conn: Any, run_ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
    """(started_by, started_from) of each run: the identity its start was recorded with."""
    sql = "SELECT run_id, started_by, started_from FROM run_provenance WHERE run_id IN ({marks})"
    return {run_id: (by, source) for run_id, by, source in _in(conn, sql, run_ids)}


def run_state(conn: Any, run_id: str) -> tuple[str, str] | None:
    """(experiment_id, lifecycle_stage) of a run, or None when there is no such run."""
    return conn.execute(
        "SELECT experiment_id, lifecycle_stage FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()


_SERIES = "SELECT series_id FROM metric_series WHERE run_id = ? AND key = ?"
_CHUNKS = "SELECT points FROM metric_chunks WHERE series_id = ? ORDER BY chunk"
_TAIL = "SELECT step, timestamp, value FROM metric_tail WHERE series_id = ? ORDER BY slot"


def series_points(conn: Any, series_id: int) -> tuple[list[int], list[int], list[float]]:
    """The steps, timestamps and values of one metric series, in the order logged (each
    distinct point once)."""
    steps: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    for (chunk,) in conn.execute(_CHUNKS, (series_id,)):
        chunk_steps, chunk_stamps, chunk_values = unpack(chunk)
        steps += chunk_steps
        stamps += chunk_stamps
        values += chunk_values
    for step, stamp, value in conn.execute(_TAIL, (series_id,)):
        steps.append(step)
        stamps.append(stamp)
        values.append(NAN if value is None else value)
    return steps, stamps, values


def metric_history(conn: Any, run_id: str, key: str) -> list[Metric]:
    """Every distinct point of one metric of one run, in MLflow's order: by timestamp, step,
    value (an identical point logged twice is listed once, as MLflow keeps it once)."""
    found = conn.execute(_SERIES, (run_id, key)).fetchone()
    if found is None:
        return []
    steps, stamps, values = series_points(conn, found[0])
    points = list(zip(stamps, steps, values))
    if not isnan(sum(values)):  # no NaN: the tuples compare as MLflow orders
        points.sort()
    else:  # MLflow stores NaN as 0 and sorts it after a real 0
        points.sort(key=_mlflow_order)
    return [Metric(key, value, stamp, step) for stamp, step, value in points]


def _mlflow_order(point: tuple[int, int, float]) -> tuple[int, int, float, bool]:
    stamp, step, value = point
    return (stamp, step, 0.0, True) if isnan(value) else (stamp, step, value, False)


def _experiments(conn: Any, where: str, params: Sequence[Any]) -> list[Experiment]:
    rows = conn.execute(
        f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments {where}", tuple(params)
    ).fetchall()
    if not rows:
        return []
    tags: dict[str, dict[str, str]] = {row[0]: {} for row in rows}
    for experiment_id, key, value in _in(
        conn,
        "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN ({marks})",
        list(tags),
    ):
        tags[experiment_id][key] = value
    return [
        Experiment(
            experiment_id=row[0],
            name=row[1],
            artifact_location=row[2],
            lifecycle_stage=row[3],
            tags=tags[row[0]],
            creation_time=row[4],
            last_update_time=row[5],
        )
        for row in rows
    ]


def experiment_by_id(conn: Any, experiment_id: str) -> Experiment | None:
    """One experiment, or None."""
    found = _experiments(conn, "WHERE experiment_id = ?", [experiment_id])
    return found[0] if found else None


def experiment_by_name(conn: Any, name: str) -> Experiment | None:
    """One experiment by its name, or None."""
    found = _experiments(conn, "WHERE name = ?", [name])
    return found[0] if found else None


def experiments(conn: Any, stages: Sequence[str]) -> list[Experiment]:
    """Every experiment in the given lifecycle stages, newest first (as MLflow orders),
    within a search's time budget (``SearchTimeout`` past it)."""
    from evstore.search import time_budget

    marks = ",".join("?" * len(stages))
    with time_budget(conn):
        return _experiments(
            conn,
            f"WHERE lifecycle_stage IN ({marks}) ORDER BY creation_time DESC, experiment_id ASC",
            stages,
        )


def next_experiment_id(conn: Any) -> str:
    """The next decimal experiment id, as MLflow's SQL store counts them."""
    row = conn.execute(
        "SELECT coalesce(max(CAST(experiment_id AS INTEGER)), -1) FROM experiments"
    ).fetchone()
    return str(row[0] + 1)


def param_value(conn: Any, run_id: str, key: str) -> str | None:
    """The stored value of one param, or None."""
    row = conn.execute(
        "SELECT value FROM params WHERE run_id = ? AND key = ?", (run_id, key)
    ).fetchone()
    return row[0] if row else None


def params_of(conn: Any, run_id: str, keys: Sequence[str]) -> dict[str, str]:
    """The stored values of some params of one run."""
    sql = "SELECT key, value FROM params WHERE run_id = ? AND key IN ({marks})"
    return dict(_in(conn, sql, keys, (run_id,))) if keys else {}


def tag_values(conn: Any, run_id: str, keys: Sequence[str]) -> dict[str, str]:
    """The stored values of some tags of one run."""
    sql = "SELECT key, value FROM tags WHERE run_id = ? AND key IN ({marks})"
    return dict(_in(conn, sql, keys, (run_id,))) if keys else {}


def has_tag(conn: Any, run_id: str, key: str) -> bool:
    """Whether a run has a tag."""
    return conn.execute(
        "SELECT 1 FROM tags WHERE run_id = ? AND key = ?", (run_id, key)
    ).fetchone() is not None


def artifact_entries(conn: Any, run_id: str) -> dict[str, tuple[int, str]]:
    """Every recorded artifact of a run: logical path -> (size, sha256)."""
    rows = conn.execute(
        "SELECT path, size, sha256 FROM artifacts WHERE run_id = ?", (run_id,)
    ).fetchall()
    return {path: (size, sha) for path, size, sha in rows}


def list_artifacts(entries: dict[str, tuple[int, str]], path: str | None) -> list[FileInfo]:
    """Files and directories directly under ``path``, as MLflow lists them."""
    prefix = "" if not path else path.rstrip("/") + "/"
    found: dict[str, FileInfo] = {}
    for logical, (size, _sha) in entries.items():
        if not logical.startswith(prefix):
            continue
        rest = logical[len(prefix) :]
        head, sep, _tail = rest.partition("/")
        if sep:
            found.setdefault(prefix + head, FileInfo(prefix + head, True, None))
        else:
            found[logical] = FileInfo(logical, False, size)
    return sorted(found.values(), key=lambda info: info.path)
