"""Certificates for the dock tests: the agency's two CAs, good leaves, and bad ones.

Made with `agent.pki` (the `cryptography` package), once per test session: a dock
CA and a device CA, the device's server certificate, a dock's client certificate,
an expired dock certificate from the right CA, and a dock certificate from a CA
the device does not trust.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from agent.pki import issue, make_ca

DEVICE_ID = "TEST-0001"


@dataclass(frozen=True)
class Pki:
    folder: Path

    def pem(self, name: str) -> Path:
        return self.folder / name

    def install_on_device(self, keys: Path) -> None:
        """The device's certificate and key and the dock CA, where [dock] looks by default."""
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, target in (("device.crt", "tls.crt"), ("device.key", "tls.key"),
                             ("dock-ca.pem", "dock-ca.pem")):
            shutil.copy(self.pem(name), keys / target)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    dock_ca, device_ca, rogue_ca = (make_ca("agency dock CA"), make_ca("agency device CA"),
                                    make_ca("some other CA"))
    dock_ca.write(folder / "dock-ca.pem")
    device_ca.write(folder / "device-ca.pem")
    issue(device_ca, DEVICE_ID, server=True, hosts=("127.0.0.1", "localhost")).write(
        folder / "device.crt", folder / "device.key")
    issue(dock_ca, "DOCK-A", server=False).write(folder / "dock.crt", folder / "dock.key")
    issue(dock_ca, "DOCK-OLD", server=False, expired=True).write(folder / "expired.crt",
                                                                 folder / "expired.key")
    issue(rogue_ca, "DOCK-ROGUE", server=False).write(folder / "rogue.crt", folder / "rogue.key")
    return Pki(folder)
