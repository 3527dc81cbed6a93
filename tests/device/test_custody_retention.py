"""What the device takes of a custody report's retention: nothing the verifier would name
in the custody record it seals (chain-format.md, "Retention classes"). A mark sealed while
the report is being taken (the report held the file as `standard`, its class when the
report was checked) refuses it (409), with nothing sealed, and the dock's next report,
which says `marked`, is taken; an archive that keeps a file for less than its class's days
from its sealing is refused (422). Real store, chain, index and proofs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import RetentionConfig
from agent.device.chain_index import ChainIndex
from agent.device.offload.custody import (
    CustodyDesk,
    CustodyRefused,
    CustodyReport,
    DockIdentity,
    Ledger,
)
from agent.evidence.chain import Chain, parse_line, read_bodies, record_hash
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.possession import file_proof
from agent.evidence.retention import MARKED, STANDARD
from agent.evidence.verify import verify_store
from hal.clock import SimulatedClock

DOCK = DockIdentity("DOCK-A", "a" * 64)


class MarkLandsFirst:
    """The device's chain, where the officer's mark of `recording` is sealed just before
    the next custody record: after the desk's check of the report, before its append."""

    def __init__(self, chain: Chain, recording: int) -> None:
        self.chain, self.recording, self.pending = chain, recording, True

    def append(self, type_: str, payload: dict[str, Any], name_for_seq: Any = None
               ) -> dict[str, Any]:
        if type_ == "custody" and self.pending:
            self.pending = False
            self.chain.append("mark", {"recording": self.recording, "source": "button"})
        return self.chain.append(type_, payload, name_for_seq)


def _report(desk: CustodyDesk, store: Path, retention: str,
            archived_days: int | None = None) -> CustodyReport:
    """A whole report of every file not in custody, held under `retention`, and with
    `archived_days` an archive keeping each that many days after its sealing."""
    ledger = Ledger(ChainIndex.open(store / "chain.jsonl")).refresh()
    nonce = desk.nonces.issue(DOCK.certificate_sha256)
    body_bytes, _, body = parse_line((store / "chain.jsonl").read_bytes().splitlines()[-1])
    files = ledger.outstanding()
    archive = None if archived_days is None else {
        "endpoint": "https://s3.example", "bucket": "evidence", "objects": [{
            "seq": f.seq, "key": f"agency/TEST-A/{f.file}", "version_id": "v1",
            "retain_until": (f.sealed_at + timedelta(days=archived_days, seconds=1)
                             ).strftime("%Y-%m-%dT%H:%M:%SZ")} for f in files]}
    return CustodyReport.model_validate({
        "report_id": str(uuid.uuid4()), "nonce": nonce, "operator": "operator Li",
        "head": {"seq": body["seq"], "hash": record_hash(body_bytes)},
        "segments": [{"seq": f.seq, "sha256": f.sha256, "retention": retention,
                      "proof": file_proof(store / f.file, nonce)} for f in files],
        "archive": archive})


@pytest.fixture
def chain(store_copy: Path) -> Iterator[Chain]:
    chain = Chain(store_copy / "chain.jsonl", load_or_create_device_key(store_copy / "keys"),
                  lambda: ("TEST-A", "officer-1"), SimulatedClock().state, "test-boot")
    try:
        yield chain
    finally:
        chain.close()


def test_an_archive_keeping_files_less_than_their_class_days_is_refused(
        store_copy: Path, chain: Chain) -> None:
    desk = CustodyDesk(chain, Ledger(ChainIndex.open(store_copy / "chain.jsonl")).refresh(),
                       store_copy, RetentionConfig(standard_days=400, marked_days=4000))
    with pytest.raises(CustodyRefused, match=r"archive: archives seq [0-9]+ \(sealed/[0-9]+"
                       r"\.ts\) until .*, short of the .* its class 'standard' needs: 400 "
                       r"days \(retention_days\)") as refused:
        desk.take(_report(desk, store_copy, STANDARD, archived_days=365), DOCK)
    assert refused.value.status == 422
    assert "custody" not in [b["type"] for b in read_bodies(store_copy / "chain.jsonl")]

    receipt = desk.take(_report(desk, store_copy, STANDARD, archived_days=400), DOCK)

    custody = parse_line(receipt.rstrip(b"\n"))[2]
    assert custody["payload"]["retention_days"] == {"standard": 400, "marked": 4000}
    assert verify_store(store_copy).ok


def test_a_custody_is_not_sealed_over_a_mark_sealed_while_it_was_taken(
        store_copy: Path, chain: Chain) -> None:
    recording = next(b["seq"] for b in read_bodies(store_copy / "chain.jsonl")
                     if b["type"] == "record_start")
    desk = CustodyDesk(MarkLandsFirst(chain, recording),  # type: ignore[arg-type]
                       Ledger(ChainIndex.open(store_copy / "chain.jsonl")).refresh(),
                       store_copy, RetentionConfig())
    with pytest.raises(CustodyRefused, match="a mark sealed meanwhile makes it "
                                             "'marked'") as refused:
        desk.take(_report(desk, store_copy, STANDARD), DOCK)
    assert refused.value.status == 409
    kinds = [b["type"] for b in read_bodies(store_copy / "chain.jsonl")]
    assert kinds[-1] == "mark" and "custody" not in kinds

    receipt = desk.take(_report(desk, store_copy, MARKED), DOCK)

    custody = parse_line(receipt.rstrip(b"\n"))[2]
    assert {item["retention"] for item in custody["payload"]["segments"]} == {MARKED}
