"""Signed checkpoints: a statement an outsider can keep and check later.

A checkpoint says "at this time the store with this id held an event at this position
whose chain hash is this", signed with an Ed25519 key. Checked later against the store
(``verify_checkpoint``), it catches what a hash chain cannot see by itself: a store cut
short, a history rewritten from position 1 with a valid chain, another store (or another
copy of this one) swapped in.

The file is JSON::

    {"statement": {"format": "evstore-checkpoint/1", "head_hash": "<64 hex>",
                   "position": 42, "public_key_sha256": "<64 hex>",
                   "store_id": "<hex>", "time": "2026-12-03T11:30:00Z"},
     "signature": "<base64 of the 64-byte Ed25519 signature>"}

The signature covers the statement's canonical bytes: the statement as a JSON object
with its keys sorted, no whitespace, ASCII only (``json.dumps(statement, sort_keys=True,
separators=(",", ":"))``); every value is an ASCII string or an integer, so those bytes
are the same in any JSON library. ``public_key_sha256`` is the sha256 of the raw 32-byte
public key. Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), as
``openssl pkey`` reads them.

``cryptography`` (``pip install 'evstore[sign]'``) is imported only here, only when a key
is made, used or checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from evstore.errors import EvstoreError, InvalidParameterValue, InvalidState
from evstore.stores.base import EventStore

FORMAT = "evstore-checkpoint/1"


class Statement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a checkpoint asserts: the store, its event at a position and that event's hash."""

    format: str
    store_id: str
    position: Annotated[int, msgspec.Meta(ge=1)]
    head_hash: str
    time: str
    public_key_sha256: str

    def canonical_bytes(self) -> bytes:
        """The exact bytes the signature covers (the module docstring defines them)."""
        fields = msgspec.structs.asdict(self)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class CheckpointFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A checkpoint as written: the statement and the base64 signature of its bytes."""

    statement: Statement
    signature: str


class CheckpointCheck(msgspec.Struct, frozen=True):
    """What ``verify_checkpoint`` found: ``ok``, or why not; the statement it checked."""

    ok: bool
    statement: Statement
    reason: str | None = None


def _crypto() -> Any:
    """The Ed25519 module of ``cryptography``, or one clear line saying how to get it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise EvstoreError(
            "signed checkpoints need the cryptography package: pip install 'evstore[sign]'"
        ) from None
    return ed25519


def generate_key(path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 private key to ``path`` (mode 0600) and its public key to
    ``path.pub``; refuse if either exists. Returns the public key's sha256 (hex)."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization as ser

    private_path = os.fspath(path)
    public_path = private_path + ".pub"
    for taken in (private_path, public_path):
        if os.path.lexists(taken):
            raise InvalidParameterValue(f"{taken} exists: keygen never overwrites a key")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    public_pem = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except BaseException:
        os.unlink(private_path)  # a key whose public half is missing is of no use
        raise
    return _fingerprint(key.public_key())


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` and write ``data``; an existing file is an error."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise InvalidParameterValue(f"{path} exists: it is never overwritten") from None
    except OSError as e:
        raise InvalidParameterValue(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # the umask cannot widen it; this keeps it exact
        out.write(data)


def _fingerprint(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization as ser

    return hashlib.sha256(public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)).hexdigest()


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in a PEM file ``evstore keygen`` wrote."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization as ser

    data = _read(path, "key")
    try:
        key = ser.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise InvalidParameterValue(f"{os.fspath(path)} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidParameterValue(f"{os.fspath(path)} is not an Ed25519 key (evstore keygen makes one)")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 public key in a PEM file (``PATH.pub`` of ``evstore keygen``)."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization as ser

    data = _read(path, "public key")
    try:
        key = ser.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise InvalidParameterValue(f"{os.fspath(path)} is not a PEM public key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidParameterValue(f"{os.fspath(path)} is not an Ed25519 public key")
    return key


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as e:
        raise InvalidParameterValue(f"cannot read the {what} {os.fspath(path)}: {e.strerror}") from None


def store_id(store: EventStore) -> str:
    """The store's random id, made when it was created (``evstore_meta``)."""
    meta: dict[str, str] = getattr(store, "meta", dict)()
    found = meta.get("store_id")
    if not found:
        raise InvalidState(f"{store.uri} has no store id")
    return str(found)


def take_checkpoint(store: EventStore, private_key: Any, *, now: datetime | None = None) -> CheckpointFile:
    """Sign a statement of the store's head now: its id, head position and that event's hash."""
    position = store.head_position()
    if position == 0:
        raise InvalidState("the store has no events yet: there is nothing to checkpoint")
    # the row at the head position never changes, so its position and hash agree even if
    # another writer appends meanwhile
    row = next(iter(store.read_raw(after_position=position - 1, batch_size=1)))[0]
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    statement = Statement(
        FORMAT, store_id(store), row.position, row.hash.hex(),
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"), _fingerprint(private_key.public_key()),
    )  # fmt: skip
    signature = private_key.sign(statement.canonical_bytes())
    return CheckpointFile(statement, base64.b64encode(signature).decode())


def write_checkpoint(checkpoint: CheckpointFile, path: str | os.PathLike[str]) -> None:
    """Write a checkpoint to a new file ``path``, whole or not at all; never over another."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    data = msgspec.json.format(msgspec.json.encode(checkpoint), indent=2) + b"\n"
    try:
        fd, temporary = tempfile.mkstemp(prefix=".checkpoint-", dir=folder)
    except OSError as e:
        raise InvalidParameterValue(f"cannot write {target}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.link(temporary, target)  # fails if target exists: an earlier checkpoint is evidence
    except FileExistsError:
        raise InvalidParameterValue(f"{target} exists: a checkpoint is never overwritten") from None
    except OSError:  # a file system without hard links: create it in place, still never over one
        _write_new(target, data, 0o644)
    finally:
        os.unlink(temporary)


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointFile:
    """A checkpoint file as written; anything else is one clear error."""
    data = _read(path, "checkpoint")
    try:
        found = msgspec.json.decode(data, type=CheckpointFile)
    except msgspec.DecodeError as e:
        raise InvalidParameterValue(f"{os.fspath(path)} is not an evstore checkpoint: {e}") from None
    if found.statement.format != FORMAT:
        raise InvalidParameterValue(
            f"{os.fspath(path)} has checkpoint format {found.statement.format!r}; this evstore"
            f" reads {FORMAT!r}"
        )
    return found


def verify_checkpoint(store: EventStore, checkpoint: CheckpointFile, public_key: Any) -> CheckpointCheck:
    """Whether the checkpoint is signed by ``public_key``, is of this store, and the store
    still holds, at its position, an event with its hash. The chain after it is
    ``integrity.verify``'s to check."""
    statement = checkpoint.statement

    def refused(reason: str) -> CheckpointCheck:
        return CheckpointCheck(False, statement, reason)

    if (why := _bad_signature(checkpoint, public_key)) is not None:
        return refused(why)
    if statement.public_key_sha256 != _fingerprint(public_key):
        return refused("it is signed by this key but names another one: it was not made by evstore")
    here = store_id(store)
    if statement.store_id != here:
        return refused(f"it is of store {statement.store_id}, this is store {here}: another store")
    head = store.head_position()
    if head < statement.position:
        return refused(
            f"the log ends at position {head}, before the checkpoint's position"
            f" {statement.position}: events were removed (the store was cut short, or an older"
            " copy put in its place)"
        )
    row = next(iter(store.read_raw(after_position=statement.position - 1, batch_size=1)))[0]
    if row.position != statement.position:
        return refused(f"the log holds no event at position {statement.position}: events are missing")
    if row.hash.hex() != statement.head_hash.lower():
        return refused(
            f"the event at position {statement.position} has hash {row.hash.hex()}, the checkpoint"
            f" signed {statement.head_hash}: the history was rewritten, or another copy of the"
            " store put in its place"
        )
    return CheckpointCheck(True, statement)


def _bad_signature(checkpoint: CheckpointFile, public_key: Any) -> str | None:
    """Why the signature does not hold for ``public_key``; None when it does."""
    from cryptography.exceptions import InvalidSignature

    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint.statement.canonical_bytes())
    except (InvalidSignature, binascii.Error):
        named, given = checkpoint.statement.public_key_sha256, _fingerprint(public_key)
        if named != given:
            return (
                f"its signature does not verify with this public key (sha256 {given[:16]}...):"
                f" it names key {named[:16]}..., so another key signed it (or the file was altered)"
            )
        return "its signature does not verify: the file was altered after it was signed"
    return None


class CheckpointWriter:
    """The server's ``--checkpoint-every``: a checkpoint into ``folder`` each time it is
    asked, when the log has grown since the last one it wrote."""

    def __init__(
        self, store: EventStore, key_path: str | os.PathLike[str], folder: str | os.PathLike[str]
    ) -> None:
        self.store = store
        self.key = load_private_key(key_path)  # a bad key fails now, before serving
        self.folder = os.fspath(folder)
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            why = f"cannot use {self.folder} for checkpoints: {e.strerror}"
            raise InvalidParameterValue(why) from None
        self.last_position = 0

    def write(self) -> str | None:
        """Write a checkpoint of the head if it moved; its path, or None if it did not."""
        if self.store.head_position() in (0, self.last_position):
            return None
        signed = take_checkpoint(self.store, self.key)
        found = signed.statement
        stamp = found.time.replace("-", "").replace(":", "")
        path = os.path.join(self.folder, f"checkpoint-{found.position:012d}-{stamp}.json")
        write_checkpoint(signed, path)
        self.last_position = found.position
        return path

    async def every(self, minutes: float, run: Any) -> None:
        """Write one every ``minutes`` until cancelled; ``run(function)`` runs it off the
        event loop. A failed write is logged and the next one tried."""
        import asyncio
        import logging

        while True:
            await asyncio.sleep(minutes * 60)
            try:
                await run(self.write)
            except Exception as e:  # noqa: BLE001 - the server keeps serving; the next one may work
                logging.getLogger("evstore.checkpoint").warning("evstore: checkpoint not written: %s", e)
