"""`bodycam dock enroll`: the dock certifies a device over the dock link.

A device not yet enrolled has no certificate any CA vouches for, so the dock
trusts it by its key alone: the operator reads the key's fingerprint off the
device (`bodycam keys show` / `keys request`) and the dock refuses unless the
TLS server key and the key in the device's certificate request are that one.
The dock then signs the request with the agency's device CA, hands over the
certificate, the dock CA and the agency's recipients (the device seals the
enrollment, naming this dock and operator), and connects again as every dock
will from now on: the device's certificate verified against the device CA, its
CN the device id; it must be the certificate just issued. See docs/docking.md.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, get_args

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from agent.dock.pull import (
    API,
    DockError,
    DockLink,
    device_identity,
    key_fingerprint,
    open_session,
    read_json,
)
from agent.pki import Issued, certify_device, common_names

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Enrolled:
    device: str
    seq: int                    # the device's enrollment record
    certificate: dict[str, Any]  # as the record describes it


def load_device_ca(cert: Path, key: Path) -> Issued:
    """The agency's device CA: its certificate (--ca) and private key (--device-ca-key)."""
    try:
        ca = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DockError(f"the device CA (--ca {cert}, --device-ca-key {key}): {exc}") from exc
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not _can_issue(private) or \
            private.public_key().public_bytes(*spki) != ca.public_key().public_bytes(*spki):
        raise DockError(f"--device-ca-key {key} is not the key of the device CA --ca {cert}")
    return Issued(ca, private)


def _can_issue(key: object) -> TypeGuard[CertificateIssuerPrivateKeyTypes]:
    """Whether `key` is of a kind that signs certificates, by cryptography's own list."""
    return isinstance(key, get_args(CertificateIssuerPrivateKeyTypes))


async def enroll(url: str, link: DockLink, device_ca: Issued, expect_key: str,
                 recipients: str, operator: str, dock_ca: bytes | None = None,
                 replace: bool = False, handover: bytes | None = None) -> Enrolled:
    """Pin, certify, hand over, and check the device now presents what was issued.
    `handover`: the certificates vouching for a dock or device CA the device does not
    hold yet (a CA rotation; docs/docking.md, "Trust anchors")."""
    expected = expect_key.strip().lower()
    if not _FINGERPRINT.fullmatch(expected):
        raise DockError(f"--expect-key {expect_key!r}: not a key fingerprint (64 hex digits, "
                        "as `bodycam keys show` prints on the device)")
    pinned = link.context(pin=expected)
    async with open_session(url, pinned, 1) as session:
        async with session.get(f"{API}/enrollment") as response:
            asked = await read_json(response, "certificate request")
        csr = _request(asked, expected, pinned.check.device_id)
        try:
            issued = certify_device(device_ca, csr)
        except ValueError as exc:
            raise DockError(f"certificate request of {asked.get('device')!r}: {exc}") from exc
        body = {"certificate": issued.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                "device_ca": device_ca.cert_pem.decode("ascii"),
                "recipients": recipients, "operator": operator, "replace": replace}
        for field, pem in (("dock_ca", dock_ca), ("handover", handover)):
            if pem is not None:
                body[field] = pem.decode("ascii")
        async with session.post(f"{API}/enrollment", json=body) as response:
            answer = await read_json(response, "enrollment")
    device = str(pinned.check.device_id)
    verified = dataclasses.replace(link, device_id=device).context()
    async with open_session(url, verified, 1) as session:
        await device_identity(session, verified.check)
    if verified.check.certificate != issued.public_bytes(serialization.Encoding.DER):
        raise DockError(f"{device} sealed its enrollment as record {answer['seq']} but still "
                        "presents another certificate")
    return Enrolled(device, answer["seq"], answer["certificate"])


def _request(asked: dict[str, Any], expected: str, device: str | None
             ) -> x509.CertificateSigningRequest:
    """The device's certificate request, for the pinned key and the device the TLS
    certificate names; anything else is refused before anything is signed."""
    try:
        csr = x509.load_pem_x509_csr(str(asked.get("csr")).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise DockError(f"the device's certificate request is not a PEM request: {exc}") from exc
    held = key_fingerprint(csr.public_key())
    if held != expected:
        raise DockError(f"the device's certificate request is for key {held}, not the expected "
                        f"{expected} (--expect-key): refusing to sign")
    names = common_names(csr.subject)
    if names != [device] or asked.get("device") != device:
        raise DockError(f"the device's certificate request is for CN={names}, its TLS "
                        f"certificate for {device!r}, its answer for {asked.get('device')!r}")
    return csr
