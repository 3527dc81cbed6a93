"""`bodycam verify s3://` on an archive built by hand in a real S3 server (SeaweedFS): the
newest receipt, whose custody record the archived chain does not reach yet, is held to the
same retention rule as the custody records in the chain (agent/evidence/retention.py); a
chain slice, the key and a receipt are held under COMPLIANCE retention as the files are,
and the slices and the key at least as long as each file they prove."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.dock.archive import MODE, Archive, Location
from agent.dock.archive_check import check_device
from agent.evidence.chain import split_line
from agent.evidence.retention import MARKED, STANDARD
from tests.support.mutants import MARK, Base, kept, kept_after, resign
from tests.support.s3server import S3Server

DEVICE = "TEST-0001"


ENDED = timedelta(seconds=2)  # a retention that has ended by the time the archive is read


def _archived_with_receipt(recorded: Path, work: Path, server: S3Server,
                           retention: str, days: int, odd: str = "", how: str = "",
                           slice_named: timedelta | None = None) -> Archive:
    """The recorded chain with a new marked recording appended, archived as one slice with
    its segment; then the receipt of a custody after it that holds the segment under
    `retention`, archived `days` after its sealing (named with the real version). The
    object `odd` ("chain", "key", "receipt") is put `how` (`_put`); with `slice_named`, the
    custody record also names the slice, retained that much longer than the file."""
    base = Base(recorded)
    first = next(b for b in base.bodies if b["type"] == "segment_sealed")
    n = len(base.bodies)
    store = work / "store"
    shutil.copytree(recorded, store, ignore=shutil.ignore_patterns("control.sock"))
    kept_after(first, n + 1, n + 2, [MARK, kept(retention, days)])(store)
    lines = (store / "chain.jsonl").read_bytes().splitlines(keepends=True)
    archive = Archive(Location(server.bucket(), "agency"), server.client())
    segment = Base(store).bodies[n + 1]
    file = segment["payload"]["file"]
    until = datetime.strptime(_named(lines[-1])["retain_until"], "%Y-%m-%dT%H:%M:%SZ"
                              ).replace(tzinfo=UTC)
    held = archive.put_file(archive.location.key(DEVICE, file), store / file,
                            segment["payload"]["sha256"], until)

    def put(which: str, key: str, data: bytes) -> str:
        return _put(archive, key, data, until, how if which == odd else "")

    put("key", archive.location.key(DEVICE, "keys", "device.pub"),
        (store / "keys" / "device.pub").read_bytes())
    chain = archive.location.key(DEVICE, "chain", f"00000001-{n + 3:08d}.jsonl")
    version = put("chain", chain, b"".join(lines[:-1]))
    bodies: list[Any] = Base(store).bodies
    objects = bodies[-1]["payload"]["archive"]["objects"]
    objects[0].update(key=held.key, version_id=held.version_id)
    if slice_named is not None:
        objects.append({"key": chain, "version_id": version,
                        "retain_until": f"{until + slice_named:%Y-%m-%dT%H:%M:%SZ}"})
    resign(store, bodies)
    receipt = (store / "chain.jsonl").read_bytes().splitlines(keepends=True)[-1]
    put("receipt", archive.location.key(DEVICE, "receipts", f"{n + 4:08d}-custody.jsonl"),
        receipt)
    if how == "ended":
        time.sleep(ENDED.total_seconds() + 1)
    return archive


def _put(archive: Archive, key: str, data: bytes, until: datetime, how: str) -> str:
    """`data` at `key`: as the dock puts it (""), or with no lock, under GOVERNANCE, under a
    retention that has ended ("ended"), or a day shorter than `until` ("short")."""
    s3, bucket = archive.client, archive.location.bucket
    if how == "":
        return archive.put_bytes(key, data, until).version_id
    lock = {"no lock": {}, "governance": {"ObjectLockMode": "GOVERNANCE",
                                          "ObjectLockRetainUntilDate": until},
            "ended": {"ObjectLockMode": MODE,
                      "ObjectLockRetainUntilDate": datetime.now(UTC) + ENDED},
            "short": {"ObjectLockMode": MODE,
                      "ObjectLockRetainUntilDate": until - timedelta(days=1)}}[how]
    return str(s3.put_object(Bucket=bucket, Key=key, Body=data, **lock)["VersionId"])


def _named(line: bytes) -> dict[str, Any]:
    """The archived object the custody record on `line` names."""
    return dict(json.loads(split_line(line.rstrip(b"\n"))[0])["payload"]["archive"]
                ["objects"][0])


@pytest.mark.parametrize("retention, days, problems", [
    (MARKED, 3650, []),
    (STANDARD, 365, ["as 'standard', but the chain gives it 'marked'",
                     "its class 'marked' needs: 3650 days"]),
])
def test_a_receipt_past_the_archived_chain_keeps_its_files_for_their_class(
        recorded_store: Path, tmp_path: Path, s3_server: S3Server, retention: str,
        days: int, problems: list[str]) -> None:
    archive = _archived_with_receipt(recorded_store, tmp_path, s3_server, retention, days)

    report = check_device(archive, DEVICE, tmp_path / "download")

    assert len(report.problems) == len(problems), report.lines()
    for said, wanted in zip(report.problems, problems, strict=True):
        assert said.startswith(f"custody record {len(Base(recorded_store).bodies) + 4} (its "
                               "receipt, past the archived chain): ") and wanted in said
        assert "sealed/" in said
    assert report.verify is not None and report.verify.ok, report.lines()


@pytest.mark.parametrize("odd, how, problem", [
    ("chain", "no lock", "not under COMPLIANCE retention (held: no lock)"),
    ("chain", "governance", "not under COMPLIANCE retention (held: GOVERNANCE)"),
    ("chain", "ended", "out of retention since "),
    ("chain", "short", "which it proves"),
    ("key", "no lock", "not under COMPLIANCE retention (held: no lock)"),
    ("key", "short", "which it proves"),
    ("receipt", "no lock", "not under COMPLIANCE retention (held: no lock)"),
    ("receipt", "ended", "out of retention since "),
], ids=lambda v: v if v in ("chain", "key", "receipt", "no lock", "governance", "ended",
                            "short") else "named")
def test_a_slice_the_key_or_a_receipt_not_kept_as_the_files_are_is_named(
        recorded_store: Path, tmp_path: Path, s3_server: S3Server, odd: str, how: str,
        problem: str) -> None:
    archive = _archived_with_receipt(recorded_store, tmp_path, s3_server, MARKED, 3650,
                                     odd, how)
    prefix = {"chain": "chain/", "key": "keys/", "receipt": "receipts/"}[odd]
    s3 = archive.client
    (version,) = [v for v in s3.list_object_versions(
        Bucket=archive.location.bucket, Prefix=f"agency/{DEVICE}/{prefix}")["Versions"]]
    file = s3.list_object_versions(Bucket=archive.location.bucket,
                                   Prefix=f"agency/{DEVICE}/sealed/")["Versions"][0]
    file_until = s3.head_object(Bucket=archive.location.bucket, Key=file["Key"],
                                VersionId=file["VersionId"])["ObjectLockRetainUntilDate"]

    report = check_device(archive, DEVICE, tmp_path / "download")

    (said,) = report.problems
    assert f"{version['Key']} version {version['VersionId']}: " in said and problem in said, said
    if how == "short":  # the date short of, and the file it proves, by name and record
        name = file["Key"].split("/", 2)[2]
        assert f"retained until {file_until - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}, before " \
               f"the {file_until:%Y-%m-%dT%H:%M:%SZ} of {name} " \
               f"(record {len(Base(recorded_store).bodies) + 2}), which it proves" in said
    assert report.verify is not None and report.verify.ok, report.lines()


def test_a_slice_kept_less_than_its_custody_record_names_is_named(
        recorded_store: Path, tmp_path: Path, s3_server: S3Server) -> None:
    archive = _archived_with_receipt(recorded_store, tmp_path, s3_server, MARKED, 3650,
                                     slice_named=timedelta(days=1))

    report = check_device(archive, DEVICE, tmp_path / "download")

    (said,) = report.problems
    assert said.startswith(f"chain slice agency/{DEVICE}/chain/00000001-") and \
        "the custody record names" in said, said
