"""Custody: which sealed files a dock holds, checked against the chain, and sealed.

The `Ledger` answers what docking needs from the chain index (agent/device/chain_index.py),
which reads the chain as it grows: every sealed file (segment or voice note) with its
hash, which are under custody and by which record, which were purged, and the officer
now assigned, without holding the history. A custody
report is accepted only whole: every claim must match the chain, the report must
be fresh (a nonce the device handed that very dock, a report id never used, a head
not older than the last custody), complete (every sealed file up to its head not
yet in custody) and proven: for each file it takes into custody, a proof of
possession (`agent.evidence.possession`) that the device recomputes from its own
copy, since the hashes alone are public. A claim may say the retention class the dock
keeps the file under (agent/evidence/retention.py), which must be the chain's; the
device lets a `marked` file go only after a custody that holds it as `marked`. Then one
`custody` record is sealed, and its signed line is the receipt.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from agent.config import RetentionConfig
from agent.device.chain_index import ChainIndex
from agent.evidence.chain import Chain, parse_line, record_hash
from agent.evidence.possession import digest_file, new_proof
from agent.evidence.retention import MARKED, STANDARD, archive_problems, file_class

NONCE_TTL_S = 600.0
NONCES_PER_DOCK = 8     # a dock's own oldest goes when it asks for more
MAX_DOCKS = 64          # certificates holding nonces, or held off, at once
BACKOFF_FIRST_S = 2.0   # a dock's reports refused this long after its first wrong proof...
BACKOFF_MAX_S = 600.0   # ...twice as long after each further one, up to this

K = TypeVar("K")
V = TypeVar("V")
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Seq = Annotated[int, Field(ge=1, le=2**53)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Head(StrictModel):
    seq: Seq
    hash: Hex64


class Claim(StrictModel):
    """One file the dock holds; `proof` (HMAC-SHA256 under the report's nonce, over the
    file's bytes) is required for every file the report takes into custody. `retention`:
    the class the dock keeps it under, if it says; a file already in custody may be
    listed again to hold it as `marked` (a mark that came after its custody)."""

    seq: Seq
    sha256: Hex64
    proof: Hex64 | None = None
    retention: Literal["standard", "marked"] | None = None


class ArchivedObject(StrictModel):
    """One object version the dock wrote and read back: a sealed file (`seq`) or a slice of
    the chain (no `seq`)."""

    key: Annotated[str, Field(min_length=1, max_length=256)]
    version_id: Annotated[str, Field(min_length=1, max_length=128)]
    retain_until: Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$")]
    seq: Seq | None = None


class ArchiveClaim(StrictModel):
    """Where the dock archived what it reports: the device keeps it in the custody record."""

    endpoint: Annotated[str, Field(min_length=1, max_length=256)]
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    objects: Annotated[list[ArchivedObject], Field(max_length=1_000_000)]


class CustodyReport(StrictModel):
    """What a dock says it holds; its own identity comes from its certificate, not from here.
    `archive`, when the dock archives: every file the report takes must be named there."""

    report_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{8,64}$")]
    nonce: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
    operator: Annotated[str, Field(min_length=1, max_length=64)]
    head: Head
    segments: Annotated[list[Claim], Field(max_length=1_000_000)]
    archive: ArchiveClaim | None = None


@dataclass(frozen=True)
class DockIdentity:
    """The dock as its client certificate names it."""

    name: str
    certificate_sha256: str

    def as_record(self) -> dict[str, str]:
        return {"name": self.name, "certificate_sha256": self.certificate_sha256}


@dataclass(frozen=True)
class SealedFile:
    """A sealed file as the index knows it; as a purge candidate, with its retention class
    and the custody record that lets it go."""

    seq: int
    file: str
    sha256: str
    size: int
    wall: str
    recording: int | None = None
    retention: str = STANDARD
    custody: int | None = None

    def as_record(self) -> dict[str, Any]:
        return {"seq": self.seq, "file": self.file, "sha256": self.sha256, "size": self.size}

    @property
    def sealed_at(self) -> datetime:
        return datetime.strptime(self.wall, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class CustodyRefused(Exception):
    """A report the device will not acknowledge; `status` is the HTTP status that says why,
    `retry_after` (s) when the dock may try again only later, `quiet` when it was already
    logged in this window."""

    def __init__(self, status: int, message: str, retry_after: float | None = None,
                 quiet: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.quiet = quiet


class WrongProof(CustodyRefused):
    """A proof of possession that is not the device's copy's: it cost the device a read."""

    def __init__(self, message: str) -> None:
        super().__init__(422, message)


class Lookup(Generic[K, V]):
    """Looked up in the chain index one key at a time: what the ledger held as a dict of the
    whole chain, without holding it."""

    def __init__(self, find: Callable[[K], V | None]) -> None:
        self._find = find

    def get(self, key: K) -> V | None:
        return self._find(key)

    def __getitem__(self, key: K) -> V:
        found = self._find(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: K) -> bool:
        return self._find(key) is not None


class Ledger:
    """What the chain says about sealed files, custody, purges and the officer, kept current
    by the chain index (`refresh` reads only what the chain added)."""

    def __init__(self, index: ChainIndex) -> None:
        self._index = index
        self.lock = index.lock
        self.hashes: Lookup[int, str] = Lookup(self._hash)
        self.files: Lookup[int, SealedFile] = Lookup(self._file)
        self.custody: Lookup[int, int] = Lookup(index.custody_of)  # file seq -> custody seq
        self.custody_lines: Lookup[int, bytes] = Lookup(self._custody_line)
        self.purged: Lookup[int, bool] = Lookup(lambda seq: index.purged(seq) or None)
        self.report_ids: Lookup[str, bool] = Lookup(lambda rid: index.report_used(rid) or None)
        # Read without the lock: the chain asks for it under its own lock at every append.
        self.officer: str | None = index.meta("officer")  # from the last officer_assigned
        self._officer_seq: int = index.meta("officer_seq")

    @property
    def custody_head(self) -> int:
        return int(self._index.meta("custody_head"))

    def refresh(self) -> Ledger:
        """Take the records appended since the last call into the index."""
        with self.lock:
            self._index.catch_up()
            if self._index.meta("officer_seq") > self._officer_seq:
                self.officer = self._index.meta("officer")
                self._officer_seq = self._index.meta("officer_seq")
            return self

    def outstanding(self) -> list[SealedFile]:
        """Sealed files on the device that no dock has taken custody of yet, oldest first."""
        return [SealedFile(*row) for row in self._index.outstanding()]

    def outstanding_count(self) -> int:
        return self._index.outstanding_count()

    def oldest_outstanding(self) -> SealedFile | None:
        rows = self._index.outstanding(limit=1)
        return SealedFile(*rows[0]) if rows else None

    def retention(self, sealed: SealedFile) -> str:
        """The file's retention class, from the marks in the chain now."""
        return file_class(sealed.recording, self._index.marked())

    def purgeable(self) -> list[SealedFile]:
        """Sealed files under custody and not yet purged, oldest first, each with the custody
        record that lets it go: for a `marked` file only one that holds it as `marked` (a
        custody without the class, or as `standard`, leaves it on the device)."""
        marked = self._index.marked()
        files = []
        for seq, file, sha256, size, wall, recording, custody, marked_custody in \
                self._index.purgeable():
            retention = file_class(recording, marked)
            covering = marked_custody if retention == MARKED else custody
            if covering is not None:
                files.append(SealedFile(seq, file, sha256, size, wall, recording, retention,
                                        covering))
        return files

    def custody_confirmed(self, files: list[SealedFile]) -> list[SealedFile]:
        """Those of `files` that the custody record named for each really holds, with the
        same hash (and, for a `marked` file, as `marked`), read from the signed chain itself:
        a purge cannot be undone, so it rests on the chain, never on the index alone."""
        held: dict[int, dict[tuple[int, str], str | None]] = {}
        confirmed = []
        for sealed in files:
            custody = sealed.custody
            if custody is None:
                continue
            if custody not in held:
                record = self._record(custody)
                held[custody] = {} if record is None or record["type"] != "custody" else {
                    (item["seq"], item["sha256"]): item.get("retention")
                    for item in record["payload"]["segments"]}
            if (sealed.seq, sealed.sha256) not in held[custody]:
                continue
            if sealed.retention != MARKED or held[custody][sealed.seq, sealed.sha256] == MARKED:
                confirmed.append(sealed)
        return confirmed

    def _read(self, seq: int) -> tuple[bytes, bytes, dict[str, Any]] | None:
        """(line, signed bytes, body) of record `seq` as the chain holds it: found on line
        `seq`, and checked to be that record."""
        for _, line in self._index.read_lines([seq]):
            try:
                body_bytes, _, body = parse_line(line)
            except ValueError:
                return None
            if body["seq"] == seq:
                return line, body_bytes, body
        return None

    def _record(self, seq: int) -> dict[str, Any] | None:
        found = self._read(seq)
        return None if found is None else found[2]

    def _hash(self, seq: int) -> str | None:
        found = self._read(seq)
        return None if found is None else record_hash(found[1])

    def _file(self, seq: int) -> SealedFile | None:
        row = self._index.sealed_file(seq)
        return None if row is None else SealedFile(*row)

    def _custody_line(self, seq: int) -> bytes | None:
        """The signed journal line of custody record `seq`: the receipt a dock keeps."""
        found = self._read(seq)
        return found[0] + b"\n" if found and found[2].get("type") == "custody" else None


class Nonces:
    """One-time values, each handed to one dock certificate and spendable by it alone. Each
    dock has its own slots: asking for more evicts only that dock's oldest, never another
    dock's, and every nonce expires after NONCE_TTL_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docks: dict[str, dict[str, float]] = {}  # certificate sha256 -> nonce -> expiry

    def issue(self, dock: str) -> str:
        now = time.monotonic()
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            self._docks = {d: live for d, held in self._docks.items()
                           if (live := {n: t for n, t in held.items() if t > now})}
            if dock not in self._docks and len(self._docks) >= MAX_DOCKS:
                del self._docks[min(self._docks, key=lambda d: max(self._docks[d].values()))]
            held = self._docks.setdefault(dock, {})
            while len(held) >= NONCES_PER_DOCK:
                held.pop(next(iter(held)))
            held[nonce] = now + NONCE_TTL_S
        return nonce

    def spend(self, nonce: str, dock: str) -> bool:
        """Whether `dock` was handed `nonce` and it is still live; spent either way, but
        only from `dock`'s own slots: another dock cannot burn it."""
        with self._lock:
            expiry = self._docks.get(dock, {}).pop(nonce, None)
        return expiry is not None and expiry > time.monotonic()


@dataclass
class _HeldOff:
    failures: int
    until: float        # monotonic time the dock may report again
    told: bool = False  # a refusal in this window was logged


class ProofBackoff:
    """Each wrong proof costs the device a read of a sealed file while it records; a dock
    (a stolen certificate, or a buggy client) could send one after another. After a wrong
    proof its certificate's reports are refused (429) for BACKOFF_FIRST_S, twice as long
    after each further one up to BACKOFF_MAX_S, before any file is read; a good report
    clears it. At most MAX_DOCKS certificates are held off at once (a new one displaces the
    one whose window ends first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docks: dict[str, _HeldOff] = {}  # certificate sha256 ->

    def check(self, dock: DockIdentity) -> None:
        """CustodyRefused (429, with the seconds left) while `dock` is held off; only the
        first refusal of a window is to be logged."""
        with self._lock:
            held = self._docks.get(dock.certificate_sha256)
            left = held.until - time.monotonic() if held else 0.0
            if held is None or left <= 0:
                return
            quiet, held.told = held.told, True
        raise CustodyRefused(429, f"dock {dock.name} (certificate sha256 "
                             f"{dock.certificate_sha256}) sent a wrong proof of possession "
                             f"({held.failures} in a row): its custody reports are refused for "
                             f"{math.ceil(left)} s more, without reading any file", left, quiet)

    def failed(self, dock: DockIdentity) -> None:
        now = time.monotonic()
        with self._lock:
            held = self._docks.pop(dock.certificate_sha256, None)
            failures = held.failures + 1 if held else 1
            if len(self._docks) >= MAX_DOCKS:
                del self._docks[min(self._docks, key=lambda d: self._docks[d].until)]
            self._docks[dock.certificate_sha256] = _HeldOff(failures, now + min(
                BACKOFF_FIRST_S * 2 ** min(failures - 1, 32), BACKOFF_MAX_S))

    def passed(self, dock: DockIdentity) -> None:
        with self._lock:
            self._docks.pop(dock.certificate_sha256, None)


def check_report(ledger: Ledger, report: CustodyReport,
                 retention_days: dict[str, int]) -> list[SealedFile]:
    """The sealed files the report takes into custody; CustodyRefused names the first problem.
    `retention_days`: the agency's days of each class, which the custody record will carry."""
    head = report.head
    if ledger.hashes.get(head.seq) != head.hash:
        raise CustodyRefused(409, f"head seq {head.seq} hash {head.hash} is not this device's "
                             "record: the dock verified another chain")
    if report.report_id in ledger.report_ids:
        raise CustodyRefused(409, f"report_id {report.report_id} was already used (replay)")
    if head.seq < ledger.custody_head:
        raise CustodyRefused(409, f"head seq {head.seq} is older than the last custody "
                             f"report's head seq {ledger.custody_head} (replay)")
    taken: dict[int, SealedFile] = {}
    for claim in report.segments:
        sealed = ledger.files.get(claim.seq)
        if sealed is None or claim.seq > head.seq:
            raise CustodyRefused(422, f"segment seq {claim.seq} is not a sealed file of this "
                                 f"chain up to seq {head.seq} (unknown segment)")
        if claim.sha256 != sealed.sha256:
            raise CustodyRefused(422, f"segment seq {claim.seq} ({sealed.file}): sha256 "
                                 f"{claim.sha256} differs from the sealed {sealed.sha256}")
        if claim.seq in taken:
            raise CustodyRefused(422, f"segment seq {claim.seq} is listed twice")
        if claim.proof is None and claim.seq not in ledger.custody:
            raise CustodyRefused(422, f"segment seq {claim.seq} ({sealed.file}): no proof of "
                                 "possession; a file is taken into custody only with one")
        if claim.retention is not None and claim.retention != ledger.retention(sealed):
            raise CustodyRefused(422, f"segment seq {claim.seq} ({sealed.file}): retention "
                                 f"{claim.retention!r}, but the chain gives it "
                                 f"{ledger.retention(sealed)!r}")
        taken[claim.seq] = sealed
    if report.archive is not None:
        _check_archive(report.archive, report.segments, taken, ledger, retention_days)
    missing = [f.file for f in ledger.outstanding() if f.seq <= head.seq and f.seq not in taken]
    if missing:
        raise CustodyRefused(422, f"partial report: {len(missing)} sealed file(s) up to seq "
                             f"{head.seq} not listed, first {missing[0]}")
    return [taken[seq] for seq in sorted(taken)]


def _check_archive(archive: ArchiveClaim, claims: list[Claim], taken: dict[int, SealedFile],
                   ledger: Ledger, retention_days: dict[str, int]) -> None:
    """An archive names only files of the report, and every file the report takes, each
    retained for the days of the class the report holds it under (retention.py: what the
    verifier holds the custody record to)."""
    named = [item.seq for item in archive.objects if item.seq is not None]
    stray = sorted(set(named) - set(taken))
    if stray:
        raise CustodyRefused(422, f"archive names seq {stray[0]}, which the report does not "
                             "list")
    unnamed = [f.file for seq, f in sorted(taken.items())
               if seq not in named and seq not in ledger.custody]
    if unnamed:
        raise CustodyRefused(422, f"archive names no object for {unnamed[0]}, which the "
                             "report takes into custody")
    held = {claim.seq: claim.retention or STANDARD for claim in claims}
    short = archive_problems(
        {"retention_days": retention_days, "archive": archive.model_dump()},
        {seq: {"file": f.file, "recording": f.recording, "wall": f.wall}
         for seq, f in taken.items()}, held)
    if short:
        raise CustodyRefused(422, f"archive: {short[0]}")


def check_proofs(root: Path, nonce: str, claims: Iterable[tuple[SealedFile, str]]) -> None:
    """Recompute each proof from the device's own copy, smallest file first, and stop at the
    first that differs: a report without the bytes costs the device its smallest file's
    read, not all of them."""
    for sealed, proof in sorted(claims, key=lambda claim: (claim[0].size, claim[0].seq)):
        expected = new_proof(nonce)
        try:
            digest_file(root / sealed.file, expected)
        except OSError as exc:
            raise CustodyRefused(409, f"segment seq {sealed.seq} ({sealed.file}): the "
                                 f"device cannot read its copy to check the proof: "
                                 f"{exc.strerror}") from exc
        if not hmac.compare_digest(expected.hexdigest(), proof):
            raise WrongProof(f"segment seq {sealed.seq} ({sealed.file}): proof {proof} is "
                             "not HMAC-SHA256 of this file's bytes under the report's nonce: "
                             "the dock does not hold the sealed bytes")


class CustodyDesk:
    """Where custody reports are taken: the nonces, and one report's proofs checked at a
    time (a proof is a read of every file it covers; two at once would only compete for
    the storage the recorder writes to)."""

    def __init__(self, chain: Chain, ledger: Ledger, root: Path,
                 retention: RetentionConfig) -> None:
        self._chain = chain
        self._ledger = ledger
        self._root = root
        self._retention = retention
        self._proving = threading.Lock()
        self.nonces = Nonces()
        self.backoff = ProofBackoff()

    def take(self, report: CustodyReport, dock: DockIdentity) -> bytes:
        """Check, prove and seal one report; returns the custody record's signed line (the
        receipt). The proofs are read outside the ledger's lock: the daemon's export alarm
        and purge keep reading the ledger meanwhile."""
        if not self.nonces.spend(report.nonce, dock.certificate_sha256):
            raise CustodyRefused(409, f"nonce {report.nonce} was not issued by this device "
                                 f"to dock {dock.name} (certificate sha256 "
                                 f"{dock.certificate_sha256}), has expired or was already "
                                 "spent (replay)")
        self.backoff.check(dock)
        days = self._retention.as_record()
        proofs = {claim.seq: claim.proof for claim in report.segments}
        classes = {claim.seq: claim.retention for claim in report.segments}
        with self._proving:
            self.backoff.check(dock)  # again: its other report may have failed meanwhile
            with self._ledger.lock:
                ledger = self._ledger.refresh()
                to_prove = [(f, proof) for f in check_report(ledger, report, days)
                            if f.seq not in ledger.custody
                            and (proof := proofs[f.seq]) is not None]  # checked: present
            try:
                check_proofs(self._root, report.nonce, to_prove)
            except WrongProof:
                self.backoff.failed(dock)
                raise
            self.backoff.passed(dock)
            with self._ledger.lock:  # custody only grows: what was proven covers it still
                files = check_report(self._ledger.refresh(), report, days)

                def classes_still(seq: int) -> dict[str, Any]:
                    """Under the chain's lock, where nothing is appended meanwhile: a mark
                    sealed since the check (the officer pressed the button just now) must not
                    leave a file held as standard by a custody sealed after it."""
                    ledger = self._ledger.refresh()
                    for sealed in files:
                        said, chain = classes[sealed.seq], ledger.retention(sealed)
                        if said is not None and said != chain:
                            raise CustodyRefused(409, f"segment seq {sealed.seq} "
                                                 f"({sealed.file}): retention {said!r}, but "
                                                 f"a mark sealed meanwhile makes it {chain!r}")
                    return {}
                payload = {
                    "report_id": report.report_id,
                    "dock": dock.as_record(),
                    "operator": report.operator,
                    "head": report.head.model_dump(),
                    "segments": [{**f.as_record(), **({"retention": classes[f.seq]}
                                                      if classes[f.seq] else {})}
                                 for f in files],
                    "retention_days": days,
                }
                if report.archive is not None:
                    payload["archive"] = report.archive.model_dump(exclude_none=True)
                record = self._chain.append("custody", payload, classes_still)
                return self._ledger.refresh().custody_lines[record["seq"]]


@dataclass(frozen=True)
class ExportBacklog:
    """Art. 20: sealed footage still on the device and not in a dock's custody."""

    files: int
    oldest: SealedFile | None
    age_h: float | None       # of the oldest, when there is one
    deadline_h: float

    @property
    def overdue(self) -> bool:
        return self.age_h is not None and self.age_h > self.deadline_h

    def describe(self) -> str:
        if self.oldest is None:
            return "all sealed footage is in custody"
        return (f"{self.files} sealed file(s) not in custody, oldest {self.oldest.file} "
                f"{self.age_h:.2f} h old (deadline {self.deadline_h:g} h)")


def export_backlog(ledger: Ledger, deadline_hours: float) -> ExportBacklog:
    """The one reading of the export deadline: the alarm, the self-check and the fleet status
    all take it from the daemon's running ledger, which reads only what the chain added;
    the oldest file and the count are two indexed look-ups, whatever the chain's length."""
    with ledger.refresh().lock:
        oldest, count = ledger.oldest_outstanding(), ledger.outstanding_count()
    if oldest is None:
        return ExportBacklog(0, None, None, deadline_hours)
    age_h = (datetime.now(UTC) - oldest.sealed_at).total_seconds() / 3600
    return ExportBacklog(count, oldest, age_h, deadline_hours)
