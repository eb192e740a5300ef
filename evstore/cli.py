"""The ``evstore`` command: a thin shell over the library.

Each command parses its options, calls one library function and renders the result.
An ``EvstoreError`` becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from evstore.errors import EvstoreError, InvalidParameterValue
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


def main() -> None:
    """Entry point of the console script."""
    try:
        app()
    except EvstoreError as e:
        first, *rest = str(e).splitlines() or [type(e).__name__]
        typer.echo(f"error: {first}", err=True)
        for line in rest:  # a filter error's caret lines
            typer.echo(line, err=True)
        sys.exit(1)


def _open_log(store: str) -> Any:
    from evstore.stores import open_log

    return open_log(store)


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for index, column in enumerate(columns):
        last = index == len(columns) - 1
        table.add_column(column, no_wrap=not last, overflow="fold" if last else "ellipsis")
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    # Piped output keeps whole rows: rich would otherwise fold them at 80 columns.
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240).print(table)


@app.command()
def init(store: Store = DEFAULT_STORE) -> None:
    """Create an empty store (opening any command on a new path does it too).

    Example: evstore init --store sqlite:///runs.db
    """
    log = _open_log(store)
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
        if key not in ("events_by_type", "tables"):
            typer.echo(f"{key:22} {value}")
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
    lines = event_lines(_open_log(store), stream=stream, types=type_, after=after, limit=limit)
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
) -> None:
    """Recompute the hash chain and the position and stream-version sequences.

    Exits 0 when the history is intact, 1 with the first bad position otherwise. A hash
    chain cannot see its own tail cut off or rewritten whole: keep the head hash it prints
    somewhere else and pass it back with --expect-head.
    Example: evstore verify --store runs.db --expect-head 3f9a...
    """
    from evstore.integrity import verify as verify_log

    report = verify_log(_open_log(store), expect_head=expect_head)
    if report.unknown_events:
        typer.echo(f"{report.unknown_events} events were written by a newer evstore (kept, verified)")
    if report.ok:
        typer.echo(f"ok: {report.events} events, head {report.head_position}, hash {report.head_hash}")
        return
    where = f"at position {report.first_bad_position}" if report.first_bad_position else "the head"
    typer.echo(f"FAILED {where}: {report.reason}", err=True)
    raise typer.Exit(1)


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
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("rebuild", total=None, rate=0.0)

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=total, rate=done / elapsed if elapsed else 0.0)

        summary = rebuild_read_models(_open_log(store), projection, progress=progress)
    typer.echo(
        f"rebuilt {', '.join(summary.projections)}: {summary.events:,} events replayed,"
        f" {summary.unknown_skipped:,} unknown skipped, head {summary.head_position:,},"
        f" {summary.seconds:.1f} s ({summary.events / max(summary.seconds, 1e-9):,.0f} events/s)"
    )


def _view_type(view: str) -> int:
    """MLflow's ViewType for --view; checked before any store is opened (or created)."""
    if view.lower() not in _VIEWS:
        raise InvalidParameterValue(f"--view must be active, deleted or all, not {view!r}")
    return _VIEWS[view.lower()]


def _client(store: str) -> Any:
    from evstore.tracking.service import TrackingService

    service = TrackingService(store)
    service.ensure_default_experiment()
    return service


def _timestamp(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


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


@app.command()
def runs(
    store: Store = DEFAULT_STORE,
    experiment: Annotated[list[str] | None, typer.Option(help="Experiment id or name.")] = None,
    filter_: Annotated[str, typer.Option("--filter", help="MLflow filter string.")] = "",
    order_by: Annotated[list[str] | None, typer.Option(help="e.g. 'metrics.acc DESC'.")] = None,
    max_: Annotated[int, typer.Option("--max", help="At most this many runs.")] = 100,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    view: View = "active",
) -> None:
    """Search runs with MLflow's filter grammar (plus OR and parentheses).

    Example: evstore runs --experiment sweep --filter "metrics.acc > 0.9 and params.lr = '0.01'"
    """
    from evstore.entities import ViewType

    view_type = _view_type(view)
    client = _client(store)
    ids = [_experiment_id(client, e) for e in experiment] if experiment else [
        e.experiment_id for e in client.search_experiments(ViewType.ALL)]  # fmt: skip
    found = client.search_runs(ids, filter_, view_type, max_, order_by)
    if fmt == "json":
        for run in found:
            typer.echo(json.dumps(json_safe(run.to_dictionary()), ensure_ascii=False))
    elif fmt == "csv":
        import csv

        from evstore.export import runs_table

        table = runs_table(list(found))
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        writer.writerows(zip(*(table.column(c).to_pylist() for c in table.column_names)))
    elif fmt == "table":
        _table(
            ["run_id", "experiment", "name", "status", "started", "metrics", "params"],
            [[r.info.run_id, r.info.experiment_id, r.info.run_name, r.info.status,
              _timestamp(r.info.start_time),
              " ".join(f"{k}={v:.4g}" for k, v in sorted(r.data.metrics.items())),
              " ".join(f"{k}={v}" for k, v in sorted(r.data.params.items()))] for r in found],
        )  # fmt: skip
    else:
        raise EvstoreError(f"unknown format {fmt!r}: use table, json or csv")


def _experiment_id(client: Any, id_or_name: str) -> str:
    found = client.get_experiment_by_name(id_or_name)
    return found.experiment_id if found is not None else client.get_experiment(id_or_name).experiment_id


@app.command()
def show(
    run_id: str,
    store: Store = DEFAULT_STORE,
    as_of: Annotated[str | None, typer.Option(help="A position, or an ISO date/time.")] = None,
) -> None:
    """One run: info, params, latest metrics, tags (optionally as of an earlier point).

    Example: evstore show 3f1c0a... --as-of 2026-11-26T10:00:00
    """
    client = _client(store)
    run = client.get_run(run_id, as_of=_parse_as_of(as_of)) if as_of else client.get_run(run_id)
    typer.echo(json.dumps(json_safe(run.to_dictionary()), indent=2, ensure_ascii=False))


def _check_range(option: str, value: int, low: int, high: int) -> None:
    """Refuse an option's number outside [low, high] with one clear line."""
    if not low <= value <= high:
        raise InvalidParameterValue(f"{option} must be between {low} and {high}, not {value}")


def _parse_as_of(text: str) -> Any:
    from datetime import datetime

    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise EvstoreError(f"--as-of takes a position or an ISO date/time, not {text!r}") from e


@app.command()
def history(run_id: str, store: Store = DEFAULT_STORE) -> None:
    """A run's audit trail: every event with position, time, type, user and change.

    Example: evstore history 3f1c0a...
    """
    from evstore.history import run_history

    rows = run_history(_client(store).store, run_id)
    _table(
        ["position", "time", "type", "user", "change"],
        [[r["position"], _timestamp(r["occurred_at"]), r["type"], r["user"], r["change"]] for r in rows],
    )


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
    source: Annotated[str, typer.Argument(help="An mlruns/ directory, file: URI or sqlite:///mlflow.db.")],
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
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("importing", total=None)
        counts = {"runs": 0, "metric_points": 0}

        def advance(what: str, n: int) -> None:
            counts[what] += n
            progress.update(task, description=(
                f"importing: {counts['runs']} runs, {counts['metric_points']:,} metric points"))  # fmt: skip

        summary = run_import(store, source, artifacts_root=artifacts_root, progress=advance)
    typer.echo(
        f"imported from {summary.source} (schema {summary.schema_revision}): "
        f"{summary.experiments} experiments, {summary.runs} runs, {summary.metric_points} metric"
        f" points, {summary.params} params, {summary.tags} tags, {summary.artifacts} artifacts;"
        f" {summary.events_appended} new events"
    )
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
) -> None:
    """Serve the store over MLflow's REST API: the mlflow client talks to it unchanged.

    Example: evstore server --store runs.db --port 5000   (then MLFLOW_TRACKING_URI=http://127.0.0.1:5000)
    """
    from evstore.server import ServerSettings, serve

    _check_range("--port", port, 0, 65535)
    _check_range("--max-json-mb", max_json_mb, 1, 1 << 20)
    _check_range("--max-artifact-mb", max_artifact_mb, 1, 1 << 30)
    hosts, origins = ([i.strip() for i in (text or "").split(",") if i.strip()]
                      for text in (allowed_hosts, cors_allowed_origins))  # fmt: skip
    settings = ServerSettings(
        store, artifacts_root, auth_token, max_json_mb << 20, max_artifact_mb << 20,
        allowed_hosts=tuple(hosts) or None, cors_allowed_origins=tuple(origins),
    )  # fmt: skip
    typer.echo(f"evstore server: {store} on http://{host}:{port}", err=True)
    serve(settings, host=host, port=port)


if __name__ == "__main__":  # pragma: no cover
    main()
