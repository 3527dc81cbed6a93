"""A pull into the write-once archive, against a real docked device and a real S3 server
(SeaweedFS): every sealed file and the chain archived under COMPLIANCE retention and read
back before custody; the custody record names the archived versions; nothing purged on the
device that the archive does not hold; a store that does not enforce the lock refused."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.device.state import State
from agent.dock.archive import MODE, RENEWAL, Archive, Location
from agent.dock.pull import DockError, pull
from agent.evidence.retention import MARKED
from agent.evidence.verify import verify_store
from tests.evidence.test_chain_format import run_procedure, tools  # noqa: F401  (a fixture)
from tests.support.device import wait_for
from tests.support.dockside import Docked, docked_device, sealed_segments, snapshot
from tests.support.pki import Pki
from tests.support.s3server import S3Server, not_enforcing, refusing_writes

SEGMENTS = 6


def _archive(server: S3Server, bucket: str) -> Archive:
    return Archive(Location(bucket, "agency"), server.client())


def _pull(device: Docked, out: Path, archive: Archive, **kwargs: Any) -> Any:
    return asyncio.run(pull(device.url, out, device.link(), "operator Li", archive=archive,
                            **kwargs))


def _head(server: S3Server, bucket: str, key: str, version: str) -> dict[str, Any]:
    return dict(server.client().head_object(Bucket=bucket, Key=key, VersionId=version,
                                            ChecksumMode="ENABLED"))


def test_a_pull_archives_every_file_before_custody_and_the_record_names_them(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server,
        tools: Path) -> None:  # noqa: F811
    bucket = s3_server.bucket()
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device:
        sealed = {r["seq"]: r["payload"] for r in sealed_segments(device.store)}
        assert len(sealed) >= SEGMENTS
        started = datetime.now(UTC)

        result = _pull(device, tmp_path / "dock", _archive(s3_server, bucket))

        assert result.ok, result.problem
        # Every sealed file is an object version the store holds whole, with the sealed
        # SHA-256, under COMPLIANCE retention for a year.
        assert set(result.archived.files) == set(sealed)
        for seq, payload in sealed.items():
            held = result.archived.files[seq]
            assert held.key == f"agency/TEST-0001/{payload['file']}"
            head = _head(s3_server, bucket, held.key, held.version_id)
            assert head["ContentLength"] == payload["size"]
            assert base64.b64decode(head["ChecksumSHA256"]).hex() == payload["sha256"]
            assert head["ObjectLockMode"] == MODE
            assert head["ObjectLockRetainUntilDate"] >= started + timedelta(days=364)
        # The chain up to the head the dock verified, byte for byte, as one slice.
        chain = result.archived.chain
        assert chain.key == f"agency/TEST-0001/chain/00000001-{result.verify.head['seq']:08d}.jsonl"
        body = s3_server.client().get_object(Bucket=bucket, Key=chain.key,
                                             VersionId=chain.version_id)["Body"].read()
        assert (tmp_path / "dock" / "TEST-0001" / "chain.jsonl").read_bytes() == body
        # The device's custody record names the archive, the keys and the version ids...
        (custody,) = device.records("custody")
        named = custody["payload"]["archive"]
        assert named["bucket"] == bucket and named["endpoint"] == s3_server.endpoint
        assert {(o.get("seq"), o["key"], o["version_id"]) for o in named["objects"]} == {
            (seq, h.key, h.version_id) for seq, h in result.archived.files.items()} | {
            (None, chain.key, chain.version_id)}
        # ...and the archive holds that record too, as the dock received it.
        receipt = result.archived.receipt
        assert receipt.key == f"agency/TEST-0001/receipts/{custody['seq']:08d}-custody.jsonl"
        assert s3_server.client().get_object(
            Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)["Body"].read() == (
            tmp_path / "dock" / "TEST-0001" / "receipts" / receipt.key.rsplit("/", 1)[1]
        ).read_bytes()
        # Purged on the device only now, after custody, and all of it archived.
        (purge,) = device.records("purge")
        assert {f["seq"] for f in purge["payload"]["files"]} == set(sealed)
        assert verify_store(device.store).ok and verify_store(tmp_path / "dock" / "TEST-0001").ok
        # The procedure with standard tools still reads a custody record naming an archive.
        shell = run_procedure(device.store, tools, tmp_path / "work")
        assert shell.returncode == 0 and "FAIL" not in shell.stdout, shell.stdout[-2000:]
        assert shell.stdout.count("was purged after custody") == len(sealed)
        manifest = json.loads((tmp_path / "dock" / "TEST-0001" / "manifest.json").read_text())
        assert manifest["archive"]["bucket"] == bucket
        assert len(manifest["archive"]["files"]) == len(sealed)


def test_files_are_archived_once_and_the_chain_runs_on_in_slices(
        device: Docked, tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    first = _pull(device, tmp_path / "dock", _archive(s3_server, bucket), custody=False)
    assert first.problem is None and first.archived.files
    # A pull cut after the archive and before custody, run again: the same versions.
    second = _pull(device, tmp_path / "dock", _archive(s3_server, bucket))
    third = _pull(device, tmp_path / "dock", _archive(s3_server, bucket))

    assert second.ok and third.ok, second.problem or third.problem
    assert second.archived.files == first.archived.files
    assert third.archived.files == {}  # all in custody: nothing more to take
    versions = s3_server.client().list_object_versions(
        Bucket=bucket, Prefix="agency/TEST-0001/sealed/")["Versions"]
    assert len(versions) == len(first.archived.files)
    # The chain: lines 1-N, then only what the device sealed since (the custody record...).
    slices = sorted(o["Key"].rsplit("/", 1)[1] for o in s3_server.client().list_objects_v2(
        Bucket=bucket, Prefix="agency/TEST-0001/chain/")["Contents"])
    ends = [tuple(int(n) for n in name[:-6].split("-")) for name in slices]
    assert ends[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ends))
    assert ends[-1][1] == third.verify.head["seq"]
    joined = b"".join(s3_server.client().get_object(
        Bucket=bucket, Key=f"agency/TEST-0001/chain/{name}")["Body"].read() for name in slices)
    assert joined == (tmp_path / "dock" / "TEST-0001" / "chain.jsonl").read_bytes()


@pytest.mark.parametrize("store", ["without Object Lock", "not enforcing the lock"])
def test_nothing_is_reported_or_purged_when_the_store_does_not_hold_a_lock(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server, store: str) -> None:
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device, \
            not_enforcing(s3_server) as lying:
        files = snapshot(device.store)
        chain = (device.store / "chain.jsonl").read_bytes()
        archive = _archive(s3_server, s3_server.bucket(locked=False)) \
            if store == "without Object Lock" else _archive(lying, s3_server.bucket())

        with pytest.raises(DockError, match="Object Lock") as refused:
            _pull(device, tmp_path / "dock", archive)

        assert "\n" not in str(refused.value)
        assert not (tmp_path / "dock").exists()  # refused before anything was pulled
        assert (device.store / "chain.jsonl").read_bytes() == chain
        assert snapshot(device.store) == files


def test_a_store_failing_mid_pull_leaves_custody_unreported_and_nothing_purged(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device, \
            refusing_writes(s3_server, "/sealed/00000") as failing:
        files = snapshot(device.store)

        result = _pull(device, tmp_path / "dock", _archive(failing, bucket))

        assert not result.ok and result.custody_seq is None
        assert result.problem.startswith("archive: cannot write agency/TEST-0001/sealed/")
        assert "AccessDenied" in result.problem
        assert not device.records("custody") and not device.records("purge")
        assert snapshot(device.store) == files
        manifest = json.loads((tmp_path / "dock" / "TEST-0001" / "manifest.json").read_text())
        assert manifest["status"] == "refused" and manifest["archive"] is None

        # The store back to health, the same pull goes through and only then purges.
        again = _pull(device, tmp_path / "dock", _archive(s3_server, bucket))
        assert again.ok, again.problem
        assert {f["seq"] for f in device.records("purge")[0]["payload"]["files"]} == \
            set(again.archived.files)


def test_the_device_refuses_an_archive_that_leaves_out_a_file_it_takes(
        device: Docked, tmp_path: Path, s3_server: S3Server) -> None:
    from tests.system.test_dock import _report, request

    pulled = _pull(device, tmp_path / "dock", _archive(s3_server, s3_server.bucket()),
                   custody=False)
    evidence = tmp_path / "dock" / "TEST-0001"
    claim = pulled.archived.claim()
    short = {**claim, "objects": [o for o in claim["objects"]
                                  if o.get("seq") != min(pulled.archived.files)]}
    stray = {**claim, "objects": [*claim["objects"], {**claim["objects"][0], "seq": 1}]}
    for archive, why in ((short, "archive names no object for"),
                         (stray, "archive names seq 1")):
        status, answer = request(device, "POST", "/v1/custody",
                                 json=_report(device, evidence, archive=archive))
        assert status == 422 and why in json.loads(answer)["error"], answer
    assert not device.records("custody")
    status, answer = request(device, "POST", "/v1/custody",
                             json=_report(device, evidence, archive=claim,
                                          report_id=str(uuid.uuid4())))
    assert status == 200, answer
    assert device.records("custody")[0]["payload"]["archive"] == claim


def test_a_device_keeping_longer_than_the_dock_is_archived_for_its_own_days(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server) -> None:
    """The device's [retention] (400 and 4000 days) is longer than the dock's (365 and
    3650): the dock archives for the device's days, which the device holds the custody
    report to, rather than having every custody refused and the device fill up."""
    longer = {"extra": "[retention]\nstandard_days = 400\nmarked_days = 4000"}
    with docked_device(tmp_path, recorded, dock_pki, longer) as device:
        result = _pull(device, tmp_path / "dock", _archive(s3_server, s3_server.bucket()))
        assert result.ok, result.problem
        assert result.retention_days == {"standard": 400, "marked": 4000}
        (custody,) = device.records("custody")
    assert custody["payload"]["retention_days"] == {"standard": 400, "marked": 4000}
    sealed = {r["seq"]: r for r in device.records("segment_sealed")}
    for item in custody["payload"]["archive"]["objects"]:
        if "seq" in item:
            wall = datetime.strptime(sealed[item["seq"]]["wall"], "%Y-%m-%dT%H:%M:%S.%fZ")
            until = datetime.strptime(item["retain_until"], "%Y-%m-%dT%H:%M:%SZ")
            assert until >= wall + timedelta(days=400) - timedelta(seconds=1), item
    manifest = json.loads((tmp_path / "dock" / "TEST-0001" / "manifest.json").read_text())
    assert manifest["retention_days"] == {"standard": 400, "marked": 4000}


def test_dock_pull_archive_from_the_command_line(device: Docked, tmp_path: Path,
                                                s3_server: S3Server,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    tls = ["--device", device.url, "--cert", str(device.pki.pem("dock.crt")),
           "--key", str(device.pki.pem("dock.key")), "--ca", str(device.pki.pem("device-ca.pem")),
           "--operator", "Li", "--out", str(tmp_path / "ev")]
    plain = s3_server.bucket(locked=False)
    with pytest.raises(SystemExit) as refused:
        main(["dock", "pull", *tls, "--archive", f"s3://{plain}/agency"])
    assert "Object Lock" in str(refused.value.code) and "\n" not in str(refused.value.code)
    assert not device.records("custody")

    bucket = s3_server.bucket()
    assert main(["dock", "pull", *tls, "--archive", f"s3://{bucket}/agency",
                 "--retention-days", "400"]) == 0
    out = capsys.readouterr().out
    assert f"held under COMPLIANCE retention in s3://{bucket}/agency, read back" in out
    (custody,) = device.records("custody")
    some = custody["payload"]["archive"]["objects"][0]
    head = _head(s3_server, bucket, some["key"], some["version_id"])
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=399)
    chain = (device.store / "chain.jsonl").read_bytes()
    assert main(["dock", "pull", *tls, "--archive", "s3://x/agency"]) == 2
    assert capsys.readouterr().err == ("bodycam dock: --archive: 's3://x/agency' is not "
                                       "s3://BUCKET[/PREFIX] with a bucket name of 3 to 63 "
                                       "lower-case letters, digits, dots and dashes\n")
    assert main(["dock", "pull", *tls, "--archive", f"s3://{bucket}/agency",
                 "--retention-days", "4000"]) == 2
    assert capsys.readouterr().err == ("bodycam dock: --marked-retention-days 3650 must be "
                                       "longer than --retention-days 4000: marked footage is "
                                       "kept longer\n")
    assert (device.store / "chain.jsonl").read_bytes() == chain



def test_marked_footage_is_archived_for_the_marked_retention(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server) -> None:
    """Each file is kept for its class: the files of a recording marked important (重要标记)
    for the marked retention (3650 days), the others for the standard (365); a file
    archived before the mark made it marked is listed again and its retention extended."""
    bucket = s3_server.bucket()
    archive = _archive(s3_server, bucket)
    with docked_device(tmp_path, recorded, dock_pki) as device:
        daemon = device.daemon
        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        recording = daemon.recorder.recording_id
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a segment")
        started = datetime.now(UTC)
        first = _pull(device, tmp_path / "dock", archive)
        assert first.ok, first.problem
        daemon.controls.press()  # the mark, after the first pull archived the early files
        wait_for(lambda: device.records("mark"), what="the mark")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        second = _pull(device, tmp_path / "dock", archive)
        assert second.ok, second.problem
        custody = device.records("custody")[-1]

    sealed = sealed_segments(device.store)
    marked = {r["seq"] for r in sealed if r["payload"]["recording"] == recording}
    early = marked & set(first.archived.files)
    assert early and marked < {r["seq"] for r in sealed}
    assert {s["seq"] for s in custody["payload"]["segments"]
            if s.get("retention") == MARKED} == marked
    for r in sealed:
        held = second.archived.files.get(r["seq"]) or first.archived.files[r["seq"]]
        until = _head(s3_server, bucket, held.key, held.version_id)["ObjectLockRetainUntilDate"]
        if r["seq"] in marked:
            assert until >= started + timedelta(days=3649), (r["seq"], until)
        else:
            assert until < started + timedelta(days=366), (r["seq"], until)


def test_the_chain_slices_that_prove_a_file_marked_later_are_kept_as_long_as_it(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A file's proof is the chain from line 1 through its record: a file archived for a
    year, then marked important (重要标记) and extended to ten, takes the slices archived
    with it to ten years too, and `bodycam verify s3://` finds each slice kept as long as
    every file it proves."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.bucket()
    archive = _archive(s3_server, bucket)
    with docked_device(tmp_path, recorded, dock_pki) as device:
        daemon = device.daemon
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a segment")
        recording = daemon.recorder.recording_id
        first = _pull(device, tmp_path / "dock", archive)  # slice 1, kept for a year
        assert first.ok, first.problem
        daemon.controls.press()  # the mark
        wait_for(lambda: device.records("mark"), what="the mark")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        second = _pull(device, tmp_path / "dock", archive)
        assert second.ok, second.problem

    s3 = s3_server.client()
    marked = {r["seq"]: second.archived.files.get(r["seq"]) or first.archived.files[r["seq"]]
              for r in sealed_segments(device.store) if r["payload"]["recording"] == recording}
    early = min(set(marked) & set(first.archived.files))
    kept = {seq: _head(s3_server, bucket, held.key, held.version_id)[
        "ObjectLockRetainUntilDate"] for seq, held in marked.items()}
    assert kept[early] > datetime.now(UTC) + timedelta(days=3649)  # marked after slice 1
    slices = s3.list_object_versions(Bucket=bucket, Prefix="agency/TEST-0001/chain/")["Versions"]
    assert len(slices) == 2 and first.archived.chain.key in {v["Key"] for v in slices}
    for version in slices:  # each slice from line 1 through a marked file's record
        from_line = int(version["Key"].rsplit("/", 1)[1][:8])
        until = _head(s3_server, bucket, version["Key"], version["VersionId"])[
            "ObjectLockRetainUntilDate"]
        assert all(until >= kept[seq] for seq in kept if seq >= from_line), \
            (version["Key"], until, kept)
    # The new slice is kept a renewal past the files it proves: no extension for a month.
    new = second.archived.chain
    assert new.retain_until >= max(kept[seq] for seq in kept
                                   if seq >= int(new.key.rsplit("/", 1)[1][:8])) + RENEWAL
    assert main(["verify", f"s3://{bucket}/agency"]) == 0, capsys.readouterr().out


def test_bodycam_verify_checks_the_archive_and_names_what_was_tampered_with(
        device: Docked, tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.bucket()
    first = _pull(device, tmp_path / "dock", _archive(s3_server, bucket))
    assert first.ok, first.problem
    url = f"s3://{bucket}/agency"

    # The newest custody record is past the archived chain: its receipt says where.
    assert main(["verify", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TEST-0001: OK\n") and "is past the archived chain" in out
    second = _pull(device, tmp_path / "dock", _archive(s3_server, bucket))
    assert second.ok and second.archived.chain is not None
    assert main(["verify", url]) == 0
    assert "OK: " in capsys.readouterr().out

    # Through S3, a locked version cannot be changed: an overwrite or a delete is a new
    # version or a marker on top, named, and the archived version is what is checked.
    s3 = s3_server.client()
    slice_key = first.archived.chain.key
    s3.put_object(Bucket=bucket, Key=slice_key, Body=b"a forged chain\n")
    some = next(iter(first.archived.files.values()))
    s3.delete_object(Bucket=bucket, Key=some.key)
    assert main(["verify", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TEST-0001: OK\n")
    assert f"{slice_key}: 1 version(s) or delete marker(s) put on top of the archived " \
           f"{first.archived.chain.version_id}" in out
    assert f"{some.key}: 1 version(s) or delete marker(s) put on top" in out

    # Under the S3 layer, past its lock: one file's version deleted, another's replaced, and
    # a chain slice's put back byte for byte, its lock gone.
    (gone, gone_at), (forged, forged_at) = sorted(first.archived.files.items())[:2]
    s3_server.tamper(bucket, gone_at.key, gone_at.version_id, None)
    s3_server.tamper(bucket, forged_at.key, forged_at.version_id, b"forged footage")
    unlocked = second.archived.chain
    s3_server.tamper(bucket, unlocked.key, unlocked.version_id, s3.get_object(
        Bucket=bucket, Key=unlocked.key, VersionId=unlocked.version_id)["Body"].read())

    assert main(["verify", url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("TEST-0001: FAIL\n")
    assert f"{gone_at.key} version {gone_at.version_id} cannot be read from the archive " \
           "(NoSuchVersion" in out and "): missing" in out
    assert f"{forged_at.key} version {forged_at.version_id}: not under COMPLIANCE" in out
    # (the store lists the replaced version as "null": the filer entry lost its metadata)
    assert re.search(f"chain slice {unlocked.key}: {unlocked.key} version [0-9a-z]+: not "
                     r"under COMPLIANCE retention \(held: no lock\)", out), out
    # The verifier on the download: one file missing, the other not the sealed bytes.
    assert f"{gone_at.key.rsplit('/', 1)[1]} (record {gone}): is missing" in out
    assert f"{forged_at.key.rsplit('/', 1)[1]} (record {forged}): is 14 bytes" in out
    assert main(["verify", f"s3://{s3_server.bucket()}/agency"]) == 2
    assert "no device's archive under this prefix" in capsys.readouterr().err
    assert main(["verify", "s3://X/agency"]) == 2
    assert capsys.readouterr().err.startswith("bodycam verify: 's3://X/agency' is not s3://")


def test_a_pull_cut_before_custody_on_a_device_that_purged_is_archived_on_the_next(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server) -> None:
    """The dock killed after it verified and archived a pull and before custody: the next
    pull reads the chain from its start (the files' records are before the verified head),
    purged files' records included, and archives and reports the files once."""
    archive = _archive(s3_server, s3_server.bucket())
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device:
        first = _pull(device, tmp_path / "dock", archive)
        assert first.ok and first.purged, first.problem
        daemon = device.daemon
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a new segment")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        cut = _pull(device, tmp_path / "dock", archive, custody=False)
        assert cut.problem is None and cut.archived.files

        again = _pull(device, tmp_path / "dock", archive)

        assert again.ok, again.problem
        assert again.archived.files == cut.archived.files  # the same versions, not new ones
        custody = device.records("custody")[-1]
        assert {s["seq"] for s in custody["payload"]["segments"]} == set(cut.archived.files)
