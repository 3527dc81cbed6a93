"""The fleet status from the parts the daemon hands over: the footage awaiting export read
from the running custody ledger (the reading the alarm and the self-check share), and the
position from the GNSS receiver."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import load_config
from agent.device.chain_index import ChainIndex
from agent.device.offload.custody import Ledger, export_backlog
from agent.device.telemetry.status import StatusSources, device_status
from agent.evidence.chain import Chain
from hal.clock import ClockState, SimulatedClock
from hal.gnss import SimulatedGnss

IDLE = {"device": "SIM-0001", "officer": "OFC-7", "state": "standby", "health": "ok",
        "alarms": [], "recording": None, "current_segment": None, "longest_unsynced_ms": 0,
        "unexplained_interruptions": [], "chain_head": {"seq": 0, "hash": "0" * 64}}


def _seal(chain: Chain, name: str) -> dict[str, Any]:
    data = name.encode()
    return chain.append("segment_sealed", {"file": f"sealed/{name}", "size": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()})


def _chain(path: Path) -> Chain:
    clock = SimulatedClock()
    return Chain(path, Ed25519PrivateKey.generate(), lambda: ("SIM-0001", "OFC-7"),
                 clock.state, "boot-1")


def test_export_and_location_come_from_the_parts_handed_over(tmp_path: Path) -> None:
    config, _ = load_config(store=tmp_path / "store")
    chain = _chain(tmp_path / "chain.jsonl")
    ledger = Ledger(ChainIndex.open(tmp_path / "chain.jsonl"))
    sources = StatusSources(config, lambda: IDLE, SimulatedClock(), ledger,
                            gnss=SimulatedGnss(config.gnss))

    empty = device_status(sources)
    assert empty["export"] == {"oldest_sealed": None, "oldest_age_h": None, "overdue": False}

    first = _seal(chain, "00000001.ts")
    _seal(chain, "00000002.ts")
    status = device_status(sources)  # the ledger reads the two new records itself
    assert status["export"]["oldest_sealed"] == first["wall"][:19] + "Z"
    assert status["export"]["overdue"] is False
    backlog = export_backlog(ledger, config.selfcheck.export_deadline_hours)
    assert (backlog.files, backlog.oldest.seq if backlog.oldest else None) == (2, first["seq"])

    location = status["location"]
    assert location["lat_e7"] == round(config.gnss.sim_lat * 10_000_000)
    assert location["lon_e7"] == round(config.gnss.sim_lon * 10_000_000)
    assert location["source"] == "sim"


def test_without_a_receiver_the_location_is_null_and_the_rest_still_reports(
        tmp_path: Path) -> None:
    config, _ = load_config(store=tmp_path / "store")
    _chain(tmp_path / "chain.jsonl")
    status = device_status(StatusSources(config, lambda: IDLE, SimulatedClock(),
                                         Ledger(ChainIndex.open(tmp_path / "chain.jsonl"))))
    assert status["location"] is None
    assert status["clock"]["synced"] is True
    assert status["storage"]["free_bytes"] > 0


class ChronyWithoutRtcsync(SimulatedClock):
    """The kernel's flag stays unsynchronised (chrony clears STA_UNSYNC only with rtcsync)
    while chrony follows a stratum-2 server and keeps the bound small."""

    def state(self) -> ClockState:
        return ClockState(False, 40_000, 20_000, "kernel", "chrony", "ntp.example", 2)


def test_the_fleet_sees_the_clock_verdict_the_device_alarms_on(tmp_path: Path) -> None:
    config, _ = load_config(store=tmp_path / "store")
    _chain(tmp_path / "chain.jsonl")
    clock = ChronyWithoutRtcsync()
    status = device_status(StatusSources(config, lambda: IDLE, clock,
                                         Ledger(ChainIndex.open(tmp_path / "chain.jsonl"))))
    assert status["clock"]["synced"] is clock.state().trusted(config.clock.max_error_ms) is True
    assert status["clock"]["kernel_synced"] is False
