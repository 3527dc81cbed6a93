"""The device's Ed25519 signing key: created on first start, owner-only, never logged."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.durable import write_file
from agent.evidence.age import AgeError, parse_recipient
from agent.evidence.chain import read_bodies

log = logging.getLogger(__name__)

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
    """The public key first: device.key on disk is what says the pair is complete."""
    key = Ed25519PrivateKey.generate()
    write_file(keys_dir / PUBLIC_NAME, public_pem(key.public_key()), mode=0o644)
    write_private_key(keys_dir / PRIVATE_NAME, key)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, owner-only from its first byte, durable (agent.durable.write_file)."""
    write_file(path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), mode=0o600)


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
        write_file(keys_dir / CURRENT_NAME, public_pem(key.public_key()), mode=0o644)
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


REPAIR_RECORD = "key_repaired"


def repair_public_keys(keys_dir: Path, key: Ed25519PrivateKey, records: list[dict[str, Any]],
                       seal: Callable[[dict[str, Any]], object]) -> None:
    """Write again a public key file that is missing, empty or unreadable, from the signing
    key `key`, as a power cut leaves one written before it was synced (and nothing else
    would ever write it again): device.pub while `key` is still the chain's first key,
    current.pub after a rotation to `key`. `records` are the chain's bodies; each repair is
    first sealed by `seal(payload)` (a `key_repaired` record), then written.

    device.pub cannot be derived once the key was rotated: the chain names the first key
    only by its fingerprint. That is logged with the fingerprint to fetch from the
    agency's enrolment register, and the file is left as it is.
    """
    own = fingerprint(key.public_key())
    rotations = [r["payload"] for r in records if r["type"] == "key_rotation"]
    boots = [r["payload"] for r in records if r["type"] == "boot"]
    first = (rotations[0]["old_fingerprint"] if rotations
             else boots[0]["key_fingerprint"] if boots else own)
    wanted = [(PUBLIC_NAME, first)]
    if rotations:
        wanted.append((CURRENT_NAME, rotations[-1]["new_fingerprint"]))
    for name, expected in wanted:
        path = keys_dir / name
        found = _unusable(path)
        if found is None:
            continue
        if expected != own:
            log.critical("keys/%s is %s and cannot be written again: it is the key %s…, not "
                         "the signing key; verify with --key and that key from the agency's "
                         "enrolment register", name, found, expected[:16])
            continue
        kept = path.with_name(f"{name}.unreadable-{time.time_ns()}")
        keep = path.exists() and not (path.is_file() and path.stat().st_size == 0)
        seal({"key_file": f"keys/{name}", "found": found, "fingerprint": own,
              "derived_from": f"keys/{PRIVATE_NAME}",
              "kept_in": f"keys/{kept.name}" if keep else None})
        if keep:
            os.replace(path, kept)
        write_file(path, public_pem(key.public_key()), mode=0o644)
        log.warning("keys/%s was %s: written again from the signing key", name, found)


def _unusable(path: Path) -> str | None:
    """Why `path` is not an Ed25519 public key in PEM, in a few words; None when it is one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not data:
        return "empty"
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        return "unreadable (not a PEM public key)"
    return None if isinstance(loaded, Ed25519PublicKey) else "not an Ed25519 public key"


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: short enough to print, long enough to trust."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
