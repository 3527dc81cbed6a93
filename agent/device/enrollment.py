"""The device's identity from enrollment to retirement, each step a sealed record.

- `request`: the signing key (created if need be) and a certificate request for it,
  keys/device.csr, which the agency's CA signs;
- `enroll`: installs the agency-signed device certificate (it must be for this
  device's key and id), the device CA that issued it, the dock CA, and the agency's age
  recipients; sealed as `enrollment`, naming every anchor installed. Locally (`bodycam
  keys enroll`) or over the dock link (`bodycam dock enroll`, POST /v1/enrollment), where
  the record also names the dock and operator, and a new anchor needs a handover from an
  installed one (anchors.py);
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
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from agent.device import anchors
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
DEVICE_CA_NAME = "device-ca.pem"  # the CA that issued device.crt, installed at enrollment
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


@dataclass(frozen=True)
class Handed:
    """What is handed over to enroll the device (PEM, as the dock or the console reads it):
    `dock_ca` absent keeps the bundle installed; `device_ca`, the CA that issued
    `certificate`, is checked and installed when given (a dock always gives it);
    `handover`: the certificates that vouch for anchors not installed now (anchors.py)."""

    certificate: bytes
    recipients: str
    dock_ca: bytes | None = None
    device_ca: bytes | None = None
    handover: bytes | None = None


def enroll(keys_dir: Path, chain: Chain, key: Ed25519PrivateKey, device_id: str,
           handed: Handed, dock_ca_path: Path, context: dict[str, Any] | None = None,
           dock: bytes | None = None) -> dict[str, Any]:
    """Check and install what is handed over, then seal the enrollment; `dock_ca_path`: where
    the dock CA is (`[dock] dock_ca`); `context` (the dock and operator, over the dock
    link) goes into the record too. `dock`: the enrolling
    dock's certificate (DER); given, the enrollment came over the dock link, so every new
    anchor needs a handover and the new dock CA must admit that dock."""
    cert = _load_cert(handed.certificate, "the device certificate")
    if not _same_key(cert.public_key(), key):
        raise KeyMaterialError("the device certificate is not for this device's key "
                               f"(key {fingerprint(key.public_key())[:16]}…)")
    names = common_names(cert.subject)
    if names != [device_id]:
        raise KeyMaterialError(f"the device certificate is for CN={names}, this device is "
                               f"{device_id!r}")
    _check_usage(cert)
    recipients = _recipients(handed.recipients)
    dock_cas = anchors.installed(dock_ca_path)
    new_dock_cas = dock_cas if handed.dock_ca is None else \
        anchors.load_bundle(handed.dock_ca, "the dock CA")
    device_cas = anchors.installed(keys_dir / DEVICE_CA_NAME)
    new_device_cas = None if handed.device_ca is None else \
        anchors.load_bundle(handed.device_ca, "the device CA")
    handovers = []
    if new_device_cas is not None and \
            not any(anchors.issued_by(cert, ca) for ca in new_device_cas):
        raise KeyMaterialError(f"the device certificate (issued by "
                               f"{cert.issuer.rfc4514_string()}) was not issued by the device "
                               "CA handed over")
    if dock is not None:
        enrolling = x509.load_der_x509_certificate(dock)
        if not any(anchors.issued_by(enrolling, ca) for ca in new_dock_cas):
            raise KeyMaterialError(
                f"the dock CA handed over did not issue the dock enrolling "
                f"({enrolling.subject.rfc4514_string()}, issued by "
                f"{enrolling.issuer.rfc4514_string()}): it would lock the docks out")
        proofs = anchors.load_bundle(handed.handover, "the handover") if handed.handover \
            else []
        handovers += anchors.check_handover(dock_cas, new_dock_cas, proofs, "dock CA")
        if new_device_cas is None:
            raise KeyMaterialError("over the dock link the device CA that issued the "
                                   "certificate must be handed over too")
        current = _current_device_cas(keys_dir, key, device_cas, new_device_cas)
        if current is not None:
            handovers += anchors.check_handover(current, new_device_cas, proofs, "device CA")
    installs = [(keys_dir / CERT_NAME, handed.certificate),
                (keys_dir / RECIPIENTS_NAME, handed.recipients.encode()),
                (dock_ca_path, anchors.bundle_pem(new_dock_cas))]
    if new_device_cas is not None:
        installs.append((keys_dir / DEVICE_CA_NAME, anchors.bundle_pem(new_device_cas)))
    for path, data in installs:
        write_file(path, data, mode=0o644)  # public: certificates, public keys
    return chain.append("enrollment", {
        # Whole, so that a verifier holding only the agency's device CA can anchor the key.
        "device_certificate": {**describe(cert), "der": base64.b64encode(
            cert.public_bytes(serialization.Encoding.DER)).decode("ascii")},
        "dock_ca": [describe(ca) for ca in new_dock_cas],
        "device_ca": [describe(ca) for ca in new_device_cas or device_cas],
        "handover": [h.as_record() for h in handovers],
        "recipients": sorted(recipient_fingerprint(r) for r in recipients),
        **(context or {}),
    })


def _current_device_cas(keys_dir: Path, key: Ed25519PrivateKey,
                        installed: list[x509.Certificate],
                        new: list[x509.Certificate]) -> list[x509.Certificate] | None:
    """The device CA an enrollment over the dock link must stay under: the one installed;
    for a device enrolled before device CAs were installed, whichever of the new ones
    issued its certificate; None on a first enrollment (and after a key rotation on such a
    device), which rests on the enrolling dock and the operator's pin alone."""
    if installed:
        return installed
    held = enrolled_certificate(keys_dir, key)
    return None if held is None else [ca for ca in new if anchors.issued_by(held, ca)]


def _recipients(text: str) -> list[Any]:
    recipients = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            try:
                recipients.append(parse_recipient(line))
            except AgeError as exc:
                raise KeyMaterialError(f"recipients line {number}: {exc}") from None
    if not recipients:
        raise KeyMaterialError("enrollment needs at least one agency recipient (age1…)")
    return recipients


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


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise KeyMaterialError(f"{what} is not a PEM certificate: {exc}") from None


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """What a record says of a certificate: enough to find it, nothing secret."""
    return {
        "sha256": anchors.sha256(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": utc_iso(int(cert.not_valid_before_utc.timestamp()) * 10**9),
        "not_after": utc_iso(int(cert.not_valid_after_utc.timestamp()) * 10**9),
    }
