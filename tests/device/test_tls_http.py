"""The offload server's TLS picks the cipher the device's CPU runs fastest."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import pytest

from agent.device.offload.tls_http import HttpsServer, cpu_has_aes, mutual_tls_context
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.pki import DockPki, write_dock_pki

PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08
"""
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp
CPU part\t: 0xd0b
"""
X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme de pse tsc msr pae sse4_2 movbe popcnt aes xsave avx sha_ni
"""


def test_aes_instructions_are_read_from_cpuinfo() -> None:
    assert cpu_has_aes(PI5) and cpu_has_aes(X86)
    assert not cpu_has_aes(PI4)
    assert not cpu_has_aes(X86.replace(" aes ", " "))
    assert cpu_has_aes("processor\t: 0\n")  # nothing said: OpenSSL's own order


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DockPki:
    root = tmp_path_factory.mktemp("tls")
    store = Store(root / "store").prepare()
    return write_dock_pki(store.keys, load_or_create_device_key(store.keys), root / "dock",
                          "TEST-0001", "DOCK-A")


@pytest.mark.parametrize(("has_aes", "tls13", "tls12"), [
    (True, "TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    (False, "TLS_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
])
def test_the_server_chooses_chacha20_only_without_aes_instructions(
        pki: DockPki, has_aes: bool, tls13: str, tls12: str) -> None:
    """A dock offers AES-GCM first, as Python's and curl's defaults do; a device
    without AES instructions answers with ChaCha20-Poly1305 all the same."""
    context = mutual_tls_context(pki.device_cert, pki.device_key, pki.dock_ca, has_aes)
    server = HttpsServer("127.0.0.1", 0, lambda: context, [],
                         logging.getLogger("test.tls_http"))
    server.start()
    try:
        for version, expected in ((ssl.TLSVersion.TLSv1_3, tls13),
                                  (ssl.TLSVersion.TLSv1_2, tls12)):
            assert _negotiated(server.port, pki, version) == expected
    finally:
        server.close()


def _negotiated(port: int, pki: DockPki, version: ssl.TLSVersion) -> str:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(pki.device_ca)
    client.load_cert_chain(pki.dock_cert, pki.dock_key)
    client.minimum_version = client.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client.wrap_socket(raw) as tls:
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0]


def test_unloadable_key_material_is_named(pki: DockPki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    with pytest.raises(ValueError, match=f"certificate {garbage}: OpenSSL will not load it"):
        mutual_tls_context(garbage, pki.device_key, pki.dock_ca)
    with pytest.raises(ValueError, match=f"private key {garbage}: OpenSSL will not load it"):
        mutual_tls_context(pki.device_cert, garbage, pki.dock_ca)


@pytest.mark.parametrize("address", ["198.51.100.7", "2001:db8::7"])
def test_the_server_listens_on_its_address_before_the_link_has_it(
        pki: DockPki, address: str) -> None:
    """The dock link (a USB gadget) may get its address after the daemon starts: the
    server listens on it all the same, instead of failing to bind and staying off."""
    context = mutual_tls_context(pki.device_cert, pki.device_key, pki.dock_ca)
    server = HttpsServer(address, 0, lambda: context, [], logging.getLogger("test.tls_http"))
    server.start()
    try:
        assert server.port > 0
    finally:
        server.close()
