"""`bodycam verify --ca device-ca.pem`: the chain anchored in the agency's device CA, which
certified every key that signed it (issue 20, item 2). The stores are a recorded one,
enrolled, rotated and re-enrolled with the agent's own enrollment code, as `bodycam keys`
does with the daemon stopped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.device import enrollment
from agent.evidence.age import recipient_string
from agent.evidence.anchor import load_device_ca
from agent.evidence.chain import Chain
from agent.evidence.keys import fingerprint, load_or_create_device_key, public_pem
from agent.evidence.verify import Outside, Report, verify_store
from agent.pki import Issued, certify_device, device_request, make_ca
from hal.clock import SimulatedClock
from tests.support.mutants import Base, resign

DEVICE = "TEST-0001"  # as tests/support/device.py configures the recorded store


class Agency:
    def __init__(self, folder: Path) -> None:
        self.device_ca, self.dock_ca = make_ca("agency device CA"), make_ca("agency dock CA")
        self.pem = folder / "device-ca.pem"
        self.device_ca.write(self.pem)

    def enroll(self, store: Path, ca: Issued | None = None) -> None:
        """Enroll the store's current key with a certificate from `ca` (the agency's)."""
        ca = ca or self.device_ca
        keys = store / "keys"
        key = load_or_create_device_key(keys, store / "chain.jsonl")
        cert = certify_device(ca, device_request(key, DEVICE))
        handed = enrollment.Handed(
            cert.public_bytes(serialization.Encoding.PEM),
            recipient_string(X25519PrivateKey.generate().public_key()),
            dock_ca=self.dock_ca.cert_pem, device_ca=ca.cert_pem)
        with _chain(store) as chain:
            enrollment.enroll(keys, chain, key, DEVICE, handed, keys / "dock-ca.pem")


class _chain:
    """The store's chain, open for appending with its current key, as `bodycam keys` opens it."""

    def __init__(self, store: Path) -> None:
        key = load_or_create_device_key(store / "keys", store / "chain.jsonl")
        self.chain = Chain(store / "chain.jsonl", key, lambda: (DEVICE, "OFC-7"),
                           SimulatedClock().state, "test-boot")
        self.key = key

    def __enter__(self) -> Chain:
        return self.chain

    def __exit__(self, *exc: object) -> None:
        self.chain.close()


def rotate(store: Path) -> str:
    """A new signing key; returns its fingerprint."""
    with _chain(store) as chain:
        record = enrollment.rotate(store / "keys", chain, load_or_create_device_key(
            store / "keys", store / "chain.jsonl"), DEVICE, "yearly")
    return str(record["payload"]["new_fingerprint"])


def alarm(store: Path) -> None:
    """A record signed by the key signing now."""
    with _chain(store) as chain:
        chain.append("alarm", {"alarm": "hot", "raised": True, "value": "61 °C"})


@pytest.fixture
def agency(tmp_path: Path) -> Agency:
    return Agency(tmp_path)


@pytest.fixture
def store(recorded_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(recorded_store, copy, ignore=shutil.ignore_patterns("control.sock"))
    return copy


def verify_under(store: Path, agency: Agency, pem: Path | None = None) -> Report:
    pem = pem or agency.pem
    return verify_store(store, outside=Outside(ca=tuple(load_device_ca(pem)), ca_name=str(pem)))


def test_an_enrolled_device_verifies_under_its_ca_across_a_rotation(
        store: Path, agency: Agency) -> None:
    """Records before an enrollment are covered by it; the rotated key, once re-enrolled,
    is certified too."""
    agency.enroll(store)
    alarm(store)
    rotate(store)
    alarm(store)
    agency.enroll(store)
    alarm(store)
    report = verify_under(store, agency)
    assert report.ok, report.summary()
    assert report.certified_by == str(agency.pem)
    result = subprocess.run([sys.executable, "-m", "agent", "verify", str(store), "--ca",
                             str(agency.pem)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"certified under {agency.pem}" in result.stdout


def test_a_rotated_key_not_yet_enrolled_is_named_with_its_records(
        store: Path, agency: Agency) -> None:
    agency.enroll(store)
    new = rotate(store)
    alarm(store)
    alarm(store)
    assert verify_store(store).ok, "without --ca the rotation carries the chain on"
    report = verify_under(store, agency)
    assert [f.kind for f in report.findings] == ["unanchored"], report.summary()
    last = Base(store).head[0]
    assert report.findings[0].where == f"key {new[:16]}… (records {last - 1} to {last})"
    assert "no enrollment record was signed with it" in report.findings[0].problem


def test_a_chain_never_enrolled_or_under_another_ca_fails(store: Path, agency: Agency,
                                                          tmp_path: Path) -> None:
    first = fingerprint(load_or_create_device_key(store / "keys").public_key())
    never = verify_under(store, agency)
    assert not never.ok and never.findings[0].where.startswith(f"key {first[:16]}… (records 1 ")
    rogue = make_ca("some other CA")
    agency.enroll(store, ca=rogue)
    report = verify_under(store, agency)
    assert [f.kind for f in report.findings] == ["unanchored"], report.summary()
    assert "issued by CN=some other CA,O=bodycam agency, by no CA in" in str(report.findings[0])
    rogue_pem = tmp_path / "rogue.pem"
    rogue.write(rogue_pem)
    assert verify_under(store, agency, rogue_pem).ok, "the CA that did certify it anchors it"


def test_a_key_swapped_and_the_chain_re_signed_fails_under_the_ca(
        store: Path, agency: Agency) -> None:
    """What passes without a pinned key (keys/device.pub came with the evidence) cannot pass
    the agency's CA: the enrollment record carries a certificate for the device's key."""
    agency.enroll(store)
    forger = Ed25519PrivateKey.generate()
    bodies = [{**b, "payload": {**b["payload"], "key_fingerprint": fingerprint(
        forger.public_key())}} if b["type"] == "boot" else b for b in Base(store).bodies]
    resign(store, list(bodies), forger)
    (store / "keys" / "device.pub").write_bytes(public_pem(forger.public_key()))
    assert verify_store(store).ok
    report = verify_under(store, agency)
    assert not report.ok
    assert "a certificate (CN=TEST-0001) for another key than the one that signed it" in \
        str(report.findings[0])


@pytest.mark.parametrize("content", [b"", b"not a certificate", None])
def test_a_ca_file_that_is_not_one_is_one_line_and_exit_2(store: Path, tmp_path: Path,
                                                           content: bytes | None) -> None:
    pem = tmp_path / "ca.pem"
    if content is not None:
        pem.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "agent", "verify", str(store), "--ca",
                             str(pem)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"bodycam: --ca {pem}: ") and \
        result.stderr.count("\n") == 1, result.stderr
