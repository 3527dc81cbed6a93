"""The archive behind the dock, against a real S3 server (SeaweedFS, tests/support/s3server.py):
what the store enforces, the probe that refuses a store that does not, and what a write
counts as archived only after it is read back."""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from agent.dock.archive import (
    MODE,
    RENEWAL,
    Archive,
    ArchiveError,
    Location,
    next_line,
    renew_slices,
    retain_until,
)
from tests.support.s3server import S3Server, not_enforcing

DAY = timedelta(days=1)


def _archive(server: S3Server, bucket: str, prefix: str = "agency") -> Archive:
    return Archive(Location(bucket, prefix), server.client())


def _put_locked(server: S3Server, bucket: str, key: str, data: bytes) -> str:
    return server.client().put_object(
        Bucket=bucket, Key=key, Body=data, ObjectLockMode=MODE,
        ObjectLockRetainUntilDate=datetime.now(UTC) + DAY)["VersionId"]


def test_the_server_enforces_compliance_retention(s3_server: S3Server) -> None:
    """What the archive rests on, checked on the server the tests use: a locked version
    cannot be deleted, even with the governance bypass, nor its retention shortened; an
    overwrite is a new version beside it; a delete marker hides it but keeps it."""
    s3, bucket = s3_server.client(), s3_server.bucket()
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket=bucket)[
        "ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    locked = _put_locked(s3_server, bucket, "a/sealed.ts", b"evidence")

    for extra in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as refused:
            s3.delete_object(Bucket=bucket, Key="a/sealed.ts", VersionId=locked, **extra)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        s3.put_object_retention(Bucket=bucket, Key="a/sealed.ts", VersionId=locked, Retention={
            "Mode": MODE, "RetainUntilDate": datetime.now(UTC) + timedelta(hours=1)})
    overwrite = s3.put_object(Bucket=bucket, Key="a/sealed.ts", Body=b"forged")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="a/sealed.ts")  # a delete marker on top

    assert overwrite != locked
    held = s3.get_object(Bucket=bucket, Key="a/sealed.ts", VersionId=locked)
    assert held["Body"].read() == b"evidence" and held["ObjectLockMode"] == MODE
    versions = s3.list_object_versions(Bucket=bucket, Prefix="a/")
    assert {v["VersionId"] for v in versions["Versions"]} == {locked, overwrite}


def test_the_probe_accepts_a_store_that_enforces_the_lock(s3_server: S3Server) -> None:
    archive = _archive(s3_server, s3_server.bucket())
    archive.probe()
    assert archive.probed
    # It left one locked probe version, which stays.
    listed = s3_server.client().list_object_versions(Bucket=archive.location.bucket,
                                                     Prefix="agency/.probe/")
    assert len(listed["Versions"]) == 1


@pytest.mark.parametrize("versioned", [False, True])
def test_the_probe_refuses_a_bucket_without_object_lock(s3_server: S3Server,
                                                        versioned: bool) -> None:
    bucket = s3_server.bucket(locked=False)
    if versioned:
        s3_server.client().put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    archive = _archive(s3_server, bucket)
    with pytest.raises(ArchiveError) as refused:
        archive.probe()
    message = str(refused.value)
    assert f"s3://{bucket}/agency" in message and "Object Lock" in message
    assert "\n" not in message and not archive.probed


def test_the_probe_refuses_a_store_whose_delete_of_a_locked_version_succeeds(
        s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    with not_enforcing(s3_server) as store:
        archive = _archive(store, bucket)
        with pytest.raises(ArchiveError) as refused:
            archive.probe()
    assert "a delete of a version under COMPLIANCE retention succeeded" in str(refused.value)
    assert not archive.probed


def test_a_file_is_archived_once_read_back_and_its_retention_only_grows(
        s3_server: S3Server, tmp_path: Path) -> None:
    archive = _archive(s3_server, s3_server.bucket())
    archive.probe()
    path = tmp_path / "00000004.ts"
    path.write_bytes(b"\x47" * 188 * 100)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    now = datetime.now(UTC)
    until = retain_until(now, timedelta(days=365), now)

    held = archive.put_file("agency/D/sealed/00000004.ts", path, sha256, until)
    again = archive.put_file("agency/D/sealed/00000004.ts", path, sha256, until)
    longer = archive.put_file("agency/D/sealed/00000004.ts", path, sha256, until + 30 * DAY)

    assert held.size == path.stat().st_size and held.sha256 == sha256 and held.mode == MODE
    assert held.retain_until is not None and held.retain_until >= until
    assert again == held  # archived once: the same version
    assert longer.version_id == held.version_id
    assert longer.retain_until is not None and longer.retain_until >= until + 30 * DAY
    versions = s3_server.client().list_object_versions(Bucket=archive.location.bucket,
                                                       Prefix="agency/D/sealed/")["Versions"]
    assert [v["VersionId"] for v in versions] == [held.version_id]


def test_older_slices_are_extended_past_the_files_they_prove_a_renewal_at_a_time(
        s3_server: S3Server, tmp_path: Path) -> None:
    """A file's proof is the chain from line 1 through its record: the slices before it are
    kept at least as long, extended RENEWAL past it, so that the next pulls, whose files
    need a little more each day, extend nothing until the renewal is used up."""
    archive = _archive(s3_server, s3_server.bucket())
    now = datetime.now(UTC).replace(microsecond=0)
    for first in (1, 4, 7):
        archive.put_bytes(archive.location.key("D", "chain", f"{first:08d}-{first + 2:08d}.jsonl"),
                          b"line\n" * 3, now + DAY)
    s3 = archive.client
    extended: list[str] = []
    s3.meta.events.register("before-call.s3.PutObjectRetention",
                            lambda params, **_: extended.append(params["url_path"]))
    file_until = now + 400 * DAY  # a file whose record is line 5: slices 1-3 and 4-6 prove it

    with ThreadPoolExecutor(2) as pool:
        renew_slices(archive, "D", tmp_path, {5: file_until}, pool)
        kept = {first: s3.head_object(Bucket=archive.location.bucket, Key=key)[
            "ObjectLockRetainUntilDate"] for first, _, key in archive.chain_slices("D")}
        assert kept == {1: file_until + RENEWAL, 4: file_until + RENEWAL, 7: now + DAY}
        assert len(extended) == 2
        # A month of pulls later:
        renew_slices(archive, "D", tmp_path, {5: file_until + 29 * DAY}, pool)
        assert len(extended) == 2
        renew_slices(archive, "D", tmp_path, {8: file_until + 31 * DAY}, pool)
        assert len(extended) == 5


@pytest.mark.parametrize("connect", [False, True], ids=["client", "Archive.connect"])
def test_bytes_that_are_not_the_sealed_ones_are_never_archived(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        connect: bool) -> None:
    """The sealed SHA-256 goes with the bytes: the store refuses a body that does not hash
    to it, so a file changed on the dock's disk after it was verified is not archived.
    Also through the dock's own client, which does not sign the body over plain HTTP: the
    signed checksum header is what binds it."""
    bucket = s3_server.bucket()
    if connect:
        for name, value in s3_server.env().items():
            monkeypatch.setenv(name, value)
        archive = Archive.connect(f"s3://{bucket}/agency")
    else:
        archive = _archive(s3_server, bucket)
    path = tmp_path / "00000004.ts"
    path.write_bytes(b"changed on the dock's disk")
    sealed = hashlib.sha256(b"what the device sealed").hexdigest()
    with pytest.raises(ArchiveError) as refused:
        archive.put_file("agency/D/sealed/00000004.ts", path, sealed,
                         datetime.now(UTC).replace(microsecond=0) + DAY)
    assert "cannot write agency/D/sealed/00000004.ts" in str(refused.value)
    listed = s3_server.client().list_object_versions(Bucket=archive.location.bucket,
                                                     Prefix="agency/D/")
    assert not listed.get("Versions")


def test_a_version_read_back_otherwise_than_written_is_not_archived(s3_server: S3Server,
                                                                   tmp_path: Path) -> None:
    """Held at the key but unlocked (written before, outside the dock): written again, locked."""
    bucket = s3_server.bucket()
    archive = _archive(s3_server, bucket)
    path = tmp_path / "f.ts"
    path.write_bytes(b"evidence")
    sha256 = hashlib.sha256(b"evidence").hexdigest()
    loose = s3_server.client().put_object(
        Bucket=bucket, Key="agency/D/sealed/f.ts", Body=b"evidence",
        ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode())["VersionId"]
    held = archive.put_file("agency/D/sealed/f.ts", path, sha256,
                            datetime.now(UTC).replace(microsecond=0) + DAY)
    assert held.version_id != loose and held.mode == MODE


def test_chain_slices_run_on_from_the_first_line() -> None:
    assert next_line([]) == 1
    assert next_line([(1, 10, "a"), (11, 25, "b")]) == 26
    assert next_line([(11, 25, "b"), (1, 10, "a")]) == 26
    assert next_line([(1, 10, "a"), (12, 25, "gap")]) == 11  # a gap is archived again


def test_retention_counts_from_sealing_within_bounds() -> None:
    now = datetime(2026, 12, 3, 12, 0, 0, 500_000, tzinfo=UTC)
    year = timedelta(days=365)
    assert retain_until(now - 10 * DAY, year, now) == \
        (now - 10 * DAY + year).replace(microsecond=0) + timedelta(seconds=1)
    assert retain_until(now - 400 * DAY, year, now) >= now + DAY  # older than its retention
    assert retain_until(now + 9000 * DAY, year, now) <= now + year + timedelta(seconds=1)


@pytest.mark.parametrize("url", ["s3:/bucket", "http://bucket/p", "s3://B/p", "s3://a/p"])
def test_an_archive_url_that_is_not_s3_bucket_prefix_is_named(url: str) -> None:
    with pytest.raises(ArchiveError, match="not s3://BUCKET"):
        Location.parse(url)
    assert Location.parse("s3://evidence-2026/agency/north/") == \
        Location("evidence-2026", "agency/north")


def test_a_profile_or_endpoint_that_is_not_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ArchiveError, match="no-such-profile"):
        Archive.connect("s3://evidence/agency")
    monkeypatch.delenv("AWS_PROFILE")
    with pytest.raises(ArchiveError, match="Invalid endpoint: not a url"):
        Archive.connect("s3://evidence/agency", "not a url")
