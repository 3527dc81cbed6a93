"""Docked devices as their own `bodycam run` processes, for the dock's end-to-end tests: each
with its store, its offload server on a port of its own choosing, and its log, from which the
sealed files it served are counted (the offload server logs every access, Art. 23)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence.chain import read_bodies
from tests.support.device import BODYCAM, DaemonProcess, spawn_daemon, wait_for
from tests.support.dockside import copy_store, dock_config
from tests.support.pki import Pki

_LISTENING = re.compile(rb"offload server on [^:\s]+:(\d+) ")
# "<dock>: GET /v1/sealed/<seq> <status> <bytes> bytes <seconds> s", tls_http.py's access line
_SERVED = re.compile(r"\.access: \S+: GET /v1/sealed/(\d+) (\d{3}) (\d+) bytes ")


@dataclass
class DeviceProcess:
    device_id: str
    config: Path
    store: Path
    process: DaemonProcess
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def records(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in read_bodies(self.store / "chain.jsonl") if r["type"] == type_]

    def sealed(self) -> dict[int, dict[str, Any]]:
        """Each sealed file's record payload, by seq."""
        return {r["seq"]: r["payload"] for r in self.records("segment_sealed")}

    def command(self, *args: str) -> None:
        """A `bodycam` command on this device's control socket (trigger start, press --long)."""
        subprocess.run([*BODYCAM, *args, "--config", str(self.config)], check=True,
                       capture_output=True, timeout=30)

    def log_offset(self) -> int:
        return self.process.log.stat().st_size

    def served(self, start: int = 0, end: int | None = None) -> list[int]:
        """The seq of each sealed file served whole or from a Range (200 or 206) in the log
        between byte offsets `start` and `end`, in order; a transfer cut on the way logs 500."""
        text = self.process.log.read_bytes()[start:end].decode(errors="replace")
        return [int(m[1]) for m in _SERVED.finditer(text) if m[2] in ("200", "206")]


@contextmanager
def dock_service(config: Path, env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    """`bodycam dock serve` as its own process, its output in dock-<n>.log beside the config
    (a file, not a pipe: a busy dock fills a pipe nobody reads and blocks on it), given once
    it has started (its SIGTERM handler set: on a loaded machine a signal sent sooner kills
    it) or has ended (a start refused); killed if still running on exit."""
    log = next(path for n in itertools.count(1)
               if not (path := config.with_name(f"dock-{n}.log")).exists())
    process = DaemonProcess([*BODYCAM, "dock", "serve", "--config", str(config)], log,
                            env={**os.environ, **(env or {})})
    try:
        wait_for(lambda: process.poll() is not None or
                 b"dock service:" in log.read_bytes(), timeout=60, what="the dock started")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


@contextmanager
def device_process(folder: Path, recorded: Path | None, device_id: str, pki: Pki,
                   device: dict[str, object] | None = None,
                   **dock: object) -> Iterator[DeviceProcess]:
    """`bodycam run` on a copy of `recorded` (or an empty store) with [dock] enabled, enrolled
    as `device_id`; stopped with SIGTERM (which seals what is open) on exit."""
    store = folder / "device"
    if recorded is not None:
        copy_store(recorded, store)
    pki.install_on_device(store / "keys", device_id)
    config = dock_config(folder, store, device, **dock)
    config.write_text(config.read_text().replace('id = "TEST-0001"', f'id = "{device_id}"'))
    process = spawn_daemon(config, store)
    try:
        wait_for(lambda: _LISTENING.search(process.log.read_bytes()) is not None, timeout=30,
                 what=f"{device_id}'s offload server")
        found = _LISTENING.search(process.log.read_bytes())
        assert found is not None
        yield DeviceProcess(device_id, config, store, process, int(found[1]))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.tail(lines=40)
