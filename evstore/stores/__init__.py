"""Event store backends behind one contract, chosen by URI: a path or ``sqlite:///path``
(SQLite), ``postgresql://user@host:port/db`` (PostgreSQL)."""

from __future__ import annotations

import os

from evstore.errors import InvalidParameterValue, StoreError
from evstore.stores.base import ANY, NO_STREAM, EventStore, RawEvent, RecordedEvent

DEFAULT_URI = "./evstore.db"

__all__ = [
    "ANY",
    "DEFAULT_URI",
    "NO_STREAM",
    "EventStore",
    "RawEvent",
    "RecordedEvent",
    "is_postgres_uri",
    "open_log",
    "sqlite_path",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_uri(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names a PostgreSQL database rather than a SQLite file."""
    return os.fspath(uri).startswith(POSTGRES_SCHEMES)


def sqlite_path(uri: str | os.PathLike[str]) -> str:
    """The file path named by a plain path, ``sqlite:///path`` or ``file:path``."""
    text = os.fspath(uri)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    elif text.startswith("sqlite://"):
        raise InvalidParameterValue(f"use sqlite:///path (three slashes), not {text!r}")
    elif text.startswith("file:"):
        text = text[len("file:") :]
    elif is_postgres_uri(text):
        raise InvalidParameterValue(
            f"{text.split('://', 1)[0]}:// names a PostgreSQL store; this needs a SQLite store"
            " (a path or sqlite:///path)"
        )
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidParameterValue(
            f"unsupported store URI scheme {scheme!r}: use a path, sqlite:///path or"
            " postgresql://user@host:port/db"
        )
    if not text:
        raise InvalidParameterValue("the store path is empty")
    return text


def open_log(
    uri: str | os.PathLike[str] = DEFAULT_URI,
    *,
    durability: str = "normal",
    create: bool = True,
    read_only: bool = False,
) -> EventStore:
    """Open the event log at ``uri``: created if missing unless ``create`` is False; read
    only when asked, or when this process may not write the file or its folder.
    ``postgresql://user@host:port/db`` opens the log in that database (``[postgres]`` extra)."""
    if is_postgres_uri(uri):
        try:
            from evstore.stores.postgres import PostgresEventStore
        except ImportError as e:
            raise StoreError(
                f"a PostgreSQL store needs psycopg: pip install 'evstore[postgres]' ({e})"
            ) from e
        text = os.fspath(uri)
        if text.startswith("postgres://"):  # libpq takes both; one spelling in messages
            text = "postgresql://" + text[len("postgres://") :]
        return PostgresEventStore(text, durability=durability, create=create, read_only=read_only)
    from evstore.stores.sqlite import SQLiteEventStore

    path = sqlite_path(uri)
    parent = os.path.dirname(os.path.abspath(path))
    if not create and not os.path.isfile(path):
        missing = "" if os.path.isdir(parent) else f" ({parent}: no such directory)"
        raise StoreError(f"no store at {path}{missing}; `evstore init --store {path}` creates one")
    if not os.path.isdir(parent):
        raise InvalidParameterValue(f"cannot create a store in {parent}: no such directory")
    return SQLiteEventStore(path, durability=durability, read_only=read_only)
