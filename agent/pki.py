"""X.509 material for the dock link: an agency CA, and leaf certificates it issues.

The agency runs two CAs: the dock CA, whose certificates a device accepts as
docks, and the device CA, whose certificates a dock accepts as devices. This
module makes both and their leaves for the demo, the tests and the benchmark; a
real agency issues them from its own PKI, and the device only ever reads PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, cert_path: Path, key_path: Path | None = None) -> None:
        """The certificate (0644) and, when asked, its key (0600, never readable by others)."""
        cert_path.write_bytes(self.cert_pem)
        if key_path is not None:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key_pem)


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


def issue(ca: Issued, common_name: str, *, server: bool, hosts: tuple[str, ...] = (),
          days: int = 825, expired: bool = False) -> Issued:
    """A leaf for a device (`server`: TLS server, named by `hosts`) or a dock (TLS client)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, expired)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca.certificate.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_general_name(host) for host in hosts]), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class DockPki:
    """Where one dock link's files were written: the device's side and the dock's side."""

    device_cert: Path
    device_key: Path
    dock_ca: Path
    dock_cert: Path
    dock_key: Path
    device_ca: Path


def write_dock_pki(device_keys: Path, dock_dir: Path, device_id: str, dock_name: str,
                   hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> DockPki:
    """Both CAs and both leaves, the device's into its keys/ and the dock's into `dock_dir`."""
    dock_ca, device_ca = make_ca("agency dock CA"), make_ca("agency device CA")
    dock_dir.mkdir(parents=True, exist_ok=True)
    files = DockPki(device_keys / "tls.crt", device_keys / "tls.key",
                    device_keys / "dock-ca.pem", dock_dir / "dock.crt", dock_dir / "dock.key",
                    dock_dir / "device-ca.pem")
    issue(device_ca, device_id, server=True, hosts=hosts).write(files.device_cert,
                                                                files.device_key)
    dock_ca.write(files.dock_ca)
    issue(dock_ca, dock_name, server=False).write(files.dock_cert, files.dock_key)
    device_ca.write(files.device_ca)
    return files
