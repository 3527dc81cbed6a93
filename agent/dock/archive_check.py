"""`bodycam verify s3://bucket/prefix`: the archive checked as an agency checks a store.

For each device under the prefix, the chain slices are joined (they must run on from
line 1), every object version a custody record names (in the archived chain, or in an
archived receipt the chain does not reach yet) is downloaded into a temporary store with
the device's key, and the project's verifier checks it all against the device's
signatures. The archive's own findings come first: an object missing, a version out of
retention, slices that do not join, a slice (or the key) kept less than a file it proves.
docs/archive.md, "Verifying the archive".
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from agent.dock.archive import MODE, Archive, ArchiveError, client_errors, describe_error, proved
from agent.dock.reading import sealed_file
from agent.evidence.chain import parse_line, read_bodies
from agent.evidence.keys import PUBLIC_NAME
from agent.evidence.retention import UNTIL, chain_facts, custody_problems, until_of
from agent.evidence.verify import Report, verify_store
from agent.evidence.witness import RECEIPTS

_MISSING = "is missing (deleted)"
CHUNK = 1024 * 1024  # a downloaded file is written in blocks of this size
_RECEIPT = re.compile(r"[0-9]{8}-custody\.jsonl")


@dataclass(frozen=True)
class _Kept:
    """A chain slice or the key as read: its version and how long the store keeps it, when
    under COMPLIANCE retention that has not ended (else named as read)."""

    what: str              # "chain slice", "the device's key"
    key: str
    version: str | None
    until: datetime
    first: int = 1         # the first chain line it is part of the proof of


@dataclass
class ArchiveReport:
    """One device's archive: the archive's findings, then the verifier's on the download."""

    device: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verify: Report | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.verify is not None and self.verify.ok

    def lines(self) -> list[str]:
        out = [f"{self.device}: {'OK' if self.ok else 'FAIL'}"]
        out += [f"  archive: {problem}" for problem in self.problems]
        if self.verify is not None:
            out += [f"  {line}" for line in self.verify.summary().splitlines()]
        out += [f"  note: {note}" for note in [*self.notes, *(
            self.verify.notes if self.verify else [])]]
        return out


def devices(archive: Archive) -> list[str]:
    """The device folders under the prefix (the probe's is not one)."""
    prefix = archive.location.key("") + "/" if archive.location.prefix else ""
    found: list[str] = []
    try:
        for page in archive.client.get_paginator("list_objects_v2").paginate(
                Bucket=archive.location.bucket, Prefix=prefix, Delimiter="/"):
            found += [item["Prefix"][len(prefix):].rstrip("/")
                      for item in page.get("CommonPrefixes", [])]
    except client_errors() as exc:
        raise ArchiveError(f"cannot list {archive.location}: {describe_error(exc)}") from None
    return sorted(d for d in found if d and not d.startswith("."))


def verify_archive(archive: Archive, key: Path | None = None,
                   device: str | None = None) -> list[ArchiveReport]:
    """Every device's archive (or the one named), each downloaded and verified."""
    names = [device] if device else devices(archive)
    if not names:
        raise ArchiveError(f"{archive.location}: no device's archive under this prefix")
    with tempfile.TemporaryDirectory(prefix="bodycam-archive-") as tmp:
        return [check_device(archive, name, Path(tmp) / name, key) for name in names]


def check_device(archive: Archive, device: str, folder: Path,
                 key: Path | None = None) -> ArchiveReport:
    """One device's archive, downloaded into `folder` (a new store) and verified."""
    report = ArchiveReport(device)
    now = datetime.now(UTC)
    (folder / "keys").mkdir(parents=True)
    proofs: list[_Kept] = []  # the slices and the key: each file needs them kept as long
    lines = _join_chain(archive, device, folder / "chain.jsonl", report, proofs, now)
    if lines == 0:
        report.problems.append(f"no chain slice under {archive.location.key(device, 'chain')}/")
        return report
    if key is None:
        key_name = archive.location.key(device, "keys", PUBLIC_NAME)
        data = _get(archive, key_name, None, report, f"the device's key {key_name}",
                    partial(_locked, now=now, kept=proofs, what="the device's key",
                            key=key_name))
        if data is None:
            return report
        (folder / "keys" / PUBLIC_NAME).write_bytes(data)
    records = read_bodies(folder / "chain.jsonl")
    receipts = _receipts(archive, device, folder, lines, report)
    named = _named(records) | _named(receipts)
    # The verifier reads the custody records in the chain; a receipt past it is read here.
    past = [r for r in receipts if r["seq"] > lines and isinstance(r.get("payload"), dict)]
    facts = chain_facts(records) if past else ({}, {})
    for receipt in past:
        report.problems += [f"custody record {receipt['seq']} (its receipt, past the archived "
                            f"chain): {problem}"
                            for problem in custody_problems(receipt["payload"], *facts)]
    files: dict[int, datetime] = {}  # seq -> how long the archive must keep the file
    unnamed = []
    for record in records:
        name = sealed_file(record)  # never a name that could point outside the folder
        if name is None:
            continue
        place = named.get(record["seq"])
        if place is None:
            unnamed.append(name)
            continue
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        _first_version(archive, place["key"], report)  # notes what was put on top of it
        _get(archive, place["key"], place["version_id"], report,
             f"{name} (record {record['seq']})",
             partial(_retention, place=place, now=now, kept=files, seq=record["seq"]),
             folder / name)
    report.problems += _short_proofs(proofs, files, _slices_named(records, receipts),
                                     {r["seq"]: r["payload"]["file"] for r in records
                                      if r.get("seq") in files})
    if unnamed:
        report.notes.append(f"{len(unnamed)} sealed file(s) named by no custody record's "
                            f"archive, first {unnamed[0]}: not archived (taken into custody "
                            "before the dock archived, or not yet)")
    verified = verify_store(folder, key)
    expected = {f"{r['payload']['file']} (record {r['seq']})" for r in records
                if r.get("seq") in named}
    kept = []
    for finding in verified.findings:  # a file the archive was never to hold is not missing
        if finding.problem == _MISSING and not any(finding.where.endswith(e) for e in expected):
            continue
        kept.append(finding)
    verified.findings = kept
    report.verify = verified
    return report


def _join_chain(archive: Archive, device: str, chain: Path, report: ArchiveReport,
                kept: list[_Kept], now: datetime) -> int:
    """The slices joined into `chain`; returns the lines held. Slices must run on from line
    1; one that overlaps must agree with the lines held. Each slice read is added to `kept`,
    and named unless under COMPLIANCE retention that has not ended."""
    held: list[bytes] = []
    for first, last, key in archive.chain_slices(device):
        version = _first_version(archive, key, report)
        data = _get(archive, key, version, report, f"chain slice {key}",
                    partial(_locked, now=now, kept=kept, what="chain slice", key=key,
                            version=version, first=first))
        if data is None:
            continue
        lines = data.splitlines(keepends=True)
        if len(lines) != last - first + 1 or not data.endswith(b"\n"):
            report.problems.append(f"chain slice {key} holds {len(lines)} lines, its name "
                                   f"says {last - first + 1}: changed")
            continue
        if first > len(held) + 1:
            report.problems.append(f"chain lines {len(held) + 1}-{first - 1} are in no "
                                   "archived slice: missing")
            break
        overlap = held[first - 1:]
        if lines[:len(overlap)] != overlap:
            report.problems.append(f"chain slice {key} differs from the slices before it "
                                   f"on lines {first}-{min(last, len(held))}: changed")
            continue
        held += lines[len(overlap):]
    chain.write_bytes(b"".join(held))
    return len(held)


def _first_version(archive: Archive, key: str, report: ArchiveReport) -> str | None:
    """The oldest version at `key`: the dock writes each key once, and a version under
    COMPLIANCE retention cannot be changed or removed, so what was put on top later is an
    overwrite (noted, with how many) and the first is the archived one."""
    try:
        listed = archive.client.list_object_versions(Bucket=archive.location.bucket,
                                                     Prefix=key)
    except client_errors() as exc:
        raise ArchiveError(f"cannot list the versions of {key} in {archive.location}: "
                           f"{describe_error(exc)}") from None
    # S3 lists a key's versions newest first (timestamps may tie within a second).
    versions = [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]
    markers = [v for v in listed.get("DeleteMarkers", []) if v["Key"] == key]
    if not versions:
        return None
    if len(versions) + len(markers) > 1:
        report.notes.append(f"{key}: {len(versions) + len(markers) - 1} version(s) or delete "
                            f"marker(s) put on top of the archived {versions[-1]} (overwritten "
                            "or deleted through S3; the archived version is what is checked)")
    return str(versions[-1])


def _named(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """seq -> the archived object a custody record names for that sealed file."""
    named: dict[int, dict[str, Any]] = {}
    for record in records:
        payload = record.get("payload")
        if record.get("type") != "custody" or not isinstance(payload, dict) or \
                not isinstance(payload.get("archive"), dict):
            continue
        for item in payload["archive"].get("objects", []):
            if isinstance(item, dict) and isinstance(item.get("seq"), int) and \
                    isinstance(item.get("key"), str) and isinstance(item.get("version_id"), str):
                named[item["seq"]] = item
    return named


def _receipts(archive: Archive, device: str, folder: Path, lines: int,
              report: ArchiveReport) -> list[dict[str, Any]]:
    """The archived receipts' custody records: those the chain reaches go in receipts/,
    where the verifier checks each as a witness of the head; the newest (its record is
    archived with the next pull's slice) only says where its files are and how they are
    kept, and those files are checked against the chain's sealed hashes all the same."""
    prefix = archive.location.key(device, RECEIPTS) + "/"
    keys = []
    try:
        for page in archive.client.get_paginator("list_objects_v2").paginate(
                Bucket=archive.location.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
    except client_errors() as exc:
        raise ArchiveError(f"cannot list {prefix} in {archive.location}: "
                           f"{describe_error(exc)}") from None
    bodies = []
    for key in keys:
        data = _get(archive, key, _first_version(archive, key, report), report,
                    f"receipt {key}", partial(_locked, now=datetime.now(UTC)))
        name = key[len(prefix):]
        try:
            _, _, body = parse_line((data or b"").rstrip(b"\n"))
        except ValueError:
            body = {}
        if data is None or not _RECEIPT.fullmatch(name) or body.get("seq") != int(name[:8]):
            if data is not None:
                report.problems.append(f"receipt {key} is not the custody record its name "
                                       "says: changed")
            continue
        if body["seq"] <= lines:
            (folder / RECEIPTS).mkdir(exist_ok=True)
            (folder / RECEIPTS / name).write_bytes(data)
        else:
            report.notes.append(f"receipt {key}: custody record {body['seq']} is past the "
                                f"archived chain (line {lines}); the next pull archives it")
        bodies.append(body)
    return bodies


def _locked(head: dict[str, Any], now: datetime, kept: list[_Kept] | None = None,
            what: str = "", key: str = "", version: str | None = None,
            first: int = 1) -> str | None:
    """What is wrong with an object version's lock: not under COMPLIANCE retention, or out
    of it; or None. With `kept`, a version whose lock is right is added to it (`version`,
    else the one read)."""
    until = _until(head)
    if head.get("ObjectLockMode") != MODE or until is None:
        return f"not under {MODE} retention (held: {head.get('ObjectLockMode') or 'no lock'})"
    if until < now:
        return f"out of retention since {until:{UNTIL}}"
    if kept is not None:
        kept.append(_Kept(what, key, version or head.get("VersionId"), until, first))
    return None


def _retention(head: dict[str, Any], place: dict[str, Any], now: datetime,
               kept: dict[int, datetime], seq: int) -> str | None:
    """What is wrong with a sealed file's version's retention (`_locked`, or retained less
    than its custody record names), or None. How long the archive must keep it (the longer
    of what it holds and what is named) goes in `kept` by its record's seq."""
    problem = _locked(head, now)
    until, named = _until(head), until_of(place.get("retain_until"))
    longest = max((d for d in (until, named) if d is not None), default=None)
    if longest is not None:
        kept[seq] = longest
    if problem is None and until is not None and named is not None and until < named:
        return f"retained until {until:{UNTIL}}, before the {named:{UNTIL}} the custody " \
               "record names"
    return problem


def _short_proofs(proofs: list[_Kept], files: dict[int, datetime],
                  named: dict[str, datetime], names: dict[int, str]) -> list[str]:
    """The slices and the key retained less than a file they prove (`proved`), and the
    slices retained less than a custody record names for them; one problem each."""
    problems = []
    for kept in proofs:
        asked = named.get(kept.key)
        needed = proved(kept.first, files)
        if asked is not None and kept.until < asked:
            problems.append(f"{kept.what} {kept.key} version {kept.version}: retained until "
                            f"{kept.until:{UNTIL}}, before the {asked:{UNTIL}} the custody "
                            "record names")
        elif needed is not None and kept.until < needed[1]:
            seq, until = needed
            problems.append(f"{kept.what} {kept.key} version {kept.version}: retained until "
                            f"{kept.until:{UNTIL}}, before the {until:{UNTIL}} of "
                            f"{names.get(seq)} (record {seq}), which it proves")
    return problems


def _slices_named(*bodies: list[dict[str, Any]]) -> dict[str, datetime]:
    """key -> the latest retain-until a custody record names for a chain slice (its
    `archive.objects` entry without `seq`)."""
    named: dict[str, datetime] = {}
    for record in (r for records in bodies for r in records):
        payload = record.get("payload")
        if record.get("type") != "custody" or not isinstance(payload, dict) or \
                not isinstance(payload.get("archive"), dict):
            continue
        for item in payload["archive"].get("objects", []):
            until = until_of(item.get("retain_until")) if isinstance(item, dict) else None
            if until is not None and "seq" not in item and isinstance(item.get("key"), str):
                named[item["key"]] = max(until, named.get(item["key"], until))
    return named


def _until(head: dict[str, Any]) -> datetime | None:
    until = head.get("ObjectLockRetainUntilDate")
    return until.astimezone(UTC) if until is not None else None




def _get(archive: Archive, key: str, version: str | None, report: ArchiveReport, what: str,
         check: Callable[[dict[str, Any]], str | None] | None = None,
         into: Path | None = None) -> bytes | None:
    """An object (a given version, else the newest): its bytes, or with `into` streamed to
    that file; None with the problem noted when it cannot be read, and (by `check` on its
    headers) when its retention is not what it must be."""
    arguments = {"Bucket": archive.location.bucket, "Key": key}
    if version is not None:
        arguments["VersionId"] = version
    try:
        answer = archive.client.get_object(**arguments)
        if into is None:
            data = bytes(answer["Body"].read())
        else:
            data = b""
            with into.open("wb") as f:
                for chunk in answer["Body"].iter_chunks(CHUNK):
                    f.write(chunk)
    except client_errors() as exc:
        which = f" version {version}" if version else ""
        report.problems.append(f"{what}: {key}{which} cannot be read from the archive "
                               f"({describe_error(exc)}): missing")
        return None
    problem = check(answer) if check else None
    if problem:
        report.problems.append(f"{what}: {key} version {version or answer.get('VersionId')}: "
                               f"{problem}")
    return data
