"""A dock's bay, over real mutual TLS on loopback: its bandwidth cap bounds what a pull
reads per second over all its connections, and the copy still verifies byte for byte."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.evidence.verify import verify_store
from tests.support.dockside import Docked, sealed_segments, snapshot

SEGMENTS = 8


def test_a_capped_pull_takes_at_least_the_time_its_cap_implies(
        device: Docked, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = sum(r["payload"]["size"] for r in sealed_segments(device.store))
    seconds = 2.0  # on loopback the same pull uncapped takes a fraction of this
    mbit = total * 8 / 1e6 / seconds
    out = tmp_path / "evidence"
    started = time.monotonic()
    pem = device.pki.pem
    code = main(["dock", "pull", "--device", device.url, "--out", str(out),
                 "--cert", str(pem("dock.crt")), "--key", str(pem("dock.key")),
                 "--ca", str(pem("device-ca.pem")), "--operator", "Li",
                 "--connections", "4", "--max-mbit", f"{mbit:.6f}"])
    elapsed = time.monotonic() - started
    assert code == 0, capsys.readouterr()
    # A lower bound only: the cap cannot make a pull faster, so this holds on any machine,
    # and an uncapped pull of these bytes on loopback does not meet it.
    assert elapsed >= seconds, f"{total} bytes in {elapsed:.2f} s under a {mbit:.3f} Mbit/s cap"
    folder = out / "TEST-0001"
    assert snapshot(folder) == snapshot(device.store)
    assert verify_store(folder).ok
