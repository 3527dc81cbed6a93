"""Enrollment's trust anchors (issue 18, item 4): an admitted dock cannot plant a CA of its
own beside the agency's nor move the device under a foreign device CA; a new anchor comes
only with a handover certificate from one installed now, and the sealed record names every
anchor installed. Driven through `enrollment.enroll` on a real store and chain, with the
dock's certificate as the dock link hands it over (over the link) or none (the console)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.device import anchors
from agent.device.enrollment import DEVICE_CA_NAME, Handed, enroll
from agent.evidence.age import recipient_string
from agent.evidence.chain import Chain, read_bodies
from agent.evidence.keys import KeyMaterialError, load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from agent.pki import Issued, certify_device, device_request, handover, issue, make_ca
from hal.clock import SimulatedClock

DEVICE = "TEST-0001"
DER = serialization.Encoding.DER


class Agency:
    """The agency's two CAs, a dock of its own, and what the device ships with."""

    def __init__(self) -> None:
        self.dock_ca = make_ca("agency dock CA")
        self.device_ca = make_ca("agency device CA")
        self.dock = issue(self.dock_ca, "DOCK-A")
        self.recipients = recipient_string(X25519PrivateKey.generate().public_key()) + "\n"


@pytest.fixture
def agency() -> Agency:
    return Agency()


class Device:
    def __init__(self, root: Path, agency: Agency) -> None:
        self.store = Store(root).prepare()
        self.key = load_or_create_device_key(self.store.keys)
        self.dock_ca_path = self.store.keys / "dock-ca.pem"
        self.dock_ca_path.write_bytes(agency.dock_ca.cert_pem)  # as the image ships it
        self.chain = Chain(self.store.chain, self.key, lambda: (DEVICE, "OFC"),
                           SimulatedClock().state, "boot")

    def certificate(self, ca: Issued) -> bytes:
        return certify_device(ca, device_request(self.key, DEVICE)).public_bytes(
            serialization.Encoding.PEM)

    def enroll(self, handed: Handed, dock: Issued | None) -> dict[str, Any]:
        """Over the dock link when `dock` is given, else at the console."""
        return enroll(self.store.keys, self.chain, self.key, DEVICE, handed, self.dock_ca_path,
                      {}, None if dock is None else dock.certificate.public_bytes(DER))

    def enrollments(self) -> list[dict[str, Any]]:
        return [r["payload"] for r in read_bodies(self.store.chain) if r["type"] == "enrollment"]


@pytest.fixture
def device(tmp_path: Path, agency: Agency) -> Iterator[Device]:
    device = Device(tmp_path / "store", agency)
    yield device
    device.chain.close()


def pem(*certs: x509.Certificate | Issued) -> bytes:
    return b"".join((c.certificate if isinstance(c, Issued) else c).public_bytes(
        serialization.Encoding.PEM) for c in certs)


def first(device: Device, agency: Agency, **handed: Any) -> Handed:
    return Handed(device.certificate(agency.device_ca), agency.recipients,
                  device_ca=agency.device_ca.cert_pem, **handed)


def test_a_hidden_dock_ca_in_the_bundle_is_refused_and_nothing_installed(
        device: Device, agency: Agency) -> None:
    own = make_ca("the dock's own CA")
    with pytest.raises(KeyMaterialError, match=r"the dock's own CA.*no handover certificate"):
        device.enroll(first(device, agency, dock_ca=pem(agency.dock_ca, own)), agency.dock)
    assert device.dock_ca_path.read_bytes() == agency.dock_ca.cert_pem
    assert not (device.store.keys / "device.crt").exists() and not device.enrollments()


def test_a_dock_ca_handed_over_by_the_installed_one_is_installed_and_every_anchor_sealed(
        device: Device, agency: Agency) -> None:
    successor = make_ca("agency dock CA 2027")
    proof = handover(agency.dock_ca, successor.certificate)
    record = device.enroll(first(device, agency, dock_ca=pem(agency.dock_ca, successor),
                                 handover=pem(proof)), agency.dock)
    fingerprints = [ca["sha256"] for ca in record["payload"]["dock_ca"]]
    assert fingerprints == [anchors.sha256(agency.dock_ca.certificate),
                            anchors.sha256(successor.certificate)]
    assert record["payload"]["handover"] == [{
        "anchor": anchors.sha256(successor.certificate), "proof": anchors.sha256(proof),
        "by": anchors.sha256(agency.dock_ca.certificate)}]
    assert [ca["sha256"] for ca in record["payload"]["device_ca"]] == \
        [anchors.sha256(agency.device_ca.certificate)]
    certified = x509.load_der_x509_certificate(
        base64.b64decode(record["payload"]["device_certificate"]["der"]))
    assert anchors.issued_by(certified, agency.device_ca.certificate)  # anchorable offline
    installed = anchors.installed(device.dock_ca_path)
    assert [anchors.sha256(c) for c in installed] == fingerprints
    assert verify_store(device.store.root).ok


def test_a_leaf_certificate_is_no_handover(device: Device, agency: Agency) -> None:
    """The dock's own certificate has the dock CA's signature over the dock's key: a CA
    made from that key and subject must still be refused."""
    key = agency.dock.key
    start = agency.dock.certificate.not_valid_before_utc
    forged = (x509.CertificateBuilder().subject_name(agency.dock.certificate.subject)
              .issuer_name(agency.dock.certificate.subject).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(start)
              .not_valid_after(agency.dock.certificate.not_valid_after_utc)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(key, hashes.SHA256()))
    with pytest.raises(KeyMaterialError, match=r"the handover: .*DOCK-A.* is not a CA"):
        device.enroll(first(device, agency, dock_ca=pem(agency.dock_ca, forged),
                            handover=pem(agency.dock)), agency.dock)
    assert not device.enrollments()


def test_a_handover_from_a_ca_the_device_does_not_hold_is_refused(
        device: Device, agency: Agency) -> None:
    own, other = make_ca("the dock's own CA"), make_ca("another CA")
    with pytest.raises(KeyMaterialError, match="no handover certificate"):
        device.enroll(first(device, agency, dock_ca=pem(agency.dock_ca, own),
                            handover=pem(handover(other, own.certificate))), agency.dock)


def test_an_anchor_may_be_dropped_without_a_handover(device: Device, agency: Agency) -> None:
    retiring = make_ca("agency dock CA 2020")
    device.dock_ca_path.write_bytes(pem(agency.dock_ca, retiring))
    record = device.enroll(first(device, agency, dock_ca=agency.dock_ca.cert_pem), agency.dock)
    assert len(record["payload"]["dock_ca"]) == 1


def test_re_enrollment_under_a_foreign_device_ca_is_refused(
        device: Device, agency: Agency) -> None:
    device.enroll(first(device, agency), agency.dock)
    foreign = make_ca("agency device CA")  # same name, another key
    with pytest.raises(KeyMaterialError, match=r"device CA.*no handover certificate"):
        device.enroll(Handed(device.certificate(foreign), agency.recipients,
                             device_ca=foreign.cert_pem), agency.dock)
    assert (device.store.keys / DEVICE_CA_NAME).read_bytes() == agency.device_ca.cert_pem
    assert len(device.enrollments()) == 1
    # A renewal under the same CA passes; so does the agency's own successor, handed over.
    device.enroll(first(device, agency), agency.dock)
    successor = make_ca("agency device CA 2027")
    device.enroll(Handed(device.certificate(successor), agency.recipients,
                         device_ca=successor.cert_pem,
                         handover=pem(handover(agency.device_ca, successor.certificate))),
                  agency.dock)
    assert (device.store.keys / DEVICE_CA_NAME).read_bytes() == successor.cert_pem


def test_a_device_enrolled_before_device_cas_were_installed_stays_under_its_issuer(
        device: Device, agency: Agency) -> None:
    (device.store.keys / "device.crt").write_bytes(device.certificate(agency.device_ca))
    foreign = make_ca("foreign device CA")
    with pytest.raises(KeyMaterialError, match=r"device CA.*no handover certificate"):
        device.enroll(Handed(device.certificate(foreign), agency.recipients,
                             device_ca=foreign.cert_pem), agency.dock)
    device.enroll(first(device, agency), agency.dock)
    assert (device.store.keys / DEVICE_CA_NAME).read_bytes() == agency.device_ca.cert_pem


def test_a_certificate_the_handed_device_ca_did_not_issue_is_refused(
        device: Device, agency: Agency) -> None:
    with pytest.raises(KeyMaterialError, match="not issued by the device CA handed over"):
        device.enroll(Handed(device.certificate(make_ca("other")), agency.recipients,
                             device_ca=agency.device_ca.cert_pem), agency.dock)


def test_a_leaf_in_a_ca_bundle_is_refused(device: Device, agency: Agency) -> None:
    with pytest.raises(KeyMaterialError, match=r"DOCK-A.*is not a CA certificate"):
        device.enroll(first(device, agency, dock_ca=pem(agency.dock_ca, agency.dock)),
                      agency.dock)


def test_the_console_needs_no_handover(device: Device, agency: Agency) -> None:
    """Root at the device's console is the agency's own hands: the way back for a device a
    bad enrollment locked out. It is sealed all the same."""
    other_docks = make_ca("replacement dock CA")
    record = device.enroll(first(device, agency, dock_ca=other_docks.cert_pem), dock=None)
    assert [ca["sha256"] for ca in record["payload"]["dock_ca"]] == \
        [anchors.sha256(other_docks.certificate)]
    assert record["payload"]["handover"] == []


def test_a_handover_is_the_successor_vouched_for(agency: Agency) -> None:
    """`agent.pki.handover` keeps the successor's key and subject, and the CA constraint."""
    successor = make_ca("successor")
    proof = handover(agency.dock_ca, successor.certificate)
    assert anchors.is_ca(proof) and anchors.issued_by(proof, agency.dock_ca.certificate)
    assert proof.subject == successor.certificate.subject
    assert proof.public_key() == successor.certificate.public_key()
