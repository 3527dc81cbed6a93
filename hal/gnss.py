"""Location: the last fix from the GNSS receiver, and how old it is.

Each sealed segment carries the last fix and its age, or says there is none; a
position is never invented or carried over as if it were current.

The real backend speaks gpsd's JSON protocol over TCP (gpsd 3.x, protocol 3.x,
https://gpsd.gitlab.io/gpsd/gpsd_json.html): on connect gpsd sends a `VERSION`
object; the client sends `?WATCH={"enable":true,"json":true}`; gpsd answers with
`DEVICES` and `WATCH` and then streams reports, one JSON object per line. The
`TPV` report carries `mode` (0 unknown, 1 no fix, 2 2D, 3 3D), `lat`/`lon`
(degrees), `altMSL`/`altHAE` (metres; `alt` before gpsd 3.20), `eph` (horizontal
error, metres) and `time` (UTC of the fix). The age is counted on CLOCK_MONOTONIC
from when the report arrived, so a wrong or stepped wall clock cannot make an old
fix look new. The connection runs on its own thread and reconnects with back-off:
nothing here can hold up recording.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.config import GnssConfig

log = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true}\n'
RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0
SIM_FIX_INTERVAL_NS = 1_000_000_000
OVERLAY_FIX_AGE_S = 10  # an older fix is not shown on the frames as where they were taken


@dataclass(frozen=True)
class Fix:
    mode: int                # 2 (2D) or 3 (3D), as gpsd's TPV
    lat: float               # degrees
    lon: float
    alt_m: float | None      # above mean sea level, None for a 2D fix
    error_m: float | None    # horizontal error estimate (eph)
    time: str | None         # the receiver's UTC time of the fix
    received_ns: int         # CLOCK_MONOTONIC when it arrived
    source: str


class Gnss(Protocol):
    def last_fix(self) -> Fix | None: ...

    def describe(self) -> str:
        """Why there is no fix, or where fixes come from: for the chain and the self-check."""
        ...

    def close(self) -> None: ...


def location_fields(gnss: Gnss | None, now_ns: int | None = None) -> dict[str, Any]:
    """The `location` of a sealed segment: the last fix in integers (1e-7 degrees, mm, ms of
    age), or null and `no_location` saying why."""
    if gnss is None:
        return {"location": None, "no_location": "no GNSS receiver configured"}
    fix = gnss.last_fix()
    if fix is None:
        return {"location": None, "no_location": f"no fix: {gnss.describe()}"}
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    return {"location": {
        "mode": fix.mode,
        "lat_e7": round(fix.lat * 10_000_000),
        "lon_e7": round(fix.lon * 10_000_000),
        "alt_mm": None if fix.alt_m is None else round(fix.alt_m * 1000),
        "error_mm": None if fix.error_m is None else round(fix.error_m * 1000),
        "time": fix.time,
        "age_ms": max(0, (now_ns - fix.received_ns) // 1_000_000),
        "source": fix.source,
    }}


def overlay_position(gnss: Gnss | None, now_ns: int | None = None) -> str:
    """Where the device is, as the overlay shows it (`31.23040N 121.47370E`, five decimals:
    about a metre), while the last fix is fresh (at most OVERLAY_FIX_AGE_S old); nothing
    otherwise: a frame never shows a stale place as the present one."""
    fix = gnss.last_fix() if gnss is not None else None
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    if fix is None or now_ns - fix.received_ns > OVERLAY_FIX_AGE_S * 1_000_000_000:
        return ""
    return (f"{abs(fix.lat):.5f}{'N' if fix.lat >= 0 else 'S'} "
            f"{abs(fix.lon):.5f}{'E' if fix.lon >= 0 else 'W'}")


def parse_tpv(report: dict[str, Any], received_ns: int, source: str) -> Fix | None:
    """A Fix from a TPV report with a 2D or 3D fix; None for anything else."""
    if report.get("class") != "TPV" or report.get("mode", 0) < 2:
        return None
    lat, lon = report.get("lat"), report.get("lon")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    alt = next((report[key] for key in ("altMSL", "alt", "altHAE") if key in report), None)
    return Fix(mode=int(report["mode"]), lat=float(lat), lon=float(lon),
               alt_m=float(alt) if report["mode"] >= 3 and alt is not None else None,
               error_m=report.get("eph"), time=report.get("time"), received_ns=received_ns,
               source=source)


class GpsdGnss:
    """A gpsd client on its own thread, keeping the last fix."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self._source = f"gpsd:{host}:{port}"
        self._fix: Fix | None = None
        self._state = "connecting"
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="gpsd", daemon=True)
        self._thread.start()

    def last_fix(self) -> Fix | None:
        return self._fix

    def describe(self) -> str:
        return f"{self._source}: {self._state}"

    def close(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by gpsd
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        while not self._stop.is_set():
            try:
                self._session()
                delay = RECONNECT_FIRST_S
            except (OSError, ValueError) as exc:
                self._state = f"unreachable ({exc})"
                log.warning("gpsd at %s:%d: %s; retrying in %g s", *self.address, exc, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _session(self) -> None:
        with socket.create_connection(self.address, timeout=10) as sock:
            self._sock = sock
            sock.settimeout(None)
            sock.sendall(WATCH)
            self._state = "connected, no fix reported yet"
            for line in sock.makefile("rb"):
                if self._stop.is_set():
                    return
                self._report(json.loads(line))
            self._state = "gpsd closed the connection"

    def _report(self, report: dict[str, Any]) -> None:
        if report.get("class") != "TPV":
            return
        fix = parse_tpv(report, time.monotonic_ns(), self._source)
        if fix is not None:
            self._fix = fix
            self._state = "fix"
        else:
            self._state = f"connected, receiver reports no fix (TPV mode {report.get('mode', 0)})"


class SimulatedGnss:
    """A receiver with a steady 3D fix at the configured place, reported once a second."""

    def __init__(self, config: GnssConfig) -> None:
        self._config = config
        self._started_ns = time.monotonic_ns()

    def last_fix(self) -> Fix:
        now = time.monotonic_ns()
        received = now - (now - self._started_ns) % SIM_FIX_INTERVAL_NS
        return Fix(mode=3, lat=self._config.sim_lat, lon=self._config.sim_lon,
                   alt_m=self._config.sim_alt_m, error_m=5.0, time=None,
                   received_ns=received, source="sim")

    def describe(self) -> str:
        return "sim: scripted fix"

    def close(self) -> None:
        pass


def open_gnss(config: GnssConfig) -> Gnss | None:
    if config.backend == "gpsd":
        return GpsdGnss(config.host, config.port)
    if config.backend == "sim":
        return SimulatedGnss(config)
    return None
