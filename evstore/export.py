"""Tables of runs and metrics through pyarrow: search_runs' result and `evstore export`.

pyarrow is imported inside these functions, never when ``evstore`` is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

from evstore import reads
from evstore.entities import Run

INFO_COLUMNS = (
    "run_id", "experiment_id", "run_name", "user_id", "status", "start_time", "end_time",
    "lifecycle_stage", "artifact_uri",
)  # fmt: skip


def runs_table(runs: list[Run], provenance: dict[str, tuple[str | None, str | None]] | None = None) -> Any:
    """One row per run: info columns, then params.*, metrics.* (latest) and tags.*.
    With ``provenance`` (``reads.run_provenance``), who started each run and from where
    follow ``user_id``: the identity recorded, beside the user the caller claimed."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {name: [getattr(r.info, name) for r in runs] for name in INFO_COLUMNS}
    if provenance is not None:
        recorded = [provenance.get(r.info.run_id, (None, None)) for r in runs]
        columns = dict(_after(columns, "user_id", {"started_by": [by for by, _ in recorded],
                                                   "started_from": [source for _, source in recorded]}))  # fmt: skip
    for prefix, attr in (("metrics", "metrics"), ("params", "params"), ("tags", "tags")):
        keys = sorted({k for r in runs for k in getattr(r.data, attr)})
        for key in keys:
            columns[f"{prefix}.{key}"] = [getattr(r.data, attr).get(key) for r in runs]
    schema = pa.schema(
        [
            pa.field(name, pa.int64() if name in ("start_time", "end_time")
                     else pa.float64() if name.startswith("metrics.") else pa.string())
            for name in columns
        ]
    )  # fmt: skip
    return pa.table(columns, schema=schema)


def _after(columns: dict[str, list[Any]], name: str, extra: dict[str, list[Any]]) -> Iterator[tuple[str, list[Any]]]:
    for key, values in columns.items():
        yield key, values
        if key == name:
            yield from extra.items()


def all_runs(
    client: Any,
    experiment_ids: list[str],
    filter_string: str = "",
    run_view_type: int | str = 1,
    max_results: int | None = None,
    order_by: list[str] | None = None,
) -> list[Run]:
    """Every matching run (up to ``max_results``), paging through a client's search_runs."""
    runs: list[Run] = []
    token = None
    while True:
        want = _PAGE if max_results is None else min(max_results - len(runs), _PAGE)
        page = client.search_runs(experiment_ids, filter_string, run_view_type, want, order_by, token)
        runs.extend(page)
        token = page.token
        if not token or (max_results is not None and len(runs) >= max_results):
            return runs


_PAGE = 50_000  # the most runs one search_runs page returns


def _metric_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("run_id", pa.string()), ("key", pa.string()), ("value", pa.float64()),
         ("step", pa.int64()), ("timestamp", pa.int64())]
    )  # fmt: skip


def _metric_batches(conn: Any, run_ids: list[str], batch_size: int) -> Iterator[Any]:
    """The metric points of these runs, by run and key, each series in the order logged."""
    import pyarrow as pa

    from evstore.reads import series_points

    schema = _metric_schema()
    columns: list[list[Any]] = [[], [], [], [], []]
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        series = conn.execute(
            "SELECT series_id, run_id, key FROM metric_series"
            f" WHERE run_id IN ({marks}) ORDER BY run_id, key",
            chunk,
        ).fetchall()
        for series_id, run_id, key in series:
            steps, stamps, values = series_points(conn, series_id)
            done = 0
            while done < len(values):
                take = min(len(values) - done, batch_size - len(columns[0]))
                columns[0] += [run_id] * take
                columns[1] += [key] * take
                columns[2] += values[done : done + take]
                columns[3] += steps[done : done + take]
                columns[4] += stamps[done : done + take]
                done += take
                if len(columns[0]) == batch_size:
                    yield pa.record_batch([pa.array(c) for c in columns], schema=schema)
                    columns = [[], [], [], [], []]
    if columns[0]:
        yield pa.record_batch([pa.array(c) for c in columns], schema=schema)


def write_table_batches(batches: Iterable[Any], out: str, fmt: str, schema: Any) -> int:
    """Write record batches to parquet, csv or arrow, streaming; returns rows written."""
    import contextlib

    check_format(fmt)
    rows = 0
    with contextlib.ExitStack() as stack:
        writer = _open_writer(stack, fmt, out, schema)
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


FORMATS = ("parquet", "csv", "arrow")


def check_format(fmt: str) -> None:
    """Refuse an export format pyarrow is not asked to write here."""
    if fmt not in FORMATS:
        from evstore.errors import InvalidParameterValue

        raise InvalidParameterValue(f"unknown export format {fmt!r}: use parquet, csv or arrow")


def _open_writer(stack: Any, fmt: str, out: str, schema: Any) -> Any:
    """A record-batch writer of ``fmt`` to ``out``, closed with ``stack``."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        return stack.enter_context(pq.ParquetWriter(out, schema))
    if fmt == "csv":
        import pyarrow.csv as pcsv

        return stack.enter_context(pcsv.CSVWriter(out, schema))
    sink = stack.enter_context(pa.OSFile(out, "wb"))
    return stack.enter_context(pa.ipc.new_file(sink, schema))


def export(client: Any, what: str, out: str, fmt: str, filter_string: str = "",
           experiment_ids: list[str] | None = None, batch_size: int = 50_000,
           run_view_type: int = 1) -> int:  # fmt: skip
    """Export runs or metric points matching a filter; returns rows written.

    ``run_view_type`` is MLflow's ViewType: active runs only by default, as search_runs.
    """
    from evstore.entities import ViewType
    from evstore.errors import InvalidParameterValue

    if what not in ("runs", "metrics"):
        raise InvalidParameterValue(f"export runs or metrics, not {what!r}")
    check_format(fmt)  # before anything is read or written
    target = _checked_target(client, out)
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments(ViewType.ALL)]
    if what == "runs":
        runs = all_runs(client, ids, filter_string, run_view_type)
        with client.reading() as conn:
            provenance = reads.run_provenance(conn, [r.info.run_id for r in runs])
        table = runs_table(runs, provenance)
        return _write_atomically(target, out, lambda path: write_table_batches(
            table.to_batches(batch_size), path, fmt, table.schema))  # fmt: skip
    from evstore.search import search_run_ids

    # One snapshot: the run ids and every point streamed out come from the same state.
    with client.reading() as conn:
        run_ids, _ = search_run_ids(
            conn, filter_string, experiment_ids=ids, run_view_type=run_view_type,
            order_by=None, max_results=None, page_token=None,
            timeout=math.inf,  # an export reads everything it was asked for, however long
        )  # fmt: skip
        return _write_atomically(target, out, lambda path: write_table_batches(
            _metric_batches(conn, run_ids, batch_size), path, fmt, _metric_schema()))  # fmt: skip


_SQLITE_HEADER = b"SQLite format 3\x00"


def _checked_target(client: Any, out: str) -> str:
    """The real path to write ``out`` to, after refusing what must never be overwritten:
    the store itself (an easy slip: ``evstore export runs evstore.db``), any other SQLite
    database, or a directory."""
    from evstore.errors import InvalidParameterValue

    target = os.path.realpath(out)
    if os.path.isdir(target):
        raise InvalidParameterValue(f"cannot write {out}: it is a directory")
    if not os.path.isdir(os.path.dirname(target)):
        raise InvalidParameterValue(f"cannot write {out}: no such directory")
    store_path = getattr(getattr(client, "store", None), "path", None)
    if isinstance(store_path, str):
        store = os.path.realpath(store_path)
        if target in {store, f"{store}-wal", f"{store}-shm", f"{store}-journal"}:
            raise InvalidParameterValue(
                f"{out} is the store itself: give the export another file name"
            )
    # Any SQLite database, or the -wal/-shm/-journal beside one (a live WAL holds commits
    # not yet in the main file).
    database = target
    for suffix in _SQLITE_SIDE_FILES:
        if target.endswith(suffix):
            database = target[: -len(suffix)]
    for path in {target, database}:
        if os.path.isfile(path) and _starts_with(path, _SQLITE_HEADER):
            raise InvalidParameterValue(
                f"{out} belongs to a SQLite database (a store?): evstore export never"
                " overwrites one"
            )
    return target


_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _starts_with(path: str, header: bytes) -> bool:
    from evstore.errors import InvalidParameterValue

    try:
        with open(path, "rb") as existing:
            return existing.read(len(header)) == header
    except OSError as e:
        raise InvalidParameterValue(f"cannot write {path}: {e.strerror or e}") from e


def _write_atomically(target: str, out: str, write: Any) -> int:
    """Write a regular file through a temporary one beside it, renamed over it once
    complete (keeping its permissions): a failed export leaves no half-written file and an
    existing one as it was. Anything else (a pipe, /dev/stdout, a device) is written to
    directly: renaming over it would replace it."""
    import stat

    from evstore.errors import InvalidParameterValue

    try:
        found: os.stat_result | None = os.stat(out)  # through symlinks, as /dev/stdout is one
    except FileNotFoundError:
        found = None
    except OSError as e:
        raise InvalidParameterValue(f"cannot write {out}: {e.strerror or e}") from e
    if found is not None and not stat.S_ISREG(found.st_mode):
        try:
            return int(write(out))
        except OSError as e:
            raise InvalidParameterValue(f"cannot write {out}: {e.strerror or e}") from e
    directory, name = os.path.split(target)
    partial = os.path.join(directory, f".{name[:200]}.{os.urandom(4).hex()}.partial")
    try:
        rows = int(write(partial))
        if found is not None:
            os.chmod(partial, stat.S_IMODE(found.st_mode))
        os.replace(partial, target)
    except OSError as e:
        raise InvalidParameterValue(f"cannot write {out}: {e.strerror or e}") from e
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return rows
