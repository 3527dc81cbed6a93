"""The device's Ed25519 signing key: created on first start, owner-only, never logged."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.evidence.age import AgeError, parse_recipient
from agent.evidence.chain import read_bodies

PRIVATE_NAME = "device.key"
PUBLIC_NAME = "device.pub"    # the first key: the verifier's anchor, which rotations extend
CURRENT_NAME = "current.pub"  # the key signing now, after a rotation
RETIRED_NAME = "RETIRED"


class KeyMaterialError(Exception):
    """The key material cannot be used safely."""


def load_or_create_device_key(keys_dir: Path, chain_path: Path | None = None
                              ) -> Ed25519PrivateKey:
    """Load keys/device.key, creating it (0600) and keys/device.pub on first start.

    Refuses a retired device, and keys that others can read. A rotation cut short
    (the new key staged) is finished if the chain already names the new key, else
    undone.
    """
    retired = keys_dir / RETIRED_NAME
    if retired.exists():
        raise KeyMaterialError(f"this device is retired ({retired}: "
                               f"{retired.read_text().strip()}); it signs and records no more")
    for path in (keys_dir, *keys_dir.glob("*.key*")):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyMaterialError(f"{path} is open to others (mode {mode:04o}): the daemon "
                                   f"will not sign with it; run: chmod "
                                   f"{'700' if path.is_dir() else '600'} {path}")
    _finish_rotation(keys_dir, chain_path)
    private_path = keys_dir / PRIVATE_NAME
    if not private_path.exists():
        _create(keys_dir)
    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"{private_path} is not an Ed25519 private key")
    return key


RECIPIENTS_NAME = "recipients.txt"


class EncryptionSettings(Protocol):
    """What `load_recipients` reads of the configuration (`[encryption]` on the device)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def recipients(self) -> Sequence[str]: ...


def load_recipients(config: EncryptionSettings, keys_dir: Path) -> list[X25519PublicKey]:
    """The agency's age recipients: the configured ones and those installed at enrollment;
    none when encryption is off. Encryption on with no recipient is refused: footage
    must never be written in the clear by mistake."""
    if not config.enabled:
        return []
    texts = [(f"[encryption] recipients[{n}]", text)
             for n, text in enumerate(config.recipients)]
    installed = keys_dir / RECIPIENTS_NAME
    if installed.exists():
        texts += [(f"{installed}:{n}", line.strip())
                  for n, line in enumerate(installed.read_text().splitlines(), 1)
                  if line.strip() and not line.startswith("#")]
    recipients = []
    for where, text in texts:
        try:
            recipients.append(parse_recipient(text))
        except AgeError as exc:
            raise KeyMaterialError(f"{where}: {exc}") from None
    if not recipients:
        raise KeyMaterialError(
            "[encryption] enabled = true but no agency recipient is known: give "
            f"[encryption] recipients, or enroll the device to install {installed}")
    return recipients


def _create(keys_dir: Path) -> None:
    key = Ed25519PrivateKey.generate()
    tmp = keys_dir / (PRIVATE_NAME + ".tmp")
    write_private_key(tmp, key)
    (keys_dir / PUBLIC_NAME).write_bytes(public_pem(key.public_key()))
    os.replace(tmp, keys_dir / PRIVATE_NAME)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, created owner-only (never briefly readable), synced."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_rotation(keys_dir: Path, chain_path: Path | None) -> None:
    staged = keys_dir / (PRIVATE_NAME + ".next")
    if not staged.exists():
        return
    key = serialization.load_pem_private_key(staged.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"{staged} is not an Ed25519 private key")
    rotations = [b for b in (read_bodies(chain_path) if chain_path and chain_path.exists()
                             else []) if b["type"] == "key_rotation"]
    if rotations and rotations[-1]["payload"]["new_fingerprint"] == fingerprint(
            key.public_key()):
        os.replace(staged, keys_dir / PRIVATE_NAME)
        (keys_dir / CURRENT_NAME).write_bytes(public_pem(key.public_key()))
    else:
        staged.unlink()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: Path) -> Ed25519PublicKey:
    if not path.is_file():
        raise KeyMaterialError(f"no public key at {path}; give the device's key with --key")
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise KeyMaterialError(f"{path} is not an Ed25519 public key")
    return key


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: short enough to print, long enough to trust."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
