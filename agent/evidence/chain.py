"""The chain: an append-only journal of Ed25519-signed records, one JSON object per line.

A line is the record's canonical bytes (sorted keys, no insignificant white
space, UTF-8, integers only) with `,"sig":"<base64>"` inserted before the final
brace. So a third party recovers the signed bytes with one `sed`, checks the
signature with `openssl pkeyutl -verify -rawin`, and links each record to the
previous one with `sha256sum`: see docs/chain-format.md.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.durable import fsync_dir, write_all, write_file

log = logging.getLogger(__name__)

GENESIS_PREV = "0" * 64
# The records that seal a file into sealed/, and what each file is called in reports.
SEALED_FILE_TYPES = {"segment_sealed": "segment", "voice_note": "voice note",
                     "exemption": "exemption", "file_recovered": "recovered file",
                     "photo": "photo"}
_SIG_SUFFIX = re.compile(rb',"sig":"([A-Za-z0-9+/]+={0,2})"\}$')


def canonical(body: dict[str, Any]) -> bytes:
    """The bytes that are signed and hashed."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def encode_line(body_bytes: bytes, signature: bytes) -> bytes:
    sig = base64.b64encode(signature)
    return body_bytes[:-1] + b',"sig":"' + sig + b'"}\n'


def split_line(line: bytes) -> tuple[bytes, bytes]:
    """(signed bytes, signature) of a journal line without its newline; ValueError if malformed."""
    match = _SIG_SUFFIX.search(line)
    if not match:
        raise ValueError("no signature at the end of the line")
    signature = base64.b64decode(match.group(1), validate=True)
    if base64.b64encode(signature) != match.group(1):
        raise ValueError("signature is not in standard base64 (the line was re-spelled)")
    return line[: match.start()] + b"}", signature


def is_int64(value: Any) -> bool:
    """An integer a device writes: not a bool, and within 64 bits, so that arithmetic on it
    (durations in floating point) cannot overflow."""
    return type(value) is int and -(1 << 63) <= value < 1 << 63


def parse_line(line: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """(signed bytes, signature, body) of a journal line without its newline, or ValueError
    saying why it is not a whole record. The one reading of a line, for every reader: the
    journal is a file, and the dock's copy is what a device sent, so a line may hold
    anything. A body must be a JSON object with an integer seq; one nested too deeply for
    the parser (a record is a few levels deep) is refused as such, never a RecursionError."""
    body_bytes, signature = split_line(line)
    try:
        body = json.loads(body_bytes)
    except RecursionError:
        raise ValueError("nested too deeply to be a record") from None
    if not isinstance(body, dict) or not is_int64(body.get("seq")):
        raise ValueError("no integer seq in a JSON object")
    return body_bytes, signature, body


def record_hash(body_bytes: bytes) -> str:
    return hashlib.sha256(body_bytes).hexdigest()


def current_boot_id() -> str:
    """The kernel's id of this boot, which ties monotonic times to one power cycle."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return str(uuid.uuid4())


def utc_iso(ns: int) -> str:
    """ISO 8601 UTC with microseconds and Z, the one time format of the chain."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Signer(Protocol):
    """What signs the records: the software Ed25519 key by default
    (`Ed25519PrivateKey` is one); a secure element or TPM holding the key can stand in
    with the same two calls (docs/keys.md)."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


class ChainBusyError(Exception):
    """One writer at a time: two would fork the chain."""


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str

    def as_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "hash": self.hash}


@dataclass(frozen=True)
class TailRepair:
    """What start-up cut off the end of the journal: a line torn by power loss."""

    torn_bytes: int
    kept_in: str


Listener = Callable[[dict[str, Any], str], None]


class ClockReading(Protocol):
    """The clock's state as each record notes it (`hal.clock.ClockState` on the device)."""

    def as_record(self) -> dict[str, object]: ...


class Chain:
    """Appends records; `identity` gives (device id, officer id) at the moment of each record.

    `listeners` are called with each sealed record's body and hash, in sequence
    order, under the chain's lock (that is what keeps them in order): they must be
    quick, must not append, and what they raise is logged, never passed to the writer.
    """

    def __init__(self, path: Path, key: Signer,
                 identity: Callable[[], tuple[str, str]],
                 clock: Callable[[], ClockReading], boot_id: str) -> None:
        self._path = path
        self._key = key
        self._identity = identity
        self._clock = clock
        self._boot_id = boot_id
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ChainBusyError(f"another bodycam process is writing {path}") from None
        fsync_dir(path.parent)
        self.repair = _repair_torn_tail(path)
        self._head = _read_head(path)
        self.listeners: list[Listener] = []

    @property
    def head(self) -> ChainHead:
        with self._lock:
            return self._head

    def append(self, type_: str, payload: dict[str, Any],
               name_for_seq: Callable[[int], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Sign, append and fsync one record; returns its body.

        `name_for_seq` runs under the chain's lock with the sequence the record will
        get, for work that must be named by it (a segment is renamed to its seq).
        """
        with self._lock:
            return self._append_locked(type_, payload, name_for_seq)

    def _append_locked(self, type_: str, payload: dict[str, Any],
                       name_for_seq: Callable[[int], dict[str, Any]] | None) -> dict[str, Any]:
        seq = self._head.seq + 1
        if name_for_seq is not None:
            payload = {**payload, **name_for_seq(seq)}
        device, officer = self._identity()
        body = {
            "seq": seq,
            "prev": self._head.hash,
            "type": type_,
            "wall": utc_iso(time.time_ns()),
            "mono_ns": time.monotonic_ns(),
            "boot_id": self._boot_id,
            "clock": self._clock().as_record(),
            "device": device,
            "officer": officer,
            "payload": payload,
        }
        body_bytes = canonical(body)
        write_all(self._fd, encode_line(body_bytes, self._key.sign(body_bytes)))
        os.fsync(self._fd)
        self._head = ChainHead(seq, record_hash(body_bytes))
        for listener in self.listeners:
            try:
                listener(body, self._head.hash)
            except Exception:  # the record is sealed; a listener cannot undo that
                log.exception("chain listener %r failed on record %d", listener, seq)
        return body

    def rotate(self, payload: dict[str, Any], new_key: Signer) -> dict[str, Any]:
        """Seal a key_rotation record with the current key, then sign with `new_key`:
        the record is what carries trust from one key to the next."""
        with self._lock:
            body = self._append_locked("key_rotation", payload, None)
            self._key = new_key
            return body

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def has_writer(path: Path) -> bool:
    """Whether a `Chain` holds the journal at `path` open for appending now: its exclusive
    flock, as /proc/locks lists it. Asked without taking a lock, for a reader's lock, however
    brief, could make the daemon's start fail. False where /proc/locks cannot be read."""
    try:
        st = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    inode = f" {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    return any(" FLOCK " in line and " WRITE " in line and inode in line
               and "->" not in line for line in locks.splitlines())  # "->": a waiter


def _read_head(path: Path) -> ChainHead:
    if not path.exists() or path.stat().st_size == 0:
        return ChainHead(0, GENESIS_PREV)
    # whole: the torn tail was repaired
    body_bytes, _, body = parse_line(last_line(path)[1].rstrip(b"\n"))
    return ChainHead(body["seq"], record_hash(body_bytes))


def last_line(path: Path) -> tuple[int, bytes]:
    """(offset, bytes) of the journal's last line, to the end of the file: read backwards
    from the end, so that a year-long journal costs what its last line does."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        block = 4096
        while True:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start)
            cut = data.rstrip(b"\n").rfind(b"\n")
            if cut >= 0 or start == 0:
                return start + cut + 1, data[cut + 1:]
            block *= 2


def _is_whole_record(line: bytes) -> bool:
    try:
        parse_line(line)
    except ValueError:
        return False
    return True


def _repair_torn_tail(path: Path) -> TailRepair | None:
    """Cut a last line that power loss left incomplete, keeping its bytes beside the journal.

    Only the very end is touched (and read): a damaged line followed by good ones is not a
    torn write but damage, and is left for the verifier to report.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    cut, torn = last_line(path)
    if torn.endswith(b"\n") and _is_whole_record(torn.rstrip(b"\n")):
        return None
    kept = path.with_name(f"{path.name}.torn-{time.time_ns()}")
    write_file(kept, torn, mode=0o644)  # on disk before the journal is cut
    with path.open("r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())
    fsync_dir(path.parent)
    return TailRepair(len(torn), kept.name)


def read_bodies(path: Path) -> list[dict[str, Any]]:
    """The body of every whole record, in journal order.

    A line that is not a whole record is skipped here: reporting it is the
    verifier's job, and readers (recovery, the self-check, the demo) go on without it.
    """
    bodies = []
    for _, line in read_records(path):
        try:
            bodies.append(parse_line(line)[2])
        except ValueError:
            continue
    return bodies


def read_records(path: Path) -> list[tuple[int, bytes]]:
    """Every line of the journal with its 1-based line number, newline stripped."""
    with path.open("rb") as f:
        return [(n, line.rstrip(b"\n")) for n, line in enumerate(f, 1)]


def whole_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, line with its newline) of each whole line from byte `offset` on, streamed in
    1 MiB reads: a last line without its newline (being written, or torn) is left out."""
    with path.open("rb") as f:
        f.seek(offset)
        rest = b""
        while chunk := f.read(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield offset, line + b"\n"
                offset += len(line) + 1
