"""The device's identity from enrollment to retirement, each step a sealed record.

- `request`: the signing key (created if need be) and a certificate request for it,
  keys/device.csr, which the agency's CA signs;
- `enroll`: installs the agency-signed device certificate (it must be for this
  device's key and id), the dock CA, and the agency's age recipients; sealed as
  `enrollment`;
- `rotate`: a new signing key; the `key_rotation` record, signed by the old key,
  names the new one, so the chain carries trust across (a new request is written);
- `retire`: a `retirement` record, then the signing key is destroyed; the daemon
  refuses to start on a retired device.

Keys live in the store's keys/ (owner-only). None of this ever logs key material.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from agent.age import AgeError, parse_recipient, recipient_fingerprint
from agent.chain import Chain, utc_iso
from agent.keys import (
    CURRENT_NAME,
    PRIVATE_NAME,
    RECIPIENTS_NAME,
    RETIRED_NAME,
    KeyMaterialError,
    fingerprint,
    public_pem,
    write_private_key,
)
from agent.store import fsync_dir

CSR_NAME = "device.csr"
CERT_NAME = "device.crt"
DOCK_CA_NAME = "dock-ca.pem"


def request(keys_dir: Path, key: Ed25519PrivateKey, device_id: str) -> Path:
    """Write keys/device.csr: CN = the device id, signed by the device key."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, None))
    path = keys_dir / CSR_NAME
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def enroll(keys_dir: Path, chain: Chain, key: Ed25519PrivateKey, device_id: str,
           cert_pem: bytes, dock_ca_pem: bytes, recipients_text: str) -> dict[str, Any]:
    """Check and install what the dock hands over, then seal the enrollment."""
    cert = _load_cert(cert_pem, "the device certificate")
    dock_ca = _load_cert(dock_ca_pem, "the dock CA certificate")
    if cert.public_key().public_bytes(*_RAW) != key.public_key().public_bytes(*_RAW):
        raise KeyMaterialError("the device certificate is not for this device's key "
                               f"(key {fingerprint(key.public_key())[:16]}…)")
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [device_id]:
        raise KeyMaterialError(f"the device certificate is for CN={names}, this device is "
                               f"{device_id!r}")
    recipients = []
    for number, line in enumerate(recipients_text.splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            try:
                recipients.append(parse_recipient(line))
            except AgeError as exc:
                raise KeyMaterialError(f"recipients line {number}: {exc}") from None
    if not recipients:
        raise KeyMaterialError("enrollment needs at least one agency recipient (age1…)")
    for name, data in ((CERT_NAME, cert_pem), (DOCK_CA_NAME, dock_ca_pem),
                       (RECIPIENTS_NAME, recipients_text.encode())):
        _install(keys_dir / name, data)
    return chain.append("enrollment", {
        "device_certificate": _describe(cert),
        "dock_ca": _describe(dock_ca),
        "recipients": sorted(recipient_fingerprint(r) for r in recipients),
    })


def rotate(keys_dir: Path, chain: Chain, old: Ed25519PrivateKey, device_id: str,
           reason: str) -> dict[str, Any]:
    """A new signing key, durable before the record that hands over to it."""
    new = Ed25519PrivateKey.generate()
    staged = keys_dir / (PRIVATE_NAME + ".next")
    write_private_key(staged, new)
    record = chain.rotate({
        "reason": reason,
        "old_fingerprint": fingerprint(old.public_key()),
        "new_fingerprint": fingerprint(new.public_key()),
        "new_public_key": base64.b64encode(new.public_key().public_bytes(*_RAW)).decode(),
    }, new)
    os.replace(staged, keys_dir / PRIVATE_NAME)
    _install(keys_dir / CURRENT_NAME, public_pem(new.public_key()), mode=0o644)
    (keys_dir / CERT_NAME).unlink(missing_ok=True)  # for the old key: enroll again
    request(keys_dir, new, device_id)
    return record


def retire(keys_dir: Path, chain: Chain, key: Ed25519PrivateKey, reason: str) -> dict[str, Any]:
    """Seal the retirement, then destroy the signing key: nothing can be signed after it."""
    record = chain.append("retirement", {"reason": reason,
                                         "key_fingerprint": fingerprint(key.public_key())})
    _install(keys_dir / RETIRED_NAME, f"retired by record {record['seq']}: {reason}\n".encode(),
             mode=0o644)
    private = keys_dir / PRIVATE_NAME
    size = private.stat().st_size
    with private.open("r+b") as f:  # overwrite before unlinking; flash may keep copies
        f.write(bytes(size))
        os.fsync(f.fileno())
    private.unlink()
    fsync_dir(keys_dir)
    return record


_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise KeyMaterialError(f"{what} is not a PEM certificate: {exc}") from None


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": utc_iso(int(cert.not_valid_before_utc.timestamp()) * 10**9),
        "not_after": utc_iso(int(cert.not_valid_after_utc.timestamp()) * 10**9),
    }


def _install(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
