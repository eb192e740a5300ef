"""``mlflow.exceptions`` for ``import evstore as mlflow``: MLflow code catches evstore's errors.

``MlflowException`` is evstore's error root, so ``except MlflowException as e`` catches
every error evstore raises on purpose, and ``e.error_code`` is MLflow's code for it
(``INVALID_PARAMETER_VALUE``, ``RESOURCE_DOES_NOT_EXIST``, ...).
"""

from __future__ import annotations

from evstore.errors import (
    EvstoreError,
    InvalidParameterValue,
    InvalidState,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)

MlflowException = EvstoreError
#: MLflow's error of the REST client; here every server error is an EvstoreError too.
RestException = EvstoreError

__all__ = [
    "InvalidParameterValue", "InvalidState", "MlflowException", "ResourceAlreadyExists",
    "ResourceDoesNotExist", "RestException",
]  # fmt: skip
