"""The exceptions evstore raises.

Every error a user can cause is an ``EvstoreError``; the CLI prints its message on one
line and exits non-zero, and the server answers it in MLflow's error shape using
``error_code`` and ``http_status``.

    EvstoreError
    ├── StoreError                  the store file or server cannot be used as asked
    │   ├── StoreFormatError        written by a newer evstore, or not an evstore store
    │   ├── UndecodableEvent        a stored event that does not decode into its type
    │   └── AppendOnlyViolation     something tried to update or delete an event
    ├── ConcurrencyError            another writer appended to the stream first
    ├── EventIdConflict             a batch reuses some stored event ids but not all
    ├── InvalidParameterValue       bad input: a key, a value, a status, a filter
    │   └── FilterParseError        a search filter that does not parse (with a caret)
    ├── ResourceDoesNotExist        no such run, experiment, artifact or event
    ├── ResourceAlreadyExists       an experiment name that is taken
    ├── InvalidState                e.g. logging to a deleted run
    ├── StaleProjectionError        a read model at another version or behind the log: rebuild
    ├── SearchTimeout               a search ran past its time budget and was stopped
    └── ProjectionError             a projection handler failed on an event
"""

from __future__ import annotations


class EvstoreError(Exception):
    """Root of every error evstore raises on purpose (``MlflowException`` to MLflow code)."""

    error_code = "INTERNAL_ERROR"
    http_status = 500

    def __init__(self, message: object = "", error_code: str | None = None, **_: object) -> None:
        # MLflow's signature: MlflowException(message, error_code=..., **kwargs).
        super().__init__(message)
        self.message = str(message)
        if error_code is not None:
            self.error_code = error_code


class StoreError(EvstoreError):
    """The store cannot be opened or used as asked."""


class StoreFormatError(StoreError):
    """The store was written by a newer evstore, or is not an evstore store."""

    error_code = "INVALID_STATE"
    http_status = 400


class UndecodableEvent(StoreError):
    """A stored payload (or an upcaster) that does not give the event's current type."""

    def __init__(self, type_name: str, version: int, cause: Exception) -> None:
        self.type_name, self.version = type_name, version
        self.cause = f"{type(cause).__name__}: {cause}"
        super().__init__(f"{type_name} v{version} cannot be decoded: {self.cause}")


class AppendOnlyViolation(StoreError):
    """Something tried to update or delete a stored event."""

    error_code = "INVALID_STATE"
    http_status = 400


class ConcurrencyError(EvstoreError):
    """The stream was not at the expected version: another writer got there first."""

    error_code = "INVALID_STATE"
    http_status = 409


class EventIdConflict(EvstoreError):
    """A batch reuses event ids of stored events, but not all of them."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class InvalidParameterValue(EvstoreError):
    """The caller passed a value evstore cannot accept."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class FilterParseError(InvalidParameterValue):
    """A search filter that does not parse; the message points at the position."""

    def __init__(self, message: str, text: str = "", position: int = 0):
        self.text = text
        self.position = position
        if text:
            message = f"{message}\n  {text}\n  {' ' * position}^"
        super().__init__(message)


class ResourceDoesNotExist(EvstoreError):
    """The run, experiment, artifact or event asked for is not there."""

    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404


class ResourceAlreadyExists(EvstoreError):
    """The name or id is already taken."""

    error_code = "RESOURCE_ALREADY_EXISTS"
    http_status = 400


class InvalidState(EvstoreError):
    """The resource is in a state that forbids the operation."""

    error_code = "INVALID_STATE"
    http_status = 400


class StaleProjectionError(EvstoreError):
    """A read model in the store was built at another version than the code's, or is
    behind the log (a writer that does not keep it appended since): run rebuild."""

    error_code = "INVALID_STATE"
    http_status = 503


class SearchTimeout(EvstoreError):
    """A search ran longer than its time budget ($EVSTORE_SEARCH_TIMEOUT) and was stopped.

    Answered as 400, not MLflow's 504 for DEADLINE_EXCEEDED: the mlflow client retries a
    504 up to seven times, and the same search would run out of time again each time.
    """

    error_code = "DEADLINE_EXCEEDED"
    http_status = 400


class ProjectionError(EvstoreError):
    """A projection handler failed; names the event's position and type."""
