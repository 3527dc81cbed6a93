"""Outside witnesses of the chain head: what closes the one gap a chain cannot close alone.

Removing the newest records (and their files) leaves a shorter chain that still
verifies. A witness is a (seq, hash) someone outside the store saw: a dock's
custody receipt (the device-signed custody record naming the head the dock
verified), the dock's manifest (the head of the copy it made), or a head read
off the device's MQTT status (`--head SEQ:HASH`). The chain must hold that
record with that hash; a chain that ends before it was rolled back, one that
holds another record there diverges from what was witnessed. See
docs/chain-format.md, "Witnesses".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.evidence.chain import record_hash, split_line
from agent.evidence.findings import Finding

RECEIPTS = "receipts"
MANIFEST = "manifest.json"
_HEAD = re.compile(r"([1-9][0-9]{0,18}):([0-9a-f]{64})")
_RECEIPT_BYTES = 1 << 20  # a custody record is a few KB per thousand files it names
_MANIFEST_BYTES = 1 << 28  # a manifest lists every file held: about 200 bytes each


class WitnessError(Exception):
    """A witness given on the command line that cannot be read: the caller's input to fix."""


@dataclass(frozen=True)
class Witness:
    """A record someone outside the store saw. `required`: the chain must reach it; a
    custody record's own seq is not required in a dock's copy, which ends at the head the
    dock verified, before the custody record the device sealed after it."""

    source: str
    seq: int
    hash: str
    what: str
    required: bool = True


@dataclass(frozen=True)
class Receipt:
    """A custody record's signed line, as a dock keeps it; checked once the chain's keys
    are known."""

    source: str
    body_bytes: bytes
    signature: bytes
    body: dict[str, Any]


def parse_head(text: str) -> Witness:
    """`--head SEQ:HASH`, as the device's status publishes `chain_head`."""
    if not _HEAD.fullmatch(text):
        raise WitnessError(f"--head {text[:80]!r}: not SEQ:HASH (a record's seq, a colon, "
                           "its 64 lower-case hex SHA-256, as the MQTT status's chain_head)")
    seq, digest = text.split(":")
    return Witness(f"--head {text[:24]}…", int(seq), digest, "a head given with --head")


def read_receipt(path: Path) -> Receipt:
    """`--receipt FILE`: one custody record line."""
    try:
        data = _read(path, _RECEIPT_BYTES)
    except OSError as exc:
        raise WitnessError(f"--receipt {path}: cannot be read ({exc.strerror})") from None
    receipt = _receipt(f"--receipt {path}", data)
    if isinstance(receipt, str):
        raise WitnessError(f"--receipt {path}: {receipt}")
    return receipt


@dataclass
class FolderWitnesses:
    """What a store folder holds of its own witnesses: a dock's receipts and manifest."""

    receipts: list[Receipt]
    witnesses: list[Witness]
    findings: list[Finding]
    manifest: dict[str, Any] | None
    dock_copy: bool  # a dock's evidence folder: the chain ends at the head the dock verified


def in_folder(root: Path) -> FolderWitnesses:
    """The receipts in receipts/ and the head in manifest.json; a witness that cannot be
    read is a finding (it was changed), never skipped."""
    found = FolderWitnesses([], [], [], None, (root / MANIFEST).exists())
    folder = root / RECEIPTS
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        source = f"{RECEIPTS}/{path.name}"
        try:
            receipt = _receipt(source, _read(path, _RECEIPT_BYTES))
        except OSError as exc:
            receipt = f"cannot be read ({exc.strerror})"
        if isinstance(receipt, str):
            found.findings.append(Finding(source, f"is not a custody receipt: {receipt}",
                                          "changed"))
            continue
        named = re.fullmatch(r"([0-9]{8})-custody\.jsonl", path.name)
        if named and int(named.group(1)) != receipt.body["seq"]:
            found.findings.append(Finding(source, f"is named for record {int(named.group(1))} "
                                          f"but holds record {receipt.body['seq']}", "changed"))
        found.receipts.append(receipt)
    if found.dock_copy:
        _manifest(root, found)
    return found


def _manifest(root: Path, found: FolderWitnesses) -> None:
    """The head the dock's last pull verified, and the receipt it names."""
    try:
        data = _read(root / MANIFEST, _MANIFEST_BYTES)
        if len(data) > _MANIFEST_BYTES:
            raise ValueError(f"larger than {_MANIFEST_BYTES} bytes")
        manifest = json.loads(data)
    except OSError as exc:
        found.findings.append(Finding(MANIFEST, f"cannot be read ({exc.strerror})", "changed"))
        return
    except (ValueError, RecursionError) as exc:
        found.findings.append(Finding(MANIFEST, f"is not a dock's manifest: {exc}", "changed"))
        return
    if not isinstance(manifest, dict):
        found.findings.append(Finding(MANIFEST, "is not a dock's manifest: not a JSON object",
                                      "changed"))
        return
    found.manifest = manifest
    head = manifest.get("head")
    if head is not None:
        if not _is_head(head):
            found.findings.append(Finding(MANIFEST, f"names a head that is not a seq and a "
                                          f"hash: {json.dumps(head)[:80]}", "changed"))
        else:
            found.witnesses.append(Witness(MANIFEST, head["seq"], head["hash"],
                                           "the head of the dock's copy"))
    custody = manifest.get("custody_seq")
    if custody is not None:
        name = f"{RECEIPTS}/{custody:08d}-custody.jsonl" if type(custody) is int else None
        if name is None or not (root / name).is_file():
            found.findings.append(Finding(MANIFEST, f"names custody record {custody!r}, whose "
                                          f"receipt {name or ''} is missing (deleted)",
                                          "missing"))


def check(receipts: list[Receipt], witnesses: list[Witness], hashes: dict[int, str],
          head: int, keys: list[Ed25519PublicKey], dock_copy: bool) -> tuple[list[Finding],
                                                                        list[str]]:
    """(findings, the sources that witness the chain): each receipt must be signed by one
    of the chain's keys; each witnessed record must be in the chain with its hash.
    `hashes`: seq -> record hash of every whole record; `head`: the last seq."""
    findings = []
    for receipt in receipts:
        problem = _receipt_problem(receipt, keys)
        if problem:
            findings.append(Finding(receipt.source, problem, "changed"))
            continue
        body = receipt.body
        witnesses = [*witnesses,
                     Witness(receipt.source, body["payload"]["head"]["seq"],
                             body["payload"]["head"]["hash"], "the head the dock verified"),
                     Witness(receipt.source, body["seq"], record_hash(receipt.body_bytes),
                             "the custody record itself", required=not dock_copy)]
    for witness in witnesses:
        finding = _compare(witness, hashes, head)
        if finding:
            findings.append(finding)
    return findings, sorted({w.source for w in witnesses})


def _compare(witness: Witness, hashes: dict[int, str], head: int) -> Finding | None:
    held = hashes.get(witness.seq)
    if held == witness.hash:
        return None
    if witness.seq > head:
        if not witness.required:
            return None
        return Finding(witness.source, f"witnessed record {witness.seq} ({witness.what}), but "
                       f"the chain ends at record {head}: its newest records were removed "
                       "(rolled back)", "truncated")
    if held is None:
        return Finding(witness.source, f"witnessed record {witness.seq} ({witness.what}), "
                       "which is not a whole record in the chain", "changed")
    return Finding(witness.source, f"witnessed record {witness.seq} ({witness.what}) with "
                   f"hash {witness.hash[:16]}…, but the chain's record {witness.seq} hashes "
                   f"to {held[:16]}…: the chain diverges from what was witnessed", "changed")


def _read(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file: a witness is a small file, and a FIFO or
    a device planted in its place must not hang the verifier or fill its memory."""
    if not path.is_file():
        raise OSError(0, "not a regular file")
    with path.open("rb") as f:
        return f.read(limit + 1)


def _receipt(source: str, data: bytes) -> Receipt | str:
    """A receipt from a file's bytes, or why it is not one."""
    if len(data) > _RECEIPT_BYTES:
        return f"larger than {_RECEIPT_BYTES} bytes"
    lines = data.splitlines()
    if len(lines) != 1:
        return f"{len(lines)} lines, not one record"
    try:
        body_bytes, signature = split_line(lines[0])
        body = json.loads(body_bytes)
    except (ValueError, RecursionError) as exc:
        return f"not a signed record ({exc})"
    if not isinstance(body, dict) or type(body.get("seq")) is not int:
        return "not a signed record (no integer seq in a JSON object)"
    return Receipt(source, body_bytes, signature, body)


def _receipt_problem(receipt: Receipt, keys: list[Ed25519PublicKey]) -> str | None:
    for key in keys:
        try:
            key.verify(receipt.signature, receipt.body_bytes)
            break
        except InvalidSignature:
            continue
    else:
        return ("its signature does not verify with any key of this chain: the receipt was "
                "changed, or is another device's")
    payload = receipt.body.get("payload")
    if receipt.body.get("type") != "custody" or not isinstance(payload, dict) or \
            not _is_head(payload.get("head")):
        return "is signed but is not a custody record naming a head"
    return None


def _is_head(value: Any) -> bool:
    return isinstance(value, dict) and type(value.get("seq")) is int and \
        isinstance(value.get("hash"), str)
