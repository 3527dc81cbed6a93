"""A docked simulated device for the dock tests: a recorded store served over mutual TLS."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.device.daemon import Daemon
from agent.dock.pull import DockLink, PullResult, pull
from agent.evidence.chain import read_bodies
from tests.support.device import running_daemon, write_device_config
from tests.support.pki import Pki


@dataclass
class Docked:
    daemon: Daemon
    store: Path
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.daemon.offload.port}"

    def link(self, name: str = "dock") -> DockLink:
        return DockLink(self.pki.pem(f"{name}.crt"), self.pki.pem(f"{name}.key"),
                        self.pki.pem("device-ca.pem"))

    def pull(self, out: Path, **kwargs: Any) -> PullResult:
        return asyncio.run(pull(self.url, out, self.link(), "operator Li", **kwargs))

    def records(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in read_bodies(self.store / "chain.jsonl") if r["type"] == type_]


def copy_store(source: Path, target: Path) -> Path:
    """A private, writable copy of a recorded store (sealed files stay read-only)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("control.sock"))
    return target


def dock_config(folder: Path, store: Path, device: dict[str, object] | None = None,
                **dock: object) -> Path:
    """The fast simulated device with [dock] enabled on a free loopback port."""
    path = write_device_config(folder / "docked.toml", store, **(device or {}))
    values = {"enabled": True, "port": 0, "purge_check_s": 3600, **dock}
    lines = [f"{key} = {_toml(value)}" for key, value in values.items()]
    with path.open("a") as f:
        f.write("\n[dock]\n" + "\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@contextmanager
def docked_device(folder: Path, recorded: Path, pki: Pki, device: dict[str, object] | None = None,
                  **dock: object) -> Iterator[Docked]:
    store = copy_store(recorded, folder / "device")
    pki.install_on_device(store / "keys")
    with running_daemon(dock_config(folder, store, device, **dock)) as daemon:
        assert daemon.offload is not None, "the offload server did not start"
        yield Docked(daemon, store, pki)


def snapshot(store: Path) -> dict[str, str]:
    """sha256 of every sealed file, by name: what must not change."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((store / "sealed").iterdir())}


def sealed_segments(store: Path) -> list[dict[str, Any]]:
    """The store's segment_sealed records, in chain order."""
    return [r for r in read_bodies(store / "chain.jsonl") if r["type"] == "segment_sealed"]
