"""What each journal line is on its own: whole, signed by the key in force, well formed.

These checks need nothing but the line and the key that signs it, so they can run on
several cores while the verifier's one pass (verify.py) keeps the state the
records build up. A long chain is read in batches of lines, each checked by a worker
process, and the results come back in order; at most a few batches are in flight, so
memory stays flat however long the chain. A key_rotation hands over to the key it
names for the lines after it: a batch holding one is waited for before the next is
sent. docs/chain-format.md lists the checks.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.evidence.chain import canonical, is_int64, parse_line, record_hash
from agent.evidence.keys import fingerprint
from agent.evidence.rules import key_named, record_problem

BATCH = 512        # lines per batch sent to a worker
PARALLEL_FROM = 16 << 20  # journal bytes from which worker processes pay for their start


class Checked(NamedTuple):
    """One line as the per-line checks found it. `error`: why it is not a whole signed
    record (then nothing else is known); `signed`: its signature verifies with the key in
    force; `problem`: why a signed record cannot be indexed; `named`: the key a boot,
    rotation or retirement record names is not its signer's; `prev`: its prev when a
    string. A tuple: it crosses from the worker processes by the hundred thousand."""

    number: int
    size: int  # bytes, with the newline if it has one
    error: str | None
    kind: str = ""  # of the error: changed, or truncated when the line does not end as one
    seq: int = 0
    hash: str = ""
    prev: str | None = None
    signed: bool = False
    problem: str | None = None
    named: str | None = None


def handed_over(body: dict[str, Any]) -> Ed25519PublicKey | None:
    """The key a signed, well-formed key_rotation record hands over to, or None when the
    key it names is not an Ed25519 public key (the old key stays in force)."""
    try:
        return Ed25519PublicKey.from_public_bytes(
            base64.b64decode(body["payload"]["new_public_key"], validate=True))
    except ValueError:
        return None


def check_line(number: int, line: bytes, key: Ed25519PublicKey, key_fp: str
               ) -> tuple[Checked, Ed25519PublicKey]:
    """One line (newline included, if it has one) and the key in force after it."""
    stripped = line.rstrip(b"\n")
    fractions: list[str] = []

    def fraction(text: str) -> float:
        fractions.append(text)
        return float(text)

    try:
        body_bytes, signature, body = parse_line(stripped, fraction)
    except ValueError as exc:
        kind = "changed" if stripped.endswith(b'"}') else "truncated"
        return Checked(number, len(line), str(exc), kind), key
    seq, digest = body["seq"], record_hash(body_bytes)
    prev = body.get("prev") if isinstance(body.get("prev"), str) else None
    try:
        key.verify(signature, body_bytes)
    except InvalidSignature:
        return Checked(number, len(line), None, seq=seq, hash=digest, prev=prev), key
    problem = malformed(body, body_bytes, bool(fractions))
    named = None if problem else key_named(body, key_fp)
    if problem is None and body["type"] == "key_rotation":
        key = handed_over(body) or key
    return Checked(number, len(line), None, seq=seq, hash=digest, prev=prev, signed=True,
                   problem=problem, named=named), key


def malformed(body: dict[str, Any], body_bytes: bytes, fractions: bool = True) -> str | None:
    """Why a record whose signature verifies still cannot be indexed: it is not in canonical
    form, or not of the shape the checks read (a device, or a stolen key, can sign
    anything; it must be refused, not crash the verifier or the dock that runs it).
    `fractions`: whether the parser met a number with a fraction (see record_problem)."""
    try:
        if canonical(body) != body_bytes:
            return "is not in canonical form (edited)"
    except (ValueError, RecursionError):  # NaN or Infinity: never written canonically
        return "is not in canonical form (edited)"
    problem = _shape(body, _RECORD, "record")
    if problem is None and body["type"] in _PAYLOADS:
        problem = _shape(body["payload"], _PAYLOADS[body["type"]], "payload")
    if problem:
        return f"is signed but malformed: {problem}"
    problem = record_problem(body, fractions)
    return f"is signed but {problem}" if problem else None


def _check_batch(key_raw: bytes, batch: list[tuple[int, bytes]]
                 ) -> tuple[list[Checked], bytes]:
    """A worker's part: a batch of lines, and the key in force after them."""
    key = Ed25519PublicKey.from_public_bytes(key_raw)
    key_fp = fingerprint(key)
    checked = []
    for number, line in batch:
        result, after = check_line(number, line, key, key_fp)
        if after is not key:
            key, key_fp = after, fingerprint(after)
        checked.append(result)
    return checked, _raw(key)


def checked_lines(lines: Iterable[tuple[int, bytes]], key: Ed25519PublicKey,
                  workers: int) -> Iterator[tuple[Checked, bytes]]:
    """Each of the numbered `lines`, checked, with the line, in order: in this process when
    `workers` is 0, else in that many worker processes."""
    if workers == 0:
        key_fp = fingerprint(key)
        for number, line in lines:
            result, after = check_line(number, line, key, key_fp)
            if after is not key:
                key, key_fp = after, fingerprint(after)
            yield result, line
        return
    context = multiprocessing.get_context("forkserver")  # the dock calls from threads
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from _in_order(pool, _batches(lines), _raw(key), 2 * workers + 1)


def _in_order(pool: ProcessPoolExecutor, batches: Iterator[list[tuple[int, bytes]]],
              key_raw: bytes, in_flight: int) -> Iterator[tuple[Checked, bytes]]:
    """Submit batches while fewer than `in_flight` are out and the key they start with is
    known; yield the results in order."""
    pending: deque[tuple[Future[tuple[list[Checked], bytes]], list[tuple[int, bytes]],
                         bool]] = deque()
    batch: list[tuple[int, bytes]] | None = next(batches, None)
    while batch is not None or pending:
        while batch is not None and len(pending) < in_flight and \
                not (pending and pending[-1][2]):
            rotates = any(b"key_rotation" in line for _, line in batch)
            pending.append((pool.submit(_check_batch, key_raw, batch), batch, rotates))
            batch = next(batches, None)
        future, sent, rotates = pending.popleft()
        checked, after = future.result()
        if rotates:
            key_raw = after
        yield from zip(checked, (line for _, line in sent), strict=True)


def _batches(lines: Iterable[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    for item in lines:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def workers_for(size: int) -> int:
    """Worker processes for a journal of `size` bytes still to read: none for a short one."""
    return 0 if size < PARALLEL_FROM else max(2, os.cpu_count() or 1)


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _is_positive(value: Any) -> bool:
    return is_int64(value) and value > 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_none(value: Any) -> bool:
    return value is None


# A shape: a predicate; a dict (an object with at least these keys; {} is any object); a
# one-item list (a list of such items); a tuple (any one of these shapes).
_Shape = Callable[[Any], bool] | dict[str, Any] | list[Any] | tuple[Any, ...]
_RECORD = {"seq": is_int64, "type": _is_str, "prev": _is_str, "payload": {}}
_FILE = {"file": _is_str, "sha256": _is_str, "size": is_int64}  # file: see rules.py
_STREAM = {"packets": is_int64, "first_pts_us": (_is_none, is_int64),
           "last_pts_us": (_is_none, is_int64)}
_PAYLOADS: dict[str, _Shape] = {
    "segment_sealed": {**_FILE, "recording": is_int64, "index": is_int64,
                       "video": {**_STREAM, "fps": _is_positive},
                       "audio": (_is_none, {**_STREAM, "sample_rate": _is_positive,
                                            "samples_per_packet": _is_positive})},
    "voice_note": {**_FILE, "interruption": (_is_none, is_int64)},
    "exemption": _FILE,
    "file_recovered": _FILE,
    "photo": {**_FILE, "recording": (_is_none, is_int64), "width": _is_positive,
              "height": _is_positive},
    "custody": {"segments": [{"seq": is_int64, "sha256": _is_str}]},
    "purge": {"files": [{"seq": is_int64, "sha256": _is_str, "file": _is_str}]},
    "record_stop": {"recording": is_int64, "segments": is_int64},
    "mark": {"recording": is_int64, "source": _is_str},
    "key_rotation": {"new_public_key": _is_str, "new_fingerprint": _is_str},
    "interruption": {"cause": _is_str},
}


def _shape(value: Any, shape: _Shape, where: str) -> str | None:
    """What about `value` does not fit `shape`, or None."""
    if isinstance(shape, tuple):
        problems = [_shape(value, alternative, where) for alternative in shape]
        return None if None in problems else problems[-1]
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where} is not an object"
        for key, inner in shape.items():
            problem = (_shape(value[key], inner, f"{where}.{key}") if key in value
                       else f"{where} has no {key}")
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        return next((p for i, item in enumerate(value)
                     if (p := _shape(item, shape[0], f"{where}[{i}]"))), None)
    return None if shape(value) else f"{where} is a {type(value).__name__} out of its range"
