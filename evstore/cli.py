"""The ``evstore`` command: a thin shell over the library.

Each command parses its options, calls one library function and renders the result.
An ``EvstoreError`` becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from evstore.errors import EvstoreError

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
    Console(soft_wrap=True).print(table)


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
        if key != "events_by_type":
            typer.echo(f"{key:22} {value}")
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
def verify(store: Store = DEFAULT_STORE) -> None:
    """Recompute the hash chain and the position and stream-version sequences.

    Exits 0 when the history is intact, 1 with the first bad position otherwise.
    Example: evstore verify --store runs.db
    """
    from evstore.integrity import verify as verify_log

    report = verify_log(_open_log(store))
    if report.unknown_events:
        typer.echo(f"{report.unknown_events} events were written by a newer evstore (kept, verified)")
    if report.ok:
        typer.echo(f"ok: {report.events} events, head {report.head_position}, hash {report.head_hash}")
        return
    typer.echo(f"FAILED at position {report.first_bad_position}: {report.reason}", err=True)
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


if __name__ == "__main__":  # pragma: no cover
    main()
