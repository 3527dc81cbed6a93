"""Location from gpsd's JSON protocol, served by a small gpsd stand-in in the test."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.chain import read_bodies
from hal.gnss import OVERLAY_FIX_AGE_S, WATCH, GpsdGnss, location_fields, overlay_position
from tests.support.device import record_segments, wait_for, write_device_config

VERSION = {"class": "VERSION", "release": "3.25", "rev": "3.25", "proto_major": 3,
           "proto_minor": 15}
DEVICES = {"class": "DEVICES", "devices": [
    {"class": "DEVICE", "path": "/dev/ttyAMA0", "driver": "u-blox",
     "activated": "2026-11-28T08:00:00.000Z"}]}
NO_FIX = {"class": "TPV", "device": "/dev/ttyAMA0", "mode": 1}
FIX_3D = {"class": "TPV", "device": "/dev/ttyAMA0", "mode": 3, "time": "2026-11-28T08:30:01.000Z",
          "lat": 31.2304167, "lon": 121.4737011, "altHAE": 12.5, "altMSL": 4.25, "eph": 3.2}


class GpsdStandIn:
    """Speaks gpsd's side: VERSION on connect, DEVICES and WATCH after ?WATCH, then reports."""

    def __init__(self, reports: list[dict[str, Any]]) -> None:
        self.reports = reports
        self.commands: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._clients.append(client)
            try:
                self._session(client)
            except OSError:  # the client went away: serve the next one
                client.close()

    def _session(self, client: socket.socket) -> None:
        def send(obj: dict[str, Any]) -> None:
            client.sendall(json.dumps(obj).encode() + b"\n")

        send(VERSION)
        command = client.makefile("rb").readline()
        self.commands.append(command)
        if command != WATCH:
            client.close()
            return
        send(DEVICES)
        send({"class": "WATCH", "enable": True, "json": True})
        for report in self.reports:
            send(report)

    def close(self) -> None:
        self._server.close()
        for client in self._clients:
            client.close()


@contextmanager
def gpsd(reports: list[dict[str, Any]]) -> Iterator[GpsdStandIn]:
    server = GpsdStandIn(reports)
    try:
        yield server
    finally:
        server.close()


def test_the_last_fix_is_kept_in_integers_with_its_age() -> None:
    with gpsd([NO_FIX, FIX_3D, {"class": "SKY", "satellites": []}]) as server:
        gnss = GpsdGnss("127.0.0.1", server.port)
        try:
            wait_for(lambda: gnss.last_fix() is not None, timeout=10, what="a fix from gpsd")
            fix = gnss.last_fix()
            fields = location_fields(gnss, now_ns=fix.received_ns + 1_500_000_000)
        finally:
            gnss.close()
    assert server.commands == [WATCH]
    assert fields == {"location": {
        "mode": 3, "lat_e7": 312304167, "lon_e7": 1214737011, "alt_mm": 4250,
        "error_mm": 3200, "time": "2026-11-28T08:30:01.000Z", "age_ms": 1500,
        "source": f"gpsd:127.0.0.1:{server.port}"}}


def test_no_fix_and_no_gpsd_are_stated_never_invented() -> None:
    with gpsd([NO_FIX]) as server:
        gnss = GpsdGnss("127.0.0.1", server.port)
        try:
            wait_for(lambda: "TPV mode 1" in gnss.describe(), timeout=10,
                     what="the no-fix report")
            assert location_fields(gnss) == {
                "location": None, "no_location": f"no fix: gpsd:127.0.0.1:{server.port}: "
                "connected, receiver reports no fix (TPV mode 1)"}
        finally:
            gnss.close()
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    gnss = GpsdGnss("127.0.0.1", port)
    try:
        wait_for(lambda: "unreachable" in gnss.describe(), timeout=10, what="refused")
        fields = location_fields(gnss)
    finally:
        gnss.close()
    assert fields["location"] is None and "Connection refused" in fields["no_location"]
    assert location_fields(None) == {"location": None,
                                     "no_location": "no GNSS receiver configured"}


def test_the_overlay_shows_where_a_fresh_fix_puts_the_device_and_nothing_else() -> None:
    """A frame shows the place only while the fix is fresh: a stale or absent fix shows
    nothing, never the last place as the present one (gpsd stand-in, real GpsdGnss)."""
    with gpsd([FIX_3D]) as server:
        gnss = GpsdGnss("127.0.0.1", server.port)
        try:
            wait_for(lambda: gnss.last_fix() is not None, timeout=10, what="a fix from gpsd")
            received = gnss.last_fix().received_ns
            fresh = overlay_position(gnss, now_ns=received + 2_000_000_000)
            stale = overlay_position(gnss, now_ns=received + (OVERLAY_FIX_AGE_S + 1) * 10**9)
        finally:
            gnss.close()
    assert fresh == "31.23042N 121.47370E"
    assert stale == ""
    assert overlay_position(None) == ""


def no_floats(value: object) -> bool:
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(no_floats(v) for v in value)
    return not isinstance(value, float)


@pytest.mark.system
def test_every_sealed_segment_carries_the_fix_from_gpsd(tmp_path: Path) -> None:
    with gpsd([FIX_3D]) as server:
        config = write_device_config(tmp_path / "device.toml", tmp_path / "store")
        config.write_text(config.read_text()
                          + f'\n[gnss]\nbackend = "gpsd"\nport = {server.port}\n')
        record_segments(config, 2)
    bodies = read_bodies(tmp_path / "store" / "chain.jsonl")
    segments = [b["payload"] for b in bodies if b["type"] == "segment_sealed"]
    assert len(segments) >= 2
    for segment in segments:
        location = segment["location"]
        assert (location["lat_e7"], location["lon_e7"], location["alt_mm"]) == \
            (312304167, 1214737011, 4250)
        assert isinstance(location["age_ms"], int) and 0 <= location["age_ms"] < 60_000
    assert all(no_floats(body) for body in bodies)
