"""`import evstore` stays cheap: the heavy libraries load only in the functions that need them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "pyarrow", "typer", "click", "rich", "starlette", "uvicorn", "sqlite_utils", "pandas", "numpy",
    "cryptography", "psycopg", "psycopg_pool",
]


def modules_after(code: str) -> set[str]:
    """The top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("code", ["import evstore", "import evstore as mlflow\nmlflow.Client, mlflow.start_run"])
def test_import_evstore_loads_no_heavy_library(code: str) -> None:
    loaded = modules_after(code)
    assert "evstore" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_logging_to_an_existing_store_loads_no_heavy_library(tmp_path: object) -> None:
    # the store exists already, so opening it needs no migration (and no sqlite-utils)
    setup = f"import evstore\nevstore.set_tracking_uri({str(tmp_path)!r} + '/evstore.db')\nevstore.set_experiment('e')"
    modules_after(setup)
    loaded = modules_after(
        setup + "\nwith evstore.start_run():\n    evstore.log_param('p', 1)\n    evstore.log_metric('m', 1.0)"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
