"""Python scripts run in a fork of a process that has already imported mlflow.

Many tests run a real mlflow client script in a process of its own, as a user would. Each
such process spends about three seconds of CPU importing mlflow, pandas and scikit-learn
before the script's first line. Here one process per test worker (the parent) imports them
once; each script then runs in a fresh ``fork()`` of it, with its own environment, working
folder, arguments, stdout and stderr, and its own exit: ``sys.exit`` codes, an uncaught
exception's traceback and status 1, threads joined and ``atexit`` handlers run, as the
interpreter does at a normal exit. What a script changes (mlflow's active run, its tracking
URI) dies with its fork.

Tests about a process's own start (what ``import evstore`` loads, which modules a script
never imports) keep ``subprocess``: here those modules are already loaded.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

#: What the parent imports once, so that no fork pays for it.
PRELOAD = ("mlflow", "mlflow.sklearn", "mlflow.data", "pandas", "sklearn.linear_model", "httpx")

#: The parent: reads one JSON request per line, forks a child per request, answers with the
#: child's pid, then with its exit status once it has ended.
PARENT = r"""
import importlib, json, os, sys
# The answers go on a descriptor of their own: what an import prints goes to stderr.
answers = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"ready": True}), file=answers, flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        answers.close()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = 1
        try:
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            for fd, name in ((1, request["stdout"]), (2, request["stderr"])):
                target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(target, fd)
                os.close(target)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            path = request["path"]
            sys.argv = [path or "-c", *request["args"]]
            sys.path[0] = os.path.dirname(os.path.abspath(path)) if path else ""
            globals_ = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
            try:
                exec(compile(request["source"], path or "<string>", "exec"), globals_)
                code = 0
            except SystemExit as exit:
                if exit.code is None:
                    code = 0
                elif isinstance(exit.code, int):
                    code = exit.code
                else:
                    print(exit.code, file=sys.stderr)
                    code = 1
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            import atexit, threading
            threading._shutdown()
            atexit._run_exitfuncs()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    print(json.dumps({"pid": pid}), file=answers, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)
"""


class _Parent:
    """The preloaded process of this test worker."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVSTORE_"))}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.process = subprocess.Popen(
            [sys.executable, "-c", PARENT, *PRELOAD], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, text=True, cwd="/",
        )  # fmt: skip
        self.lock = threading.Lock()
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self._answer(300.0).get("ready") is not True:
            raise RuntimeError("the preloaded parent process did not start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # the parent has exited

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The parent's next line; ``TimeoutError`` if none comes within ``timeout``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from the preloaded parent within {timeout} s") from None
        if not line:
            raise RuntimeError(f"the preloaded parent exited with {self.process.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def run(self, request: dict[str, Any], timeout: float) -> int:
        assert self.process.stdin is not None
        with self.lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self._answer(60.0)["pid"]
            try:
                return int(self._answer(timeout)["status"])
            except TimeoutError:
                os.kill(pid, 9)
                self._answer(60.0)  # the parent has reaped it
                raise subprocess.TimeoutExpired(request["path"] or "-c", timeout) from None


_parent: _Parent | None = None
_started = threading.Lock()


def run_python(
    source: str | Path, *args: str, cwd: str | Path | None = None,
    env: dict[str, str] | None = None, timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)``,
    in a fork of this worker's preloaded parent. ``source`` is the script's text, or the
    path of a script file (run as ``python FILE`` runs it)."""
    global _parent
    with _started:
        if _parent is None or _parent.process.poll() is not None:
            _parent = _Parent()
    path = str(source) if isinstance(source, Path) else ""
    text = source.read_text() if isinstance(source, Path) else source
    folder = Path(cwd) if cwd is not None else Path.cwd()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="forked-") as scratch:
        out, err = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        request = {
            "source": text, "path": path, "args": list(args), "cwd": str(folder),
            "env": dict(os.environ if env is None else env), "stdout": out, "stderr": err,
        }  # fmt: skip
        status = _parent.run(request, timeout)
        stdout = Path(out).read_text() if os.path.exists(out) else ""
        stderr = Path(err).read_text() if os.path.exists(err) else ""
    command = [sys.executable, path or "-c", *([] if path else [text]), *args]
    return subprocess.CompletedProcess(command, status, stdout, stderr)
