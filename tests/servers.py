"""``evstore server`` in a subprocess, for the tests that talk to it over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

EVSTORE = os.path.join(os.path.dirname(sys.executable), "evstore")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``evstore server`` in a subprocess on a free port, with its store in ``directory``."""

    def __init__(
        self, directory: Path, *args: str, token: str | None = None, store: str | None = None
    ) -> None:
        self.store: Path | str = directory / "server.db" if store is None else store
        self.artifacts = directory / "artifacts"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        env = {k: v for k, v in os.environ.items() if k != "EVSTORE_SERVER_TOKEN"}
        if token:
            env["EVSTORE_SERVER_TOKEN"] = token
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"server-{self.port}.log"
        command = [
            EVSTORE, "server", "--store", str(self.store), "--port", str(self.port),
            "--artifacts-root", str(self.artifacts), *args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"evstore server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/health", headers=headers, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"evstore server did not answer in {timeout}s: {self.log_path.read_text()}")

    def stop(self) -> None:
        """Stop the server and wait for it to close the store."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ThreadServer:
    """``evstore server``'s own app served by uvicorn on a thread of the test process.

    The same app, settings and HTTP stack as ``ServerProcess``, without starting a Python
    process per test (about a second each): for tests about what the server answers.
    Tests about the command itself (its options, its process, a kill) use ``ServerProcess``.
    """

    def __init__(self, directory: Path, *, token: str | None = None, **settings: Any) -> None:
        import uvicorn

        from evstore.server import ServerSettings, create_app

        directory.mkdir(parents=True, exist_ok=True)
        self.store = directory / "server.db"
        self.artifacts = directory / "artifacts"
        self.token = token
        app = create_app(ServerSettings(str(self.store), str(self.artifacts), token, **settings))
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._socket],), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise RuntimeError(f"evstore server did not start on a thread within 60 s at {self.url}")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving and wait until the app's shutdown has closed the store."""
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
        if self._thread.is_alive():
            raise RuntimeError(f"evstore server on {self.url} did not stop within 30 s")
