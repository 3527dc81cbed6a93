"""`bodycam verify` on a live store: a file caught between its rename into sealed/ and the
append of its record is a seal in progress, not an insertion; a file planted in sealed/
with no record still fails, in words that say so (issue 18)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.evidence import verify
from agent.evidence.chain import Chain, whole_lines
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from hal.clock import SimulatedClock


@contextmanager
def live(store: Path) -> Iterator[Chain]:
    """The store's chain held for appending, as the daemon holds it while it runs."""
    chain = Chain(store / "chain.jsonl", load_or_create_device_key(store / "keys"),
                  lambda: ("TEST-A", "officer-1"), SimulatedClock().state, "test-boot")
    try:
        yield chain
    finally:
        chain.close()


def finished_file(store: Path) -> tuple[Path, dict[str, Any]]:
    """A finished file in open/, and the payload its sealing record carries."""
    path = store / "open" / "exemption.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    return path, {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                  "size": path.stat().st_size}


def reading_the_chain(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the verifier has read the chain: the seam that makes the race certain."""
    read = threading.Event()

    def read_lines_then_tell(path: Path, offset: int = 0, complete: bool = True
                             ) -> Iterator[tuple[int, bytes]]:
        yield from whole_lines(path, offset, complete)
        read.set()

    monkeypatch.setattr(verify, "whole_lines", read_lines_then_tell)
    return read


@contextmanager
def sealing_as_the_chain_is_read(store: Path, monkeypatch: pytest.MonkeyPatch,
                                 ) -> Iterator[list[dict[str, Any]]]:
    """A file renamed into sealed/ as the device does it, whose record is appended (still
    under the chain's lock) only once the verifier has read the chain; yields, once the
    file is in sealed/, the list that gets the record."""
    chain_read = reading_the_chain(monkeypatch)
    renamed = threading.Event()
    with live(store) as chain:
        path, payload = finished_file(store)
        move = Store(store).move_to_sealed(path)

        def rename_then_wait_for_the_reader(seq: int) -> dict[str, str]:
            named = move(seq)
            renamed.set()
            assert chain_read.wait(10), "the verifier never read the chain"
            return named

        sealed: list[dict[str, Any]] = []
        sealer = threading.Thread(target=lambda: sealed.append(chain.append(
            "exemption", payload, rename_then_wait_for_the_reader)))
        sealer.start()
        assert renamed.wait(10)
        try:
            yield sealed
        finally:
            sealer.join(10)


def test_a_file_renamed_into_sealed_before_its_record_is_appended_verifies(
        store_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier always finds the file in sealed/ and not its record in the chain it
    read: before the fix this failed with "sealed/0000NNNN.wav: is not in the chain
    (inserted)" every time."""
    with sealing_as_the_chain_is_read(store_copy, monkeypatch) as sealed:
        report = verify_store(store_copy)
    [record] = sealed
    assert report.ok, report.summary()
    assert report.head is not None and report.head["seq"] == record["seq"], \
        "the record appended meanwhile was verified with the rest"


def planted(store: Path, name: str) -> str:
    """A copy of a sealed segment planted in sealed/ under `name`, with no record."""
    source = next(p for p in sorted((store / "sealed").iterdir()))
    (store / "sealed" / name).write_bytes(source.read_bytes())
    return f"sealed/{name}"


def timed(call: Callable[[], verify.Report]) -> tuple[verify.Report, float]:
    started = time.monotonic()
    report = call()
    return report, time.monotonic() - started


def test_a_planted_file_in_a_store_nothing_writes_fails_at_once(store_copy: Path) -> None:
    """A copy, or the dock's evidence folder: nothing can be sealing, so nothing is waited."""
    name = planted(store_copy, "99999999.ts")
    report, seconds = timed(lambda: verify_store(store_copy))
    assert not report.ok
    assert str(report.findings[0]) == f"{name}: is not in the chain (inserted)"
    assert seconds < verify.SEAL_WAIT_S / 2


def test_a_planted_file_in_a_live_store_fails_after_a_bounded_wait(
        store_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "SEAL_WAIT_S", 0.3)
    beyond = planted(store_copy, "99999999.ts")
    within = planted(store_copy, "00000001.ts")  # seq 1 is sealed: no seal can be pending
    with live(store_copy):
        report, seconds = timed(lambda: verify_store(store_copy))
    assert not report.ok
    assert [str(f) for f in report.findings] == [
        f"{within}: is not in the chain (inserted)",
        f"{beyond}: is not in the chain (inserted): no record names it, and none was sealed "
        "within 0.3 s of listing it"]
    assert 0.3 <= seconds < 3


def test_a_planted_file_beside_a_seal_in_progress_fails_alone(
        store_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "SEAL_WAIT_S", 0.3)
    beyond = planted(store_copy, "99999999.ts")
    with sealing_as_the_chain_is_read(store_copy, monkeypatch):
        report = verify_store(store_copy)
    assert [str(f) for f in report.findings] == [
        f"{beyond}: is not in the chain (inserted): no record names it, and none was sealed "
        "within 0.3 s of listing it"]
