"""Certificates for the dock tests: the agency's two CAs, good leaves, and bad ones.

Made with `agent.pki` (the `cryptography` package), once per test session: a dock
CA and a device CA (with its key, which `bodycam dock enroll` signs with), two docks'
client certificates (DOCK-A, DOCK-B), an expired dock certificate from the right CA,
and a dock certificate from a CA the device does not trust. A device's own certificate is
issued for its signing key when it is installed (`install_on_device`), as
enrollment would.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from agent.evidence.keys import load_or_create_device_key
from agent.pki import Issued, certify_device, device_request, issue, make_ca

DEVICE_ID = "TEST-0001"


@dataclass(frozen=True)
class Pki:
    folder: Path
    device_ca: Issued
    dock_ca: Issued

    def pem(self, name: str) -> Path:
        return self.folder / name

    def install_on_device(self, keys: Path, device_id: str = DEVICE_ID) -> None:
        """The device certificate for the store's signing key, and the dock CA, where the
        daemon looks for them (without an enrollment record: `bodycam keys enroll` and
        `bodycam dock enroll` are tested on their own)."""
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.install_dock_ca(keys)
        certificate = certify_device(self.device_ca,
                                     device_request(load_or_create_device_key(keys), device_id))
        (keys / "device.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def install_dock_ca(self, keys: Path) -> None:
        """What an agency's device image ships: the dock CA alone (not yet enrolled)."""
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy(self.pem("dock-ca.pem"), keys / "dock-ca.pem")


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    dock_ca, device_ca, rogue_ca = (make_ca("agency dock CA"), make_ca("agency device CA"),
                                    make_ca("some other CA"))
    dock_ca.write(folder / "dock-ca.pem")
    device_ca.write(folder / "device-ca.pem", folder / "device-ca.key")
    issue(dock_ca, "DOCK-A").write(folder / "dock.crt", folder / "dock.key")
    issue(dock_ca, "DOCK-B").write(folder / "dock-b.crt", folder / "dock-b.key")
    issue(dock_ca, "DOCK-OLD", expired=True).write(folder / "expired.crt", folder / "expired.key")
    issue(rogue_ca, "DOCK-ROGUE").write(folder / "rogue.crt", folder / "rogue.key")
    return Pki(folder, device_ca, dock_ca)
