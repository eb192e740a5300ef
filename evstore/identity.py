"""Who is acting: the principal a server authenticated, stamped on what it appends.

A server sets it for the length of one request (:func:`acting_as`); every event
appended meanwhile carries ``principal`` (the authenticated user name) and ``client``
(the caller's address) in the metadata of its commit, beside the process's own ``user``
and ``host``. Local writes (the CLI, ``evstore.Client`` in a script) have no principal:
their ``user`` is the OS user (or ``$EVSTORE_USER``). A user name a client claims in a
request (a run's ``user_id``, the ``mlflow.user`` tag) is data of the run, never this.

A context variable, so it follows one request through ``await`` and into the worker
thread that runs its store call (``StoreGate`` runs calls in the request's context).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: (principal, client address) of the request being served, or None outside one.
_acting: ContextVar[tuple[str, str | None] | None] = ContextVar("evstore_acting", default=None)


def acting() -> tuple[str, str | None] | None:
    """The (principal, client address) acting now, or None for a local write."""
    return _acting.get()


def set_acting(principal: str, client: str | None) -> None:
    """Act as ``principal`` for the rest of this context (one request's task)."""
    _acting.set((principal, client))


@contextmanager
def acting_as(principal: str, client: str | None = None) -> Iterator[None]:
    """Act as ``principal`` inside the block."""
    token = _acting.set((principal, client))
    try:
        yield
    finally:
        _acting.reset(token)
