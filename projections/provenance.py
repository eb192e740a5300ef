"""Who started each run: the principal the server authenticated, else the OS user of the
process that appended (a local write's user; a server without users or token: the
server's own account), and the client's address; from the commit's metadata, never from
what the caller claimed (``user_id`` stays in ``runs``)."""

from __future__ import annotations

from evstore.events import RunStarted
from evstore.projection import Ops, ReadModel
from evstore.stores.base import RecordedEvent


def started(rec: RecordedEvent, out: Ops) -> None:
    """The identity the append recorded for a new run."""
    meta = rec.metadata
    out.add("insert", (rec.stream_id, meta.get("principal") or meta.get("user"), meta.get("client")))


PROVENANCE = ReadModel(
    name="run_provenance",
    version=1,
    tables={
        "run_provenance": (
            "CREATE TABLE {run_provenance} (run_id TEXT PRIMARY KEY, started_by TEXT, started_from TEXT)",
        ),
    },
    statements={"insert": "INSERT INTO {run_provenance} VALUES (?, ?, ?)"},
    handlers={RunStarted: started},
)
