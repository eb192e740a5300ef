"""``evstore server`` in a subprocess, for the tests that talk to it over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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
