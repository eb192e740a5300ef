"""Waits with a deadline, for tests that talk to other processes and threads.

Every wait here either gets what it waits for or fails the test with a message that
says what did not happen; none of them decides anything by how long something took.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import IO, Any

import pytest

#: How long a test waits for another process before it calls it stuck. Generous: on a
#: loaded machine a child may take seconds to start; a healthy run never comes near it.
PATIENCE = 120.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = PATIENCE) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` at the
    deadline. Returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not the case after {timeout:g} s", pytrace=False)
        time.sleep(0.001)


class Lines:
    """The lines a child process writes to a pipe, each read with a deadline.

    Reads the pipe's file descriptor itself: do not also read the pipe through the
    ``Popen`` object (``readline``, ``communicate``).
    """

    def __init__(self, pipe: IO[Any] | None, who: str) -> None:
        assert pipe is not None, f"{who} has no output pipe"
        self._fd = pipe.fileno()
        self._buffer = b""
        self._closed = False
        self.who = who

    def next(self, timeout: float = PATIENCE) -> str:
        """The next whole line (without its newline); fails if none comes in time."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self._closed:
                pytest.fail(f"{self.who} ended its output before the next line", pytrace=False)
            self._fill(deadline, timeout)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def rest(self, timeout: float = PATIENCE) -> list[str]:
        """Every line left until the child closes the pipe (it exits)."""
        deadline = time.monotonic() + timeout
        while not self._closed:
            self._fill(deadline, timeout)
        lines, self._buffer = self._buffer.decode().splitlines(), b""
        return lines

    def _fill(self, deadline: float, timeout: float) -> None:
        left = deadline - time.monotonic()
        ready = select.select([self._fd], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            pytest.fail(f"{self.who} wrote nothing more within {timeout:g} s", pytrace=False)
        chunk = os.read(self._fd, 65536)
        if chunk:
            self._buffer += chunk
        else:
            self._closed = True
