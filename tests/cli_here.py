"""``evstore ARGS`` through its entry point in the test process.

A CLI process per call costs a Python start and the CLI's imports (pyarrow for exports):
about a second each on a busy machine. Tests about what a command prints and stores run
it here; tests about the console script itself (its process, exit at interpreter level,
environment) keep ``subprocess``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from evstore import cli
from evstore.tracking.service import close_tracking_stores


def run_here(*args: str | Path, cwd: Path | None = None, columns: int = 250) -> subprocess.CompletedProcess[str]:
    """Run ``evstore ARGS`` as a process would (no tracking URI from the environment, a
    terminal ``columns`` wide) and close every store it opened, as the process's exit would."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    os.environ.pop("EVSTORE_TRACKING_URI", None)
    os.environ["COLUMNS"] = str(columns)
    sys.argv = ["evstore", *map(str, args)]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
            cli.main()
            sys.exit(0)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        close_tracking_stores()
        cli._opened.clear()
    code = exited.value.code
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(list(map(str, args)), returncode, out.getvalue(), err.getvalue())
