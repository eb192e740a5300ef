"""Params: one row per run and key."""

from __future__ import annotations

from evstore.events import ParamsLogged
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def logged(rec: RecordedEvent, out: Ops) -> None:
    """A batch of params (re-logging a key keeps the newest value)."""
    run_id = rec.stream_id
    params: dict[str, str] = rec.event.params  # type: ignore[union-attr]
    out.extend("upsert", [(run_id, key, value) for key, value in params.items()])


PARAMS = ReadModel(
    name="params",
    version=1,
    tables={
        "params": (
            (
                "CREATE TABLE {params} (run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT,"
                " PRIMARY KEY (run_id, key)) WITHOUT ROWID"
            ),
            "CREATE INDEX {params}_by_value ON {params} (key, value)",
        ),
    },
    statements={"upsert": "INSERT OR REPLACE INTO {params} VALUES (?, ?, ?)"},
    handlers={ParamsLogged: logged},
)
