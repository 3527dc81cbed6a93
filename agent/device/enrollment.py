"""The device's identity from enrollment to retirement, each step a sealed record.

- `request`: the signing key (created if need be) and a certificate request for it,
  keys/device.csr, which the agency's CA signs;
- `enroll`: installs the agency-signed device certificate (it must be for this
  device's key and id), the dock CA, and the agency's age recipients; sealed as
  `enrollment`. Locally (`bodycam keys enroll`) or over the dock link (`bodycam dock
  enroll`, POST /v1/enrollment), where the record also names the dock and operator;
- `rotate`: a new signing key; the `key_rotation` record, signed by the old key,
  names the new one, so the chain carries trust across (a new request is written);
- `retire`: a `retirement` record, then the signing key is destroyed; the daemon
  refuses to start on a retired device.

The enrolled certificate is the device's TLS identity (the dock link, MQTT); until
there is one, `tls_certificate` makes a self-signed one for the same key, which a dock
can only pin by the key's fingerprint. Keys live in the store's keys/ (owner-only).
None of this ever logs key material.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from agent.durable import fsync_dir, write_file
from agent.evidence.age import AgeError, parse_recipient, recipient_fingerprint
from agent.evidence.chain import Chain, utc_iso
from agent.evidence.keys import (
    CURRENT_NAME,
    PRIVATE_NAME,
    RECIPIENTS_NAME,
    RETIRED_NAME,
    KeyMaterialError,
    fingerprint,
    public_pem,
    write_private_key,
)
from agent.pki import common_names, device_request, self_signed

log = logging.getLogger(__name__)

CSR_NAME = "device.csr"
CERT_NAME = "device.crt"
DOCK_CA_NAME = "dock-ca.pem"
BOOTSTRAP_NAME = "bootstrap.crt"  # self-signed, for the signing key, until enrollment


def request(keys_dir: Path, key: Ed25519PrivateKey, device_id: str) -> Path:
    """Write keys/device.csr: CN = the device id, signed by the device key."""
    path = keys_dir / CSR_NAME
    write_file(path, device_request(key, device_id).public_bytes(serialization.Encoding.PEM),
               mode=0o644)
    return path


def current_request(keys_dir: Path, key: Ed25519PrivateKey, device_id: str) -> bytes:
    """keys/device.csr (PEM), written anew when missing or not for this key and id."""
    path = keys_dir / CSR_NAME
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
        if _same_key(csr.public_key(), key) and common_names(csr.subject) == [device_id]:
            return path.read_bytes()
    except (OSError, ValueError):
        pass  # none yet, or not one: written below
    return request(keys_dir, key, device_id).read_bytes()


def enrolled_certificate(keys_dir: Path, key: Ed25519PrivateKey) -> x509.Certificate | None:
    """keys/device.crt when it certifies this signing key (after a rotation it is gone).
    One that does not parse is logged and taken as none: the device then serves its
    enrollment, so a dock can enroll it again, and it records as ever."""
    path = keys_dir / CERT_NAME
    if not path.is_file():
        return None
    try:
        cert = _load_cert(path.read_bytes(), str(path))
    except KeyMaterialError as exc:
        log.error("not enrolled: %s", exc)
        return None
    return cert if _same_key(cert.public_key(), key) else None


def enrolled_identity(keys_dir: Path, key: Ed25519PrivateKey) -> tuple[Path, Path] | None:
    """(certificate, private key) files of the enrolled identity, for a TLS client (MQTT)."""
    if enrolled_certificate(keys_dir, key) is None:
        return None
    return keys_dir / CERT_NAME, keys_dir / PRIVATE_NAME


def tls_certificate(keys_dir: Path, key: Ed25519PrivateKey, device_id: str) -> tuple[Path, bool]:
    """The certificate to present with the signing key, and whether the agency issued it:
    keys/device.crt once enrolled, else keys/bootstrap.crt, self-signed (made when missing
    or not for this key and id), which only pinning the key's fingerprint can trust."""
    if enrolled_certificate(keys_dir, key) is not None:
        return keys_dir / CERT_NAME, True
    path = keys_dir / BOOTSTRAP_NAME
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if _same_key(cert.public_key(), key) and common_names(cert.subject) == [device_id]:
            return path, False
    except (OSError, ValueError):
        pass  # none yet, or not one: made below
    write_file(path, self_signed(key, device_id).public_bytes(serialization.Encoding.PEM),
               mode=0o644)
    return path, False


def enroll(keys_dir: Path, chain: Chain, key: Ed25519PrivateKey, device_id: str,
           cert_pem: bytes, dock_ca_pem: bytes, recipients_text: str,
           context: dict[str, Any] | None = None, dock: bytes | None = None) -> dict[str, Any]:
    """Check and install what the dock hands over, then seal the enrollment; `context`
    (the dock and operator, over the dock link) goes into the record too. `dock`: the
    enrolling dock's certificate (DER), which the new dock CA must admit."""
    cert = _load_cert(cert_pem, "the device certificate")
    dock_ca = _load_cert(dock_ca_pem, "the dock CA certificate")
    if dock is not None:
        _check_admits(dock_ca_pem, x509.load_der_x509_certificate(dock))
    if not _same_key(cert.public_key(), key):
        raise KeyMaterialError("the device certificate is not for this device's key "
                               f"(key {fingerprint(key.public_key())[:16]}…)")
    names = common_names(cert.subject)
    if names != [device_id]:
        raise KeyMaterialError(f"the device certificate is for CN={names}, this device is "
                               f"{device_id!r}")
    _check_usage(cert)
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
        write_file(keys_dir / name, data, mode=0o644)  # public: certificates, public keys
    return chain.append("enrollment", {
        "device_certificate": describe(cert),
        "dock_ca": describe(dock_ca),
        "recipients": sorted(recipient_fingerprint(r) for r in recipients),
        **(context or {}),
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
    os.replace(staged, keys_dir / PRIVATE_NAME)  # durable with current.pub's folder sync
    write_file(keys_dir / CURRENT_NAME, public_pem(new.public_key()), mode=0o644)
    (keys_dir / CERT_NAME).unlink(missing_ok=True)  # for the old key: enroll again
    request(keys_dir, new, device_id)
    return record


def retire(keys_dir: Path, chain: Chain, key: Ed25519PrivateKey, reason: str) -> dict[str, Any]:
    """Seal the retirement, then destroy the signing key: nothing can be signed after it."""
    record = chain.append("retirement", {"reason": reason,
                                         "key_fingerprint": fingerprint(key.public_key())})
    write_file(keys_dir / RETIRED_NAME, f"retired by record {record['seq']}: {reason}\n".encode(),
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
_TLS_USAGES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth (the dock link)",
               ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth (MQTT)"}


def _same_key(public_key: Any, key: Ed25519PrivateKey) -> bool:
    return isinstance(public_key, Ed25519PublicKey) and \
        public_key.public_bytes(*_RAW) == key.public_key().public_bytes(*_RAW)


def _check_usage(cert: x509.Certificate) -> None:
    """A certificate restricted to other uses would break the dock link or MQTT later, where
    the error says less: refuse it now."""
    try:
        usages = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        return
    missing = [text for oid, text in _TLS_USAGES.items() if oid not in usages]
    if missing:
        raise KeyMaterialError(f"the device certificate's extended key usage lacks "
                               f"{' and '.join(missing)}")


def _check_admits(dock_ca_pem: bytes, dock: x509.Certificate) -> None:
    """A dock CA that did not issue the dock installing it would lock every dock out: the
    device could then only be enrolled again by hand. (A CA rotation hands over a bundle of
    the old and the new CA.)"""
    for ca in x509.load_pem_x509_certificates(dock_ca_pem):
        try:
            dock.verify_directly_issued_by(ca)
            return
        except (ValueError, TypeError, InvalidSignature):
            continue
    raise KeyMaterialError(f"the dock CA handed over did not issue the dock enrolling "
                           f"({dock.subject.rfc4514_string()}, issued by "
                           f"{dock.issuer.rfc4514_string()}): it would lock the docks out")


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise KeyMaterialError(f"{what} is not a PEM certificate: {exc}") from None


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """What a record says of a certificate: enough to find it, nothing secret."""
    return {
        "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": utc_iso(int(cert.not_valid_before_utc.timestamp()) * 10**9),
        "not_after": utc_iso(int(cert.not_valid_after_utc.timestamp()) * 10**9),
    }
