"""A dock's bay, over real mutual TLS on loopback: its bandwidth cap bounds what a pull
reads per second over all its connections, and the copy still verifies byte for byte;
`dock status` shows the device, its officer and its pull's progress as it goes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.evidence.verify import verify_store
from tests.support.device import BODYCAM, wait_for
from tests.support.dockside import Docked, sealed_segments, snapshot
from tests.system.test_dock_serve import service, status, write_dock_toml

SEGMENTS = 8


def test_a_capped_pull_takes_at_least_the_time_its_cap_implies(
        device: Docked, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = sum(r["payload"]["size"] for r in sealed_segments(device.store))
    seconds = 2.0  # on loopback the same pull uncapped takes a fraction of this
    mbit = total * 8 / 1e6 / seconds
    out = tmp_path / "evidence"
    started = time.monotonic()
    code = main(["dock", "pull", "--out", str(out), *_tls(device), "--connections", "4",
                 "--max-mbit", f"{mbit:.6f}"])
    elapsed = time.monotonic() - started
    assert code == 0, capsys.readouterr()
    # A lower bound only: the cap cannot make a pull faster, so this holds on any machine,
    # and an uncapped pull of these bytes on loopback does not meet it.
    assert elapsed >= seconds, f"{total} bytes in {elapsed:.2f} s under a {mbit:.3f} Mbit/s cap"
    folder = out / "TEST-0001"
    assert snapshot(folder) == snapshot(device.store)
    assert verify_store(folder).ok


def _tls(device: Docked) -> list[str]:
    pem = device.pki.pem
    return ["--device", device.url, "--cert", str(pem("dock.crt")), "--key", str(pem("dock.key")),
            "--ca", str(pem("device-ca.pem")), "--operator", "Li"]


def test_status_shows_each_bay_s_device_officer_stage_and_pending_as_the_pull_goes(
        device: Docked, tmp_path: Path) -> None:
    assert main(["dock", "officer", "issue", "--officer", "OFC-9", *_tls(device)]) == 0
    sealed = sealed_segments(device.store)
    total = sum(r["payload"]["size"] for r in sealed)
    # Capped to last about 4 s, for the status to be read while it runs.
    config = write_dock_toml(tmp_path, device.pki, [device.url],
                             bay_mbit=round(total * 8 / 1e6 / 4, 6))
    seen: list[dict[str, Any]] = []
    with service(config) as process:
        def sample() -> bool:
            if config.with_name("dock-state.json").exists():
                view = status(config)
                seen.append(view["bays"].get(device.url, {}))
                return bool(view["devices"].get("TEST-0001", {}).get("ok"))
            return False
        wait_for(sample, timeout=120, interval=0.05, what="the device pulled")
        wait_for(lambda: status(config)["bays"][device.url].get("progress", {})
                 .get("stage") == "custody" and status(config)["bays"][device.url]["status"]
                 == "done", timeout=10, what="the last progress published")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0

    fetching = [bay["progress"] for bay in seen if bay.get("status") == "pulling" and
                bay.get("progress", {}).get("stage") == "fetching"]
    assert fetching, seen
    for progress in fetching:
        assert progress["bytes_total"] == total and progress["files_total"] == len(sealed)
        assert progress["pending_bytes"] == total - progress["bytes_fetched"]
        assert progress["pending_files"] == len(sealed) - progress["files_fetched"]
    fetched = [progress["bytes_fetched"] for progress in fetching]
    assert fetched == sorted(fetched) and fetched[0] < total  # rising, seen before the end
    assert any(0 < n < total for n in fetched), fetched
    assert all(bay["officer"] == "OFC-9" and bay["device"] == "TEST-0001"
               for bay in seen if bay.get("status") in ("pulling", "done"))

    view = status(config)
    bay, last = view["bays"][device.url], view["devices"]["TEST-0001"]
    assert (bay["status"], bay["device"], bay["officer"], bay["error"]) == (
        "done", "TEST-0001", "OFC-9", None)
    assert bay["progress"] == {"stage": "custody", "files_total": len(sealed),
                               "bytes_total": total, "files_fetched": len(sealed),
                               "bytes_fetched": total, "pending_files": 0, "pending_bytes": 0}
    # The durable state keeps counts, not the seqs of every file ever fetched.
    assert last["fetched_total"] == len(sealed) and "fetched_seqs" not in last
    text = subprocess.run([*BODYCAM, "dock", "status", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"bay {device.url}: done TEST-0001 (officer OFC-9) since " in text
    assert f"custody: {len(sealed)} of {len(sealed)} file(s)" in text
    assert "pending 0 file(s), 0.0 MB" in text
