"""The docking station's side: pull a device's chain and sealed files, verify, take custody.

`pull` copies what the device has that the evidence folder does not, resuming
partial files with HTTP Range and hashing every byte as it arrives, then checks
the copy with the project's verifier exactly as it would check a device store.
Only a copy that verifies whole is reported for custody; the device's signed
custody record comes back as the receipt. The evidence folder per device is a
store (chain.jsonl, sealed/, keys/device.pub), so `bodycam verify` reads it as is,
plus receipts/ and manifest.json. See docs/docking.md.

The device is checked at every TLS handshake: its certificate must chain to the
agency's device CA and name (CN) the device id it serves, the same on every
connection; not its address, which on a dock link is arbitrary.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import ssl
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.dock.archive import (
    DEFAULT_MARKED_RETENTION,
    DEFAULT_RETENTION,
    Archive,
    Archived,
    ArchiveError,
    archive_pull,
    archive_receipt,
)
from agent.dock.bulk import BulkLink, Connections, Download, Throttle
from agent.dock.direct_file import ForeignFile, aligned_down, open_own
from agent.dock.journal import JOURNAL
from agent.dock.progress import Progress
from agent.dock.reading import sealed_file
from agent.durable import fsync_dir, write_all
from agent.evidence.chain import parse_line, utc_iso, whole_lines
from agent.evidence.keys import PUBLIC_NAME, fingerprint, load_public_key
from agent.evidence.possession import digest_file, new_proof
from agent.evidence.retention import MARKED, STANDARD, file_class, valid_days
from agent.evidence.verify import Copy, Report, resume_point, verify_copy
from agent.pki import common_names

API = "v1"
CHUNK = 1024 * 1024
ATTEMPTS = 5
PROOF_RATE = 10e6  # bytes/s the device is given to check proofs, slower than any SD card
_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FOLDERS = ("sealed", "partial", "receipts")
VERIFIED = "verified.json"  # the verifier's state after the last clean verification


class DockError(Exception):
    """The pull could not be done or must not be acknowledged; says which and why."""


@dataclass
class DeviceCheck:
    """Who may answer on one session's connections, checked at each TLS handshake: a
    certificate naming one device id (CN), the one expected or else the first seen, and,
    when pinned, holding the key the operator read off the device."""

    device_id: str | None = None
    key_fingerprint: str | None = None
    certificate: bytes = b""  # the last one seen, DER

    def check(self, der: bytes) -> None:
        cert = x509.load_der_x509_certificate(der)
        names = common_names(cert.subject)
        if len(names) != 1:
            raise ssl.SSLCertVerificationError(f"the device's certificate names no one device "
                                               f"(CN={names})")
        if self.device_id is None:
            self.device_id = names[0]
        elif names[0] != self.device_id:
            raise ssl.SSLCertVerificationError(f"the device's certificate is for CN="
                                               f"{names[0]!r}, not device {self.device_id!r}")
        if self.key_fingerprint is not None:
            held = key_fingerprint(cert.public_key())
            if held != self.key_fingerprint:
                raise ssl.SSLCertVerificationError(
                    f"the device's TLS key is {held}, not the expected {self.key_fingerprint}")
        self.certificate = der


def key_fingerprint(public_key: Any) -> str:
    """A device key's fingerprint as `bodycam keys show` prints it (devices sign with Ed25519)."""
    if isinstance(public_key, Ed25519PublicKey):
        return fingerprint(public_key)
    return f"a {type(public_key).__name__}, not an Ed25519 key"


class DeviceContext(ssl.SSLContext):
    """A client context whose every handshake ends with its `check` of the device."""

    check: DeviceCheck


class _CheckedObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        context = self.context
        assert isinstance(context, DeviceContext)
        certificate = self.getpeercert(binary_form=True)
        if certificate is None:  # CERT_REQUIRED makes one certain; say so if not
            raise ssl.SSLError("the device presented no certificate")
        context.check.check(certificate)


@dataclass(frozen=True)
class DockLink:
    """The dock's TLS material: its certificate and key, the agency's device CA, and the
    device id expected (`--device-id`; None: whichever device the certificate names)."""

    cert: Path
    key: Path
    device_ca: Path
    device_id: str | None = None

    def context(self, pin: str | None = None) -> DeviceContext:
        """The device's certificate is verified against the device CA by chain, not host
        name (it names the device, not an address), then checked by `DeviceCheck`. With
        `pin` (a key fingerprint) no CA is asked: a device not yet enrolled is trusted by
        its key alone."""
        for what, path in (("--cert", self.cert), ("--key", self.key), ("--ca", self.device_ca)):
            if not path.is_file():
                raise DockError(f"{what} {path}: no such file")
        context = DeviceContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        if pin is None:
            context.load_verify_locations(cafile=self.device_ca)
        else:
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.cert, self.key)
        context.check = DeviceCheck(self.device_id, pin)
        context.sslobject_class = _CheckedObject
        return context


@dataclass
class PullResult:
    folder: Path
    device: str
    verify: Report
    fetched: list[int] = field(default_factory=list)
    bytes_fetched: int = 0
    seconds: float = 0.0
    custody_seq: int | None = None
    purged: list[int] = field(default_factory=list)
    problem: str | None = None
    archived: Archived | None = None
    resumed_from: int | None = None  # the head a verification of the new records went on from
    retention_days: dict[str, int] | None = None  # each class's, as archived

    @property
    def ok(self) -> bool:
        return self.problem is None and self.verify.ok and self.custody_seq is not None


def open_session(url: str, context: DeviceContext, connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=context, limit=connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    return aiohttp.ClientSession(url.rstrip("/") + "/", connector=connector, timeout=timeout,
                                 raise_for_status=False)


async def read_json(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    body = await response.read()
    if response.status != 200:
        raise DockError(f"{what}: the device answered {response.status}: {_error_text(body)}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # the caller names what is missing from it
        return {}


def _error_text(body: bytes) -> str:
    """The device's message from its JSON error body, else the body's start."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return body[:200].decode("utf-8", "replace")


async def device_identity(session: aiohttp.ClientSession, check: DeviceCheck) -> dict[str, Any]:
    """The device's identity, served over a certificate for that very device."""
    async with session.get(f"{API}/identity") as response:
        identity = await read_json(response, "identity")
    if not isinstance(identity.get("device"), str) or \
            not _DEVICE_ID.fullmatch(identity["device"]) or identity["device"] in (".", ".."):
        raise DockError(f"identity: device id {identity.get('device')!r} is not a device id")
    if identity["device"] != check.device_id:
        raise DockError(f"identity: the device says it is {identity['device']!r}, its "
                        f"certificate is for CN={check.device_id!r}")
    for key in ("public_key", "nonce"):
        if not isinstance(identity.get(key), str):
            raise DockError(f"identity of {identity['device']}: no {key} in the answer")
    return identity


def _trust_key(folder: Path, identity: dict[str, Any], device_key: Path | None) -> str:
    """Put the device's public key in keys/: from the enrolment register when given,
    else the one the TLS-authenticated device serves; a held key must never change."""
    keys = folder / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    held = keys / PUBLIC_NAME
    served = identity["public_key"].encode("ascii")
    offered = device_key.read_bytes() if device_key else served
    if device_key and offered.strip() != served.strip():
        raise DockError(f"the device serves another public key than {device_key} (the "
                        "enrolment register's): not this device, or its key was replaced")
    if held.exists() and held.read_bytes().strip() != offered.strip():
        raise DockError(f"the device's public key differs from the one held in {held}: "
                        "refusing to mix two keys in one evidence folder")
    if not held.exists():
        _create(held, offered, 0o644)
    return "enrolment register" if device_key else "device (TLS-authenticated)"


async def _pull_chain(session: aiohttp.ClientSession, chain: Path, offset: int,
                      lines: int) -> int:
    """Append the records after those held (`lines` of them before byte `offset`, as the
    verifier's state says, and those after it); returns how many lines were added."""
    held = lines + _count_lines(chain, offset) if chain.exists() else 0
    async with session.get(f"{API}/chain", params={"from": str(held + 1)}) as r:
        if r.status != 200:
            await read_json(r, "chain")
        data = await r.read()
    whole = data[: data.rfind(b"\n") + 1]
    fd = _open_own(chain, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        write_all(fd, whole)
        os.fsync(fd)
    finally:
        os.close(fd)
    return whole.count(b"\n")


def _count_lines(path: Path, offset: int) -> int:
    with path.open("rb") as f:
        f.seek(offset)
        return sum(block.count(b"\n") for block in iter(lambda: f.read(CHUNK), b""))


def _bodies(chain: Path, offset: int) -> list[dict[str, Any]]:
    """The body of each whole record from byte `offset` on; the verifier reports the rest."""
    bodies = []
    for _, line in whole_lines(chain, offset):
        try:
            bodies.append(parse_line(line.rstrip(b"\n"))[2])
        except ValueError:
            continue
    return bodies


class _Fetch:
    """One sealed file into partial/, resumed with Range, hashed as it arrives, then sealed/."""

    def __init__(self, url: str, connections: Connections, folder: Path,
                 record: dict[str, Any]):
        self.url = f"{url.rstrip('/')}/{API}/sealed/{record['seq']}"
        self.connections = connections
        self.download: Download | None = None  # the transfer under way, or the last one
        self.kept = 0  # bytes of the part before that transfer
        self.purged = False
        self.seq = record["seq"]
        self.size = record["payload"]["size"]
        self.sha256 = record["payload"]["sha256"]
        self.dest = folder / record["payload"]["file"]
        self.part = folder / "partial" / f"{self.dest.name}.part"
        self.received = 0
        self.digest = ""

    def run(self) -> str | None:
        """None when the file is held and matches its record, else what went wrong.
        Blocking: the pull runs it on a thread of its own."""
        attempt = 1
        while True:
            try:
                return self._attempt()
            except ForeignFile as exc:
                raise DockError(exc.strerror) from None
            except ConnectionError as exc:
                if attempt == ATTEMPTS:
                    raise DockError(f"sealed seq {self.seq}: connection failed {ATTEMPTS} "
                                    f"times, last: {exc}; run the pull again to resume "
                                    f"from {self.part}") from exc
                time.sleep(0.2 * attempt)
                attempt += 1

    def _attempt(self) -> str | None:
        digest = hashlib.sha256()
        offset = aligned_down(self.part.lstat().st_size) if self.part.exists() else 0
        if offset > self.size:
            offset = 0
        if offset:
            _hash_into(digest, self.part, offset)
        self.kept, self.download = offset, None
        if offset < self.size or not self.size:  # a whole part left by a cut: check it only
            download = self.download = Download(self.part, offset, digest)
            try:
                self.connections.fetch(download, self.url)
            finally:
                self.received += download.received
            if download.status == 410:
                return "purged"
            if download.status == 403:  # not the recorder's own file (a link planted there)
                return (f"sealed seq {self.seq}: the device refused to serve it: "
                        f"{_error_text(bytes(download.error))}")
            if download.status not in (200, 206):
                raise DockError(f"sealed seq {self.seq}: the device answered "
                                f"{download.status}: {_error_text(bytes(download.error))}")
            digest = download.digest
        size, self.digest = self.part.stat().st_size, digest.hexdigest()
        if size != self.size or self.digest != self.sha256:  # kept, owner-only, to examine
            self.part.rename(self.part.with_suffix(".mismatch"))
            return (f"sealed seq {self.seq}: the device served {size} bytes with sha256 "
                    f"{self.digest}, its chain seals {self.size} bytes, {self.sha256}")
        return None

    @property
    def held(self) -> int:
        """Its bytes in hand now, read by the pull's progress as its thread writes them."""
        if self.purged:
            return 0
        return self.kept if self.download is None else self.download.held

    def settle(self) -> None:
        """Durable first, then named: sealed/ only ever holds whole, fsync'd files."""
        _settle(self.part, self.dest)


def _settle(part: Path, dest: Path) -> None:
    fd = _open_own(part, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fchmod(fd, 0o444)  # verified evidence: readable, never changed
    finally:
        os.close(fd)
    os.replace(part, dest)


def _hash_into(digest: Any, path: Path, length: int) -> None:
    """The first `length` bytes of `path`: what a resumed download keeps."""
    with os.fdopen(_open_own(path, os.O_RDONLY), "rb") as f:
        while length and (chunk := f.read(min(CHUNK, length))):
            digest.update(chunk)
            length -= len(chunk)


def _wanted(folder: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sealed-file records whose file is not held and not purged on the device."""
    purged = _purged_on_device(records)
    return [r for r in records if r["seq"] not in purged and (name := sealed_file(r))
            and not (folder / name).exists()]


def _held(folder: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sealed files held, as the manifest lists them."""
    return [{"seq": r["seq"], **{k: r["payload"][k] for k in ("file", "size", "sha256")}}
            for r in records if (name := sealed_file(r)) and (folder / name).is_file()]


def _purged_on_device(records: list[dict[str, Any]]) -> set[int]:
    """Seqs of the files a purge record says the device deleted: asking for each would cost
    a request per file ever purged (a year-old device's whole history) to hear 410 each
    time. The verifier checks every purge against its custody record."""
    purged: set[int] = set()
    for record in records:
        payload = record.get("payload")
        if record.get("type") == "purge" and isinstance(payload, dict) and \
                isinstance(payload.get("files"), list):
            purged.update(item["seq"] for item in payload["files"]
                          if isinstance(item, dict) and isinstance(item.get("seq"), int))
    return purged


async def pull(url: str, out: Path, link: DockLink, operator: str,
               device_key: Path | None = None, connections: int = 4,
               custody: bool = True, archive: Archive | None = None,
               retention: timedelta = DEFAULT_RETENTION,
               marked_retention: timedelta = DEFAULT_MARKED_RETENTION,
               max_mbit: float = 0, progress: Progress | None = None) -> PullResult:
    """Pull, verify, archive (when given an archive) and report custody of one device.
    The archive is probed before anything is pulled; custody is reported only for files
    the archive holds, as read back, each kept for its class's retention. `max_mbit`
    (0: none) caps the sealed files' bytes per second over all the pull's connections;
    `progress`, when given, is kept up to date as the pull goes."""
    started = time.monotonic()
    progress = progress or Progress()
    context = link.context()
    if archive is not None:
        try:
            await asyncio.to_thread(archive.probe)
        except ArchiveError as exc:
            raise DockError(str(exc)) from None
    async with open_session(url, context, connections) as session:
        identity = await device_identity(session, context.check)
        folder = out / identity["device"]
        _refuse_links(folder)
        key_source = _trust_key(folder, identity, device_key)
        for sub in _FOLDERS:
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "partial").chmod(0o700)  # bytes not yet known to be the device's
        # After a clean verification every file of the records verified is held or purged:
        # only the records since are read (all of them the first time, or after a problem).
        verified, lines = resume_point(folder, folder / VERIFIED)
        await _pull_chain(session, folder / "chain.jsonl", verified, lines)
        records = _bodies(folder / "chain.jsonl", verified)
        bulk = Connections(BulkLink(link.cert, link.key, link.device_ca,
                                    BulkLink.pin(context.check.certificate)),
                           Throttle.mbit(max_mbit))
        fetches = [_Fetch(url, bulk, folder, r) for r in _wanted(folder, records)]
        progress.listed([job.size for job in fetches],
                        lambda: sum(job.held for job in fetches))
        limit = asyncio.Semaphore(connections)
        loop = asyncio.get_running_loop()

        async def fetch(job: _Fetch, transfers: ThreadPoolExecutor) -> str | None:
            async with limit:  # the next file starts while this one is flushed to disk
                outcome = await loop.run_in_executor(transfers, job.run)
            if outcome is None:
                await asyncio.to_thread(job.settle)
                progress.fetched()
            elif outcome == "purged":
                job.purged = True
                progress.dropped(job.size)
            return outcome

        with bulk, ThreadPoolExecutor(connections, thread_name_prefix="dock-transfer") as \
                transfers:
            outcomes = await asyncio.gather(*(fetch(job, transfers) for job in fetches))
        fsync_dir(folder / "sealed")
        progress.enter("verifying")
        report, copy = await asyncio.to_thread(verify_copy, folder, {
            str(j.dest.relative_to(folder)): j.digest
            for j, o in zip(fetches, outcomes, strict=True) if o is None}, folder / VERIFIED)
        classes = _classes(copy, report)
        result = PullResult(folder, identity["device"], report,
                            [j.seq for j, o in zip(fetches, outcomes, strict=True) if o is None],
                            sum(j.received for j in fetches), resumed_from=copy.resumed_from)
        problems = [o for o in outcomes if o not in (None, "purged")]
        if problems:
            result.problem = problems[0]
        elif not report.ok:
            result.problem = f"the device's chain does not verify: {report.findings[0]}"
        else:
            try:
                to_report = _to_report(folder, copy, classes)
                if archive is not None:
                    days = archive_days(identity, {STANDARD: retention,
                                                   MARKED: marked_retention})
                    result.retention_days = {k: d.days for k, d in days.items()}
                    reported = set(to_report)
                    if not {r["seq"] for r in records} >= reported:
                        # A file of the records verified before, not reported then (custody
                        # refused or not asked): the archive wants its record.
                        records = _bodies(folder / "chain.jsonl", 0)
                    progress.enter("archiving")
                    # Only the reported files' records: those of files purged since have no
                    # class (the verifier closed them) and are not this pull's to archive.
                    result.archived = await asyncio.to_thread(
                        archive_pull, archive, result.device, folder,
                        [r for r in records if r["seq"] in reported], to_report,
                        lambda record: days[classes[record["seq"]]], connections)
                if custody:
                    progress.enter("custody")
                    await _report_custody(session, context.check, folder, copy, to_report,
                                          classes, report, operator, result, result.archived)
            except ArchiveError as exc:
                result.problem = f"archive: {exc}" if result.custody_seq is None else (
                    f"custody sealed as record {result.custody_seq}, but its receipt is not "
                    f"in the archive: {exc}")
            except DockError as exc:  # refused by the device, or a receipt that is not one
                result.problem = str(exc)
        result.seconds = time.monotonic() - started
        held = (_held_before(folder, _held(folder, records)) if verified else None) or \
            _held(folder, _bodies(folder / "chain.jsonl", 0) if verified else records)
        for item in held:  # the class as the chain tells it now (a mark may come later)
            item["retention"] = classes.get(item["seq"], item.get("retention", STANDARD))
        _write_manifest(folder, url, operator, identity, key_source, held, result,
                        context.check.certificate)
        return result


async def _report_custody(session: aiohttp.ClientSession, check: DeviceCheck, folder: Path,
                          copy: Copy, seqs: list[int], classes: dict[int, str],
                          report: Report, operator: str, result: PullResult,
                          archived: Archived | None) -> None:
    """Tell the device what this dock now holds, with a proof of possession under a fresh
    nonce for each file not yet in custody, the retention class this dock keeps each under,
    and where it archived them; keep its signed receipt."""
    nonce = (await device_identity(session, check))["nonce"]  # fresh: a long pull outlives a nonce
    held: list[dict[str, Any]] = []
    proving = 0
    for seq in seqs:
        sealed = copy.open_files[seq]
        claim = {"seq": seq, "sha256": sealed["sha256"], "retention": classes[seq]}
        if sealed["custody"]:  # listed again only to be held as marked: proven already
            held.append(claim)
            continue
        held.append({**claim, "proof": await asyncio.to_thread(_prove, folder, sealed, nonce)})
        proving += sealed["size"]
    body = {"report_id": str(uuid.uuid4()), "nonce": nonce, "operator": operator,
            "head": report.head, "segments": held}
    if archived is not None:
        body["archive"] = archived.claim()
    # The device reads every proven byte again before it answers.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30,
                                    sock_read=60 + proving / PROOF_RATE)
    async with session.post(f"{API}/custody", json=body, timeout=timeout) as response:
        answer = await read_json(response, "custody report")
    receipt = answer["receipt"].encode("utf-8")
    custody = _check_receipt(copy.key_in_force, receipt, body)
    _create(folder / "receipts" / f"{custody['seq']:08d}-custody.jsonl", receipt, 0o644)
    result.custody_seq = custody["seq"]
    result.purged = answer.get("purged", [])
    if archived is not None:
        await asyncio.to_thread(archive_receipt, archived, result.device, receipt, custody)


def _to_report(folder: Path, copy: Copy, classes: dict[int, str]) -> list[int]:
    """The seqs of the sealed files the folder holds that no purge closed and no custody
    record names yet, from the verifier. Files already in a custody record are not listed
    again: a dock that keeps a year of files would otherwise send them all (over the
    device's body limit) and have the device seal them all again, every day. The one
    exception: a file marked after its custody, listed again to be held as marked (the
    device keeps it until a custody does)."""
    return [seq for seq, sealed in sorted(copy.open_files.items())
            if (not sealed["custody"] or (classes[seq] == MARKED and not sealed["held_marked"]))
            and (folder / sealed["file"]).is_file()]


def _classes(copy: Copy, report: Report) -> dict[int, str]:
    """The retention class of each sealed file no purge closed: marked when a `mark`
    record marks its recording (agent/evidence/retention.py)."""
    marked = {mark["recording"] for mark in report.marks}
    return {seq: file_class(sealed["recording"], marked)
            for seq, sealed in copy.open_files.items()}


def _prove(folder: Path, sealed: dict[str, Any], nonce: str) -> str:
    """The proof of possession of one held file, from the bytes on disk now, read once for
    the proof and the SHA-256: bytes changed since they were verified are not proven."""
    sha256, proof = hashlib.sha256(), new_proof(nonce)
    digest_file(folder / sealed["file"], sha256, proof)
    if sha256.hexdigest() != sealed["sha256"]:
        raise DockError(f"{sealed['file']} changed since it was verified: sha256 "
                        f"{sha256.hexdigest()}, sealed {sealed['sha256']}; not reported")
    return proof.hexdigest()


def _check_receipt(key: Ed25519PublicKey, receipt: bytes, sent: dict[str, Any]
                   ) -> dict[str, Any]:
    """The receipt is the device's custody record: signed by the key in force after the
    verified chain (the first key, or the one its last rotation handed over to), naming
    what we sent."""
    try:
        body_bytes, signature, body = parse_line(receipt.rstrip(b"\n"))
        key.verify(signature, body_bytes)
    except (ValueError, InvalidSignature) as exc:
        raise DockError(f"custody receipt is not a record signed by the device: {exc!r}") from exc
    payload = body.get("payload", {})
    if body.get("type") != "custody" or payload.get("report_id") != sent["report_id"] or \
            [(s["seq"], s["sha256"]) for s in payload.get("segments", [])] != \
            [(s["seq"], s["sha256"]) for s in sent["segments"]]:
        raise DockError("custody receipt does not acknowledge the report that was sent")
    return body


def _held_before(folder: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The files held, as the manifest lists them: those the last manifest listed that are
    still held, and `new`, the files of the records read now; None without a manifest."""
    try:
        before = json.loads((folder / "manifest.json").read_bytes())["held"]
        kept = [item for item in before if (folder / item["file"]).is_file()]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    seqs = {item["seq"] for item in new}
    return [item for item in kept if item["seq"] not in seqs] + new


def archive_days(identity: dict[str, Any], dock: dict[str, timedelta]
                 ) -> dict[str, timedelta]:
    """How long the archive keeps each class of this device's files: the longer of the
    dock's days and the device's `[retention]` (its identity's `retention_days`, which it
    seals into the custody record and holds the archive to: a dock set shorter would have
    every custody refused, and the device would fill). A device that gives none (an older
    one), or days of another shape, gets the dock's."""
    device = identity.get("retention_days")
    if not valid_days(device):
        return dock
    return {c: max(dock[c], timedelta(days=device[c])) for c in (STANDARD, MARKED)}


def _write_manifest(folder: Path, url: str, operator: str, identity: dict[str, Any],
                    key_source: str, held: list[dict[str, Any]], result: PullResult,
                    certificate: bytes) -> None:
    key = load_public_key(folder / "keys" / PUBLIC_NAME)
    manifest = {
        "device": result.device,
        "officer": identity.get("officer"),
        "source": url,
        "operator": operator,
        "pulled_at": utc_iso(time.time_ns()),
        "key_fingerprint": fingerprint(key),
        "key_source": key_source,
        "device_certificate": hashlib.sha256(certificate).hexdigest(),
        "head": result.verify.head,
        "records": result.verify.records,
        "held": held,
        "marks": result.verify.marks,
        "fetched_now": result.fetched,
        "bytes_fetched": result.bytes_fetched,
        "seconds": round(result.seconds, 3),
        "verify": {"ok": result.verify.ok, "summary": result.verify.summary(),
                   "notes": result.verify.notes, "resumed_from": result.resumed_from},
        "custody_seq": result.custody_seq,
        "purged_on_device": result.purged,
        "archive": result.archived.as_record() if result.archived else None,
        "retention_days": result.retention_days,
        "status": "custody" if result.ok else
                  "refused" if result.problem else "verified, no custody reported",
        "problem": result.problem,
    }
    tmp = folder / "manifest.json.tmp"
    tmp.unlink(missing_ok=True)  # left by a pull cut short
    _create(tmp, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
            0o644)
    os.replace(tmp, folder / "manifest.json")


def _refuse_links(folder: Path) -> None:
    """The evidence folder holds only what the dock wrote: a link planted in it would have
    the dock write evidence, or the device's unverified bytes, through to another file, or
    count as held a file the dock does not hold. Checked before anything is written (and
    every file is opened without following a link, should one appear during the pull)."""
    if not folder.exists() and not folder.is_symlink():
        return
    names = [folder] + [folder / name for name in (
        "keys", f"keys/{PUBLIC_NAME}", "chain.jsonl", "manifest.json", "manifest.json.tmp",
        VERIFIED, f"{VERIFIED}.tmp", JOURNAL, *_FOLDERS)]
    for sub in _FOLDERS:
        if (folder / sub).is_dir() and not (folder / sub).is_symlink():
            names += sorted((folder / sub).iterdir())
    for path in names:
        if path.is_symlink():
            raise DockError(f"{path}: a symbolic link in the evidence folder; the dock never "
                            "follows one (it is not the dock's: remove it and pull again)")
        if path.parent.name == "partial" and not path.is_file():
            raise DockError(f"{path}: not a regular file; the dock writes only its own files "
                            "in partial/ (remove it and pull again)")


def _open_own(path: Path, flags: int, mode: int = 0o600) -> int:
    try:
        return open_own(path, flags, mode)
    except ForeignFile as exc:
        raise DockError(exc.strerror) from None


def _create(path: Path, data: bytes, mode: int) -> None:
    """A new file (O_EXCL: nothing at the name is followed or overwritten), made durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


async def post(url: str, link: DockLink, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One change on the device (officer assignment, clock), as the dock, on the connection
    the device's identity was checked on."""
    context = link.context()
    async with open_session(url, context, 1) as session:
        await device_identity(session, context.check)
        async with session.post(f"{API}/{path}", json=body) as response:
            return await read_json(response, path)
