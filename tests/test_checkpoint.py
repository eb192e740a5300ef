"""Signed checkpoints: `evstore keygen`, `evstore checkpoint`, `evstore verify --checkpoint`.

Real stores, real Ed25519 keys, the real CLI: a checkpoint verifies while the log holds it
(also after a redaction), and each way of losing or replacing the history is refused
with one line and exit 1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx
import msgspec
import pytest
from cli_here import run_here
from conftest import close_cached_stores
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServerProcess
from waiting import wait_until

from evstore import Client, Metric, Param
from evstore.checkpoint import (
    CheckpointFile,
    Statement,
    generate_key,
    load_private_key,
    load_public_key,
    read_checkpoint,
    take_checkpoint,
    verify_checkpoint,
)
from evstore.integrity import verify as verify_log
from evstore.projection import open_store
from evstore.rebuild import rebuild
from evstore.redaction import redact
from evstore.stores import open_log

EVSTORE = os.path.join(os.path.dirname(sys.executable), "evstore")
FIXTURES = Path(__file__).parent / "fixtures"


def run_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS`` as its own process, with no tracking URI set."""
    env = {k: v for k, v in os.environ.items() if k != "EVSTORE_TRACKING_URI"}
    return subprocess.run(
        [EVSTORE, *map(str, args)], check=False, capture_output=True, text=True, env=env, timeout=120
    )


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``evstore ARGS`` through its entry point in this process (``cli_here``; a process
    each is slow on a busy machine; ``run_process`` checks the console script itself)."""
    return run_here(*args)


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1, one line on stderr naming ``words``, no traceback; the line."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    for word in words:
        assert word in line, line
    return line


def make_store(path: Path, runs: int = 2, seed: str = "a") -> dict[str, str]:
    """A store with ``runs`` runs holding params and metrics; {run name: run id}."""
    client = Client(str(path))
    experiment = client.create_experiment("exp")
    ids = {}
    for index in range(runs):
        run = client.create_run(experiment, run_name=f"{seed}-{index}").info.run_id
        client.log_batch(run, params=[Param("data_path", f"/data/{seed}-{index}.csv")],
                         metrics=[Metric("loss", 1.0 / (index + 1), 0, 0)])  # fmt: skip
        ids[f"{seed}-{index}"] = run
    close_cached_stores(path.parent)
    return ids


def log_more(path: Path, run: str, count: int) -> None:
    client = Client(str(path))
    for step in range(count):
        client.log_metric(run, "loss", 0.1 * step, step=step + 1)
    close_cached_stores(path.parent)


def head(path: Path) -> int:
    with open_log(path, create=False) as log:
        return log.head_position()


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a store (SQLite's backup: the WAL's pages included)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def store_id_of(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("SELECT value FROM evstore_meta WHERE key = 'store_id'").fetchone()[0])


def give_store_id(path: Path, store_id: str) -> None:
    """What a forger does to pass a store off as another: copy its id (not append-only)."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE evstore_meta SET value = ? WHERE key = 'store_id'", (store_id,))
        db.commit()


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """A store, a key pair and a checkpoint of the store's head: (store, key, checkpoint, runs)."""
    store, key, out = tmp_path / "evstore.db", tmp_path / "checkpoint.key", tmp_path / "ckpt.json"
    runs = make_store(store)
    assert run_cli("keygen", key).returncode == 0
    done = run_cli("checkpoint", "--key", key, "--out", out, "--store", store)
    assert done.returncode == 0, done.stderr
    return store, key, out, runs


def verify(store: Path, checkpoint: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("verify", "--store", store, "--checkpoint", checkpoint, "--public-key", public_key)


# --- keygen -------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    done = run_cli("keygen", key)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and f"{key}.pub" in done.stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = serialization.load_pem_public_key(Path(f"{key}.pub").read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    assert load_private_key(key).public_key() == load_public_key(f"{key}.pub")


@pytest.mark.parametrize("existing", ["k", "k.pub"])
def test_keygen_never_overwrites_a_key(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("kept")
    refused(run_cli("keygen", tmp_path / "k"), "exists", "never overwrites")
    assert (tmp_path / existing).read_text() == "kept"
    assert {p.name for p in tmp_path.iterdir()} == {existing}


# --- a good checkpoint ----------------------------------------------------------------------


def test_a_checkpoint_is_the_documented_statement_and_its_signature(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, _ = signed
    found = json.loads(out.read_text())
    statement = found["statement"]
    assert set(found) == {"statement", "signature"}
    assert statement["format"] == "evstore-checkpoint/1"
    assert statement["store_id"] == store_id_of(store)
    with open_log(store, create=False) as log:
        assert (statement["position"], statement["head_hash"]) == (log.head_position(), log.head_hash())
    assert statement["time"].endswith("Z")
    # the signature covers the canonical bytes the module documents, and nothing else:
    # anyone with the public key checks it without evstore
    canonical = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    load_public_key(f"{key}.pub").verify(base64.b64decode(found["signature"]), canonical)


def test_the_checkpoint_command_prints_one_line_and_never_overwrites(tmp_path: Path) -> None:
    store, key, out = tmp_path / "evstore.db", tmp_path / "k", tmp_path / "ckpt.json"
    make_store(store, runs=1)
    run_cli("keygen", key)
    done = run_process("checkpoint", "--key", key, "--out", out, "--store", store)
    assert done.returncode == 0 and done.stderr == ""
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"wrote {out}: store {store_id_of(store)}, position {head(store)}, hash ")
    before = out.read_bytes()
    refused(run_process("checkpoint", "--key", key, "--out", out, "--store", store), "exists")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_checkpoint_verifies_while_the_log_grows(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, runs = signed
    position = head(store)
    log_more(store, runs["a-0"], 5)
    done = verify(store, out, Path(f"{key}.pub"))
    assert done.returncode == 0, done.stderr
    ok, held = done.stdout.splitlines()
    assert ok.startswith(f"ok: {position + 5} events, head {position + 5}")
    assert held.startswith(f"checkpoint ok: position {position}, hash ")
    assert held.endswith("the 5 events after it chain from it")


def test_a_checkpoint_taken_before_a_redaction_still_verifies(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, runs = signed
    position = head(store)  # the checkpoint's: the last run's log_batch
    log_more(store, runs["a-0"], 2)
    # a param of a run before the checkpoint, and the whole event at its very position
    assert run_process("redact", "--store", store, "--run", runs["a-0"], "--param", "data_path",
                       "--reason", "erasure request").returncode == 0  # fmt: skip
    assert run_process("redact", "--store", store, "--position", position,
                       "--reason", "the checkpointed event itself").returncode == 0  # fmt: skip
    done = run_process("verify", "--store", store, "--checkpoint", out, "--public-key", f"{key}.pub")
    assert done.returncode == 0, done.stderr
    assert f"checkpoint ok: position {position}," in done.stdout
    assert done.stdout.count("redacted: position") == 2


def test_a_checkpoint_of_a_format_3_store_verifies_after_a_redaction_through_the_stored_hash(
    tmp_path: Path,
) -> None:
    # an event written before storage format 4: its link covered the payload bytes, which
    # the redaction replaces; its stored hash is what the checkpoint and the chain hold
    path, key = tmp_path / "demo.db", tmp_path / "k"
    shutil.copy(FIXTURES / "format3" / "demo.db", path)
    generate_key(key)
    runner = open_store(path)
    try:
        rebuild(runner.store)  # its metric history is at an older layout (as test_redact does)
        signed = take_checkpoint(runner.store, load_private_key(key))
        target = next(r for r in runner.store.read_all() if r.type == "ParamsLogged")
        assert target.position <= signed.statement.position
        report = redact(runner.store, run_id=target.stream_id, param="learning_rate", reason="r")
        assert report.erased == [target.position]
    finally:
        runner.store.close()
    with open_log(path, create=False) as log:
        assert verify_checkpoint(log, signed, load_public_key(f"{key}.pub")).ok
        checked = verify_log(log)
    assert checked.ok and [f.verified_through for f in checked.redactions] == ["stored hash"]


# --- refusals -----------------------------------------------------------------------------


def test_a_checkpoint_checked_with_another_key_is_refused(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, _, out, _ = signed
    other = store.parent / "other.key"
    run_cli("keygen", other)
    refused(verify(store, out, Path(f"{other}.pub")), "FAILED checkpoint", "does not verify",
            "another key")  # fmt: skip


def test_a_checkpoint_signed_by_another_key_is_refused(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    # a forger re-signs with their own key, naming the trusted key's fingerprint
    store, key, out, _ = signed
    forger = store.parent / "forger.key"
    run_cli("keygen", forger)
    found = json.loads(out.read_text())
    canonical = json.dumps(found["statement"], sort_keys=True, separators=(",", ":")).encode()
    found["signature"] = base64.b64encode(load_private_key(forger).sign(canonical)).decode()
    out.write_text(json.dumps(found))
    refused(verify(store, out, Path(f"{key}.pub")), "FAILED checkpoint", "altered")


@pytest.mark.parametrize(
    ("field", "value"),
    [("position", 1), ("head_hash", "0" * 64), ("store_id", "0" * 32), ("time", "2020-01-01T00:00:00Z")],
)
def test_a_tampered_checkpoint_is_refused(
    signed: tuple[Path, Path, Path, dict[str, str]], field: str, value: object
) -> None:
    store, key, out, _ = signed
    found = json.loads(out.read_text())
    found["statement"][field] = value
    out.write_text(json.dumps(found))
    refused(verify(store, out, Path(f"{key}.pub")), "FAILED checkpoint", "altered after it was signed")


def test_a_checkpoint_whose_signature_was_edited_is_refused(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, _ = signed
    found = json.loads(out.read_text())
    raw = bytearray(base64.b64decode(found["signature"]))
    raw[0] ^= 1
    for signature in (base64.b64encode(bytes(raw)).decode(), "", "not base64!", "AAAA"):
        found["signature"] = signature
        out.write_text(json.dumps(found))
        refused(verify(store, out, Path(f"{key}.pub")), "FAILED checkpoint", "does not verify")


@pytest.mark.parametrize(
    "text",
    ["not json", "{}", '{"statement": {}, "signature": ""}', "[1, 2]"],
)
def test_a_file_that_is_no_checkpoint_is_one_clear_line(signed: tuple[Path, Path, Path, dict[str, str]], text: str) -> None:
    store, key, out, _ = signed
    out.write_text(text)
    refused(verify(store, out, Path(f"{key}.pub")), "error:", "is not an evstore checkpoint")


def test_a_missing_key_or_checkpoint_is_one_clear_line(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, _ = signed
    refused(verify(store, out, store.parent / "nope.pub"), "error: cannot read the public key")
    refused(verify(store, store.parent / "nope.json", Path(f"{key}.pub")), "error: cannot read the checkpoint")
    refused(verify(store, out, key), "error:", "not a PEM public key")  # the private half
    refused(run_cli("verify", "--store", store, "--checkpoint", out), "go together")


def test_a_store_cut_short_is_refused(tmp_path: Path) -> None:
    # a copy kept from earlier is put back in place of the store after a checkpoint
    store, key, out = tmp_path / "evstore.db", tmp_path / "k", tmp_path / "ckpt.json"
    runs = make_store(store)
    copy_store(store, tmp_path / "earlier.db")
    log_more(store, runs["a-1"], 3)
    run_cli("keygen", key)
    run_cli("checkpoint", "--key", key, "--out", out, "--store", store)
    assert run_cli("verify", "--store", tmp_path / "earlier.db").returncode == 0  # its chain is whole
    done = run_process("verify", "--store", tmp_path / "earlier.db", "--checkpoint", out,
                       "--public-key", f"{key}.pub")  # fmt: skip
    line = refused(done, "FAILED checkpoint")
    assert f"the log ends at position {head(tmp_path / 'earlier.db')}, before the checkpoint's" in line


@pytest.mark.parametrize("extra", [0, 4], ids=["same length", "longer"])
def test_a_store_rewritten_from_position_1_with_a_valid_chain_is_refused(
    signed: tuple[Path, Path, Path, dict[str, str]], extra: int
) -> None:
    # the forger writes a whole new history (a valid chain), as long as the checkpointed
    # one or longer, and gives it the original's store id
    store, key, out, _ = signed
    forged = store.parent / "forged.db"
    open_log(forged).close()  # an empty store, given the id before its first event
    give_store_id(forged, store_id_of(store))
    runs = make_store(forged, seed="b")
    log_more(forged, runs["b-0"], head(store) - head(forged) + extra)
    assert head(forged) == head(store) + extra
    assert run_cli("verify", "--store", forged).returncode == 0  # the chain alone cannot tell
    line = refused(verify(forged, out, Path(f"{key}.pub")), "FAILED checkpoint")
    assert f"the event at position {head(store)} has hash" in line and "rewritten" in line


def test_another_store_swapped_in_is_refused(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, _ = signed
    other = store.parent / "other.db"
    make_store(other, runs=3, seed="c")
    line = refused(verify(other, out, Path(f"{key}.pub")), "FAILED checkpoint", "another store")
    assert store_id_of(store) in line and store_id_of(other) in line


def test_another_copy_of_the_store_with_another_history_is_refused(
    signed: tuple[Path, Path, Path, dict[str, str]],
) -> None:
    # a copy taken before the checkpoint grew its own history: same store id, same length
    store, key, out, runs = signed
    position = head(store)
    earlier = store.parent / "earlier.db"
    copy_store(store, earlier)
    log_more(store, runs["a-0"], 2)
    take_and_write = run_cli("checkpoint", "--key", key, "--out", store.parent / "later.json", "--store", store)
    assert take_and_write.returncode == 0
    log_more(earlier, runs["a-1"], 2)  # the same number of events, other content
    assert head(earlier) == head(store) == position + 2
    assert run_cli("verify", "--store", earlier).returncode == 0
    line = refused(verify(earlier, store.parent / "later.json", Path(f"{key}.pub")), "FAILED checkpoint")
    assert f"the event at position {position + 2} has hash" in line
    assert verify(earlier, out, Path(f"{key}.pub")).returncode == 0  # they agree up to here


def test_a_chain_broken_after_the_checkpoint_fails_verify(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    # the checkpoint's own event is intact, an event after it was edited in place
    store, key, out, runs = signed
    log_more(store, runs["a-0"], 2)
    with closing(sqlite3.connect(store)) as db:
        db.execute("DROP TRIGGER events_refuse_update")
        db.execute("UPDATE events SET payload = x'00' WHERE position = ?", (head(store),))
        db.commit()
    done = verify(store, out, Path(f"{key}.pub"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"FAILED at position {head(store)}:")
    assert "checkpoint ok" not in done.stdout


def test_without_cryptography_the_error_names_the_extra(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, key, out, _ = signed
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from evstore.cli import main\n"
        f"sys.argv = ['evstore', 'verify', '--store', {str(store)!r}, '--checkpoint', {str(out)!r},"
        f" '--public-key', {str(key) + '.pub'!r}]\n"
        "main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    refused(done, "pip install 'evstore[sign]'")


# --- the statement, in the library ----------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["format", "store_id", "head_hash", "time", "public_key_sha256", "position"]),
    text=st.text(max_size=70),
    number=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_any_change_to_a_signed_statement_is_refused(tmp_path: Path, field: str, text: str, number: int) -> None:
    key = tmp_path / "k"
    if not key.exists():
        generate_key(key)
        make_store(tmp_path / "evstore.db", runs=1)
    private, public = load_private_key(key), load_public_key(f"{key}.pub")
    with open_log(tmp_path / "evstore.db", create=False) as log:
        signed = take_checkpoint(log, private)
        assert verify_checkpoint(log, signed, public).ok
        changed = msgspec.structs.asdict(signed.statement)
        changed[field] = number if field == "position" else text
        if changed[field] == getattr(signed.statement, field):
            return
        forged = CheckpointFile(Statement(**changed), signed.signature)  # type: ignore[arg-type]
        check = verify_checkpoint(log, forged, public)
    assert not check.ok and "signature does not verify" in (check.reason or "")


def test_read_checkpoint_refuses_unknown_fields_and_other_formats(signed: tuple[Path, Path, Path, dict[str, str]]) -> None:
    _, _, out, _ = signed
    found = json.loads(out.read_text())
    found["statement"]["extra"] = 1
    out.write_text(json.dumps(found))
    with pytest.raises(Exception, match="not an evstore checkpoint"):
        read_checkpoint(out)
    del found["statement"]["extra"]
    found["statement"]["format"] = "evstore-checkpoint/9"
    out.write_text(json.dumps(found))
    with pytest.raises(Exception, match="checkpoint format 'evstore-checkpoint/9'"):
        read_checkpoint(out)


# --- the server writes them ---------------------------------------------------------------


def test_the_server_writes_a_checkpoint_every_few_minutes_when_the_log_grew(tmp_path: Path) -> None:
    key, folder = tmp_path / "k", tmp_path / "checkpoints"
    generate_key(key)
    # 0.002 minutes: about every 0.1 s, so the test does not sit waiting
    server = ServerProcess(tmp_path, "--checkpoint-every", "0.002", "--checkpoint-key", str(key),
                           "--checkpoint-dir", str(folder))  # fmt: skip
    try:
        first = wait_until(lambda: sorted(folder.glob("checkpoint-*.json")), "a first checkpoint")
        created = httpx.post(f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}, timeout=60)
        assert created.status_code == 200, created.text
        grown = head(server.store)
        # a later checkpoint holds the new head; none is written while the log stands still
        newest = wait_until(
            lambda: [p for p in folder.glob("checkpoint-*.json")
                     if json.loads(p.read_text())["statement"]["position"] == grown],
            "a checkpoint of the grown log",
        )  # fmt: skip
    finally:
        server.stop()
    written = sorted(folder.glob("checkpoint-*.json"))
    positions = [json.loads(p.read_text())["statement"]["position"] for p in written]
    assert positions == sorted(set(positions)) and positions[-1] == grown
    for path in (first[0], newest[0]):
        done = verify(server.store, path, Path(f"{key}.pub"))
        assert done.returncode == 0 and "checkpoint ok" in done.stdout, done.stderr


def test_the_server_checkpoint_options_go_together(tmp_path: Path) -> None:
    store = tmp_path / "evstore.db"
    refused(run_cli("server", "--store", store, "--checkpoint-every", "5"), "go together")
    refused(run_cli("server", "--store", store, "--checkpoint-every", "0", "--checkpoint-key", "k",
                    "--checkpoint-dir", "d"), "above 0")  # fmt: skip
    # a key that cannot be read stops the server before it serves (after its banner line)
    done = run_cli("server", "--store", store, "--checkpoint-every", "5", "--checkpoint-key",
                   tmp_path / "nope", "--checkpoint-dir", tmp_path)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: cannot read the key {tmp_path / 'nope'}")
