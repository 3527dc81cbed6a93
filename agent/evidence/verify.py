"""The verifier: does the store hold exactly what the device signed, in order, without gaps?

It needs only the store and the device's public key. It checks every record's
signature, sequence and link, every sealed segment's size and SHA-256, that no
segment file stands outside the chain, and that presentation times run on
across consecutive segments of one recording; what the format promises of each
record and of records' references to each other (rules.py); the chain against
every witness of its head the store holds or the caller brings (witness.py); and,
given the agency's device CA, that a CA certified every signing key (anchor.py).
Findings name the record (by seq and line), the segment or the witness, and say
what is wrong in words an investigator uses. docs/chain-format.md lists the checks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.evidence.anchor import KeySpan, anchor
from agent.evidence.chain import (
    GENESIS_PREV,
    SEALED_FILE_TYPES,
    canonical,
    has_writer,
    is_int64,
    parse_line,
    read_records,
    record_hash,
)
from agent.evidence.findings import Finding
from agent.evidence.keys import PUBLIC_NAME, KeyMaterialError, fingerprint, load_public_key
from agent.evidence.rules import References, key_named, record_problem
from agent.evidence.store import Store
from agent.evidence.witness import Receipt, Witness, check, in_folder

SEAL_WAIT_S = 5.0  # how long a file being sealed in a live store may take to get its record
_SEAL_POLL_S = 0.02
_SEALED_SEQ = re.compile(r"sealed/([0-9]+)\.")


@dataclass
class Report:
    store: str
    key_fingerprint: str
    records: int = 0
    segments: int = 0
    recordings: int = 0
    video_frames: int = 0
    recorded_us: int = 0
    purged: int = 0
    # The important marks (重要标记): {"seq", "wall", "recording", "source"} each, in order.
    marks: list[dict[str, Any]] = field(default_factory=list)
    head: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    witnessed_by: list[str] = field(default_factory=list)  # the witnesses of the head checked
    certified_by: str | None = None  # the device CA every signing key was certified under

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def head_seq(self) -> int:
        return self.head["seq"] if self.head else 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok,
                "first_problem": str(self.findings[0]) if self.findings else None}

    def summary(self) -> str:
        if self.ok:
            if self.head is None:
                return "OK: the chain is empty"
            purged = f" ({self.purged} sealed files purged after custody)" if self.purged else ""
            certified = f", certified under {self.certified_by}" if self.certified_by else ""
            return (f"OK: {self.records} records, {self.segments} segments in "
                    f"{self.recordings} recordings verify{purged}{self._marks()}; chain head seq "
                    f"{self.head['seq']} "
                    f"{self.head['hash'][:16]}…; key {self.key_fingerprint[:16]}…{certified}; "
                    f"{self._witnesses()}")
        lines = [f"FAIL: {self.findings[0]}"]
        lines += [f"  also: {finding}" for finding in self.findings[1:]]
        if len(self.findings) > 1:
            lines.append(f"{len(self.findings)} problems in all")
        return "\n".join(lines)

    def _marks(self) -> str:
        if not self.marks:
            return ""
        recordings = sorted({mark["recording"] for mark in self.marks})
        return (f"; {len(self.marks)} important mark{'s' if len(self.marks) > 1 else ''} "
                f"(recording{'s' if len(recordings) > 1 else ''} "
                f"{', '.join(map(str, recordings))})")

    def _witnesses(self) -> str:
        if not self.witnessed_by:
            return "no outside witness of the head"
        shown = ", ".join(self.witnessed_by[:3])
        more = f" and {len(self.witnessed_by) - 3} more" if len(self.witnessed_by) > 3 else ""
        return f"head witnessed by {shown}{more}"


@dataclass(frozen=True)
class Outside:
    """What a caller brings from outside the store: witnesses of the head (`--head`,
    `--receipt`) and the agency's device CA (`--ca`, named `ca_name` in findings)."""

    heads: tuple[Witness, ...] = ()
    receipts: tuple[Receipt, ...] = ()
    ca: tuple[x509.Certificate, ...] = ()
    ca_name: str = ""


@dataclass
class _Seen:
    """What the one pass over the records learns for the checks after it."""

    hashes: dict[int, str] = field(default_factory=dict)  # seq -> hash of each whole record
    spans: list[KeySpan] = field(default_factory=list)    # the signing keys, in order


def verify_store(root: Path, public_key_path: Path | None = None,
                 digests: dict[str, str] | None = None, outside: Outside = Outside()) -> Report:
    """Everything in the module docstring. `digests` (sha256 by file name, e.g.
    "sealed/00000003.ts") are hashes a caller computed of the very bytes it wrote
    to those files just now, as the dock does while receiving: reading them back
    from the page cache would hash the same bytes twice.

    On a live store (a daemon holds the chain), a file in sealed/ that no record names
    yet, with a seq beyond the head as read, is being sealed: the chain is read again
    when its record is appended (at most SEAL_WAIT_S) and verified whole as usual. Only
    a file still unaccounted for then is a finding; a store nothing writes (a copy, the
    dock's evidence folder) is never waited for."""
    store = Store(root)
    key = _load_key(public_key_path or store.keys / PUBLIC_NAME)
    report = Report(str(root), fingerprint(key))
    if not store.chain.exists():
        report.findings.append(Finding("chain.jsonl", "missing", "missing"))
        return report
    # sealed/ is listed before the chain is read: the device renames a file into sealed/
    # and then appends the record naming it, so each file listed either has its record in
    # the chain as read or was being sealed meanwhile (then its seq is beyond the head).
    listed = {f"sealed/{p.name}" for p in store.sealed.glob("*")} if store.sealed.is_dir() \
        else set()
    hashes = dict(digests or {})
    live = False
    try:
        lines = read_records(store.chain)
        seen_files = _verify_lines(store, key, report, lines, hashes, outside)
        being_sealed = _being_sealed(listed - seen_files, report)
        live = bool(being_sealed) and has_writer(store.chain)
        if live and _await_records(store.chain, lines, report.head_seq,
                                   max(being_sealed.values()), SEAL_WAIT_S):
            report = Report(str(root), fingerprint(key))  # all again, with what was added
            seen_files = _verify_lines(store, key, report, read_records(store.chain), hashes,
                                      outside)
    except OSError as exc:  # a folder where the journal should be, or unreadable
        report.findings.append(Finding("chain.jsonl", f"cannot be read ({exc.strerror})",
                                       "missing"))
        return report
    late = _being_sealed(listed - seen_files, report) if live else {}
    for name in sorted(listed - seen_files):
        report.findings.append(Finding(name, "is not in the chain (inserted)" + (
            f": no record names it, and none was sealed within {SEAL_WAIT_S:g} s of "
            "listing it" if name in late else ""), "inserted"))
    for path in sorted(store.open.glob("*")) if store.open.is_dir() else []:
        report.notes.append(f"open/{path.name} is not sealed yet (being written, or left by "
                            "a power cut for recovery)")
    return report


def _verify_lines(store: Store, key: Ed25519PublicKey, report: Report,
                  lines: list[tuple[int, bytes]], hashes: dict[str, str],
                  outside: Outside) -> set[str]:
    """The records, what they say of each other, the witnesses, their files and their
    continuity, into `report`; returns the names of the files the chain accounts for.
    `hashes` are the digests known so far, and gain those computed here."""
    seen = _Seen()
    records = _verify_records(store, key, report, lines, seen=seen)
    _verify_ending(store, lines, report)
    _verify_outside(store, records, report, seen, outside)
    seen_files = _verify_segments(store, records, report, _verify_purges(records, report),
                                  hashes)
    _verify_continuity(records, report)
    _note_unexplained(records, report)
    report.marks = [{"seq": r["seq"], "wall": r["wall"], "recording": r["payload"]["recording"],
                     "source": r["payload"]["source"]} for r in records if r["type"] == "mark"]
    return seen_files


def _being_sealed(names: set[str], report: Report) -> dict[str, int]:
    """Of files no record names, those named by a seq beyond the chain's head as read: on
    a live store, the seal in progress of the next record (seq -> name's seq)."""
    return {name: int(match.group(1)) for name in names
            if (match := _SEALED_SEQ.match(name)) and int(match.group(1)) > report.head_seq}


def _await_records(chain: Path, lines: list[tuple[int, bytes]], head: int, until: int,
                   wait_s: float) -> bool:
    """Whether records after seq `head` were appended after `lines`, waiting at most
    `wait_s` for one with seq `until` or later: a seal is a rename, two directory syncs, a
    signature and a write with its sync. The last line read is read again: it may have
    been caught half written."""
    offset = sum(len(line) + 1 for _, line in lines[:-1])
    deadline = time.monotonic() + wait_s
    while True:
        with chain.open("rb") as f:
            f.seek(offset)
            added = f.read()
        seqs = [0]
        for line in added.splitlines()[: added.count(b"\n")]:
            with contextlib.suppress(ValueError):
                seqs.append(parse_line(line)[2]["seq"])
        if max(seqs) >= until or time.monotonic() >= deadline:
            return max(seqs) > head
        time.sleep(_SEAL_POLL_S)


def _verify_ending(store: Store, lines: list[tuple[int, bytes]], report: Report) -> None:
    """Every line ends in a newline: a last line without one is torn, whole or not (the
    daemon cuts it at its next start), even when it holds a whole record. The byte after
    the last line as read: a live store may have grown since."""
    if not lines:
        return
    with store.chain.open("rb") as f:
        f.seek(sum(len(line) + 1 for _, line in lines) - 1)
        if f.read(1) == b"\n":
            return
    number, line = lines[-1]
    with contextlib.suppress(ValueError):
        seq = _parse(line)[3]
        report.findings.append(Finding(f"record {seq} (line {number})", "has no newline at "
                                       "its end: the last line is torn (the daemon would cut "
                                       "it at its next start)", "truncated"))


def _verify_outside(store: Store, records: list[dict[str, Any]], report: Report, seen: _Seen,
                    outside: Outside) -> None:
    """What records say of each other, the witnesses of the head (the store's own, a dock's
    receipts and manifest, and the caller's), and, given a device CA, the signing keys'
    certificates."""
    references = References(seen.hashes)
    for record in records:
        references.take(record)
    report.findings += references.findings
    held = in_folder(store.root)
    report.findings += held.findings
    if held.manifest is not None and seen.spans and \
            held.manifest.get("key_fingerprint") != seen.spans[0].fingerprint:
        report.findings.append(Finding(
            "manifest.json", f"the dock pulled the chain signed by key "
            f"{str(held.manifest.get('key_fingerprint'))[:16]}…, but it verifies with key "
            f"{seen.spans[0].fingerprint[:16]}…: the key was replaced", "changed"))
    findings, report.witnessed_by = check(
        [*held.receipts, *outside.receipts], [*held.witnesses, *outside.heads], seen.hashes,
        report.head["seq"] if report.head else 0, [span.key for span in seen.spans],
        held.dock_copy)
    report.findings += findings
    if not report.witnessed_by:
        report.notes.append("no outside witness of the chain head (no custody receipt, no "
                            "dock manifest, no --head or --receipt): records removed from "
                            "the end of the chain, with their files, would not show")
    if outside.ca:
        findings, notes = anchor(seen.spans, records, list(outside.ca), outside.ca_name)
        report.findings += findings
        report.notes += notes
        if not findings:
            report.certified_by = outside.ca_name


def _load_key(path: Path) -> Ed25519PublicKey:
    """The device's public key; a file that is not one is the caller's input to fix."""
    try:
        return load_public_key(path)
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"{path} is not a readable PEM public key: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None


def stores_in(path: Path) -> list[Path]:
    """`path` when it is a store; else the per-device folders of a dock's evidence folder."""
    if (path / "chain.jsonl").exists() or not path.is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / "chain.jsonl").is_file()
                   and (p / "manifest.json").is_file())
    return found or [path]


def verify_tail(root: Path, tail: list[tuple[int, bytes]], before: list[tuple[int, bytes]],
                rotations: list[tuple[int, bytes]], public_key_path: Path | None = None
                ) -> Report:
    """The self-check's quick look, not a substitute for `verify_store`: the numbered journal
    lines of `tail` verify (signatures, links to each other and to the one line `before`
    them, if any) and so do their segments. `rotations` are the key_rotation lines before
    the tail, which say what key signs it. The caller finds them without reading the whole
    journal (the device's chain index)."""
    store = Store(root)
    report = Report(str(root), "")
    if not tail:
        return report
    key = _load_key(public_key_path or store.keys / PUBLIC_NAME)
    report.key_fingerprint = fingerprint(key)
    key = _key_in_force([line for line in rotations if line[0] < tail[0][0]], key)
    records = _verify_records(store, key, report, tail, before)
    _verify_segments(store, records, report, _purged(records), {})
    return report


def _parse(line: bytes) -> tuple[bytes, bytes, dict[str, Any], int]:
    """(signed bytes, signature, body, seq) of a journal line; ValueError saying why if it
    is not a whole record."""
    body_bytes, signature, body = parse_line(line)
    return body_bytes, signature, body, body["seq"]


def _verify_records(store: Store, key: Ed25519PublicKey, report: Report,
                    lines: list[tuple[int, bytes]],
                    before: list[tuple[int, bytes]] | None = None,
                    seen: _Seen | None = None) -> list[dict[str, Any]]:
    """Check `lines`, linked to the one line `before` them. Returns the records that verify
    and have the shape the later checks read: only they are indexed. `seen` gathers the
    record hashes and signing keys for the checks after this pass."""
    seen = seen or _Seen()
    key_fp = fingerprint(key)
    expected_seq = 1
    prev_hash: str | None = GENESIS_PREV  # None: the line before is unreadable, no link to check
    if before:
        try:
            body_bytes, _, _, seq = _parse(before[0][1])
            expected_seq, prev_hash = seq + 1, record_hash(body_bytes)
        except ValueError:
            expected_seq, prev_hash = before[0][0] + 1, None
    seqs_present = set()
    for _, line in lines:
        with contextlib.suppress(ValueError):
            seqs_present.add(_parse(line)[3])
    records: list[dict[str, Any]] = []
    retired: int | None = None
    head: dict[str, Any] | None = None
    for number, line in lines:
        where = f"line {number}"
        try:
            body_bytes, signature, body, seq = _parse(line)
        except ValueError as exc:
            kind = "changed" if line.endswith(b'"}') else "truncated"
            report.findings.append(Finding(where, f"is not a whole signed record ({kind}): "
                                           f"{exc}", kind))
            expected_seq += 1
            prev_hash = None
            continue
        where = f"record {seq} (line {number})"
        if retired is not None:
            report.findings.append(Finding(where, f"was signed after the device was retired "
                                           f"by record {retired}", "inserted"))
        signed = False
        try:
            key.verify(signature, body_bytes)
        except InvalidSignature:
            report.findings.append(Finding(where, "signature does not verify: the record was "
                                           "changed or forged", "changed"))
        else:
            problem = _malformed(body, body_bytes)
            if problem:
                report.findings.append(Finding(where, problem, "changed"))
            else:
                _signed_by(seen.spans, key, key_fp, seq)
                if (other := key_named(body, key_fp)) is not None:
                    report.findings.append(Finding(where, other, "changed"))
            if not problem and body["type"] == "key_rotation":
                key = _rotated_key(body, where, report, key)
                key_fp = fingerprint(key)
            elif not problem and body["type"] == "retirement":
                retired = seq
            signed = not problem
        if seq != expected_seq:
            report.findings.append(_sequence_finding(where, seq, expected_seq, seqs_present))
        elif prev_hash is not None and body.get("prev") != prev_hash:
            report.findings.append(Finding(where, "does not link to the record before it: a "
                                           "record was removed, inserted or reordered",
                                           "reordered"))
        expected_seq, prev_hash = seq + 1, record_hash(body_bytes)
        seen.hashes.setdefault(seq, prev_hash)
        head = {"seq": seq, "hash": prev_hash}
        if signed:
            records.append(body)
    report.records = len(records)
    report.head = head
    return records


def _malformed(body: dict[str, Any], body_bytes: bytes) -> str | None:
    """Why a record whose signature verifies still cannot be indexed: it is not in canonical
    form, or not of the shape the checks below read (a device, or a stolen key, can sign
    anything; it must be refused, not crash the verifier or the dock that runs it)."""
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
    problem = record_problem(body)
    return f"is signed but {problem}" if problem else None


def _signed_by(spans: list[KeySpan], key: Ed25519PublicKey, key_fp: str, seq: int) -> None:
    """Record `seq` verified with `key`: the last span grows, or a new key's span begins."""
    if spans and spans[-1].key is key:
        spans[-1].last = seq
    else:
        spans.append(KeySpan(key, key_fp, seq, seq))


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


def _rotated_key(body: dict[str, Any], where: str, report: Report,
                 old: Ed25519PublicKey) -> Ed25519PublicKey:
    """The key a verified key_rotation record hands over to: it signs what follows."""
    payload = body["payload"]
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(payload["new_public_key"],
                                                                  validate=True))
    except ValueError:
        report.findings.append(Finding(where, "names a new key that is not an Ed25519 public "
                                       "key: the old key stays in force", "changed"))
        return old
    if fingerprint(key) != payload["new_fingerprint"]:
        report.findings.append(Finding(where, "names a new key whose fingerprint does not "
                                       "match it", "changed"))
    report.notes.append(f"{where}: the signing key was rotated to {fingerprint(key)[:16]}… "
                        f"({payload.get('reason') or 'no reason given'})")
    return key


def _key_in_force(lines: list[tuple[int, bytes]], anchor: Ed25519PublicKey) -> Ed25519PublicKey:
    """The key signing after `lines`, following their rotations without re-verifying them:
    the quick tail check's starting point."""
    key = anchor
    for _, line in lines:
        if b'"type":"key_rotation"' in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):  # any shape
                payload = _parse(line)[2]["payload"]
                key = Ed25519PublicKey.from_public_bytes(
                    base64.b64decode(payload["new_public_key"]))
    return key


def explained_interruption(record: dict[str, Any]) -> int | None:
    """The seq of the interruption a record explains: a voice note in which speech was heard."""
    if record.get("type") == "voice_note" and record["payload"].get("explained"):
        seq = record["payload"].get("interruption")
        return seq if isinstance(seq, int) else None
    return None


def unexplained(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The interruption records that no voice note with speech explains, oldest first."""
    explained = {explained_interruption(r) for r in records}
    return [r for r in records if r.get("type") == "interruption" and r["seq"] not in explained]


def _note_unexplained(records: list[dict[str, Any]], report: Report) -> None:
    """Art. 16: every interruption wants the officer's spoken explanation."""
    for record in unexplained(records):
        report.notes.append(f"interruption record {record['seq']} "
                            f"({record['payload']['cause']}) is unexplained: no voice note "
                            "with speech was sealed for it")


def _sequence_finding(where: str, seq: int, expected: int, present: set[int]) -> Finding:
    if seq < expected:
        return Finding(where, f"seq {seq} comes after seq {expected - 1}: a record was inserted "
                       "or reordered", "inserted")
    if expected in present:
        return Finding(where, f"seq {seq} where {expected} was expected, and {expected} comes "
                       "later: records were reordered", "reordered")
    missing = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
    return Finding(where, f"seq {seq} where {expected} was expected: record {missing} is "
                   "missing (deleted)", "missing")


def _purged(records: list[dict[str, Any]]) -> dict[int, str]:
    """seq -> sha256 of each file a purge record names; for the tail, whose custody
    records may lie before it (`verify_store` checks them)."""
    return {item["seq"]: item["sha256"] for r in records if r.get("type") == "purge"
            for item in r["payload"]["files"]}


def _verify_purges(records: list[dict[str, Any]], report: Report) -> dict[int, str]:
    """Art. 21: a file may be purged only after a custody record named it with the same hash.

    Returns the purges that keep this rule (seq -> sha256): only they excuse a missing file.
    """
    held: dict[int, str] = {}
    purged: dict[int, str] = {}
    for record in records:
        payload = record.get("payload", {})
        if record.get("type") == "custody":
            held.update((item["seq"], item["sha256"]) for item in payload["segments"])
        elif record.get("type") == "purge":
            for item in payload["files"]:
                if held.get(item["seq"]) == item["sha256"]:
                    purged[item["seq"]] = item["sha256"]
                    continue
                report.findings.append(Finding(
                    f"purge record {record['seq']}", f"deletes {item['file']} (seq "
                    f"{item['seq']}), which no earlier custody record holds with that "
                    "hash (deleted without custody)", "missing"))
    return purged


def _verify_segments(store: Store, records: list[dict[str, Any]], report: Report,
                     purged: dict[int, str], digests: dict[str, str]) -> set[str]:
    """Each sealed file against its record; one that `purged` covers may be gone."""
    sealed = [r for r in records if r.get("type") in SEALED_FILE_TYPES]
    name_by_hash = {r["payload"]["sha256"]: r["payload"]["file"] for r in sealed}
    for record in sealed:
        payload = record["payload"]
        name = payload["file"]
        if record["type"] == "segment_sealed":
            report.segments += 1
            report.video_frames += payload["video"]["packets"]
            where = f"segment {name} (record {record['seq']})"
        else:
            where = f"{SEALED_FILE_TYPES[record['type']]} {name} (record {record['seq']})"
        path = store.root / name
        if not path.is_file() and purged.get(record["seq"]) == payload["sha256"]:
            report.purged += 1  # gone after custody, as a purge record says
            continue
        if not path.is_file():
            report.findings.append(Finding(where, "is missing (deleted)", "missing"))
            continue
        try:
            size, digest = path.stat().st_size, digests.get(name) or _sha256(path)
            digests[name] = digest
        except OSError as exc:
            report.findings.append(Finding(where, f"cannot be read ({exc.strerror})",
                                           "missing"))
            continue
        if digest == payload["sha256"] and size == payload["size"]:
            continue
        if name_by_hash.get(digest, name) != name:
            report.findings.append(Finding(where, f"holds the bytes sealed as "
                                           f"{name_by_hash[digest]}: segments were swapped or "
                                           "renamed (reordered)", "reordered"))
        elif size != payload["size"]:
            kind = "truncated" if size < payload["size"] else "changed"
            report.findings.append(Finding(where, f"is {size} bytes, sealed as "
                                           f"{payload['size']} ({kind})", kind))
        else:
            report.findings.append(Finding(where, "SHA-256 differs from the sealed hash "
                                           "(changed)", "changed"))
    return {r["payload"]["file"] for r in sealed}  # by name: identical files are two files


def _verify_continuity(records: list[dict[str, Any]], report: Report) -> None:
    """Within one recording, segment n+1 must begin exactly one frame (or audio packet) on."""
    previous: dict[int, dict[str, Any]] = {}
    totals: dict[int, dict[str, Any]] = {}
    starts = {r["seq"] for r in records if r.get("type") == "record_start"}
    report.recordings = len(starts)
    for record in records:
        payload = record.get("payload", {})
        if record.get("type") == "record_stop":
            _verify_totals(record, totals.get(payload["recording"], _no_segments()), report)
            continue
        if record.get("type") != "segment_sealed":
            continue
        video, audio = payload["video"], payload["audio"]
        streams = [("video", 1_000_000 / video["fps"])]
        if audio:
            streams.append(("audio", audio["samples_per_packet"] * 1e6 / audio["sample_rate"]))
        # The time recorded, by the video (by the sound, in a sound-only recording's segment).
        for stream, step_us in streams:
            span = payload[stream]
            if None not in (span["first_pts_us"], span["last_pts_us"]):
                report.recorded_us += span["last_pts_us"] - span["first_pts_us"] + int(step_us)
                break
        for stream, step_us in streams:
            _note_missing_inside(report, payload["file"], stream, payload[stream], step_us)
        before = previous.get(payload["recording"])
        previous[payload["recording"]] = payload
        _add_to_totals(totals.setdefault(payload["recording"], _no_segments()), payload)
        where = f"segment {payload['file']} (record {record['seq']})"
        if before is None:
            if payload["index"] != 0:
                report.findings.append(Finding(where, f"is segment {payload['index']} of "
                                               f"recording {payload['recording']}, whose first "
                                               "segment is not in the chain", "missing"))
            continue
        if payload["index"] != before["index"] + 1:
            report.findings.append(Finding(where, f"is segment {payload['index']} of recording "
                                           f"{payload['recording']} after segment "
                                           f"{before['index']}", "missing"))
            continue
        for stream, step_us in streams:
            if before[stream] is None:  # audio began in this segment: nothing to run on from
                continue
            finding = _continuity(where, stream, before[stream], payload[stream], step_us,
                                  before["file"])
            if finding:
                report.findings.append(finding)


def _no_segments() -> dict[str, Any]:
    return {"segments": 0, "video_frames": 0, "audio_packets": 0, "last_segment": None}


def _add_to_totals(totals: dict[str, Any], payload: dict[str, Any]) -> None:
    totals["segments"] += 1
    totals["video_frames"] += payload["video"]["packets"]
    totals["audio_packets"] += payload["audio"]["packets"] if payload["audio"] else 0
    totals["last_segment"] = payload["file"]


def _verify_totals(stop: dict[str, Any], totals: dict[str, Any], report: Report) -> None:
    """A record_stop's counts are those of the recording's segments in the chain (a
    recovered recording's stop names no last segment)."""
    payload = stop["payload"]
    where = f"recording {payload['recording']} (stop record {stop['seq']})"
    if payload["segments"] != totals["segments"]:
        report.findings.append(Finding(where, f"sealed {payload['segments']} segments but the "
                                       f"chain holds {totals['segments']}", "missing"))
        return
    for name in ("video_frames", "audio_packets", "last_segment"):
        if name in payload and payload[name] != totals[name]:
            report.findings.append(Finding(where, f"gives {name} {str(payload[name])[:80]}, "
                                           f"but the chain's segments add up to "
                                           f"{totals[name]}", "changed"))


def _note_missing_inside(report: Report, file: str, stream: str, span: dict[str, Any],
                         step_us: float) -> None:
    """Packets the camera never delivered inside a segment: sealed as received, so a note.

    The recorder writes every packet it is given; a shortfall here happened before it
    (a sensor or encoder drop) and is worth an investigator's attention, not a failure.
    """
    if None in (span["first_pts_us"], span["last_pts_us"]):
        return
    expected = round((span["last_pts_us"] - span["first_pts_us"]) / step_us) + 1
    if span["packets"] < expected:
        report.notes.append(f"{file}: {stream} has {span['packets']} packets over a span of "
                            f"{expected}: {expected - span['packets']} never reached the "
                            "recorder")


def _continuity(where: str, stream: str, before: dict[str, Any], after: dict[str, Any],
                step_us: float, before_file: str) -> Finding | None:
    if before["last_pts_us"] is None or after["first_pts_us"] is None:
        return None
    gap = after["first_pts_us"] - before["last_pts_us"]
    if gap > 1.5 * step_us:
        lost = round(gap / step_us) - 1
        return Finding(where, f"gap in time: {stream} jumps {gap / 1000:.1f} ms after "
                       f"{before_file} (about {lost} packets missing)", "gap")
    if gap < 0.5 * step_us:
        return Finding(where, f"{stream} overlaps {before_file} by {(step_us - gap) / 1000:.1f} "
                       "ms (doubled or reordered packets)", "overlap")
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def report_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str)


def reports_json(reports: list[Report]) -> str:
    """Several stores' reports (a dock's evidence folder) as one document."""
    return json.dumps({"ok": all(r.ok for r in reports),
                       "stores": [r.as_dict() for r in reports]}, indent=2, default=str)
