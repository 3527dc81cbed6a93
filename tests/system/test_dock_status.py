"""GET /v1/status over real mutual TLS: battery, storage and what is recorded, read now, as a
collection station shows them (docs/station-interface.md)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

from tests.support.dockside import Docked
from tests.system.test_dock import request

SEGMENTS = 2


def test_a_station_reads_battery_storage_and_resolution(device: Docked) -> None:
    battery = device.store / "sim" / "power_supply" / "BAT0"
    (battery / "capacity").write_text("42\n")
    status, body = request(device, "GET", "/v1/status")
    assert status == 200
    reply = json.loads(body)
    free = shutil.disk_usage(device.store).free
    storage = reply.pop("storage")
    clock = datetime.strptime(reply.pop("time"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((clock - datetime.now(UTC)).total_seconds()) < 60  # the device's clock, read now
    assert reply == {
        "device": "TEST-0001", "officer": "OFC-7",
        # 42 % of the simulated 11.1 Wh at its 1 W recording draw: 280 minutes
        "battery": {"percent": 42, "runtime_min": 280, "status": "Discharging"},
        "video": {"profile": None, "width": 320, "height": 240, "fps": 30, "bitrate": 400_000},
    }
    assert abs(storage["free_bytes"] - free) < 64 << 20
    hours = storage["free_bytes"] * 8 / (400_000 + 64_000) / 3600
    assert storage["hours_left"] == round(hours, 1)


def test_status_is_read_only(device: Docked) -> None:
    status, _ = request(device, "POST", "/v1/status", json={})
    assert status == 405
