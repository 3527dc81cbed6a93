"""The verifier: does the store hold exactly what the device signed, in order, without gaps?

It needs only the store and the device's public key. It checks every record's
signature, sequence and link, every sealed segment's size and SHA-256, that no
segment file stands outside the chain, and that presentation times run on
across consecutive segments of one recording. Findings name the record (by seq
and line) or the segment, and say what is wrong in words an investigator uses.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.evidence.chain import (
    GENESIS_PREV,
    SEALED_FILE_TYPES,
    canonical,
    read_records,
    record_hash,
    split_line,
)
from agent.evidence.keys import PUBLIC_NAME, KeyMaterialError, fingerprint, load_public_key
from agent.evidence.store import Store

# What a line that does not parse may raise: deep nesting ends json in RecursionError.
_UNPARSED = (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError)


@dataclass(frozen=True)
class Finding:
    where: str
    problem: str
    kind: str  # changed, missing, reordered, inserted, truncated, gap, overlap

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


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
    head: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok,
                "first_problem": str(self.findings[0]) if self.findings else None}

    def summary(self) -> str:
        if self.ok:
            if self.head is None:
                return "OK: the chain is empty"
            purged = f" ({self.purged} sealed files purged after custody)" if self.purged else ""
            return (f"OK: {self.records} records, {self.segments} segments in "
                    f"{self.recordings} recordings verify{purged}; chain head seq "
                    f"{self.head['seq']} "
                    f"{self.head['hash'][:16]}…; key {self.key_fingerprint[:16]}…")
        lines = [f"FAIL: {self.findings[0]}"]
        lines += [f"  also: {finding}" for finding in self.findings[1:]]
        if len(self.findings) > 1:
            lines.append(f"{len(self.findings)} problems in all")
        return "\n".join(lines)


def verify_store(root: Path, public_key_path: Path | None = None,
                 digests: dict[str, str] | None = None) -> Report:
    """Everything in the module docstring. `digests` (sha256 by file name, e.g.
    "sealed/00000003.ts") are hashes a caller computed of the very bytes it wrote
    to those files just now, as the dock does while receiving: reading them back
    from the page cache would hash the same bytes twice."""
    store = Store(root)
    key = _load_key(public_key_path or store.keys / PUBLIC_NAME)
    report = Report(str(root), fingerprint(key))
    if not store.chain.exists():
        report.findings.append(Finding("chain.jsonl", "missing", "missing"))
        return report
    try:
        lines = read_records(store.chain)
    except OSError as exc:  # a folder where the journal should be, or unreadable
        report.findings.append(Finding("chain.jsonl", f"cannot be read ({exc.strerror})",
                                       "missing"))
        return report
    records = _verify_records(store, key, report, lines)
    seen_files = _verify_segments(store, records, report, _verify_purges(records, report),
                                  digests or {})
    _verify_continuity(records, report)
    _note_unexplained(records, report)
    for path in sorted(store.sealed.glob("*")) if store.sealed.is_dir() else []:
        if f"sealed/{path.name}" not in seen_files:
            report.findings.append(Finding(f"sealed/{path.name}",
                                           "is not in the chain (inserted)", "inserted"))
    for path in sorted(store.open.glob("*")) if store.open.is_dir() else []:
        report.notes.append(f"open/{path.name} is not sealed yet (being written, or left by "
                            "a power cut for recovery)")
    return report


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
    """(signed bytes, signature, body, seq) of a journal line; ValueError and the like if
    it is not a whole record."""
    body_bytes, signature = split_line(line)
    body = json.loads(body_bytes)
    if not isinstance(body, dict) or not _is_int(body.get("seq")):
        raise ValueError("no integer seq in a JSON object")
    return body_bytes, signature, body, body["seq"]


def _verify_records(store: Store, key: Ed25519PublicKey, report: Report,
                    lines: list[tuple[int, bytes]],
                    before: list[tuple[int, bytes]] | None = None) -> list[dict[str, Any]]:
    """Check `lines`, linked to the one line `before` them. Returns the records that verify
    and have the shape the later checks read: only they are indexed."""
    expected_seq = 1
    prev_hash: str | None = GENESIS_PREV  # None: the line before is unreadable, no link to check
    if before:
        try:
            body_bytes, _, _, seq = _parse(before[0][1])
            expected_seq, prev_hash = seq + 1, record_hash(body_bytes)
        except _UNPARSED:
            expected_seq, prev_hash = before[0][0] + 1, None
    seqs_present = set()
    for _, line in lines:
        with contextlib.suppress(*_UNPARSED):
            seqs_present.add(_parse(line)[3])
    records: list[dict[str, Any]] = []
    retired: int | None = None
    head: dict[str, Any] | None = None
    for number, line in lines:
        where = f"line {number}"
        try:
            body_bytes, signature, body, seq = _parse(line)
        except _UNPARSED as exc:
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
            elif body["type"] == "key_rotation":
                key = _rotated_key(body, where, report, key)
            elif body["type"] == "retirement":
                retired = seq
            signed = not problem
        if seq != expected_seq:
            report.findings.append(_sequence_finding(where, seq, expected_seq, seqs_present))
        elif prev_hash is not None and body.get("prev") != prev_hash:
            report.findings.append(Finding(where, "does not link to the record before it: a "
                                           "record was removed, inserted or reordered",
                                           "reordered"))
        expected_seq, prev_hash = seq + 1, record_hash(body_bytes)
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
    return f"is signed but malformed: {problem}" if problem else None


def _is_int(value: Any) -> bool:
    """An integer a device writes: not a bool, and within 64 bits, so that arithmetic on it
    (durations in floating point) cannot overflow."""
    return type(value) is int and -(1 << 63) <= value < 1 << 63


def _is_positive(value: Any) -> bool:
    return _is_int(value) and value > 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_none(value: Any) -> bool:
    return value is None


_SEALED_NAME = re.compile(r"sealed/[A-Za-z0-9][A-Za-z0-9._-]*")


def _is_sealed_name(value: Any) -> bool:
    """A file directly inside sealed/: a record cannot point the verifier elsewhere."""
    return isinstance(value, str) and _SEALED_NAME.fullmatch(value) is not None


# A shape: a predicate; a dict (an object with at least these keys; {} is any object); a
# one-item list (a list of such items); a tuple (any one of these shapes).
_Shape = Callable[[Any], bool] | dict[str, Any] | list[Any] | tuple[Any, ...]
_RECORD = {"seq": _is_int, "type": _is_str, "prev": _is_str, "payload": {}}
_FILE = {"file": _is_sealed_name, "sha256": _is_str, "size": _is_int}
_STREAM = {"packets": _is_int, "first_pts_us": (_is_none, _is_int),
           "last_pts_us": (_is_none, _is_int)}
_PAYLOADS: dict[str, _Shape] = {
    "segment_sealed": {**_FILE, "recording": _is_int, "index": _is_int,
                       "video": {**_STREAM, "fps": _is_positive},
                       "audio": (_is_none, {**_STREAM, "sample_rate": _is_positive,
                                            "samples_per_packet": _is_positive})},
    "voice_note": {**_FILE, "interruption": (_is_none, _is_int)},
    "exemption": _FILE,
    "custody": {"segments": [{"seq": _is_int, "sha256": _is_str}]},
    "purge": {"files": [{"seq": _is_int, "sha256": _is_str, "file": _is_str}]},
    "record_stop": {"recording": _is_int, "segments": _is_int},
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
            with contextlib.suppress(*_UNPARSED):
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
    return set(name_by_hash.values())


def _verify_continuity(records: list[dict[str, Any]], report: Report) -> None:
    """Within one recording, segment n+1 must begin exactly one frame (or audio packet) on."""
    previous: dict[int, dict[str, Any]] = {}
    starts = {r["seq"] for r in records if r.get("type") == "record_start"}
    report.recordings = len(starts)
    for record in records:
        payload = record.get("payload", {})
        if record.get("type") == "record_stop":
            last = previous.get(payload["recording"])
            count = last["index"] + 1 if last else 0
            if count != payload["segments"]:
                report.findings.append(Finding(
                    f"recording {payload['recording']} (stop record {record['seq']})",
                    f"sealed {payload['segments']} segments but the chain holds {count}",
                    "missing"))
            continue
        if record.get("type") != "segment_sealed":
            continue
        video = payload["video"]
        if None not in (video["first_pts_us"], video["last_pts_us"]):
            report.recorded_us += video["last_pts_us"] - video["first_pts_us"] \
                + 1_000_000 // video["fps"]
        streams = [("video", 1_000_000 / video["fps"])]
        if payload["audio"]:
            audio = payload["audio"]
            streams.append(("audio", audio["samples_per_packet"] * 1e6 / audio["sample_rate"]))
        for stream, step_us in streams:
            _note_missing_inside(report, payload["file"], stream, payload[stream], step_us)
        before = previous.get(payload["recording"])
        previous[payload["recording"]] = payload
        if before is None:
            continue
        where = f"segment {payload['file']} (record {record['seq']})"
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
