"""The write-once archive behind the dock: an S3-compatible store with Object Lock.

Each sealed file, each new slice of a device's chain and each custody receipt is written
as an object version under COMPLIANCE retention (Art. 21, 24), with the SHA-256 the chain
seals sent along (`ChecksumSHA256`: the store itself refuses bytes that do not hash to
it), then read back (HeadObject) before it counts: the version, size, SHA-256 and
retention the store holds are the only account of what is archived. A store is first
probed: a locked test object whose version the dock then tries to delete; a store that
lets it (it takes a retention and does not enforce it) is refused. The slices a file's
proof needs are kept at least as long as it (`renew_slices`). Keys and rules:
docs/archive.md.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.dock import journal
from agent.evidence.chain import SEALED_FILE_TYPES
from agent.evidence.keys import PUBLIC_NAME
from agent.evidence.retention import UNTIL

MODE = "COMPLIANCE"
DEFAULT_RETENTION = timedelta(days=365)  # Art. 21: a year
DEFAULT_MARKED_RETENTION = timedelta(days=3650)  # as the device's [retention] marked_days
MIN_RETENTION = timedelta(days=1)        # however old a file is when it reaches the archive
PROBE_RETENTION = timedelta(hours=1)     # the probe object's, left locked in the bucket
# How far past what the files it proves need a chain slice is kept (`renew_slices`).
RENEWAL = timedelta(days=30)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SLICE = re.compile(r"([0-9]{8})-([0-9]{8})\.jsonl")


class ArchiveError(Exception):
    """The archive cannot be used, or did not hold what was written; says which and why."""


@dataclass(frozen=True)
class Location:
    """`s3://bucket/prefix`: the bucket, and the prefix every key starts with."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Location:
        scheme, _, rest = url.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme != "s3" or not _BUCKET.fullmatch(bucket):
            raise ArchiveError(f"{url!r} is not s3://BUCKET[/PREFIX] with a bucket name of 3 "
                               "to 63 lower-case letters, digits, dots and dashes")
        return cls(bucket, prefix.strip("/"))

    def key(self, device: str, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, device, *parts) if p)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class Held:
    """One object version as the store describes it (HeadObject)."""

    key: str
    version_id: str
    size: int
    sha256: str               # hex
    mode: str | None          # the object lock mode
    retain_until: datetime | None

    def as_record(self) -> dict[str, Any]:
        return {"key": self.key, "version_id": self.version_id, "size": self.size,
                "sha256": self.sha256, "retain_until": _iso(self.retain_until)}


def retain_until(sealed_at: datetime, retention: timedelta, now: datetime) -> datetime:
    """The end of an object's retention: `retention` after the record that sealed it, in
    whole seconds (stores keep no more); at least MIN_RETENTION from now (a file older
    than its retention when archived), at most `retention` from now (a device clock ahead
    of time must not lock an object for decades: COMPLIANCE retention cannot be shortened)."""
    until = min(max(sealed_at + retention, now + MIN_RETENTION), now + retention)
    return until.replace(microsecond=0) + timedelta(seconds=1)


class Archive:
    """One bucket and prefix of an S3-compatible store, through boto3."""

    def __init__(self, location: Location, client: Any) -> None:
        self.location = location
        self.client = client
        self.probed = False

    @classmethod
    def connect(cls, url: str, endpoint: str | None = None) -> Archive:
        """Credentials and region from boto3's usual places (AWS_ACCESS_KEY_ID, ...,
        ~/.aws); `endpoint` else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL else AWS."""
        import boto3
        from botocore.config import Config

        location = Location.parse(url)
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or \
            os.environ.get("AWS_ENDPOINT_URL") or None  # a store of one's own: path style
        # A store of one's own may be plain HTTP, where botocore would otherwise hash every
        # body for the signature: the signed ChecksumSHA256 header already binds the bytes
        # (the store checks them against it).
        config = Config(s3={"addressing_style": "path", "payload_signing_enabled": False}
                        if endpoint else {},
                        retries={"max_attempts": 5, "mode": "standard"})
        failures: tuple[type[Exception], ...] = (*client_errors(), ValueError)  # bad profile, URL
        try:
            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=endpoint, config=config,
                                    region_name=session.region_name or "us-east-1")
        except failures as exc:
            raise ArchiveError(f"archive {location}: {describe_error(exc)}") from None
        return cls(location, client)

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "bucket": self.location.bucket,
                "prefix": self.location.prefix}

    def probe(self) -> None:
        """Refuse a store that does not enforce COMPLIANCE retention: a locked test object
        must be held as locked, and a delete of its version must fail and leave it."""
        if self.probed:
            return
        where = f"{self.location} at {self.endpoint}"
        key = self.location.key(".probe", f"{uuid.uuid4()}")
        body = b"bodycam archive probe: a delete of this version must be refused\n"
        now = datetime.now(UTC)
        until = now.replace(microsecond=0) + PROBE_RETENTION
        try:
            version = self._put(key, body, _sha256(body), until)
            held = self.read_back(key, version)
        except ArchiveError as exc:
            raise ArchiveError(f"archive {where}: the probe could not store a locked object: "
                               f"{exc} (a bucket needs versioning and Object Lock)") from None
        if held.mode != MODE or held.retain_until is None or held.retain_until < until:
            raise ArchiveError(f"archive {where}: the store took a {MODE} retention until "
                               f"{_iso(until)} and holds {held.mode} until "
                               f"{_iso(held.retain_until)}: it does not keep retention; refused")
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=key, VersionId=version)
        except self._errors():
            pass  # refused, as it must be
        else:
            raise ArchiveError(f"archive {where}: a delete of a version under {MODE} retention "
                               "succeeded: the store does not enforce Object Lock; refused")
        try:
            self.read_back(key, version)
        except ArchiveError as exc:
            raise ArchiveError(f"archive {where}: the locked probe version is gone after a "
                               f"refused delete: {exc}; refused") from None
        self.probed = True

    def put_file(self, key: str, path: Path, sha256: str, until: datetime) -> Held:
        """The file at `key`, kept until `until`, as the store holds it. A version already
        there with this SHA-256 under COMPLIANCE is kept (its retention extended when
        shorter): a file is archived once, however often it is pulled."""
        with path.open("rb") as body:
            return self._store(key, body, sha256, path.stat().st_size, until, once=True)

    def put_bytes(self, key: str, data: bytes, until: datetime, once: bool = False) -> Held:
        """`data` at `key`; with `once`, kept as a file is (above)."""
        return self._store(key, data, _sha256(data), len(data), until, once)

    def _store(self, key: str, body: Any, sha256: str, size: int, until: datetime,
               once: bool) -> Held:
        held = self._latest(key) if once else None
        if held is None or held.sha256 != sha256 or held.mode != MODE:
            held = self.read_back(key, self._put(key, body, sha256, until))
        else:
            held = self.extend(held, until)
        return self._check(held, sha256, size, until)

    def extend(self, held: Held, until: datetime) -> Held:
        """`held` kept at least until `until`: its retention lengthened when it ends sooner
        (PutObjectRetention, which a COMPLIANCE lock lets only lengthen), read back."""
        if held.mode == MODE and held.retain_until is not None and held.retain_until >= until:
            return held
        self._call("extend the retention of", held.key, self.client.put_object_retention,
                   Bucket=self.location.bucket, Key=held.key, VersionId=held.version_id,
                   Retention={"Mode": MODE, "RetainUntilDate": until})
        return self._check(self.read_back(held.key, held.version_id), held.sha256, held.size,
                           until)

    def chain_slices(self, device: str) -> list[tuple[int, int, str]]:
        """(first, last, key) of every chain slice archived for `device`, by first line."""
        prefix = self.location.key(device, "chain") + "/"
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    match = _SLICE.fullmatch(item["Key"][len(prefix):])
                    if match:
                        found.append((int(match[1]), int(match[2]), item["Key"]))
        except self._errors() as exc:
            raise ArchiveError(f"cannot list {prefix} in {self.location}: "
                               f"{describe_error(exc)}") from None
        return sorted(found)

    def first_slice_versions(self, device: str) -> list[tuple[int, str, str]]:
        """(first line, key, version id) of the first version at every chain slice key of
        `device`: the one the dock wrote, which a custody record names and `bodycam verify
        s3://` checks (anything put on top later, through S3, is not the archived slice)."""
        prefix = self.location.key(device, "chain") + "/"
        first: dict[str, str] = {}
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.location.bucket, Prefix=prefix):
                for item in page.get("Versions", []):  # each key's newest first
                    first[item["Key"]] = item["VersionId"]
        except self._errors() as exc:
            raise ArchiveError(f"cannot list the versions under {prefix} in {self.location}: "
                               f"{describe_error(exc)}") from None
        found = [(int(match[1]), key, version) for key, version in first.items()
                 if (match := _SLICE.fullmatch(key[len(prefix):]))]
        return sorted(found)

    def read_back(self, key: str, version_id: str) -> Held:
        """What the store holds at this version."""
        head = self._call("read back", key, self.client.head_object,
                          Bucket=self.location.bucket, Key=key, VersionId=version_id,
                          ChecksumMode="ENABLED")
        return _held(key, head)

    def _latest(self, key: str) -> Held | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=key,
                                           ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArchiveError(f"cannot read {key} in {self.location}: "
                               f"{describe_error(exc)}") from None
        except self._errors() as exc:
            raise ArchiveError(f"cannot read {key} in {self.location}: "
                               f"{describe_error(exc)}") from None
        return _held(key, head) if head.get("VersionId") else None

    def _put(self, key: str, body: Any, sha256: str, until: datetime) -> str:
        answer = self._call("write", key, self.client.put_object,
                            Bucket=self.location.bucket, Key=key, Body=body,
                            ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                            ObjectLockMode=MODE, ObjectLockRetainUntilDate=until)
        version = answer.get("VersionId")
        if not version or version == "null":
            raise ArchiveError(f"{key}: the store kept no version of it (is the bucket "
                               "versioned, with Object Lock?)")
        return str(version)

    def _check(self, held: Held, sha256: str, size: int, until: datetime) -> Held:
        """A version counts as archived only when the store holds it whole and locked."""
        problems = [f"{what} {got} where {want} was written" for what, got, want in (
            ("size", held.size, size), ("sha256", held.sha256, sha256),
            ("lock mode", held.mode, MODE)) if got != want]
        if held.retain_until is None or held.retain_until < until:
            problems.append(f"retention until {_iso(held.retain_until)}, asked {_iso(until)}")
        if problems:
            raise ArchiveError(f"{self.location}: {held.key} version {held.version_id} as read "
                               f"back: {'; '.join(problems)}")
        return held

    def _call(self, what: str, key: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except self._errors() as exc:
            raise ArchiveError(f"cannot {what} {key} in {self.location}: "
                               f"{describe_error(exc)}") from None

    @staticmethod
    def _errors() -> tuple[type[Exception], ...]:
        return client_errors()


def client_errors() -> tuple[type[Exception], ...]:
    """What boto3 raises for a store that refuses or cannot be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


@dataclass
class Archived:
    """What one pull holds in the archive, read back: its sealed files by seq, the chain
    slice it added (None when the archive held every line already), and the receipt."""

    archive: Archive
    longest: timedelta = DEFAULT_RETENTION  # a chain slice's and a receipt's retention
    files: dict[int, Held] = field(default_factory=dict)
    chain: Held | None = None
    receipt: Held | None = None

    def claim(self) -> dict[str, Any]:
        """The custody report's `archive`: where the files it takes are, by version."""
        objects = [{"seq": seq, **_named(held)} for seq, held in sorted(self.files.items())]
        if self.chain is not None:
            objects.append(_named(self.chain))
        return {"endpoint": self.archive.endpoint, "bucket": self.archive.location.bucket,
                "objects": objects}

    def as_record(self) -> dict[str, Any]:
        """The manifest's `archive`."""
        return {**self.archive.describe(),
                "files": [{"seq": seq, **held.as_record()}
                          for seq, held in sorted(self.files.items())],
                "chain": self.chain.as_record() if self.chain else None,
                "receipt": self.receipt.as_record() if self.receipt else None}


def proved(first: int, files: Mapping[int, datetime]) -> tuple[int, datetime] | None:
    """Of the archived files (record seq -> retained until), the one retained longest whose
    record is at or after chain line `first`, or None: a slice starting there is part of its
    proof (the verifier joins slices from line 1 through a file's record), so it must be kept
    at least as long. The dock extends slices by it (`renew_slices`), `bodycam verify s3://`
    names a slice kept less."""
    latest = max(((until, seq) for seq, until in files.items() if seq >= first), default=None)
    return None if latest is None else (latest[1], latest[0])


def renewed(first: int, files: Mapping[int, datetime]) -> datetime | None:
    """How long a chain slice from line `first` is kept, when a file of `files` (record seq
    -> retained until) needs it (`proved`): RENEWAL past that file. Each pull's files need a
    little more than the last's (a day more, with a pull a day); a slice kept exactly as
    long would be extended at every pull, one kept a renewal longer about once a month."""
    needed = proved(first, files)
    return None if needed is None else needed[1] + RENEWAL


def renew_slices(archive: Archive, device: str, folder: Path, files: Mapping[int, datetime],
                 pool: Executor) -> None:
    """Every chain slice already archived kept at least as long as each file of `files`
    (those a pull archived) that it proves: a file sealed or marked after a slice was
    written is retained past it. A slice the evidence folder's journal knows to be kept
    that long is not read: a COMPLIANCE retain-until read back only grows, whoever extends
    it. Every other one is read (HeadObject, on `pool`), extended when kept less
    (`renewed`), and entered in the journal. Figures: docs/performance.md."""
    if not files:
        return
    try:
        known = journal.read(folder).slices
    except OSError as exc:
        raise ArchiveError(f"cannot read {folder / journal.JOURNAL}: {exc}") from None

    def renew(item: tuple[int, str, str]) -> dict[str, Any] | None:
        first, key, version = item
        needed, until = proved(first, files), renewed(first, files)
        kept = known.get((key, version))
        if needed is None or until is None or (kept is not None and kept >= needed[1]):
            return None
        held = archive.read_back(key, version)
        if held.retain_until is None or held.retain_until < needed[1]:
            held = archive.extend(held, until)
        # Only a COMPLIANCE retain-until is a lower bound (GOVERNANCE can be shortened).
        return {"slice": first, **held.as_record()} if held.mode == MODE else None

    read = [entry for entry in pool.map(renew, archive.first_slice_versions(device)) if entry]
    _enter(folder, f"{len(read)} chain slice(s) are read back", *read)


def _enter(folder: Path, what: str, *entries: dict[str, Any]) -> None:
    """Entries in the folder's journal (agent.dock.journal), on disk. One that cannot be
    entered is an archive problem, as a failed write is: the pull reports no custody."""
    try:
        journal.append(folder, *entries)
    except OSError as exc:  # the dock's own account of it lost: not counted as archived
        raise ArchiveError(f"{what}, but the dock cannot enter that in "
                           f"{folder / journal.JOURNAL}: {exc}") from None


def archive_pull(archive: Archive, device: str, folder: Path, records: list[dict[str, Any]],
                 seqs: Iterable[int], retention: Callable[[dict[str, Any]], timedelta],
                 workers: int = 4) -> Archived:
    """Put the sealed files `seqs` of the evidence folder and the chain lines the archive
    does not hold yet into the archive, each read back. `retention` gives a sealed-file
    record's retention; a chain slice is kept as long as the longest of its records, and
    never less than DEFAULT_RETENTION (the chain is what proves every file), so the key
    outlasts every file of the pull, and the new slice too, kept a renewal past them
    (`renewed`); the slices archived before are extended to outlast them (`renew_slices`).
    Each file and slice read back is entered in the folder's journal (agent.dock.journal)
    as it is."""
    archive.probe()
    now = datetime.now(UTC)
    by_seq = {r["seq"]: r for r in records}
    done = Archived(archive, max([DEFAULT_RETENTION, *(retention(r) for r in records
                                                       if r.get("type") in SEALED_FILE_TYPES)]))

    def put(seq: int) -> tuple[int, Held]:
        record = by_seq[seq]
        payload = record["payload"]
        until = retain_until(sealed_time(record), retention(record), now)
        key = archive.location.key(device, payload["file"])
        held = archive.put_file(key, folder / payload["file"], payload["sha256"], until)
        _enter(folder, f"{key} is archived", {"seq": seq, "file": payload["file"],
                                              **held.as_record()})
        return seq, held

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="dock-archive") as pool:
        done.files = dict(pool.map(put, list(seqs)))
        kept = {seq: held.retain_until for seq, held in done.files.items() if held.retain_until}
        renew_slices(archive, device, folder, kept, pool)
    # The key the chain's first records verify with, once: what `bodycam verify s3://` uses
    # unless given the enrolment register's (--key).
    archive.put_bytes(archive.location.key(device, "keys", PUBLIC_NAME),
                      (folder / "keys" / PUBLIC_NAME).read_bytes(),
                      retain_until(now, done.longest, now), once=True)
    first = next_line(archive.chain_slices(device))
    data, last = slice_lines(folder / "chain.jsonl", first)
    if data:
        done.chain = archive.put_bytes(
            archive.location.key(device, "chain", f"{first:08d}-{last:08d}.jsonl"), data,
            max(retain_until(now, done.longest, now), renewed(first, kept) or now))
        _enter(folder, f"{done.chain.key} is archived", {"slice": first,
                                                          **done.chain.as_record()})
    return done


def archive_receipt(done: Archived, device: str, receipt: bytes, record: dict[str, Any]) -> None:
    """The custody record the device sealed, as the dock received it: it names the
    archived versions, so the archive holds its own account of them."""
    archive = done.archive
    done.receipt = archive.put_bytes(
        archive.location.key(device, "receipts", f"{record['seq']:08d}-custody.jsonl"),
        receipt, retain_until(sealed_time(record), done.longest, datetime.now(UTC)))


def sealed_time(record: dict[str, Any]) -> datetime:
    """When the device sealed a record (its `wall`)."""
    return datetime.strptime(record["wall"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _named(held: Held) -> dict[str, Any]:
    return {"key": held.key, "version_id": held.version_id,
            "retain_until": _iso(held.retain_until)}


def slice_lines(chain: Path, first: int) -> tuple[bytes, int]:
    """The chain's whole lines from line `first` on, and the number of the last (the
    dock's copy is whole lines only, appended as pulled)."""
    with chain.open("rb") as f:
        lines = f.read().splitlines(keepends=True)
    whole = [line for line in lines[first - 1:] if line.endswith(b"\n")]
    return b"".join(whole), first - 1 + len(whole)


def next_line(slices: Iterable[tuple[int, int, str]]) -> int:
    """The first chain line no archived slice holds (slices run on from line 1)."""
    last = 0
    for first, end, _ in sorted(slices):
        if first <= last + 1:
            last = max(last, end)
    return last + 1


def _held(key: str, head: dict[str, Any]) -> Held:
    checksum = head.get("ChecksumSHA256") or ""
    try:
        sha256 = base64.b64decode(checksum, validate=True).hex() if checksum else ""
    except ValueError:
        sha256 = f"(not base64: {checksum!r})"
    until = head.get("ObjectLockRetainUntilDate")
    return Held(key, str(head.get("VersionId")), int(head.get("ContentLength", -1)), sha256,
                head.get("ObjectLockMode"), until.astimezone(UTC) if until else None)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime(UNTIL)


def describe_error(exc: Exception) -> str:
    """The store's error code and message, else the client's."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message')}"
    return str(exc)
