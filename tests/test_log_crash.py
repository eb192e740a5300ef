"""A writer killed with SIGKILL inside an append loses nothing it was told was stored.

The writer marks in shared memory (a small file both processes map) whether it is
inside ``append()``; it never blocks on telling the test anything (acknowledgements go
to a plain file), so it is always busy appending. Each kill is made to land inside an
append and the test checks that it did:

- ``held``: the writer's append hook, which runs inside the write transaction after the
  rows are written and before COMMIT, waits there (reading a pipe nobody writes) and
  says so; the test kills it there. That append must leave no trace.
- ``anywhere``: the test waits until the writer is inside an append, stops it
  (SIGSTOP), checks that it stopped inside one (else lets it run on and tries again),
  then kills it: at whatever point of the append it was.

After each kill the store is reopened: the chain verifies, every acknowledged event is
there at the position the writer was given, and the append the kill cut short is all
there or not there at all.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BACKENDS
from waiting import PATIENCE, wait_until

from evstore.events import TagSet
from evstore.integrity import verify
from evstore.stores import open_log

NAMESPACE = uuid.UUID("0b7e8a52-3c1d-4f0e-9a57-6d2c4e8f1a90")
WARM_UP = 20  # appends acknowledged before the test goes for the kill
ROUNDS = ("held", "anywhere", "anywhere")
STOP_ATTEMPTS = 1000  # the writer is inside an append nearly all the time: one or two do

# The shared bytes: where the writer is, whether its next append must hold inside the
# transaction, and whether it has acknowledged its warm-up appends.
WHERE, HOLD, WARM = 0, 1, 2
OUTSIDE, IN_APPEND, HELD = 0, 1, 2

# The writer appends forever, alternating one-event appends with 50-event batches, the
# event ids derived from its label, call number and index; after each append returns
# it writes "<call> <first position>" to the acknowledgements file.
WRITER = f"""
import mmap, os, sys, uuid
from evstore.events import TagSet
from evstore.stores import open_log

uri, durability, label, shared_path, acks_path = sys.argv[1:6]
log = open_log(uri, durability=durability)
shared = mmap.mmap(os.open(shared_path, os.O_RDWR), 16)
acks = os.open(acks_path, os.O_WRONLY | os.O_APPEND)

def hold_inside_the_transaction(conn, recorded):
    if shared[{HOLD}]:
        shared[{WHERE}] = {HELD}
        os.read(0, 1)  # nobody writes to stdin: the writer waits here until it is killed

log.append_hooks.append(hold_inside_the_transaction)
call = 0
while True:
    keys = [f"{{label}}-{{call}}-{{i}}" for i in range(50 if call % 2 else 1)]
    event_ids = [str(uuid.uuid5(uuid.UUID({str(NAMESPACE)!r}), key)) for key in keys]
    events = [TagSet(key=key, value=label) for key in keys]
    shared[{WHERE}] = {IN_APPEND}
    positions = log.append(f"run-{{call % 3}}", events, event_ids=event_ids)
    shared[{WHERE}] = {OUTSIDE}
    os.write(acks, f"{{call}} {{positions[0]}}\\n".encode())
    if call == {WARM_UP}:
        shared[{WARM}] = 1
    call += 1
"""


def appended(label: str, call: int) -> list[tuple[str, str]]:
    """(event id, key) of each event the writer labelled ``label`` appends in ``call``."""
    keys = [f"{label}-{call}-{i}" for i in range(50 if call % 2 else 1)]
    return [(str(uuid.uuid5(NAMESPACE, key)), key) for key in keys]


@contextmanager
def writer_process(
    uri: str, durability: str, label: str, folder: Path
) -> Iterator[tuple[subprocess.Popen[bytes], mmap.mmap]]:
    """The writer, and the shared bytes it marks; killed if the test has not killed it."""
    shared_path, acks_path = folder / f"{label}.shared", folder / f"{label}.acks"
    shared_path.write_bytes(bytes(16))
    acks_path.write_bytes(b"")
    errors = open(folder / f"{label}.stderr", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, uri, durability, label, str(shared_path), str(acks_path)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
    )  # fmt: skip
    with open(shared_path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 16)
    try:
        yield process, shared
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(PATIENCE)
        assert process.stdin is not None
        process.stdin.close()
        errors.close()
        shared.close()


def kill_inside_an_append(
    uri: str, durability: str, label: str, where: str, folder: Path
) -> dict[int, int]:
    """Start a writer, kill it inside an append (``where``: held or anywhere); return the
    first position of each append it acknowledged, by call number."""
    with writer_process(uri, durability, label, folder) as (process, shared):

        def warmed_up() -> bool:
            if process.poll() is not None:
                stderr = (folder / f"{label}.stderr").read_text()
                pytest.fail(f"the writer exited with {process.returncode}: {stderr}")
            return bool(shared[WARM])

        wait_until(warmed_up, f"the writer acknowledging {WARM_UP} appends")
        if where == "held":
            shared[HOLD] = 1
            wait_until(lambda: shared[WHERE] == HELD, "the writer holding inside its transaction")
            process.send_signal(signal.SIGKILL)
        else:
            for _ in range(STOP_ATTEMPTS):  # a stop that missed lets the writer run on
                wait_until(lambda: shared[WHERE] == IN_APPEND, "the writer inside an append")
                process.send_signal(signal.SIGSTOP)
                os.waitpid(process.pid, os.WUNTRACED)  # it is stopped now
                if shared[WHERE] == IN_APPEND:
                    process.send_signal(signal.SIGKILL)
                    break
                process.send_signal(signal.SIGCONT)
            else:
                pytest.fail(f"none of {STOP_ATTEMPTS} stops caught the writer inside an append")
        process.wait(PATIENCE)
        assert process.returncode == -signal.SIGKILL
        # The kill landed inside an append: the writer never got to mark it done.
        landed = {OUTSIDE: "outside any append", IN_APPEND: "inside an append", HELD: "held"}
        assert landed[shared[WHERE]] == landed[HELD if where == "held" else IN_APPEND]
    acks = (folder / f"{label}.acks").read_text().splitlines()
    return {int(call): int(position) for call, position in (line.split() for line in acks)}


@pytest.mark.parametrize("durability", ["normal", "full"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_writer_killed_inside_an_append_loses_no_returned_append(
    backend: str, durability: str, store_uri: str, tmp_path: Path
) -> None:
    uri = store_uri
    open_log(uri).close()
    kept: dict[str, int] = {}  # event id -> position, of every event the store must keep
    for number, where in enumerate(ROUNDS):
        # Each round kills a writer, then reopens the store after the crash.
        label = f"round{number}"
        acknowledged = kill_inside_an_append(uri, durability, label, where, tmp_path)
        assert sorted(acknowledged) == list(range(len(acknowledged)))
        assert len(acknowledged) > WARM_UP
        for call, first in acknowledged.items():
            for offset, (event_id, _) in enumerate(appended(label, call)):
                kept[event_id] = first + offset
        cut_short = [event_id for event_id, _ in appended(label, len(acknowledged))]

        with open_log(uri) as log:
            report = verify(log)
            assert report.ok, report
            stored = {r.event_id: r for r in log.read_all()}
        # Every acknowledged event is there, where the writer was told, as written.
        for event_id, position in kept.items():
            assert event_id in stored, f"an acknowledged event is gone (position {position})"
            assert stored[event_id].position == position
        for call in acknowledged:
            for event_id, key in appended(label, call):
                assert stored[event_id].event == TagSet(key=key, value=label)
        # The append the kill cut short is all there (its COMMIT was on disk) or not at
        # all; held before its COMMIT, it is not there. Nothing else is stored.
        landed = [event_id for event_id in cut_short if event_id in stored]
        assert landed in ([], cut_short), f"{len(landed)} of {len(cut_short)} events of one append"
        if where == "held":
            assert landed == []
        assert set(stored) == set(kept) | set(landed)
        assert report.events == len(stored)
        kept.update({event_id: stored[event_id].position for event_id in landed})

    # After the crashes the store still takes appends and still verifies.
    with open_log(uri) as log:
        head = log.head_position()
        assert log.append("run-after", [TagSet(key="k", value="v")]) == [head + 1]
        assert verify(log).ok
