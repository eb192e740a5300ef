"""A writer killed with SIGKILL mid-stream loses nothing it was told was stored."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evstore.events import TagSet
from evstore.integrity import verify
from evstore.stores import open_log

LINES_BEFORE_KILL = 300
ROUNDS = 3

# The writer appends forever, alternating one-event appends with 50-event batches (so
# the kill often lands inside a transaction), and prints "position event_id key" for
# every event whose append returned, flushing before the next append.
WRITER = """
import sys, uuid
from evstore.events import TagSet
from evstore.stores import open_log

path, durability, label = sys.argv[1], sys.argv[2], sys.argv[3]
log = open_log(path, durability=durability)
call = 0
while True:
    size = 50 if call % 2 else 1
    keys = [f"{label}-{call}-{i}" for i in range(size)]
    event_ids = [str(uuid.uuid4()) for _ in keys]
    events = [TagSet(key=key, value=label) for key in keys]
    positions = log.append(f"run-{call % 3}", events, event_ids=event_ids)
    sys.stdout.write("".join(f"{p} {e} {k}\\n" for p, e, k in zip(positions, event_ids, keys)))
    sys.stdout.flush()
    call += 1
"""


def run_and_kill(db_path: Path, durability: str, label: str) -> list[tuple[int, str, str]]:
    """Start a writer, read what it reports, SIGKILL it mid-stream; return the reports."""
    reported = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path), durability, label],
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout is not None
        try:
            while len(reported) < LINES_BEFORE_KILL:
                line = writer.stdout.readline()
                assert line, f"the writer stopped on its own (exit code {writer.poll()})"
                position, event_id, key = line.split()
                reported.append((int(position), event_id, key))
            # Let it run on for a moment, so the kill lands anywhere in its loop.
            time.sleep(random.uniform(0, 0.05))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        # Whole lines the writer wrote before it died were returned to it too: keep them.
        for line in writer.stdout.read().split("\n")[:-1]:
            position, event_id, key = line.split()
            reported.append((int(position), event_id, key))
    assert writer.returncode == -signal.SIGKILL
    return reported


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_a_killed_writer_loses_no_returned_append(db_path: Path, durability: str) -> None:
    open_log(db_path).close()
    reported: list[tuple[int, str, str]] = []
    for round_number in range(ROUNDS):
        # Each round kills a writer, then the next one reopens the file after the crash.
        reported += run_and_kill(db_path, durability, f"round{round_number}")

        with open_log(db_path) as log:
            report = verify(log)
            assert report.ok, report
            stored = {r.position: r for r in log.read_all()}
            for position, event_id, key in reported:
                assert position in stored, f"position {position} was returned but is gone"
                assert stored[position].event_id == event_id
                assert stored[position].event == TagSet(key=key, value=key.split("-")[0])
            assert report.events == len(stored) >= len(reported)

    # After three crashes the store still takes appends and still verifies.
    with open_log(db_path) as log:
        head = log.head_position()
        assert log.append("run-after", [TagSet(key="k", value="v")]) == [head + 1]
        assert verify(log).ok
