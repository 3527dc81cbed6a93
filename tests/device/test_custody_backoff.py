"""A wrong proof of possession holds the dock's certificate off: its next reports are
refused (429, with the time left) without reading any sealed file, for a window that
doubles with each wrong proof up to a cap; a good report after the window is accepted and
clears it (issue 18). Real store, chain, ledger and proofs; only the clock is stepped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import RetentionConfig
from agent.device.chain_index import ChainIndex
from agent.device.offload import custody
from agent.device.offload.custody import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    MAX_DOCKS,
    CustodyDesk,
    CustodyRefused,
    CustodyReport,
    DockIdentity,
    Ledger,
    ProofBackoff,
)
from agent.evidence.chain import Chain, parse_line, record_hash
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.possession import file_proof
from hal.clock import SimulatedClock

A = DockIdentity("DOCK-A", "a" * 64)
B = DockIdentity("DOCK-B", "b" * 64)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    stepped = Clock()
    monkeypatch.setattr(custody.time, "monotonic", stepped)
    return stepped


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every sealed file the device reads to check a proof."""
    read: list[Path] = []
    digest_file = custody.digest_file

    def counted(path: Path, *digests: Any) -> None:
        read.append(path)
        digest_file(path, *digests)

    monkeypatch.setattr(custody, "digest_file", counted)
    return read


@pytest.fixture
def desk(store_copy: Path) -> Iterator[CustodyDesk]:
    chain = Chain(store_copy / "chain.jsonl", load_or_create_device_key(store_copy / "keys"),
                  lambda: ("TEST-A", "officer-1"), SimulatedClock().state, "test-boot")
    try:
        yield CustodyDesk(chain, Ledger(ChainIndex.open(store_copy / "chain.jsonl")).refresh(),
                          store_copy, RetentionConfig())
    finally:
        chain.close()


def report(desk: CustodyDesk, store: Path, dock: DockIdentity, forged: bool) -> CustodyReport:
    """A whole report on a fresh nonce of `dock`'s, with true or forged proofs."""
    ledger = Ledger(ChainIndex.open(store / "chain.jsonl")).refresh()
    nonce = desk.nonces.issue(dock.certificate_sha256)
    body_bytes, _, body = parse_line((store / "chain.jsonl").read_bytes().splitlines()[-1])
    return CustodyReport.model_validate({
        "report_id": str(uuid.uuid4()), "nonce": nonce, "operator": "operator Li",
        "head": {"seq": body["seq"], "hash": record_hash(body_bytes)},
        "segments": [{"seq": f.seq, "sha256": f.sha256,
                      "proof": "0" * 64 if forged else file_proof(store / f.file, nonce)}
                     for f in ledger.outstanding()]})


def test_a_second_forged_report_within_the_window_reads_nothing(
        desk: CustodyDesk, store_copy: Path, clock: Clock, reads: list[Path]) -> None:
    with pytest.raises(CustodyRefused, match="does not hold the sealed bytes") as wrong:
        desk.take(report(desk, store_copy, A, forged=True), A)
    assert wrong.value.status == 422 and len(reads) == 1  # the smallest file, once

    clock.now += BACKOFF_FIRST_S - 0.1
    with pytest.raises(CustodyRefused) as held_off:
        desk.take(report(desk, store_copy, A, forged=True), A)
    assert held_off.value.status == 429 and len(reads) == 1, "a file was read"
    assert held_off.value.retry_after == pytest.approx(0.1)
    assert "refused for 1 s more, without reading any file" in str(held_off.value)
    assert not held_off.value.quiet
    with pytest.raises(CustodyRefused) as again:  # an honest report too: the certificate is
        desk.take(report(desk, store_copy, A, forged=False), A)
    assert again.value.status == 429 and again.value.quiet and len(reads) == 1

    # Another dock is not held off by A's failures.
    with pytest.raises(CustodyRefused, match="does not hold the sealed bytes"):
        desk.take(report(desk, store_copy, B, forged=True), B)

    clock.now += 0.2
    good = report(desk, store_copy, A, forged=False)
    receipt = desk.take(good, A)
    assert b'"type":"custody"' in receipt and b'"DOCK-A"' in receipt
    assert len(reads) == 2 + len(good.segments)  # each file proven, once


def test_the_window_doubles_up_to_its_cap_and_a_good_report_clears_it(clock: Clock) -> None:
    backoff = ProofBackoff()
    windows = []
    for _ in range(12):
        backoff.failed(A)
        with pytest.raises(CustodyRefused) as held_off:
            backoff.check(A)
        windows.append(held_off.value.retry_after)
        clock.now += BACKOFF_MAX_S
    assert windows[:4] == [BACKOFF_FIRST_S * 2 ** n for n in range(4)]
    assert windows[-1] == BACKOFF_MAX_S and max(windows) == BACKOFF_MAX_S

    backoff.passed(A)
    backoff.failed(A)
    with pytest.raises(CustodyRefused) as held_off:
        backoff.check(A)
    assert held_off.value.retry_after == BACKOFF_FIRST_S


def test_the_table_of_docks_held_off_is_bounded(clock: Clock) -> None:
    backoff = ProofBackoff()
    docks = [DockIdentity(f"DOCK-{n}", f"{n:064x}") for n in range(MAX_DOCKS + 10)]
    for dock in docks:
        backoff.failed(dock)
        clock.now += 0.001
    assert len(backoff._docks) == MAX_DOCKS
    with pytest.raises(CustodyRefused):
        backoff.check(docks[-1])
    backoff.check(docks[0])  # displaced: its window was the first to end
