"""`bodycam verify s3://` on an archive built by hand in a real S3 server (SeaweedFS): the
newest receipt, whose custody record the archived chain does not reach yet, is held to the
same retention rule as the custody records in the chain (agent/evidence/retention.py)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.dock.archive import Archive, Location
from agent.dock.archive_check import check_device
from agent.evidence.chain import split_line
from agent.evidence.retention import MARKED, STANDARD
from tests.support.mutants import MARK, Base, kept, kept_after, resign
from tests.support.s3server import S3Server

DEVICE = "TEST-0001"


def _archived_with_receipt(recorded: Path, work: Path, server: S3Server,
                           retention: str, days: int) -> Archive:
    """The recorded chain with a new marked recording appended, archived as one slice with
    its segment; then the receipt of a custody after it that holds the segment under
    `retention`, archived `days` after its sealing (named with the real version)."""
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
    archive.put_bytes(archive.location.key(DEVICE, "keys", "device.pub"),
                      (store / "keys" / "device.pub").read_bytes(), until)
    archive.put_bytes(archive.location.key(DEVICE, "chain", f"00000001-{n + 3:08d}.jsonl"),
                      b"".join(lines[:-1]), until)
    bodies: list[Any] = Base(store).bodies
    bodies[-1]["payload"]["archive"]["objects"][0].update(key=held.key,
                                                          version_id=held.version_id)
    resign(store, bodies)
    receipt = (store / "chain.jsonl").read_bytes().splitlines(keepends=True)[-1]
    archive.put_bytes(archive.location.key(DEVICE, "receipts", f"{n + 4:08d}-custody.jsonl"),
                      receipt, until)
    return archive


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
