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
import os
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.durable import write_file
from agent.evidence.anchor import KeySpan, anchor
from agent.evidence.chain import (
    GENESIS_PREV,
    SEALED_FILE_TYPES,
    has_writer,
    parse_line,
    record_hash,
    whole_lines,
)
from agent.evidence.findings import Finding
from agent.evidence.keys import PUBLIC_NAME, KeyMaterialError, fingerprint, load_public_key
from agent.evidence.lines import Checked, checked_lines, handed_over, workers_for
from agent.evidence.retention import MARKED, custody_problems, purge_problem
from agent.evidence.rules import References
from agent.evidence.store import Store
from agent.evidence.witness import FolderWitnesses, Receipt, Witness, check, in_folder

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


_WINDOW = 4096  # recent record hashes a flat pass keeps: a custody head names a recent one
_STATE_BYTES = 64 << 20  # a saved state is what the pass keeps: far smaller


def verify_store(root: Path, public_key_path: Path | None = None,
                 digests: dict[str, str] | None = None, outside: Outside = Outside(),
                 workers: int | None = None, resume: Path | None = None) -> Report:
    """Everything in the module docstring: `_verify_store`."""
    return _verify_store(root, public_key_path, digests, outside, workers, resume)[0]


@dataclass(frozen=True)
class Copy:
    """What a dock's pull needs of a verification beyond the report: the sealed files no
    purge closed (seq -> file, sha256, size, recording, wall, whether a custody record
    named it and whether one held it as marked), the key in force after the chain, and the
    seq a resumed verification went on from."""

    open_files: dict[int, dict[str, Any]]
    key_in_force: Ed25519PublicKey
    resumed_from: int | None


def verify_copy(root: Path, digests: dict[str, str], resume: Path) -> tuple[Report, Copy]:
    """A dock's copy, verified from where the last verification left off when it can."""
    report, run = _verify_store(root, None, digests, Outside(), None, resume)
    if run is None:
        return report, Copy({}, _load_key(Store(root).keys / PUBLIC_NAME), None)
    return report, Copy(run.open_files(), run.key, run.resumed_from)


def resume_point(root: Path, resume: Path) -> tuple[int, int]:
    """(byte offset, lines) where a verification of the store at `root` would go on from
    the state at `resume` (just after the head it verified), or (0, 0) when it would
    start over."""
    store = Store(root)
    try:
        key = _load_key(store.keys / PUBLIC_NAME)
        listed = {f"sealed/{p.name}" for p in store.sealed.glob("*")} \
            if store.sealed.is_dir() else set()
    except (OSError, KeyMaterialError):
        return 0, 0
    run = _resumed(resume, store, key, {}, listed, set())
    return (run.offset, run.number) if run is not None else (0, 0)


def _verify_store(root: Path, public_key_path: Path | None, digests: dict[str, str] | None,
                  outside: Outside, workers: int | None, resume: Path | None
                  ) -> tuple[Report, _Pass | None]:
    """Everything in the module docstring. `digests` (sha256 by file name, e.g.
    "sealed/00000003.ts") are hashes a caller computed of the very bytes it wrote
    to those files just now, as the dock does while receiving: reading them back
    from the page cache would hash the same bytes twice. `workers`: processes that check
    the lines' signatures and forms (default: as many as cores for a long chain).

    The chain is read once, line by line, keeping only what the checks still need (each
    open recording, each sealed file until a purge closes it, recent hashes, the keys):
    memory does not grow with the chain. A record that names something no longer kept
    (a file already purged, an old record) is rare and never in a chain the device wrote
    as documented; the chain is then read a second time keeping everything.

    On a live store (a daemon holds the chain), a file in sealed/ that no record names
    yet, with a seq beyond the head as read, is being sealed: the chain is read again
    when its record is appended (at most SEAL_WAIT_S) and verified whole as usual. Only
    a file still unaccounted for then is a finding; a store nothing writes (a copy, the
    dock's evidence folder) is never waited for.

    `resume` (the dock's): a file where the pass's state is kept after a verification that
    found nothing, and read back the next time to verify only the lines appended since;
    trusted only when the chain still holds, where it left off, the head it verified, and
    sealed/ the same files up to it (else the chain is verified whole). See
    docs/docking.md, "Incremental verification"."""
    store = Store(root)
    key = _load_key(public_key_path or store.keys / PUBLIC_NAME)
    report = Report(str(root), fingerprint(key))
    if not store.chain.exists():
        report.findings.append(Finding("chain.jsonl", "missing", "missing"))
        return report, None
    # sealed/ is listed before the chain is read: the device renames a file into sealed/
    # and then appends the record naming it, so each file listed either has its record in
    # the chain as read or was being sealed meanwhile (then its seq is beyond the head).
    listed = {f"sealed/{p.name}" for p in store.sealed.glob("*")} if store.sealed.is_dir() \
        else set()
    hashes = dict(digests or {})
    live = False
    try:
        run = _verify_chain(store, key, report, listed, hashes, outside, workers, resume)
        being_sealed = _being_sealed(run.unclaimed, report)
        live = bool(being_sealed) and has_writer(store.chain)
        if live and _await_records(store.chain, run.last_offset, report.head_seq,
                                   max(being_sealed.values()), SEAL_WAIT_S):
            report = Report(str(root), fingerprint(key))  # all again, with what was added
            run = _verify_chain(store, key, report, listed, hashes, outside, workers)
    except OSError as exc:  # a folder where the journal should be, or unreadable
        report.findings.append(Finding("chain.jsonl", f"cannot be read ({exc.strerror})",
                                       "missing"))
        return report, None
    late = _being_sealed(run.unclaimed, report) if live else {}
    for name in sorted(run.unclaimed):
        report.findings.append(Finding(name, "is not in the chain (inserted)" + (
            f": no record names it, and none was sealed within {SEAL_WAIT_S:g} s of "
            "listing it" if name in late else ""), "inserted"))
    for path in sorted(store.open.glob("*")) if store.open.is_dir() else []:
        report.notes.append(f"open/{path.name} is not sealed yet (being written, or left by "
                            "a power cut for recovery)")
    if resume is not None:
        if report.ok and not run.keep_all and not live:
            _save(resume, run, key, listed)
        else:
            resume.unlink(missing_ok=True)
    return report, run


def _verify_chain(store: Store, key: Ed25519PublicKey, report: Report, listed: set[str],
                  hashes: dict[str, str], outside: Outside, workers: int | None,
                  resume: Path | None = None) -> _Pass:
    """One flat pass over the chain into `report` (from a saved state when `resume` holds
    one the chain agrees with); a second from the start keeping everything when the first
    met a reference to what it had let go. `hashes` are the file digests known so far,
    and gain those computed here."""
    held = in_folder(store.root)
    witnessed = _witnessed(held, outside)
    run = _resumed(resume, store, key, hashes, listed, witnessed) if resume else None
    if run is None:
        run = _Pass(store, key, hashes, set(listed), witnessed, keep_all=False)
    run.read(store.chain, workers)
    if run.asked:
        run = _Pass(store, key, hashes, set(listed), witnessed, keep_all=True,
                    present=_seqs(store.chain))
        run.read(store.chain, workers)
    run.finish(report, held, outside)
    return run


_STATE_VERSION = 3  # of the saved state's form: a state of another version is not read


def _save(path: Path, run: _Pass, key: Ed25519PublicKey, listed: set[str]) -> None:
    """The pass's state beside the copy, replaced whole (written, synced, renamed)."""
    state = {"version": _STATE_VERSION, "anchor": fingerprint(key),
             "files": _files_up_to(listed, run.head["seq"] if run.head else 0), **run.state()}
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    data = json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(),
                       "state": state}, sort_keys=True, separators=(",", ":")).encode()
    write_file(path, data, 0o644)


def _resumed(path: Path, store: Store, key: Ed25519PublicKey, digests: dict[str, str],
             listed: set[str], witnessed: set[int]) -> _Pass | None:
    """A pass going on from the state saved at `path`, or None (then the chain is verified
    whole) when there is none, or it is damaged, of another version or key, or disagrees
    with the chain or sealed/ up to the head it verified."""
    try:
        if not path.is_file() or path.stat().st_size > _STATE_BYTES:
            return None
        saved = json.loads(path.read_bytes())
        state = saved["state"]
        body = json.dumps(state, sort_keys=True, separators=(",", ":"))
        if hashlib.sha256(body.encode()).hexdigest() != saved["sha256"] or \
                state["version"] != _STATE_VERSION or state["anchor"] != fingerprint(key):
            return None
        head = int(state["head"]["seq"])
        kept = {int(seq) for seq, _ in state["hashes"]}
        if state["files"] != _files_up_to(listed, head) or \
                any(seq <= head and seq not in kept for seq in witnessed):
            return None  # a file changed in the part verified, or a witness it did not keep
        run = _Pass(store, key, digests, {name for name in listed
                                          if _file_seq(name) is None or
                                          (_file_seq(name) or 0) > head},
                    witnessed, keep_all=False)
        run.restore(state)
        with store.chain.open("rb") as f:
            f.seek(run.last_offset)
            line = f.read(run.offset - run.last_offset)
        body_bytes = parse_line(line.rstrip(b"\n"))[0]
        if not line.endswith(b"\n") or line.count(b"\n") != 1 or \
                record_hash(body_bytes) != state["head"]["hash"]:
            return None  # the chain does not hold, where the state left off, its head
    except (OSError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return None
    run.last_line = line
    run.resumed_from = head
    return run


def _files_up_to(listed: set[str], head: int) -> str:
    """A digest of the names in sealed/ of the files of records up to `head`."""
    names = sorted(name for name in listed if (seq := _file_seq(name)) is not None
                   and seq <= head)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _file_seq(name: str) -> int | None:
    match = _SEALED_SEQ.match(name)
    return int(match.group(1)) if match else None


def _b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)).decode()


def _key(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def _witnessed(held: FolderWitnesses, outside: Outside) -> set[int]:
    """The seqs a witness names: their hashes are kept however old."""
    seqs = {w.seq for w in [*held.witnesses, *outside.heads]}
    for receipt in [*held.receipts, *outside.receipts]:
        seqs.add(receipt.body["seq"])
        head = receipt.body.get("payload", {}).get("head") \
            if isinstance(receipt.body.get("payload"), dict) else None
        if isinstance(head, dict) and type(head.get("seq")) is int:
            seqs.add(head["seq"])
    return seqs


def _seqs(chain: Path) -> set[int]:
    """The seq of every whole record: for telling a reordered record from a missing one."""
    present = set()
    for _, line in whole_lines(chain, complete=False):
        with contextlib.suppress(ValueError):
            present.add(parse_line(line.rstrip(b"\n"))[2]["seq"])
    return present


@dataclass
class _Sealed:
    """A sealed file whose record is read: where reports name it, and what it must be."""

    ordinal: int  # among the sealed files, in chain order: findings are reported so
    seq: int
    where: str
    file: str
    sha256: str
    size: int


class _Pass:
    """The one pass over the records: every check that needs what earlier records said,
    with only the state it needs. Findings are gathered per check and put in the report
    in the order of the checks (`finish`). With `keep_all` nothing is let go (the second
    pass); without it, `asked` says a record named what the pass had let go, and its
    findings are not final."""

    def __init__(self, store: Store, key: Ed25519PublicKey, digests: dict[str, str],
                 unclaimed: set[str], witnessed: set[int], keep_all: bool,
                 present: set[int] | None = None) -> None:
        self.store, self.digests, self.unclaimed = store, digests, unclaimed
        self.witnessed, self.keep_all, self.present = witnessed, keep_all, present or set()
        self.asked = False
        self.key, self.key_fp = key, fingerprint(key)
        self.spans: list[KeySpan] = []
        self.expected = 1
        self.link: str | None = GENESIS_PREV  # None: the line before is unreadable
        self.retired: int | None = None
        self.head: dict[str, Any] | None = None
        self.records = self.number = self.offset = self.last_offset = 0
        self.last_line = b""
        self.hashes: dict[int, str] = {}
        self.recent: deque[int] = deque()
        self.record_findings: list[Finding] = []
        self.rotation_notes: list[str] = []
        self.references = References(self.hashes, keep_all)
        self.held: dict[int, str] = {}    # file seq -> sha256 the last custody named
        self.held_marked: set[int] = set()  # files a custody holds under the marked class
        self.retention_findings: list[Finding] = []
        self.purged: dict[int, str] = {}  # file seq -> sha256 a purge keeping the rule names
        self.purge_findings: list[Finding] = []
        self.sealed_count = self.segments = self.video_frames = self.purged_count = 0
        self.absent: dict[int, list[_Sealed]] = {}  # by seq: not on disk, not yet purged
        self.purge_named: dict[int, str] = {}  # every purge's files (the tail check's excuse)
        self.mismatched: list[tuple[_Sealed, int, str]] = []  # (file, size, digest)
        self.name_by_hash: dict[str, str] = {}
        self.segment_findings: list[tuple[int, Finding]] = []
        self.previous: dict[int, dict[str, Any]] = {}  # recording -> its last segment
        self.totals: dict[int, dict[str, Any]] = {}
        self.stopped: set[int] = set()
        self.recorded_us = 0
        self.continuity_findings: list[Finding] = []
        self.inside_notes: list[str] = []
        self.interruptions: list[tuple[int, str]] = []
        self.marks: list[dict[str, Any]] = []
        self.explained: set[int] = set()
        self.enrollments: list[dict[str, Any]] = []
        self.resumed_from: int | None = None  # the head a saved state went on from

    def open_files(self) -> dict[int, dict[str, Any]]:
        """The sealed files no purge closed, each with whether a custody record named it."""
        return {seq: {**sealed, "custody": seq in self.held,
                      "held_marked": seq in self.held_marked}
                for seq, sealed in self.references.open_files().items()
                if seq not in self.purged}

    def state(self) -> dict[str, Any]:
        """What a later pass needs to go on from the end of this one (JSON): only kept after
        a flat pass that found nothing."""
        return {
            "offset": self.offset, "last_offset": self.last_offset, "number": self.number,
            "expected": self.expected, "link": self.link, "retired": self.retired,
            "head": self.head, "records": self.records, "key": _b64(self.key),
            "spans": [[_b64(span.key), span.fingerprint, span.first, span.last]
                      for span in self.spans],
            "hashes": [[seq, digest] for seq, digest in self.hashes.items()],
            "recent": list(self.recent), "references": self.references.state(),
            "held": [[seq, sha256] for seq, sha256 in self.held.items()],
            "held_marked": sorted(self.held_marked),
            "counts": [self.sealed_count, self.segments, self.video_frames,
                       self.purged_count, self.recorded_us],
            "previous": [[recording, last] for recording, last in self.previous.items()],
            "totals": [[recording, totals] for recording, totals in self.totals.items()],
            "stopped": sorted(self.stopped), "rotation_notes": self.rotation_notes,
            "inside_notes": self.inside_notes, "interruptions": self.interruptions,
            "marks": self.marks,
            "explained": sorted(self.explained), "enrollments": self.enrollments}

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from a `state`; KeyError, TypeError or ValueError if it is not one."""
        self.offset, self.last_offset = int(state["offset"]), int(state["last_offset"])
        self.number, self.expected = int(state["number"]), int(state["expected"])
        self.link, self.retired = str(state["link"]), state["retired"]
        self.head = {"seq": int(state["head"]["seq"]), "hash": str(state["head"]["hash"])}
        self.records = int(state["records"])
        self.key = _key(state["key"])
        self.key_fp = fingerprint(self.key)
        self.spans = [KeySpan(_key(raw), str(fp), int(first), int(last))
                      for raw, fp, first, last in state["spans"]]
        if self.spans and _b64(self.spans[-1].key) == state["key"]:
            self.key = self.spans[-1].key  # the same key goes on signing the same span
        self.hashes.update((int(seq), str(digest)) for seq, digest in state["hashes"])
        self.recent = deque(int(seq) for seq in state["recent"])
        self.references.restore(state["references"])
        self.held = {int(seq): str(sha256) for seq, sha256 in state["held"]}
        self.held_marked = {int(seq) for seq in state["held_marked"]}
        (self.sealed_count, self.segments, self.video_frames, self.purged_count,
         self.recorded_us) = (int(count) for count in state["counts"])
        self.previous = {int(recording): dict(last) for recording, last in state["previous"]}
        self.totals = {int(recording): dict(totals) for recording, totals in state["totals"]}
        self.stopped = {int(recording) for recording in state["stopped"]}
        self.rotation_notes = [str(note) for note in state["rotation_notes"]]
        self.inside_notes = [str(note) for note in state["inside_notes"]]
        self.interruptions = [(int(seq), str(cause)) for seq, cause in state["interruptions"]]
        self.explained = {int(seq) for seq in state["explained"]}
        self.marks = [dict(mark) for mark in state["marks"]]
        self.enrollments = [dict(record) for record in state["enrollments"]]

    def read(self, chain: Path, workers: int | None) -> None:
        """The chain's lines from where the pass stands."""
        size = chain.stat().st_size - self.offset
        count = workers if workers is not None else workers_for(size)
        numbered = ((n, line) for n, (_, line) in
                    enumerate(whole_lines(chain, self.offset, complete=False), self.number + 1))
        for checked, line in checked_lines(numbered, self.key, count):
            self.line(checked, line)

    def line(self, checked: Checked, line: bytes) -> None:
        self.number, self.last_offset = checked.number, self.offset
        self.offset += checked.size
        self.last_line = line
        where = f"line {checked.number}"
        if checked.error is not None:
            self.record_findings.append(Finding(where, f"is not a whole signed record "
                                                f"({checked.kind}): {checked.error}",
                                                checked.kind))
            self.expected += 1
            self.link = None
            return
        seq = checked.seq
        where = f"record {seq} (line {checked.number})"
        if self.retired is not None:
            self.record_findings.append(Finding(where, f"was signed after the device was "
                                                f"retired by record {self.retired}",
                                                "inserted"))
        body = None
        if not checked.signed:
            self.record_findings.append(Finding(where, "signature does not verify: the "
                                                "record was changed or forged", "changed"))
        elif checked.problem:
            self.record_findings.append(Finding(where, checked.problem, "changed"))
        else:
            body = json.loads(line)
            del body["sig"]
            _signed_by(self.spans, self.key, self.key_fp, seq)
            if checked.named is not None:
                self.record_findings.append(Finding(where, checked.named, "changed"))
            if body["type"] == "key_rotation":
                self.key = _rotated_key(body, where, self.rotation_notes,
                                        self.record_findings, self.key)
                self.key_fp = fingerprint(self.key)
            elif body["type"] == "retirement":
                self.retired = seq
        if seq != self.expected:
            if not self.keep_all:
                self.asked = True  # reordered, missing or inserted: all the seqs tell
            self.record_findings.append(_sequence_finding(where, seq, self.expected,
                                                          self.present))
        elif self.link is not None and checked.prev != self.link:
            self.record_findings.append(Finding(where, "does not link to the record before "
                                                "it: a record was removed, inserted or "
                                                "reordered", "reordered"))
        self.expected, self.link = seq + 1, checked.hash
        self._remember(seq, checked.hash)
        self.head = {"seq": seq, "hash": checked.hash}
        if body is not None:
            self.records += 1
            self._take(body)

    def _remember(self, seq: int, digest: str) -> None:
        """The record's hash, for custody heads and witnesses: the first record with a seq
        keeps it; a flat pass keeps the recent ones and those a witness names."""
        if seq in self.hashes:
            return
        self.hashes[seq] = digest
        if self.keep_all or seq in self.witnessed:
            return
        self.recent.append(seq)
        if len(self.recent) > _WINDOW:
            self.hashes.pop(self.recent.popleft(), None)

    def _take(self, record: dict[str, Any]) -> None:
        """An indexed record (signed, well formed), through each check in turn."""
        self.references.take(record)
        kind, payload = record["type"], record["payload"]
        if kind == "custody":
            self._custody(record)
            self.held.update((item["seq"], item["sha256"]) for item in payload["segments"])
            self.held_marked.update(item["seq"] for item in payload["segments"]
                                    if item.get("retention") == MARKED)
        elif kind == "purge":
            self._purge(record)
        elif kind == "enrollment":
            self.enrollments.append(record)
        elif kind == "interruption":
            self.interruptions.append((record["seq"], payload["cause"]))
        elif kind == "mark":
            self.marks.append({"seq": record["seq"], "wall": record["wall"],
                               "recording": payload["recording"], "source": payload["source"]})
        if (explained := explained_interruption(record)) is not None:
            self.explained.add(explained)
        if kind in SEALED_FILE_TYPES:
            self._sealed_file(record)
        if kind in ("segment_sealed", "record_stop"):
            self._continuity(record)
        self.asked = self.asked or self.references.asked

    def _custody(self, record: dict[str, Any]) -> None:
        """What the custody record says of each file's retention, against the class the
        chain gives it now, when the custody is sealed (retention.py)."""
        self.retention_findings += [
            Finding(f"custody record {record['seq']}", problem, "retention")
            for problem in custody_problems(record["payload"], self.references.open_files(),
                                            self._marked())]

    def _marked(self) -> dict[int, int]:
        """The recordings marked so far, each with the seq of its first mark."""
        marked: dict[int, int] = {}
        for mark in self.marks:
            marked.setdefault(mark["recording"], mark["seq"])
        return marked

    def _purge(self, record: dict[str, Any]) -> None:
        """Art. 21: a file may be purged only after a custody record named it with the same
        hash; only such a purge excuses a missing file, and closes it."""
        marked = self._marked()
        for item in record["payload"]["files"]:
            seq, sha256 = item["seq"], item["sha256"]
            if self.keep_all:
                self.purge_named[seq] = sha256
            if self.held.get(seq) != sha256:
                if seq not in self.held and not self.keep_all:
                    self.asked = True  # let go by an earlier purge, or never held
                self.purge_findings.append(Finding(
                    f"purge record {record['seq']}", f"deletes {item['file']} (seq "
                    f"{seq}), which no earlier custody record holds with that "
                    "hash (deleted without custody)", "missing"))
                continue
            problem = purge_problem(item, self.references.open_files().get(seq), marked,
                                    seq in self.held_marked)
            if problem:
                self.purge_findings.append(Finding(f"purge record {record['seq']}", problem,
                                                   "retention"))
            self.purged[seq] = sha256
            if self.keep_all:
                continue
            waiting = self.absent.pop(seq, [])
            if any(sealed.sha256 != sha256 for sealed in waiting):
                self.asked = True
            self.purged_count += len(waiting)  # gone after custody, as the purge says
            del self.held[seq], self.purged[seq]
            self.held_marked.discard(seq)
            self.references.release(seq)

    def _sealed_file(self, record: dict[str, Any]) -> None:
        """Each sealed file against its record: one not on disk waits for a purge."""
        payload, seq = record["payload"], record["seq"]
        name = payload["file"]
        if record["type"] == "segment_sealed":
            self.segments += 1
            self.video_frames += payload["video"]["packets"]
            where = f"segment {name} (record {seq})"
        else:
            where = f"{SEALED_FILE_TYPES[record['type']]} {name} (record {seq})"
        sealed = _Sealed(self.sealed_count, seq, where, name, payload["sha256"],
                         payload["size"])
        self.sealed_count += 1
        self.unclaimed.discard(name)
        if self.keep_all:
            self.name_by_hash[sealed.sha256] = name
        if not os.path.isfile(f"{self.store.root}/{name}"):  # a Path per record costs more
            self.absent.setdefault(seq, []).append(sealed)
            return
        path = self.store.root / name
        try:
            size, digest = path.stat().st_size, self.digests.get(name) or _sha256(path)
            self.digests[name] = digest
        except OSError as exc:
            self.segment_findings.append((sealed.ordinal, Finding(
                where, f"cannot be read ({exc.strerror})", "missing")))
            return
        if digest != sealed.sha256 or size != sealed.size:
            self.mismatched.append((sealed, size, digest))
            self.asked = self.asked or not self.keep_all  # swapped? all the hashes tell

    def _continuity(self, record: dict[str, Any]) -> None:
        """Within one recording, segment n+1 must begin exactly one frame (or audio packet)
        on, and the stop's counts are those of its segments; a stop closes the recording."""
        payload = record["payload"]
        recording = payload["recording"]
        if recording in self.stopped:
            self.asked = True  # named after its stop: what the pass let go is wanted
        if record["type"] == "record_stop":
            _verify_totals(record, self.totals.get(recording, _no_segments()),
                           self.continuity_findings)
            if not self.keep_all:
                self.previous.pop(recording, None)
                self.totals.pop(recording, None)
                self.stopped.add(recording)
            return
        video, audio = payload["video"], payload["audio"]
        streams = [("video", 1_000_000 / video["fps"])]
        if audio:
            streams.append(("audio", audio["samples_per_packet"] * 1e6 / audio["sample_rate"]))
        # The time recorded, by the video (by the sound, in a sound-only recording's segment).
        for stream, step_us in streams:
            span = payload[stream]
            if None not in (span["first_pts_us"], span["last_pts_us"]):
                self.recorded_us += span["last_pts_us"] - span["first_pts_us"] + int(step_us)
                break
        for stream, step_us in streams:
            _note_missing_inside(self.inside_notes, payload["file"], stream, payload[stream],
                                 step_us)
        before = self.previous.get(recording)
        self.previous[recording] = {name: payload[name]
                                    for name in ("index", "file", "video", "audio")}
        _add_to_totals(self.totals.setdefault(recording, _no_segments()), payload)
        where = f"segment {payload['file']} (record {record['seq']})"
        if before is None:
            if payload["index"] != 0:
                self.continuity_findings.append(Finding(
                    where, f"is segment {payload['index']} of recording {recording}, whose "
                    "first segment is not in the chain", "missing"))
            return
        if payload["index"] != before["index"] + 1:
            self.continuity_findings.append(Finding(
                where, f"is segment {payload['index']} of recording {recording} after "
                f"segment {before['index']}", "missing"))
            return
        for stream, step_us in streams:
            if before[stream] is None:  # audio began in this segment: nothing to run on from
                continue
            finding = _continuity(where, stream, before[stream], payload[stream], step_us,
                                  before["file"])
            if finding:
                self.continuity_findings.append(finding)

    def finish(self, report: Report, held: FolderWitnesses, outside: Outside) -> None:
        """The checks that need the whole chain read, and the report in the checks' order."""
        report.records, report.head = self.records, self.head
        report.findings += self.record_findings
        report.notes += self.rotation_notes
        self._ending(report)
        report.findings += self.references.findings
        report.findings += self.retention_findings
        report.findings += held.findings
        if held.manifest is not None and self.spans and \
                held.manifest.get("key_fingerprint") != self.spans[0].fingerprint:
            report.findings.append(Finding(
                "manifest.json", f"the dock pulled the chain signed by key "
                f"{str(held.manifest.get('key_fingerprint'))[:16]}…, but it verifies with "
                f"key {self.spans[0].fingerprint[:16]}…: the key was replaced", "changed"))
        findings, report.witnessed_by = check(
            [*held.receipts, *outside.receipts], [*held.witnesses, *outside.heads],
            self.hashes, report.head_seq, [span.key for span in self.spans], held.dock_copy)
        report.findings += findings
        if not report.witnessed_by:
            report.notes.append("no outside witness of the chain head (no custody receipt, "
                                "no dock manifest, no --head or --receipt): records removed "
                                "from the end of the chain, with their files, would not show")
        if outside.ca:
            findings, notes = anchor(self.spans, self.enrollments, list(outside.ca),
                                     outside.ca_name)
            report.findings += findings
            report.notes += notes
            if not findings:
                report.certified_by = outside.ca_name
        report.findings += self.purge_findings
        report.findings += self._file_findings(report)
        report.findings += self.continuity_findings
        report.recordings = len(self.references.starts)
        report.recorded_us = self.recorded_us
        report.marks = self.marks
        report.notes += self.inside_notes
        for seq, cause in self.interruptions:
            if seq not in self.explained:  # Art. 16: each wants the officer's explanation
                report.notes.append(f"interruption record {seq} ({cause}) is unexplained: "
                                    "no voice note with speech was sealed for it")

    def _ending(self, report: Report) -> None:
        """Every line ends in a newline: a last line without one is torn, whole or not (the
        daemon cuts it at its next start), even when it holds a whole record."""
        if not self.number or self.last_line.endswith(b"\n"):
            return
        with contextlib.suppress(ValueError):
            seq = parse_line(self.last_line)[2]["seq"]
            report.findings.append(Finding(f"record {seq} (line {self.number})", "has no "
                                           "newline at its end: the last line is torn (the "
                                           "daemon would cut it at its next start)",
                                           "truncated"))

    def _file_findings(self, report: Report) -> list[Finding]:
        """The sealed files' findings, in chain order."""
        found = list(self.segment_findings)
        for sealed in (sealed for waiting in self.absent.values() for sealed in waiting):
            if self.purged.get(sealed.seq) == sealed.sha256:
                self.purged_count += 1  # gone after custody, as a purge record says
            else:
                found.append((sealed.ordinal, Finding(sealed.where, "is missing (deleted)",
                                                      "missing")))
        for sealed, size, digest in self.mismatched:
            found.append((sealed.ordinal, _file_finding(sealed, size, digest,
                                                        self.name_by_hash)))
        report.segments, report.video_frames = self.segments, self.video_frames
        report.purged = self.purged_count
        return [finding for _, finding in sorted(found, key=lambda item: item[0])]


def _file_finding(sealed: _Sealed, size: int, digest: str,
                  name_by_hash: dict[str, str]) -> Finding:
    """What is wrong with a sealed file whose size or hash is not its record's."""
    if name_by_hash.get(digest, sealed.file) != sealed.file:
        return Finding(sealed.where, f"holds the bytes sealed as {name_by_hash[digest]}: "
                       "segments were swapped or renamed (reordered)", "reordered")
    if size != sealed.size:
        kind = "truncated" if size < sealed.size else "changed"
        return Finding(sealed.where, f"is {size} bytes, sealed as {sealed.size} ({kind})", kind)
    return Finding(sealed.where, "SHA-256 differs from the sealed hash (changed)", "changed")


def _being_sealed(names: set[str], report: Report) -> dict[str, int]:
    """Of files no record names, those named by a seq beyond the chain's head as read: on
    a live store, the seal in progress of the next record (seq -> name's seq)."""
    return {name: int(match.group(1)) for name in names
            if (match := _SEALED_SEQ.match(name)) and int(match.group(1)) > report.head_seq}


def _await_records(chain: Path, offset: int, head: int, until: int, wait_s: float) -> bool:
    """Whether records after seq `head` were appended after the line read last (at
    `offset`), waiting at most `wait_s` for one with seq `until` or later: a seal is a
    rename, two directory syncs, a signature and a write with its sync. The last line read
    is read again: it may have been caught half written."""
    deadline = time.monotonic() + wait_s
    while True:
        seqs = [0]
        for _, line in whole_lines(chain, offset):
            with contextlib.suppress(ValueError):
                seqs.append(parse_line(line.rstrip(b"\n"))[2]["seq"])
        if max(seqs) >= until or time.monotonic() >= deadline:
            return max(seqs) > head
        time.sleep(_SEAL_POLL_S)


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
    them, if any) and so do their segments (a file a purge in the tail names may be gone).
    `rotations` are the key_rotation lines before the tail, which say what key signs it.
    The caller finds them without reading the whole journal (the device's chain index)."""
    store = Store(root)
    report = Report(str(root), "")
    if not tail:
        return report
    key = _load_key(public_key_path or store.keys / PUBLIC_NAME)
    report.key_fingerprint = fingerprint(key)
    key = _key_in_force([line for line in rotations if line[0] < tail[0][0]], key)
    run = _Pass(store, key, {}, set(), set(), keep_all=True,
                present={seq for _, line in tail if (seq := _seq(line)) is not None})
    if before:
        seq = _seq(before[0][1])
        if seq is None:
            run.expected, run.link = before[0][0] + 1, None
        else:
            run.expected, run.link = seq + 1, record_hash(parse_line(before[0][1])[0])
    for checked, line in checked_lines(tail, key, 0):
        run.line(checked, line + b"\n")
    run.purged = run.purge_named  # the tail's purges excuse its files: custody may lie before
    report.records, report.head = run.records, run.head
    report.findings += run.record_findings + run._file_findings(report)
    return report


def _seq(line: bytes) -> int | None:
    try:
        return int(parse_line(line)[2]["seq"])
    except ValueError:
        return None


def _signed_by(spans: list[KeySpan], key: Ed25519PublicKey, key_fp: str, seq: int) -> None:
    """Record `seq` verified with `key`: the last span grows, or a new key's span begins."""
    if spans and spans[-1].key is key:
        spans[-1].last = seq
    else:
        spans.append(KeySpan(key, key_fp, seq, seq))


def _rotated_key(body: dict[str, Any], where: str, notes: list[str], findings: list[Finding],
                 old: Ed25519PublicKey) -> Ed25519PublicKey:
    """The key a verified key_rotation record hands over to: it signs what follows."""
    payload = body["payload"]
    key = handed_over(body)
    if key is None:
        findings.append(Finding(where, "names a new key that is not an Ed25519 public key: "
                                "the old key stays in force", "changed"))
        return old
    if fingerprint(key) != payload["new_fingerprint"]:
        findings.append(Finding(where, "names a new key whose fingerprint does not match it",
                                "changed"))
    notes.append(f"{where}: the signing key was rotated to {fingerprint(key)[:16]}… "
                 f"({payload.get('reason') or 'no reason given'})")
    return key


def _key_in_force(lines: list[tuple[int, bytes]], anchor: Ed25519PublicKey) -> Ed25519PublicKey:
    """The key signing after `lines`, following their rotations without re-verifying them:
    the quick tail check's starting point."""
    key = anchor
    for _, line in lines:
        if b'"type":"key_rotation"' in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):  # any shape
                payload = parse_line(line)[2]["payload"]
                key = Ed25519PublicKey.from_public_bytes(
                    base64.b64decode(payload["new_public_key"]))
    return key


def explained_interruption(record: dict[str, Any]) -> int | None:
    """The seq of the interruption a record explains: a voice note in which speech was heard."""
    if record.get("type") == "voice_note" and record["payload"].get("explained"):
        seq = record["payload"].get("interruption")
        return seq if isinstance(seq, int) else None
    return None


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


def _no_segments() -> dict[str, Any]:
    return {"segments": 0, "video_frames": 0, "audio_packets": 0, "last_segment": None}


def _add_to_totals(totals: dict[str, Any], payload: dict[str, Any]) -> None:
    totals["segments"] += 1
    totals["video_frames"] += payload["video"]["packets"]
    totals["audio_packets"] += payload["audio"]["packets"] if payload["audio"] else 0
    totals["last_segment"] = payload["file"]


def _verify_totals(stop: dict[str, Any], totals: dict[str, Any],
                   findings: list[Finding]) -> None:
    """A record_stop's counts are those of the recording's segments in the chain (a
    recovered recording's stop names no last segment)."""
    payload = stop["payload"]
    where = f"recording {payload['recording']} (stop record {stop['seq']})"
    if payload["segments"] != totals["segments"]:
        findings.append(Finding(where, f"sealed {payload['segments']} segments but the chain "
                                f"holds {totals['segments']}", "missing"))
        return
    for name in ("video_frames", "audio_packets", "last_segment"):
        if name in payload and payload[name] != totals[name]:
            findings.append(Finding(where, f"gives {name} {str(payload[name])[:80]}, but the "
                                    f"chain's segments add up to {totals[name]}", "changed"))


def _note_missing_inside(notes: list[str], file: str, stream: str, span: dict[str, Any],
                         step_us: float) -> None:
    """Packets the camera never delivered inside a segment: sealed as received, so a note.

    The recorder writes every packet it is given; a shortfall here happened before it
    (a sensor or encoder drop) and is worth an investigator's attention, not a failure.
    """
    if None in (span["first_pts_us"], span["last_pts_us"]):
        return
    expected = round((span["last_pts_us"] - span["first_pts_us"]) / step_us) + 1
    if span["packets"] < expected:
        notes.append(f"{file}: {stream} has {span['packets']} packets over a span of "
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
