"""Anchoring a chain in the agency's device CA (`bodycam verify --ca device-ca.pem`).

A signature proves only who held the key. The agency certified each of its
devices' keys when it enrolled them, and every `enrollment` record carries that
certificate whole (`device_certificate.der`), so an agency holding nothing but its
device CA can tell whether the keys that signed a chain are ones it certified,
without trusting a key file that came with the evidence.

The rule (docs/chain-format.md, "Anchoring in the device CA"): every key that
signed records, the first and each one a `key_rotation` handed over to, must be
certified by an `enrollment` record that this same key signed, whose certificate
is for this key, is directly issued by a CA in the bundle, names (CN) the device
the records name, and is the certificate whose SHA-256 the record states. Records
a key signed before its enrollment record are covered by it (the enrollment
record links to them); a key no enrollment record certifies leaves every record
it signed unanchored, which is one finding naming the key and its records. The
certificate's validity dates are not judged: they would be compared with the
device's own clock, which no one attests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from agent.evidence.findings import Finding
from agent.evidence.keys import KeyMaterialError


@dataclass
class KeySpan:
    """One signing key and the records it signed (seq `first` to `last`)."""

    key: Ed25519PublicKey
    fingerprint: str
    first: int
    last: int


def load_device_ca(path: Path) -> list[x509.Certificate]:
    """The agency's device CA bundle (PEM, one or more certificates); anything else is the
    caller's input to fix."""
    try:
        cas = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise KeyMaterialError(f"--ca {path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise KeyMaterialError(f"--ca {path}: not PEM certificates ({exc})") from None
    return cas


def anchor(spans: list[KeySpan], records: list[dict[str, Any]],
           cas: list[x509.Certificate], ca_name: str) -> tuple[list[Finding], list[str]]:
    """(findings, notes): a finding for each key no enrollment record it signed certifies
    under `cas`; a note for each enrollment record that certifies nothing, when its key is
    certified all the same by another."""
    enrollments = [r for r in records if r["type"] == "enrollment"]
    findings, notes = [], []
    for span in spans:
        reasons = []
        certified = None
        for record in enrollments:
            if not span.first <= record["seq"] <= span.last:
                continue
            try:
                problem, subject = _certifies(record, span, cas, ca_name)
            except (ValueError, UnsupportedAlgorithm) as exc:  # a certificate x509 cannot read
                problem, subject = f"carries a certificate that cannot be read ({exc})", ""
            if problem is None:
                certified = certified or subject
            else:
                reasons.append(f"enrollment record {record['seq']} {problem}")
        where = f"key {span.fingerprint[:16]}… (records {span.first} to {span.last})"
        if certified is None:
            why = "; ".join(reasons) or "no enrollment record was signed with it"
            findings.append(Finding(where, f"is certified by no enrollment record under "
                                    f"{ca_name}: {why}", "unanchored"))
        else:
            notes += [f"{where}: {reason}" for reason in reasons]
    return findings, notes


def _certifies(record: dict[str, Any], span: KeySpan, cas: list[x509.Certificate],
               ca_name: str) -> tuple[str | None, str]:
    """(why the record's certificate does not certify the span's key, or None; its
    subject)."""
    described = record["payload"].get("device_certificate")
    der_text = described.get("der") if isinstance(described, dict) else None
    if not isinstance(der_text, str):
        return "carries no certificate (sealed before enrollment records held it)", ""
    try:
        der = base64.b64decode(der_text, validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error):
        return "carries a certificate that is not DER X.509", ""
    subject = cert.subject.rfc4514_string()
    if hashlib.sha256(der).hexdigest() != described.get("sha256"):
        return "carries a certificate whose SHA-256 is not the one it states", subject
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey) or _raw(public) != _raw(span.key):
        return (f"carries a certificate ({subject}) for another key than the one that "
                f"signed it", subject)
    if not any(_issued_by(cert, ca) for ca in cas):
        return (f"carries a certificate issued by {cert.issuer.rfc4514_string()}, by no CA "
                f"in {ca_name}", subject)
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [record["device"]]:
        return (f"carries a certificate for CN={names}, while its records name device "
                f"{record['device']!r}", subject)
    return None, subject


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
