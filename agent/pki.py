"""X.509 material for the dock link: an agency CA, and leaf certificates it issues.

The agency runs two CAs: the dock CA, whose certificates a device accepts as
docks, and the device CA, whose certificates a dock accepts as devices. A device
certificate certifies the device's own Ed25519 signing key (from its request, at
enrollment: `certify_device`, which `bodycam dock enroll` uses); before that, a
device presents a self-signed certificate for the same key. This module makes
the CAs and dock leaves for the demo, the tests and the benchmark; a real agency
issues them from its own PKI, and the device only ever reads PEM files.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.durable import write_file


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, cert_path: Path, key_path: Path | None = None) -> None:
        """The certificate (0644) and, when asked, its key (0600, never readable by others),
        durably: a device and a dock start from them after a reboot."""
        write_file(cert_path, self.cert_pem, mode=0o644)
        if key_path is not None:
            write_file(key_path, self.key_pem, mode=0o600)


def common_names(name: x509.Name) -> list[str]:
    """The CNs of a subject: a device's certificate or request must hold exactly its id."""
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bodycam agency"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(days: int, expired: bool) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        return now - datetime.timedelta(days=days + 1), now - datetime.timedelta(days=1)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


def make_ca(common_name: str, days: int = 3650) -> Issued:
    """A self-signed CA that may issue leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, expired=False)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def handover(old: Issued, new: x509.Certificate, days: int = 90) -> x509.Certificate:
    """A CA's successor, vouched for by the CA a device trusts now: a CA certificate with
    the new CA's subject and key, issued by the old one (a cross-certificate). A device
    installs a new dock or device CA over the dock link only with one of these
    (agent/device/anchors.py)."""
    start, end = _validity(days, expired=False)
    constraints = new.extensions.get_extension_for_class(x509.BasicConstraints).value
    return (x509.CertificateBuilder()
            .subject_name(new.subject).issuer_name(old.certificate.subject)
            .public_key(new.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(constraints, critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                old.key.public_key()), critical=False)
            .sign(old.key, _digest(old)))


def issue(ca: Issued, common_name: str, *, days: int = 825, expired: bool = False) -> Issued:
    """A dock's client certificate, with a new key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Issued(_leaf(ca, _name(common_name), key.public_key(),
                        [ExtendedKeyUsageOID.CLIENT_AUTH], days, expired), key)


def device_request(key: Ed25519PrivateKey, device_id: str) -> x509.CertificateSigningRequest:
    """What a device asks its agency to certify: its signing key, CN = its id."""
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .sign(key, None))


def certify_device(ca: Issued, request: x509.CertificateSigningRequest,
                   days: int = 825) -> x509.Certificate:
    """The agency's device certificate for a device's request: its key and its subject (CN =
    the device id), for both ends of TLS: server on the dock link, client to the MQTT
    broker. No address in it: a docked device's address is arbitrary, its id is not."""
    if not request.is_signature_valid:
        raise ValueError("the certificate request's signature does not verify: it was not "
                         "made with the key it names")
    return _leaf(ca, request.subject, request.public_key(),
                 [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days, False)


def self_signed(key: Ed25519PrivateKey, common_name: str, days: int = 825) -> x509.Certificate:
    """A device's certificate for its own key, before any CA has certified it: what an
    un-enrolled device presents, which a dock can only pin by the key's fingerprint."""
    start, end = _validity(days, expired=False)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, None))


def _leaf(ca: Issued, subject: x509.Name, public_key: CertificatePublicKeyTypes,
          usages: list[x509.ObjectIdentifier], days: int, expired: bool) -> x509.Certificate:
    start, end = _validity(days, expired)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca.certificate.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .sign(ca.key, _digest(ca)))


def _digest(ca: Issued) -> hashes.SHA256 | None:
    """Ed25519 and Ed448 sign without a separate digest; the rest with SHA-256."""
    return None if isinstance(ca.key, Ed25519PrivateKey | Ed448PrivateKey) else hashes.SHA256()


@dataclass(frozen=True)
class DockPki:
    """Where one dock link's files were written: the device's side and the dock's side."""

    device_cert: Path
    device_key: Path
    dock_ca: Path
    dock_cert: Path
    dock_key: Path
    device_ca: Path


def write_dock_pki(device_keys: Path, key: Ed25519PrivateKey, dock_dir: Path, device_id: str,
                   dock_name: str) -> DockPki:
    """Both CAs and the dock's leaf into `dock_dir`; into the device's keys/, the dock CA and
    the device certificate for its signing key `key` (as enrollment installs them)."""
    dock_ca, device_ca = make_ca("agency dock CA"), make_ca("agency device CA")
    dock_dir.mkdir(parents=True, exist_ok=True)
    files = DockPki(device_keys / "device.crt", device_keys / "device.key",
                    device_keys / "dock-ca.pem", dock_dir / "dock.crt", dock_dir / "dock.key",
                    dock_dir / "device-ca.pem")
    write_file(files.device_cert, certify_device(device_ca, device_request(key, device_id))
               .public_bytes(serialization.Encoding.PEM), mode=0o644)
    dock_ca.write(files.dock_ca)
    issue(dock_ca, dock_name).write(files.dock_cert, files.dock_key)
    device_ca.write(files.device_ca)
    return files
