"""A mark sealed while a dock's custody report is being taken: the report held the file as
`standard`, which was its class when the report was checked; the custody record, sealed
after the mark, would hold a marked file as standard, which the verifier names
(chain-format.md, "Retention classes"). The device refuses it (409) instead, with nothing
sealed, and takes the dock's next report, which says `marked`. Real store, chain, index
and proofs."""

from __future__ import annotations

import uuid
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


def _report(desk: CustodyDesk, store: Path, retention: str) -> CustodyReport:
    ledger = Ledger(ChainIndex.open(store / "chain.jsonl")).refresh()
    nonce = desk.nonces.issue(DOCK.certificate_sha256)
    body_bytes, _, body = parse_line((store / "chain.jsonl").read_bytes().splitlines()[-1])
    return CustodyReport.model_validate({
        "report_id": str(uuid.uuid4()), "nonce": nonce, "operator": "operator Li",
        "head": {"seq": body["seq"], "hash": record_hash(body_bytes)},
        "segments": [{"seq": f.seq, "sha256": f.sha256, "retention": retention,
                      "proof": file_proof(store / f.file, nonce)}
                     for f in ledger.outstanding()]})


def test_a_custody_is_not_sealed_over_a_mark_sealed_while_it_was_taken(
        store_copy: Path) -> None:
    recording = next(b["seq"] for b in read_bodies(store_copy / "chain.jsonl")
                     if b["type"] == "record_start")
    chain = Chain(store_copy / "chain.jsonl", load_or_create_device_key(store_copy / "keys"),
                  lambda: ("TEST-A", "officer-1"), SimulatedClock().state, "test-boot")
    try:
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
    finally:
        chain.close()
    custody = parse_line(receipt.rstrip(b"\n"))[2]
    assert {item["retention"] for item in custody["payload"]["segments"]} == {MARKED}
