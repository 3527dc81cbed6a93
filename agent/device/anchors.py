"""The device's trust anchors, and the one rule for changing them over the dock link.

Two sets of anchors live in the store's keys/: the dock CA bundle (`dock-ca.pem`, which
docks may connect) and the device CA (`device-ca.pem`, who certifies this device's key).
An admitted dock must not be able to plant an anchor of its own (its CA's docks would then
pull footage) nor move the device under a foreign device CA (real docks would then refuse
it). So over the dock link every anchor that is not installed now comes with a
**handover**: a CA certificate with the new anchor's subject and key, issued by an anchor
installed now (a cross-certificate, as CAs hand over to their successors). Anchors may be
dropped without one (a CA retired). The console (`bodycam keys enroll`, root on the
device) is the agency's own hands and needs no handover: it is the way back for a device
locked out. See docs/docking.md, "Trust anchors".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from agent.evidence.keys import KeyMaterialError

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sha256(cert: x509.Certificate) -> str:
    """The certificate's fingerprint, as records and `openssl x509 -fingerprint` name it."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_bundle(pem: bytes, what: str) -> list[x509.Certificate]:
    """The CA certificates of a PEM bundle; anything else in it is refused, since a leaf
    installed as an anchor would admit whatever it signs."""
    try:
        bundle = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise KeyMaterialError(f"{what} is not a PEM certificate bundle: {exc}") from None
    for cert in bundle:
        if not is_ca(cert):
            raise KeyMaterialError(f"{what}: {cert.subject.rfc4514_string()} (sha256 "
                                   f"{sha256(cert)}) is not a CA certificate")
    return bundle


def installed(path: Path) -> list[x509.Certificate]:
    """The anchors installed at `path`; none when it is missing."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return []
    return load_bundle(pem, str(path))


def bundle_pem(bundle: list[x509.Certificate]) -> bytes:
    """What is installed: exactly the anchors the record names, nothing else of the PEM."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in bundle)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


@dataclass(frozen=True)
class Handover:
    """A new anchor, the certificate that proves it, and the installed anchor that issued
    that certificate."""

    anchor: x509.Certificate
    proof: x509.Certificate
    by: x509.Certificate

    def as_record(self) -> dict[str, Any]:
        return {"anchor": sha256(self.anchor), "proof": sha256(self.proof),
                "by": sha256(self.by)}


def check_handover(current: list[x509.Certificate], new: list[x509.Certificate],
                   proofs: list[x509.Certificate], what: str) -> list[Handover]:
    """Each anchor of `new` is one of `current` or is handed over by one of them; returns
    the handovers, or refuses naming the first anchor without one. `proofs` are CA
    certificates (`load_bundle`): a dock's own certificate vouches for nothing."""
    held = {_identity(cert) for cert in current}
    handovers = []
    for anchor in new:
        if _identity(anchor) in held:
            continue
        found = next((Handover(anchor, proof, by) for proof in proofs for by in current
                      if _identity(proof) == _identity(anchor)
                      and issued_by(proof, by)), None)
        if found is None:
            raise KeyMaterialError(
                f"{what}: {anchor.subject.rfc4514_string()} (sha256 {sha256(anchor)}) is not "
                "installed on this device and no handover certificate (its subject and key, "
                "as a CA certificate issued by an installed anchor: "
                f"{', '.join(sha256(c)[:16] + '…' for c in current) or 'none'}) vouches for it")
        handovers.append(found)
    return handovers


def _identity(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """What makes an anchor the same anchor: its subject and its key (a CA re-issued with
    new dates is still the same CA)."""
    return cert.subject.public_bytes(), cert.public_key().public_bytes(*_SPKI)
