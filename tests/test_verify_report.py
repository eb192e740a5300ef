"""Every field of the report ``verify`` returns when it fails, for each way it can fail.

tests/test_tamper.py and tests/test_redact.py show that each kind of edit is found at
the right position; here the whole ``VerifyReport`` is compared: ``ok`` is ``False``
(not merely falsy), and the count, head position and head hash are those of the last
event that verified. A mutation run (README, "Testing") found those fields unchecked
on the commit, redaction and tail paths.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from test_tamper import EVENTS, TAMPERED, drop_triggers, fill

from evstore import codec
from evstore.events import EVENT_TYPES, MetricsLogged, Redacted, RunRenamed, TagSet
from evstore.integrity import VerifyReport, is_known, verify
from evstore.stores import open_log


def verify_file(path: Path) -> VerifyReport:
    with open_log(path) as log:
        return verify(log)


def hash_at(path: Path, position: int) -> str:
    """The stored hash of one event, as verify reports a head."""
    with closing(sqlite3.connect(path)) as connection:
        row = connection.execute("SELECT hash FROM events WHERE position = ?", (position,))
        return bytes(row.fetchone()[0]).hex()


def with_a_commit_of_three(path: Path) -> Path:
    """The tamper tests' store, then two appends of three events: positions 13..15 and
    16..18 (each commit is named by its last position)."""
    fill(path)
    with open_log(path) as log:
        for stream in ("run-c", "run-d"):
            log.append(stream, [TagSet(key="a", value="1"), TagSet(key="b", value="2"),
                                RunRenamed(run_name="c")])  # fmt: skip
    return path


def tampered(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        drop_triggers(connection)
        for sql, parameters in statements:
            connection.execute(sql, parameters)


def test_an_event_moved_out_of_the_middle_of_its_commit(db_path: Path) -> None:
    with_a_commit_of_three(db_path)
    tampered(db_path, ("UPDATE events SET commit_id = 18 WHERE position = 14", ()))
    assert verify_file(db_path) == VerifyReport(
        False, 12, 12, hash_at(db_path, 12), 0, 13,
        "the commit of positions 13..15 does not hold position 14: an event was moved into"
        " it or out of it",
    )  # fmt: skip


def test_the_last_event_moved_out_of_its_commit(db_path: Path) -> None:
    with_a_commit_of_three(db_path)
    tampered(db_path, ("UPDATE events SET commit_id = 18 WHERE position = 15", ()))
    assert verify_file(db_path) == VerifyReport(
        False, 12, 12, hash_at(db_path, 12), 0, 13,
        "the commit of positions 13..15 does not hold position 15: an event was moved into"
        " it or out of it",
    )  # fmt: skip


def test_a_log_cut_inside_a_commit(db_path: Path) -> None:
    with_a_commit_of_three(db_path)
    tampered(db_path, ("DELETE FROM events WHERE position = 18", ()))
    assert verify_file(db_path) == VerifyReport(
        False, 15, 15, hash_at(db_path, 15), 0, 16,
        "the log ends inside the commit of positions 16..18: its events after position 17"
        " were removed",
    )  # fmt: skip


def test_a_log_whose_first_append_holds_several_events_verifies(db_path: Path) -> None:
    with open_log(db_path) as log:
        log.append("run-a", [TagSet(key="a", value="1"), TagSet(key="b", value="2")])
        log.append("run-a", [TagSet(key="c", value="3")])
    assert verify_file(db_path) == VerifyReport(True, 3, 3, hash_at(db_path, 3), 0)


def test_a_hash_mismatch_reports_the_event_before_as_head(db_path: Path) -> None:
    fill(db_path)
    tampered(db_path, ("UPDATE events SET hash = zeroblob(32) WHERE position = ?", (TAMPERED,)))
    assert verify_file(db_path) == VerifyReport(
        False, TAMPERED - 1, TAMPERED - 1, hash_at(db_path, TAMPERED - 1), 0, TAMPERED,
        "hash mismatch: the event or one before it was altered",
    )  # fmt: skip


def test_a_missing_event_and_a_stream_version_jump_are_named_exactly(db_path: Path) -> None:
    fill(db_path)
    tampered(db_path, ("DELETE FROM events WHERE position = ?", (TAMPERED,)))
    report = verify_file(db_path)
    assert (report.first_bad_position, report.reason) == (
        TAMPERED + 1, f"position {TAMPERED + 1} follows {TAMPERED - 1}: events are missing"
    )  # fmt: skip
    # position 5 is run-a's third event (run-a and run-b alternate)
    other = db_path.with_name("jump.db")
    fill(other)
    tampered(other, ("UPDATE events SET stream_version = 7 WHERE position = ?", (TAMPERED,)))
    assert verify_file(other).reason == "stream run-a jumps from version 2 to 7"


def test_a_missing_commit_record_is_named(db_path: Path) -> None:
    fill(db_path)
    tampered(db_path, ("DELETE FROM commits WHERE commit_id = ?", (TAMPERED,)))
    report = verify_file(db_path)
    assert (report.first_bad_position, report.reason) == (
        TAMPERED, "the event's commit record is missing"
    )  # fmt: skip


def test_a_redactions_row_past_the_head(db_path: Path) -> None:
    # A row naming an event not in the log: inserted by hand, or the log's tail was cut.
    fill(db_path)
    with open_log(db_path) as log:
        payload = next(log.read_raw(2, 1))[0].payload
    with closing(sqlite3.connect(db_path, isolation_level=None)) as connection:
        connection.execute("INSERT INTO redactions VALUES (?, ?, ?)",
                           (EVENTS + 1, 3, codec.payload_digest(payload)))  # fmt: skip
    assert verify_file(db_path) == VerifyReport(
        False, EVENTS, EVENTS, hash_at(db_path, EVENTS), 0, None,
        f"a redactions row names position {EVENTS + 1}, past the head of the log ({EVENTS})",
    )  # fmt: skip


def test_a_redacted_event_without_its_redactions_row(db_path: Path) -> None:
    fill(db_path)
    with open_log(db_path) as log:
        log.append("run-a", [Redacted(position=3, target="param", reason="r",
                                      original_sha256="00", redacted_sha256="00", key="k")])  # fmt: skip
    assert verify_file(db_path) == VerifyReport(
        False, EVENTS, EVENTS, hash_at(db_path, EVENTS), 0, EVENTS + 1,
        "a Redacted event whose redactions row is missing",
    )  # fmt: skip


def test_is_known_needs_a_known_type_and_a_version_from_1_to_its_current() -> None:
    current = MetricsLogged.version
    assert is_known("MetricsLogged", current) and is_known("MetricsLogged", 1)
    assert not is_known("MetricsLogged", current + 1)
    assert not is_known("MetricsLogged", 0)
    assert "NoSuchEvent" not in EVENT_TYPES and not is_known("NoSuchEvent", 1)


def test_a_head_not_in_the_history(db_path: Path) -> None:
    fill(db_path)
    wanted = "ab" * 32
    with open_log(db_path) as log:
        report = verify(log, expect_head=f" {wanted.upper()}\n")  # as pasted: case, spaces
    assert report == VerifyReport(
        False, EVENTS, EVENTS, hash_at(db_path, EVENTS), 0, None,
        f"the expected head {wanted} is not in this history: events were removed or the chain"
        " was rewritten",
    )  # fmt: skip


def test_a_stream_whose_first_event_does_not_start_at_version_1(db_path: Path) -> None:
    fill(db_path)
    tampered(db_path, ("UPDATE events SET stream_version = 100 WHERE position = 1", ()))
    report = verify_file(db_path)
    assert (report.first_bad_position, report.reason) == (1, "stream run-a jumps from version 0 to 100")


def test_a_store_without_redactions_is_verified_as_having_none(db_path: Path) -> None:
    # A backend need only read its rows back; one that keeps no redactions has none to check.
    fill(db_path)

    class RowsOnly:
        def __init__(self, read_raw: object) -> None:
            self.read_raw = read_raw

    with open_log(db_path) as log:
        report = verify(RowsOnly(log.read_raw))  # type: ignore[arg-type]
    assert report == VerifyReport(True, EVENTS, EVENTS, hash_at(db_path, EVENTS), 0)


def test_a_second_redaction_of_a_position_must_keep_its_first_digest(db_path: Path) -> None:
    # Someone with the file appends a Redacted event and its row for an erased position,
    # naming a digest other than the one the first redaction kept: their own record agrees
    # with itself, but not with the first.
    fill(db_path)
    with open_log(db_path) as log:
        payload = next(log.read_raw(2, 1))[0].payload
    digest = codec.payload_digest(payload)
    with open_log(db_path) as log:
        for original in (digest, bytes(32)):
            record = Redacted(position=3, target="event", reason="r", original_sha256=original.hex(),
                              redacted_sha256=digest.hex())  # fmt: skip
            log.append("run-a", [record])
            with closing(sqlite3.connect(db_path, isolation_level=None)) as connection:
                connection.execute("INSERT INTO redactions VALUES (?, ?, ?)",
                                   (log.head_position(), 3, original))  # fmt: skip
    report = verify_file(db_path)
    assert (report.ok, report.first_bad_position, report.reason) == (
        False, EVENTS + 2, "the digest kept for position 3 is not the one recorded"
    )  # fmt: skip
