"""An event that cannot be decoded: never written now, and found and named if it is there.

msgspec checks types when it decodes, not when a Struct is made. Before the store proved
each payload decodes, an event built with a wrong type (an end time of "x") was stored,
and every read of the log failed on it. Such a store is made here by appending with the
check switched off; every path must then name the event instead of crashing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evstore import codec
from evstore.errors import StoreError
from evstore.events import RunStarted, RunStatusChanged, TagSet
from evstore.integrity import verify
from evstore.projection import open_store
from evstore.rebuild import rebuild
from evstore.stores import open_log

RUN = "c" * 32


@pytest.fixture
def broken(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store whose event 3 of 4 does not decode (its end time is a string)."""
    runner = open_store(db_path)
    runner.store.append(RUN, [
        RunStarted(experiment_id="0", run_name="r", user_id="u", start_time=1),
        TagSet(key="k", value="v"),
    ])  # fmt: skip
    runner.store.close()
    with monkeypatch.context() as patch:
        patch.setattr(codec, "encode_checked", codec.encode)
        with open_log(db_path) as log:
            log.append(RUN, [RunStatusChanged(status="FINISHED", end_time="x")])  # type: ignore[arg-type]
    with open_log(db_path) as log:
        log.append(RUN, [TagSet(key="after", value="1")])
    return db_path


def test_verify_names_the_event_that_does_not_decode(broken: Path) -> None:
    with open_log(broken) as log:
        report = verify(log)
    assert not report.ok and report.first_bad_position == 3
    assert "RunStatusChanged v1 cannot be decoded" in (report.reason or "")
    assert "end_time" in (report.reason or "")


def test_reads_and_rebuild_name_the_event_not_the_one_before(broken: Path) -> None:
    with open_log(broken) as log:
        with pytest.raises(StoreError, match=r"position 3 \(RunStatusChanged v1\) cannot be decoded"):
            list(log.read_all())
        with pytest.raises(StoreError, match="position 3"):
            rebuild(log)


def test_the_cli_says_it_in_one_line(broken: Path) -> None:
    cli = os.path.join(os.path.dirname(sys.executable), "evstore")
    for args in (["log"], ["verify"], ["history", RUN]):
        done = subprocess.run(
            [cli, *args, "--store", str(broken)], capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr and "position 3" in done.stderr + done.stdout, args
