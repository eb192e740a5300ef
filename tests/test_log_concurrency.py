"""Several OS processes appending to one SQLite file at once lose and duplicate nothing."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from conftest import close_cached_stores, history_points
from waiting import Lines

from evstore.events import TagSet
from evstore.integrity import verify
from evstore.stores import open_log

WORKERS = 4
EVENTS_PER_WORKER = 2_000
SHARED_STREAMS = ("shared-0", "shared-1")
NAMESPACE = uuid.UUID("6f1c0d2e-8a43-4c4f-9d7e-2b8f3f0a9c11")

# Each worker: open the store, say "ready", wait for "go" on stdin, then append its
# events in small batches, alternating between a shared stream (any version) and its own
# stream (with the exact expected version, which no other writer can move). At the end
# it prints, as JSON, the position the store returned for every event id.
WORKER = """
import json, sys, uuid
from evstore.events import TagSet
from evstore.stores import open_log

path, worker, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
namespace = uuid.UUID(sys.argv[4])
shared = sys.argv[5].split(",")
log = open_log(path)
print("ready", flush=True)
sys.stdin.readline()
returned = {}
own_version = 0
index = 0
call = 0
while index < total:
    size = min(1 + call % 5, total - index)
    keys = [f"w{worker}-{i:05d}" for i in range(index, index + size)]
    event_ids = [str(uuid.uuid5(namespace, key)) for key in keys]
    events = [TagSet(key=key, value=str(worker)) for key in keys]
    if call % 2:
        positions = log.append(f"own-{worker}", events, expected_version=own_version,
                               event_ids=event_ids)
        own_version += size
    else:
        stream = shared[(call // 2) % len(shared)]
        positions = log.append(stream, events, expected_version=None, event_ids=event_ids)
    returned.update(zip(event_ids, positions))
    index += size
    call += 1
log.close()
# A buffered writer: under PYTHONUNBUFFERED, print() goes to the pipe unbuffered, and a
# write the kernel cuts short (a signal, while the full pipe waits for the test to read)
# loses the rest of these 360 KB. A BufferedWriter writes on until all is out.
with open(sys.stdout.fileno(), "w", closefd=False) as out:
    out.write(json.dumps(returned) + "\\n")
"""


def test_four_processes_append_at_once(db_path: Path) -> None:
    # Create the store first so the workers race on appends, not on creating the file.
    open_log(db_path).close()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(db_path),
                str(worker),
                str(EVENTS_PER_WORKER),
                str(NAMESPACE),
                ",".join(SHARED_STREAMS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in range(WORKERS)
    ]
    try:
        for process in workers:  # (it prints nothing more before "go": communicate reads on)
            assert Lines(process.stdout, "a worker").next() == "ready"
        # Release them together.
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        returned: dict[str, int] = {}
        for process in workers:
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0
            returned.update(json.loads(out))
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()

    expected_ids = {
        str(uuid.uuid5(NAMESPACE, f"w{worker}-{i:05d}"))
        for worker in range(WORKERS)
        for i in range(EVENTS_PER_WORKER)
    }
    total = WORKERS * EVENTS_PER_WORKER
    with open_log(db_path) as log:
        events = list(log.read_all())

        # Nothing lost, nothing duplicated.
        assert len(events) == total
        assert Counter(r.event_id for r in events) == Counter(expected_ids)

        # Positions are strictly increasing and contiguous, and each is the one the
        # store returned to the worker that appended it.
        assert [r.position for r in events] == list(range(1, total + 1))
        assert {r.event_id: r.position for r in events} == returned

        # Every stream's versions run 1..n, and each worker's events keep its order
        # within every stream it wrote to.
        by_stream: dict[str, list[int]] = {}
        for r in events:
            by_stream.setdefault(r.stream_id, []).append(r.stream_version)
        assert set(by_stream) == {*SHARED_STREAMS, *(f"own-{w}" for w in range(WORKERS))}
        for stream, versions in by_stream.items():
            assert versions == list(range(1, len(versions) + 1)), stream
            assert log.stream_version(stream) == len(versions)

        # Each event is TagSet(key="w<worker>-<index>", value="<worker>").
        tagged = [(r.stream_id, r.event) for r in events]
        written = [(stream, e.value, e.key) for stream, e in tagged if isinstance(e, TagSet)]
        assert len(written) == total
        for stream in SHARED_STREAMS:
            writers = {worker for on, worker, _ in written if on == stream}
            assert writers == {str(w) for w in range(WORKERS)}, f"not every worker hit {stream}"
        for worker in range(WORKERS):
            keys = [key for _, by, key in written if by == str(worker)]
            assert keys == sorted(keys)
            own = [(by, key) for on, by, key in written if on == f"own-{worker}"]
            assert own and own == sorted(own) and {by for by, _ in own} == {str(worker)}

        # The workers really ran at once: their appends interleave in the log.
        owners = [worker for _, worker, _ in written]
        switches = sum(1 for a, b in itertools.pairwise(owners) if a != b)
        assert switches > WORKERS, "the workers ran one after another, not at once"

        report = verify(log)
        assert report.ok, report
        assert report.events == total


# Each client: log per-call metric points into its own run of a shared store; every
# append packs its point into the shared metric tables, across the processes.
CLIENT = """
import sys
import evstore
path, run_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = evstore.MlflowClient(path)
print("ready", flush=True)
sys.stdin.readline()
for step in range(count):
    client.log_metric(run_id, "loss", 1.0 / (step + 1), timestamp=step, step=step)
    if step % 97 == 0:
        assert len(client.get_metric_history(run_id, "loss")) == step + 1
"""


def test_processes_logging_per_call_see_and_keep_every_point(db_path: Path) -> None:
    import evstore
    from evstore.rebuild import rebuild

    client = evstore.MlflowClient(str(db_path))
    experiment_id = client.create_experiment("together")
    runs = [client.create_run(experiment_id).info.run_id for _ in range(3)]
    count = 400  # six full chunks of 64 per run, and a tail
    workers = [
        subprocess.Popen([sys.executable, "-c", CLIENT, str(db_path), run_id, str(count)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for run_id in runs
    ]  # fmt: skip
    for worker in workers:
        assert Lines(worker.stdout, "a client process").next() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        worker.communicate(timeout=120)
        assert worker.returncode == 0
    for run_id in runs:  # this process reads what the others wrote
        history = client.get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(count)]
    store = client.store
    try:
        kept = history_points(store)
        latest = store.query("SELECT * FROM latest_metrics ORDER BY run_id")
        assert len(kept) == 3 * count and len(latest) == 3
        rebuild(store)
        assert history_points(store) == kept
        assert store.query("SELECT * FROM latest_metrics ORDER BY run_id") == latest
        assert verify(store).ok
    finally:
        close_cached_stores(db_path.parent)
