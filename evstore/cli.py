"""The ``evstore`` command: a thin shell over the library.

Each command parses its options, calls one library function and renders the result.
An ``EvstoreError`` becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from evstore.errors import EvstoreError, InvalidParameterValue
from evstore.history import local_time
from evstore.inspect import json_safe
from evstore.validation import INT64_MAX

app = typer.Typer(
    help="evstore: experiment tracking as an append-only, verifiable event log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Store = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="EVSTORE_TRACKING_URI",
        help="The store: a path or sqlite:///path (env EVSTORE_TRACKING_URI).",
    ),
]
DEFAULT_STORE = "./evstore.db"
View = Annotated[
    str,
    typer.Option("--view", help="Runs by lifecycle stage: active, deleted or all."),
]
_VIEWS = {"active": 1, "deleted": 2, "all": 3}  # MLflow's ViewType numbers


#: The store a command opened, named by a corruption error (SQLite's own names no file).
_opened: list[str] = []
#: The logs a command opened, closed when it ends (closing folds SQLite's WAL into the file).
_open_logs: list[Any] = []

_INTERRUPTED = 130  # the shell's exit status for a process stopped by Ctrl-C (SIGINT)


def main() -> None:
    """Entry point of the console script."""
    import sqlite3

    try:
        app()
    except EvstoreError as e:
        first, *rest = str(e).splitlines() or [type(e).__name__]
        typer.echo(f"error: {first}", err=True)
        for line in rest:  # a filter error's caret lines
            typer.echo(line, err=True)
        sys.exit(1)
    except sqlite3.DatabaseError as e:  # a damaged file, found below the store boundary
        where = _opened[-1] if _opened else "the store"
        typer.echo(f"error: {where} is damaged (SQLite: {e}): `evstore verify` cannot vouch"
                   " for it; restore the file from a copy", err=True)  # fmt: skip
        sys.exit(1)
    finally:
        _close_logs()


def _close_logs() -> None:
    """Close every log this command opened (a process's exit would; a caller in-process needs it)."""
    while _open_logs:
        try:
            _open_logs.pop().close()
        except EvstoreError:
            pass  # a log that cannot close cleanly has nothing left to lose: its writes committed


def _version(show: bool) -> None:
    if show:
        from evstore import __version__

        typer.echo(f"evstore {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


def _open_log(store: str, *, create: bool = False, log_only: bool = False) -> Any:
    """The log at ``store``, a file or a PostgreSQL database; a read never creates one (a
    typo is an error, not a new file). ``log_only``: the command needs the log alone."""
    from evstore.stores import is_postgres_uri, open_log, sqlite_path

    _opened.append(store if is_postgres_uri(store) else sqlite_path(store))
    log = open_log(store, create=create)
    _open_logs.append(log)
    return log


def _init_postgres(store: str) -> None:
    from evstore.projection import attach
    from evstore.stores.postgres import least_privilege_sql

    with _open_log(store, create=True) as log:
        runner = attach(log)  # the read models' tables, made by their owner
        typer.echo(f"store ready: {log.where} (format {log.format_version()})")
        database = log.meta_database()
    tables = ["projection_state", *(t for model in runner.models for t in model.tables)]
    typer.echo("a role for the server, holding no UPDATE, DELETE or TRUNCATE on the log"
               " (`evstore rebuild` runs as the owner):")  # fmt: skip
    for statement in least_privilege_sql("evstore_app", database[0], database[1], read_side=tables):
        typer.echo(f"  {statement};")


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    """A table; when it does not fit the terminal, one block of ``name value`` lines per row."""
    import os

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cells = [["" if value is None else str(value) for value in row] for row in rows]
    # Piped output keeps whole rows: rich would otherwise fold them at 80 columns.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(soft_wrap=True, width=240 if piped else None)
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in cells:
        table.add_row(*map(Text, row))  # plain text: a value like "[redacted]" is not markup
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    if sum(widths) + 2 * len(widths) <= console.width:  # each cell is padded by a space each side
        console.print(table)
        return
    name_width = max(map(len, columns), default=0)
    for number, row in enumerate(cells):
        if number:
            typer.echo("")
        for column, value in zip(columns, row):
            typer.echo(f"{column:{name_width}}  {value}".rstrip())


@app.command()
def init(store: Store = DEFAULT_STORE) -> None:
    """Create a store, its read models and the Default experiment (reads never create one).
    On PostgreSQL: the event log's tables, and the SQL of a role that may only append.

    Example: evstore init --store sqlite:///runs.db
    """
    from evstore.stores import is_postgres_uri
    from evstore.tracking.service import TrackingService

    _opened.append(store)
    if is_postgres_uri(store):
        _init_postgres(store)
        return
    service = TrackingService(store)
    service.ensure_default_experiment()
    log = service.store
    typer.echo(f"store ready: {log.uri} (format {log.format_version()})")


@app.command()
def info(store: Store = DEFAULT_STORE, as_json: bool = typer.Option(False, "--json")) -> None:
    """Counts, head position and hash, formats and versions.

    Example: evstore info --store runs.db
    """
    from evstore.inspect import store_info

    facts = store_info(_open_log(store))
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if key not in ("events_by_type", "tables", "rebuild_leftovers"):
            typer.echo(f"{key:22} {value}")
    if found := facts.get("rebuild_leftovers"):
        typer.echo(f"{'rebuild_leftovers':22} {'; '.join(found)} (a killed rebuild's: the next"
                   " `evstore rebuild` removes them)")  # fmt: skip
    for name, count in facts.get("tables", {}).items():
        typer.echo(f"  table {name:15} {count} rows")
    if facts["unknown_events"]:
        typer.echo(f"note: {facts['unknown_events']} events were written by a newer evstore")


@app.command()
def log(
    store: Store = DEFAULT_STORE,
    stream: Annotated[str | None, typer.Option(help="Only this stream (a run id).")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    after: Annotated[int, typer.Option(help="Start after this position.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 100,
    fmt: Annotated[str, typer.Option("--format", help="table or json (JSON lines).")] = "table",
) -> None:
    """The events themselves, filterable by stream and type.

    Example: evstore log --stream 3f1c... --type MetricsLogged --format json
    """
    from evstore.inspect import event_lines

    _check_range("--after", after, 0, INT64_MAX)
    _check_range("--limit", limit, 0, INT64_MAX)
    lines = event_lines(_open_log(store, log_only=True), stream=stream, types=type_, after=after, limit=limit)
    if fmt == "json":
        for line in lines:
            typer.echo(json.dumps(line, ensure_ascii=False))
    elif fmt == "table":
        columns = ["position", "stream_id", "stream_version", "type", "version", "user"]
        _table(
            [*columns, "data"],
            [[*(line[c] for c in columns), json.dumps(line["data"], ensure_ascii=False)] for line in lines],
        )
    else:
        raise EvstoreError(f"unknown format {fmt!r}: use table or json")


@app.command()
def verify(
    store: Store = DEFAULT_STORE,
    expect_head: Annotated[
        str | None,
        typer.Option(help="A head hash recorded earlier: fail unless the history still extends it."),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(help="A signed checkpoint (evstore checkpoint): fail unless the log still holds it."),
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="The public key (PATH.pub) the checkpoint must be signed with.")
    ] = None,
) -> None:
    """Recompute the hash chain and the position and stream-version sequences.

    Exits 0 when the history is intact, 1 with the first bad position otherwise. A hash
    chain cannot see its own tail cut off or rewritten whole: keep the head hash it prints
    somewhere else and pass it back with --expect-head, or check a signed checkpoint with
    --checkpoint FILE --public-key PATH.pub.
    Example: evstore verify --store runs.db --checkpoint ckpt.json --public-key evstore.key.pub
    """
    from evstore.integrity import verify as verify_log

    log = _open_log(store, log_only=True)
    held = None
    if checkpoint is not None or public_key is not None:
        held = _verify_checkpoint(log, checkpoint, public_key)
    report = verify_log(log, expect_head=expect_head)
    if report.unknown_events:
        typer.echo(f"{report.unknown_events} events were written by a newer evstore (kept, verified)")
    if report.ok:
        typer.echo(f"ok: {report.events} events, head {report.head_position}, hash {report.head_hash}")
        if held is not None:
            typer.echo(f"checkpoint ok: position {held.position}, hash {held.head_hash}, signed"
                       f" {held.time} by key {held.public_key_sha256[:16]}...; the log still holds"
                       f" it and the {report.head_position - held.position} events after it chain"
                       " from it")  # fmt: skip
        for found in report.redactions:
            typer.echo(_redaction_line(found))
        return
    where = f"at position {report.first_bad_position}" if report.first_bad_position else "the head"
    typer.echo(f"FAILED {where}: {report.reason}", err=True)
    raise typer.Exit(1)


def _verify_checkpoint(log: Any, checkpoint: str | None, public_key: str | None) -> Any:
    """--checkpoint and --public-key: the signature, the store and the head it names; exit
    1 when one fails, else the statement that held."""
    from evstore.checkpoint import load_public_key, read_checkpoint, verify_checkpoint

    if checkpoint is None or public_key is None:
        raise InvalidParameterValue("--checkpoint and --public-key go together: pass both")
    check = verify_checkpoint(log, read_checkpoint(checkpoint), load_public_key(public_key))
    if not check.ok:
        typer.echo(f"FAILED checkpoint {checkpoint}: {check.reason}", err=True)
        raise typer.Exit(1)
    return check.statement


@app.command()
def keygen(
    path: Annotated[str, typer.Argument(help="Where the private key goes; the public key goes to PATH.pub.")],
) -> None:
    """Make an Ed25519 key pair for signed checkpoints (never over an existing key).

    The private key (PEM, mode 0600) stays with whoever signs checkpoints; hand PATH.pub
    to whoever checks them. Example: evstore keygen ~/.evstore/checkpoint.key
    """
    from evstore.checkpoint import generate_key

    fingerprint = generate_key(path)
    typer.echo(f"wrote private key {path} and public key {path}.pub (sha256 {fingerprint})")


@app.command()
def checkpoint(
    key: Annotated[str, typer.Option("--key", help="The private key (evstore keygen).")],
    out: Annotated[str, typer.Option("--out", help="The checkpoint file to write (a new file).")],
    store: Store = DEFAULT_STORE,
) -> None:
    """Sign a statement of the store's head (store id, position, hash, time) into a new file.

    Keep it, or give it to an auditor: `evstore verify --checkpoint FILE --public-key
    KEY.pub` later proves the log still holds that head and all after it chains from it.
    Example: evstore checkpoint --key checkpoint.key --out ckpt-2026-12-03.json
    """
    from evstore.checkpoint import load_private_key, take_checkpoint, write_checkpoint

    signed = take_checkpoint(_open_log(store), load_private_key(key))
    write_checkpoint(signed, out)
    found = signed.statement
    typer.echo(f"wrote {out}: store {found.store_id}, position {found.position}, hash"
               f" {found.head_hash}, signed {found.time}")  # fmt: skip


def _redaction_line(found: Any) -> str:
    what = "the whole event" if found.target == "event" else f"{found.target} {found.key!r}"
    when = _timestamp(found.recorded_at)
    through = (
        "its link verified from the digest kept"
        if found.verified_through == "digest"
        else "its link (form 3) covered the erased bytes: verified through its stored hash only"
    )
    return (
        f"redacted: position {found.position}, {what}, at position {found.redacted_by} by"
        f" {found.user} on {when}, reason: {found.reason}; {through}"
    )


@app.command()
def redact(
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required): kept in the log with who and when.")
    ],
    store: Store = DEFAULT_STORE,
    run: Annotated[str | None, typer.Option("--run", help="The run of --param or --tag.")] = None,
    param: Annotated[str | None, typer.Option("--param", help="Erase this param's value.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Erase this tag's value.")] = None,
    position: Annotated[
        int | None, typer.Option("--position", help="Erase the whole event at this position.")
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Seconds to wait for a read begun before the erasure (another process's) to end"
                 " before the purge of the WAL gives up.",
        ),
    ] = 5.0,
) -> None:
    """Erase a run's param or tag value, or a whole event, from the file; the log still verifies.

    The value reads as [redacted] everywhere; a Redacted event records who, when, why and
    what; the file is rewritten so that neither it nor its WAL holds the value. Copies
    and backups of the file are not touched. Running it again appends nothing.
    Example: evstore redact --run 3f1c0a... --param data_path --reason "erasure request 2026-17"
    """
    from evstore.projection import attach
    from evstore.redaction import redact as erase

    if position is not None:
        _check_range("--position", position, 1, INT64_MAX)
    _check_range("--wait", wait, 0, 3600)
    runner = attach(_open_log(store))
    report = erase(runner.store, reason=reason, run_id=run, param=param, tag=tag,
                   position=position, purge_wait=wait)  # fmt: skip
    what = "the event" if report.target == "event" else f"{report.target} {report.key!r}"
    where = f"run {report.stream_id}" if report.target != "event" else f"stream {report.stream_id}"
    if report.erased:
        typer.echo(
            f"redacted {what} of {where} at {_positions(report.erased)}; recorded at"
            f" {_positions(report.redacted_by)}; read models rebuilt:"
            f" {', '.join(report.rebuilt) or 'none'}"
        )
    if report.already_erased:
        typer.echo(f"already redacted: {what} of {where} at {_positions(report.already_erased)}"
                   + ("" if report.erased else "; nothing appended"))  # fmt: skip
    if report.purge_problem:
        typer.echo(
            f"warning: the value is out of the log and the read models, but the file is not"
            f" purged yet: {report.purge_problem}. Old pages may still hold it. Stop that"
            f" process (or let its read end) and run the same command again: it appends"
            f" nothing and finishes the purge.",
            err=True,
        )
        raise typer.Exit(1)


def _positions(positions: list[int]) -> str:
    return ("position " if len(positions) == 1 else "positions ") + ", ".join(map(str, positions))


@app.command()
def schema(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every event type, its current version and its upcaster chain.

    Example: evstore schema --json
    """
    from evstore.inspect import schema_table

    rows = schema_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _table(
        ["type", "version", "upcasters"],
        [[r["type"], r["version"], " -> ".join(s["name"] for s in r["chain"]) or "-"] for r in rows],
    )


@app.command()
def rebuild(
    store: Store = DEFAULT_STORE,
    projection: Annotated[
        list[str] | None, typer.Option("--projection", help="Only this read model (repeatable).")
    ] = None,
) -> None:
    """Rebuild read models from the log, blue/green: the old tables serve until the swap.

    Example: evstore rebuild --projection runs --store runs.db
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from evstore.rebuild import rebuild as rebuild_read_models

    columns = (TextColumn("rebuild"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>10,.0f} events/s"), TimeRemainingColumn())  # fmt: skip
    log = _open_log(store)
    with _interrupted(_REBUILD_STOPPED.format(store=store)), \
            Progress(*columns, console=Console(stderr=True), transient=True,
                     disable=not sys.stderr.isatty()) as bar:  # fmt: skip
        task = bar.add_task("rebuild", total=None, rate=0.0)

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=total, rate=done / elapsed if elapsed else 0.0)

        summary = rebuild_read_models(log, projection, progress=progress)
    typer.echo(
        f"rebuilt {', '.join(summary.projections)}: {summary.events:,} events replayed,"
        f" {summary.unknown_skipped:,} unknown skipped, head {summary.head_position:,},"
        f" {summary.seconds:.1f} s ({summary.events / max(summary.seconds, 1e-9):,.0f} events/s),"
        f" {summary.freed_bytes:,} bytes of free pages returned"
    )


_REBUILD_STOPPED = (
    "interrupted: the rebuild stopped before its swap and was rolled back; the log is"
    " unchanged and the old read models still serve. Run `evstore rebuild --store {store}`"
    " again to rebuild (it clears what this one left)."
)
_IMPORT_STOPPED = (
    "interrupted: what was imported so far is kept (each batch commits whole, nothing half"
    " written). Run the same `evstore import mlflow {source} --store {store}` again to"
    " resume: it appends only what is still missing."
)
_COPY_STOPPED = (
    "interrupted: every batch copied so far is kept whole and verifies. Run the same"
    " `evstore copy {source} {destination}` again to resume from where it stopped."
)


@contextmanager
def _interrupted(message: str) -> Iterator[None]:
    """Ctrl-C: say in what state the store is and how to resume, then exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(message, err=True)
        raise typer.Exit(_INTERRUPTED) from None


def _view_type(view: str) -> int:
    """MLflow's ViewType for --view; checked before any store is opened (or created)."""
    if view.lower() not in _VIEWS:
        raise InvalidParameterValue(f"--view must be active, deleted or all, not {view!r}")
    return _VIEWS[view.lower()]


def _client(store: str) -> Any:
    """The tracking service of an existing store: a read never creates one, nor writes."""
    from evstore.tracking.service import TrackingService

    _open_log(store).close()
    return TrackingService(store)


def _timestamp(ms: int | None) -> str:
    """A time in ms as ISO 8601 in local time, with its zone."""
    if ms is None:
        return ""
    return local_time(ms)


@app.command()
def experiments(
    store: Store = DEFAULT_STORE,
    all_: Annotated[bool, typer.Option("--all", help="Include deleted experiments.")] = False,
) -> None:
    """List experiments.

    Example: evstore experiments --all
    """
    from evstore.entities import ViewType

    found = _client(store).search_experiments(ViewType.ALL if all_ else ViewType.ACTIVE_ONLY)
    _table(
        ["experiment_id", "name", "lifecycle_stage", "created", "tags"],
        [[e.experiment_id, e.name, e.lifecycle_stage, _timestamp(e.creation_time),
          json.dumps(e.tags, ensure_ascii=False) if e.tags else ""] for e in found],
    )  # fmt: skip


_RUN_ATTRIBUTES = {
    "run_id": lambda r: r.info.run_id,
    "experiment": lambda r: r.info.experiment_id,
    "name": lambda r: r.info.run_name,
    "status": lambda r: r.info.status,
    "started": lambda r: _timestamp(r.info.start_time),
    "ended": lambda r: _timestamp(r.info.end_time),
    "user": lambda r: r.info.user_id,
    "metrics": lambda r: " ".join(f"{k}={v:.4g}" for k, v in sorted(r.data.metrics.items())),
    "params": lambda r: " ".join(f"{k}={v}" for k, v in sorted(r.data.params.items())),
}
_DEFAULT_RUN_COLUMNS = "run_id,experiment,name,status,started,metrics,params"
_COLUMNS_HELP = (
    "Table columns, comma-separated: run_id, experiment, name, status, started, ended, user,"
    " metrics, params, or one value as params.KEY, metrics.KEY, tags.KEY."
)


def _run_cell(run: Any, column: str) -> Any:
    """One cell of the runs table: an attribute, or params.X, metrics.X or tags.X."""
    if column in _RUN_ATTRIBUTES:
        return _RUN_ATTRIBUTES[column](run)
    kind, _, key = column.partition(".")
    if kind == "params":
        return run.data.params.get(key)
    if kind == "metrics":
        value = run.data.metrics.get(key)
        return None if value is None else f"{value:.6g}"
    return run.data.tags.get(key)


def _run_columns(text: str) -> list[str]:
    """The --columns list, checked before the store is opened."""
    columns = [c.strip() for c in text.split(",") if c.strip()]
    for column in columns:
        kind, dot, key = column.partition(".")
        if not (column in _RUN_ATTRIBUTES or (dot and key and kind in ("params", "metrics", "tags"))):
            raise InvalidParameterValue(
                f"--columns: {column!r} is not one of {', '.join(_RUN_ATTRIBUTES)},"
                " params.KEY, metrics.KEY or tags.KEY"
            )
    return columns if "run_id" in columns else ["run_id", *columns]


@app.command()
def runs(
    store: Store = DEFAULT_STORE,
    experiment: Annotated[list[str] | None, typer.Option(help="Experiment id or name.")] = None,
    filter_: Annotated[str, typer.Option("--filter", help="MLflow filter string.")] = "",
    order_by: Annotated[list[str] | None, typer.Option(help="e.g. 'metrics.acc DESC'.")] = None,
    max_: Annotated[int, typer.Option("--max", help="At most this many runs.")] = 100,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    view: View = "active",
    columns: Annotated[str, typer.Option(help=_COLUMNS_HELP)] = _DEFAULT_RUN_COLUMNS,
) -> None:
    """Search runs with MLflow's filter grammar (plus OR and parentheses).

    Run ids are printed whole; a table too wide for the terminal is printed as one block
    per run instead. Example: evstore runs --experiment sweep --filter "metrics.acc > 0.9"
    --columns name,params.lr,metrics.acc
    """
    from evstore.entities import ViewType

    view_type, chosen = _view_type(view), _run_columns(columns)
    if fmt not in ("table", "json", "csv"):
        raise EvstoreError(f"unknown format {fmt!r}: use table, json or csv")
    client = _client(store)
    ids = [_experiment_id(client, e) for e in experiment] if experiment else [
        e.experiment_id for e in client.search_experiments(ViewType.ALL)]  # fmt: skip
    found = client.search_runs(ids, filter_, view_type, max_, order_by)
    if fmt == "json":
        for run in found:
            typer.echo(json.dumps(json_safe(run.to_dictionary()), ensure_ascii=False))
    elif fmt == "csv":
        _write_csv(list(found))
    else:
        _table(chosen, [[_run_cell(run, c) for c in chosen] for run in found])


def _write_csv(found: list[Any]) -> None:
    import csv

    from evstore.export import runs_table

    table = runs_table(found)
    writer = csv.writer(sys.stdout)
    writer.writerow(table.column_names)
    writer.writerows(zip(*(table.column(c).to_pylist() for c in table.column_names)))


def _experiment_id(client: Any, id_or_name: str) -> str:
    found = client.get_experiment_by_name(id_or_name)
    return found.experiment_id if found is not None else client.get_experiment(id_or_name).experiment_id


_AS_OF_HELP = (
    "A point in the log: a position (12345), an ISO 8601 time (2026-11-26T10:00, local time"
    " unless it names a zone: 2026-11-26T10:00+01:00) or epoch milliseconds as ms:1764151200000."
)


@app.command()
def show(
    run_id: str,
    store: Store = DEFAULT_STORE,
    as_of: Annotated[str | None, typer.Option(help=_AS_OF_HELP)] = None,
) -> None:
    """One run: info, params, latest metrics, tags (optionally as of an earlier point).

    Example: evstore show 3f1c0a... --as-of 2026-11-26T10:00:00
    """
    point = _parse_as_of(as_of) if as_of else None
    client = _client(store)
    run = client.get_run(run_id, as_of=point) if point is not None else client.get_run(run_id)
    typer.echo(json.dumps(json_safe(run.to_dictionary()), indent=2, ensure_ascii=False))


def _check_range(option: str, value: float, low: int, high: int) -> None:
    """Refuse an option's number outside [low, high] (or NaN) with one clear line."""
    if not low <= value <= high:
        raise InvalidParameterValue(f"{option} must be between {low} and {high}, not {value}")


def _parse_as_of(text: str) -> Any:
    """--as-of: a position, an ISO time (local unless zoned), or ms:EPOCH_MS."""
    from datetime import timedelta

    digits = text.removeprefix("ms:")
    if digits.isascii() and digits.isdigit():
        if digits == text:
            return int(text)
        try:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(digits))
        except OverflowError:
            raise InvalidParameterValue(f"--as-of {text} is out of the range of times") from None
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise InvalidParameterValue(
            f"--as-of takes a position, an ISO date/time or ms:EPOCH_MS, not {text!r}"
        ) from e


@app.command()
def history(
    run_id: Annotated[str | None, typer.Argument(help="A run id (or a stream: users).")] = None,
    store: Store = DEFAULT_STORE,
    model: Annotated[str | None, typer.Option("--model", help="A registered model's name.")] = None,
    as_of: Annotated[str | None, typer.Option(help="With --model: the model then. " + _AS_OF_HELP)] = None,
) -> None:
    """A run's audit trail: every event with position, time (ISO 8601, local), type, who, change.

    "user" is who made the change: the user a server authenticated (marked "via" the
    client's address), else the OS user of a local write. A user name a client claimed
    for a run is its "claimed user", in the change column. Example: evstore history 3f1c0a...
    With --model NAME: every change to a registered model, its versions and aliases,
    before -> after (with --as-of: its aliases and versions at that point).
    Example: evstore history --model churn --as-of 2026-03-01
    """
    from evstore.history import run_history

    if model is not None:
        _model_history(store, model, as_of)
        return
    if run_id is None:
        raise InvalidParameterValue("Name a run id, or a registered model with --model NAME")
    rows = run_history(_open_log(store), run_id)
    _table(
        ["position", "time", "type", "user", "change"],
        [[r["position"], _timestamp(r["occurred_at"]), r["type"], _who(r), r["change"]] for r in rows],
    )


def _model_history(store: str, name: str, as_of: str | None) -> None:
    """``history --model``: the model's changes, or the model as of a point."""
    from evstore.model_history import model_changes, registered_model_as_of

    log = _open_log(store)
    if as_of is not None:
        then = registered_model_as_of(log, name, _parse_as_of(as_of))
        typer.echo(json.dumps({
            "name": then.name, "description": then.description, "tags": then.tags,
            "aliases": then.aliases,
            "versions": [{"version": v.version, "stage": v.current_stage, "source": v.source,
                          "run_id": v.run_id, "tags": v.tags} for v in then.versions],
        }, indent=2, ensure_ascii=False))  # fmt: skip
        return
    rows = [[r["position"], _timestamp(r["occurred_at"]), _who(r), c["what"],
             "" if c["before"] is None else c["before"], "" if c["after"] is None else c["after"]]
            for r in model_changes(log, name) for c in r["changes"]]  # fmt: skip
    _table(["position", "time", "user", "what", "before", "after"], rows)


def _who(row: dict[str, Any]) -> str:
    """An audit row's actor: the authenticated principal (and where from), or the OS user."""
    if row.get("principal"):
        return f"{row['principal']} via {row['client']}" if row.get("client") else str(row["principal"])
    return str(row.get("user") or "")


@app.command()
def copy(
    source: Annotated[
        str, typer.Argument(metavar="SRC", help="The store to copy: a path, sqlite:///path or postgresql://...")
    ],
    destination: Annotated[
        str, typer.Argument(metavar="DST", help="A new store, or a copy this command made before.")
    ],
    src_artifacts: Annotated[
        str | None, typer.Option(help="The source's artifact folder (needed for PostgreSQL).")
    ] = None,
    dst_artifacts: Annotated[
        str | None, typer.Option(help="The destination's artifact folder (needed for PostgreSQL).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Events per destination transaction.")] = 1000,
) -> None:
    """Copy a store's log and artifact files into another, SQLite or PostgreSQL, resumably.

    Each batch is one transaction that checks every link; run it again after an
    interruption to go on. A destination holding anything but a prefix of the source is
    refused. Both stores then verify to the same head hash.
    Example: evstore copy runs.db postgresql://me@db:5432/evstore --dst-artifacts /srv/artifacts
    """
    from evstore.copying import copy_store

    _opened.append(source)
    with _interrupted(_COPY_STOPPED.format(source=source, destination=destination)):
        done = copy_store(source, destination, source_artifacts=src_artifacts,
                          destination_artifacts=dst_artifacts, batch_size=batch_size)  # fmt: skip
    span = f" (positions {done.first}..{done.last})" if done.events else ""
    typer.echo(f"copied {done.events} events{span}, {done.artifact_files} artifact files;"
               f" head {done.head_hash} at position {done.head_position}")  # fmt: skip
    for line in _copy_notes(done):
        typer.echo(line, err=line.startswith("warning"))
    if done.artifacts_missing:
        raise typer.Exit(1)


def _copy_notes(done: Any) -> Iterator[str]:
    """The lines after a copy's summary: what it found in place, redid, rebuilt or missed."""
    if done.artifact_files_present:
        yield f"{done.artifact_files_present} artifact files were in the destination already"
    if done.redactions_applied:
        yield (f"{done.redactions_applied} redactions the source made since the last copy were"
               " made in the destination too")  # fmt: skip
    if done.read_models:
        yield f"read models rebuilt: {', '.join(done.read_models)}"
    if done.read_models_note:
        yield f"note: {done.read_models_note}"
    if done.artifacts_missing:
        yield (f"warning: {len(done.artifacts_missing)} artifact files the log names are missing"
               f" or corrupt in the source's artifact folder, not copied:"
               f" {', '.join(done.artifacts_missing)}")  # fmt: skip


@app.command()
def export(
    what: Annotated[str, typer.Argument(help="runs or metrics")],
    out: Annotated[str, typer.Argument(help="Output file.")],
    store: Store = DEFAULT_STORE,
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or arrow.")] = "parquet",
    filter_: Annotated[str, typer.Option("--filter", help="MLflow filter string.")] = "",
    view: View = "active",
) -> None:
    """Export runs or metric points through pyarrow, streamed in batches.

    Example: evstore export metrics metrics.parquet --filter "params.optimizer = 'adam'"
    """
    from evstore.export import export as export_rows

    view_type = _view_type(view)
    rows = export_rows(_client(store), what, out, fmt, filter_, run_view_type=view_type)
    typer.echo(f"wrote {rows} rows to {out}")


@app.command()
def demo(store: Store = DEFAULT_STORE) -> None:
    """Log the seed example and a small sweep, then show runs, an audit trail and verify.

    Example: evstore demo --store demo.db
    """
    from evstore.demo import run_demo

    seed_run_id = run_demo(store)
    typer.echo("\n== runs (evstore runs) ==")
    runs(store=store, experiment=None, filter_="", order_by=["attributes.start_time ASC"],
         max_=100, fmt="table")  # fmt: skip
    typer.echo(f"\n== audit trail of the seed run (evstore history {seed_run_id}) ==")
    history(seed_run_id, store=store)
    typer.echo("\n== evstore verify ==")
    verify(store=store)


import_app = typer.Typer(
    help="Bring history over from another tracking store.\n\n"
    "Example: evstore import mlflow sqlite:///mlflow.db --artifacts-root ./mlartifacts",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@import_app.command("mlflow")
def import_mlflow(
    source: Annotated[str, typer.Argument(help="An mlruns/ directory, file: URI, sqlite:///mlflow.db or postgresql://user@host/db.")],
    store: Store = DEFAULT_STORE,
    artifacts_root: Annotated[
        str | None, typer.Option(help="Where the artifacts live now, if not where MLflow recorded.")
    ] = None,
) -> None:
    """Import an MLflow store losslessly; re-running it adds nothing.

    Example: evstore import mlflow sqlite:///mlflow.db --artifacts-root ./mlartifacts
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from evstore.importers.mlflow_import import import_mlflow as run_import

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with _interrupted(_IMPORT_STOPPED.format(source=source, store=store)), \
            Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:  # fmt: skip
        task = progress.add_task("importing", total=None)
        counts = {"runs": 0, "metric_points": 0}

        def advance(what: str, n: int) -> None:
            counts[what] += n
            progress.update(task, description=(
                f"importing: {counts['runs']} runs, {counts['metric_points']:,} metric points"))  # fmt: skip

        summary = run_import(store, source, artifacts_root=artifacts_root, progress=advance)
    _import_report(summary, artifacts_root_given=artifacts_root is not None)


def _import_report(summary: Any, *, artifacts_root_given: bool) -> None:
    typer.echo(
        f"imported from {summary.source} (schema {summary.schema_revision}): "
        f"{summary.experiments} experiments, {summary.runs} runs, {summary.metric_points} metric"
        f" points, {summary.params} params, {summary.tags} tags, {summary.artifacts} artifacts,"
        f" {summary.logged_models} logged models, {summary.dataset_inputs} dataset inputs,"
        f" {summary.model_inputs} model inputs, {summary.model_outputs} model outputs,"
        f" {summary.registered_models} registered models, {summary.model_versions} model"
        f" versions, {summary.model_aliases} aliases; {summary.events_appended} new events"
    )
    if summary.runs_without_artifacts:
        hint = "" if artifacts_root_given else "; if some did, pass --artifacts-root"
        typer.echo(f"{summary.runs_without_artifacts} runs have no artifact folder: runs that"
                   f" never logged an artifact{hint}")  # fmt: skip
    if summary.not_imported:
        found = ", ".join(f"{count} {kind}" for kind, count in summary.not_imported.items())
        typer.echo(f"not imported (evstore does not track them): {found}")
    for what, reason in summary.skipped:
        typer.echo(f"skipped {what}: {reason}")


@app.command()
def server(
    store: Store = DEFAULT_STORE,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    artifacts_root: Annotated[str | None, typer.Option(help="Where artifact bytes are kept.")] = None,
    auth_token: Annotated[
        str | None, typer.Option(envvar="EVSTORE_SERVER_TOKEN", help="Require this bearer token.")
    ] = None,
    max_json_mb: Annotated[int, typer.Option(help="Largest JSON request body, MiB.")] = 16,
    max_artifact_mb: Annotated[int, typer.Option(help="Largest artifact upload, MiB.")] = 5120,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(envvar="EVSTORE_ALLOWED_HOSTS", help="Comma-separated Host headers served, replacing"
                     " the default (loopback, the bound address, private IPs); '*' allows all."),
    ] = None,
    cors_allowed_origins: Annotated[
        str | None,
        typer.Option(envvar="EVSTORE_CORS_ALLOWED_ORIGINS", help="Comma-separated browser origins"
                     " allowed to write (loopback origins always are); '*' allows all."),
    ] = None,
    default_permission: Annotated[
        str,
        typer.Option(envvar="EVSTORE_DEFAULT_PERMISSION", help="With users: what a user may do on an"
                     " experiment they hold no grant on (READ, EDIT, MANAGE, NO_PERMISSIONS)."),
    ] = "READ",
    checkpoint_every: Annotated[
        float | None, typer.Option(help="Write a signed checkpoint every this many minutes (when the log grew).")
    ] = None,
    checkpoint_key: Annotated[str | None, typer.Option(help="The private key checkpoints are signed with.")] = None,
    checkpoint_dir: Annotated[str | None, typer.Option(help="The folder checkpoints are written into.")] = None,
    workers: Annotated[
        int, typer.Option(help="Server processes sharing the port (more than 1: a PostgreSQL store).")
    ] = 1,
) -> None:
    """Serve the store over MLflow's REST API: the mlflow client talks to it unchanged.

    Example: evstore server --store runs.db --port 5000   (then MLFLOW_TRACKING_URI=http://127.0.0.1:5000)
    """
    from evstore.server import ServerSettings, serve
    from evstore.stores import is_postgres_uri
    from evstore.users import check_permission

    _check_range("--workers", workers, 1, 256)
    if workers > 1 and not is_postgres_uri(store):
        raise InvalidParameterValue(
            "--workers above 1 needs a PostgreSQL store (--store postgresql://...): a SQLite"
            " file takes one writer at a time, and one server process serves it best"
        )

    check_permission(default_permission.upper())
    _check_range("--port", port, 0, 65535)
    _check_range("--max-json-mb", max_json_mb, 1, 1 << 20)
    _check_range("--max-artifact-mb", max_artifact_mb, 1, 1 << 30)
    if (checkpoint_every, checkpoint_key, checkpoint_dir).count(None) not in (0, 3):
        raise InvalidParameterValue("--checkpoint-every, --checkpoint-key and --checkpoint-dir go together")
    if checkpoint_every is not None and not 0 < checkpoint_every <= 525600:
        raise InvalidParameterValue(f"--checkpoint-every must be minutes above 0, not {checkpoint_every}")
    if checkpoint_every is not None and workers > 1:
        raise InvalidParameterValue(
            "--checkpoint-every takes one server process (each worker would write its own):"
            " run the checkpoints from one process, or `evstore checkpoint` on a schedule"
        )
    hosts, origins = ([i.strip() for i in (text or "").split(",") if i.strip()]
                      for text in (allowed_hosts, cors_allowed_origins))  # fmt: skip
    settings = ServerSettings(
        store, artifacts_root, auth_token, max_json_mb << 20, max_artifact_mb << 20,
        allowed_hosts=tuple(hosts) or None, cors_allowed_origins=tuple(origins),
        default_permission=default_permission.upper(), checkpoint_every=checkpoint_every,
        checkpoint_key=checkpoint_key, checkpoint_dir=checkpoint_dir,
    )  # fmt: skip
    typer.echo(f"evstore server: {store} on http://{host}:{port}", err=True)
    serve(settings, host=host, port=port, workers=workers)


@app.command()
def ui(
    store: Store = DEFAULT_STORE,
    port: Annotated[int, typer.Option(help="Port to listen on (on 127.0.0.1).")] = 5000,
) -> None:
    """Open the web UI: serves the store on 127.0.0.1 and prints the address to open.

    Runs, charts, the audit trail, registered models with their history, and the store's
    health, as `evstore server` serves them at / (with the MLflow API beside). Stop it
    with Ctrl-C.

    Example: evstore ui --store runs.db --port 5000   (then open http://127.0.0.1:5000/)
    """
    from evstore.server import ServerSettings, serve

    _check_range("--port", port, 0, 65535)
    _opened.append(store)
    typer.echo(f"evstore UI for {store}: http://127.0.0.1:{port}/experiments  (Ctrl-C to stop)")
    serve(ServerSettings(store), host="127.0.0.1", port=port)



users_app = typer.Typer(
    help="Users who may call `evstore server`, and their tokens; changes are events in the log.\n\n"
    "Example: evstore users add alice --admin",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")


def _users_store(store: str) -> Any:
    from evstore.projection import attach

    return attach(_open_log(store)).store


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="1-64 letters, digits and . _ @ + -.")],
    store: Store = DEFAULT_STORE,
    admin: Annotated[bool, typer.Option("--admin", help="May manage users and grants.")] = False,
) -> None:
    """Add a user; prints their token once, as the last word (only its sha256 is kept).

    Once a store has a user, `evstore server` requires one on every route but /health:
    MLFLOW_TRACKING_TOKEN=<token>, or MLFLOW_TRACKING_USERNAME=<name> and
    MLFLOW_TRACKING_PASSWORD=<token>. Example: evstore users add alice --admin
    """
    from evstore.users import add_user

    token = add_user(_users_store(store), name, admin=admin)
    role = "admin" if admin else "user"
    typer.echo(f"added {role} {name}; their token, shown only now: {token}")


@users_app.command("list")
def users_list(store: Store = DEFAULT_STORE) -> None:
    """Every user: name, admin, enabled, when added and by whom.

    Example: evstore users list
    """
    from evstore.users import list_users

    rows = [[u.name, "yes" if u.admin else "no", "disabled" if u.disabled else "enabled",
             _timestamp(u.added_at), u.added_by] for u in list_users(_open_log(store))]  # fmt: skip
    if not rows:
        typer.echo("no users: the server takes any caller (or --auth-token's one)")
        return
    _table(["name", "admin", "state", "added", "added by"], rows)


@users_app.command("disable")
def users_disable(name: str, store: Store = DEFAULT_STORE) -> None:
    """Refuse a user from now on (a running server too, at its next request).

    Example: evstore users disable alice
    """
    from evstore.users import disable_user

    changed = disable_user(_users_store(store), name)
    typer.echo(f"disabled {name}" if changed else f"{name} was disabled already; nothing appended")


@users_app.command("rotate")
def users_rotate(name: str, store: Store = DEFAULT_STORE) -> None:
    """Give a user a new token, shown once as the last word; the old one is refused.

    Example: evstore users rotate alice
    """
    from evstore.users import rotate_token

    token = rotate_token(_users_store(store), name)
    typer.echo(f"rotated the token of {name}; the new one, shown only now: {token}")


@users_app.command("grant")
def users_grant(
    name: str,
    experiment_id: str,
    permission: Annotated[str, typer.Argument(help="READ, EDIT, MANAGE or NO_PERMISSIONS.")],
    store: Store = DEFAULT_STORE,
) -> None:
    """Give a user a permission on one experiment (replacing an earlier grant there).

    Example: evstore users grant bob 3 EDIT
    """
    from evstore.users import grant

    grant(_users_store(store), name, experiment_id, permission.upper())
    typer.echo(f"{name} has {permission.upper()} on experiment {experiment_id}")


@users_app.command("revoke")
def users_revoke(name: str, experiment_id: str, store: Store = DEFAULT_STORE) -> None:
    """Remove a user's grant on one experiment: the server's default permission applies.

    Example: evstore users revoke bob 3
    """
    from evstore.users import revoke

    changed = revoke(_users_store(store), name, experiment_id)
    typer.echo(f"revoked {name}'s grant on experiment {experiment_id}" if changed
               else f"{name} held no grant on experiment {experiment_id}; nothing appended")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    main()
