"""Enrollment over the dock link, over real TLS on loopback: a device that ships only the
dock CA is pinned by its key fingerprint, certified, and from then on verified by its
enrolled certificate, on the dock link and at a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.dock.enroll import enroll
from agent.dock.pull import DockError, DockLink
from agent.evidence.age import recipient_string
from agent.evidence.chain import read_bodies
from agent.evidence.verify import verify_store
from agent.pki import certify_device, device_request, handover, issue, make_ca
from tests.support.device import BODYCAM, running_daemon, spawn_daemon, wait_for
from tests.support.dockside import dock_config
from tests.support.mosquitto import Brokers, Subscriber, brokers, free_port, mqtt_section  # noqa: F401
from tests.support.mosquitto import Pki as BrokerPki
from tests.support.pki import DEVICE_ID, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    recipient = recipient_string(X25519PrivateKey.generate().public_key())
    pki.pem("recipients.txt").write_text(f"# the agency\n{recipient}\n")
    return pki


def bodycam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BODYCAM, *args], capture_output=True, text=True, timeout=60)


def shipped_device(folder: Path, pki: Pki, **dock: object) -> tuple[Path, Path, str]:
    """A device as an agency's image ships it: the dock CA, no certificate. Returns its
    config, its store and the key fingerprint the operator reads off it."""
    store = folder / "store"
    pki.install_dock_ca(store / "keys")
    config = dock_config(folder, store, **dock)
    shown = bodycam("keys", "show", "--config", str(config))
    assert shown.returncode == 0 and "not enrolled" in shown.stdout, shown.stderr
    return config, store, re.search(r"signing key ([0-9a-f]{64})", shown.stdout).group(1)


def dock_args(pki: Pki, url: str, cert: str = "dock") -> list[str]:
    return ["--device", url, "--cert", str(pki.pem(f"{cert}.crt")),
            "--key", str(pki.pem(f"{cert}.key")), "--ca", str(pki.pem("device-ca.pem")),
            "--operator", "Li Wei"]


def enroll_args(pki: Pki, url: str, key: str, cert: str = "dock") -> list[str]:
    return ["dock", "enroll", *dock_args(pki, url, cert), "--expect-key", key,
            "--device-ca-key", str(pki.pem("device-ca.key")),
            "--recipients", str(pki.pem("recipients.txt"))]


@pytest.fixture
def spawned(tmp_path: Path, pki: Pki) -> Iterator[tuple[Path, Path, str, str]]:
    """`bodycam run` with the dock link on a free port: config, store, URL, fingerprint."""
    port = free_port()
    config, store, key = shipped_device(tmp_path, pki, port=port)
    daemon = spawn_daemon(config, store)
    try:
        yield config, store, f"https://127.0.0.1:{port}", key
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0


def enrollments(store: Path) -> list[dict[str, Any]]:
    return [r for r in read_bodies(store / "chain.jsonl") if r["type"] == "enrollment"]


def test_dock_enroll_then_pull_verified_by_the_enrolled_certificate(
        spawned: tuple[Path, Path, str, str], pki: Pki, tmp_path: Path) -> None:
    _, store, url, key = spawned
    keys = store / "keys"
    pull = ["dock", "pull", *dock_args(pki, url), "--out", str(tmp_path / "evidence"),
            "--device-id", DEVICE_ID]
    # Not enrolled: its self-signed certificate is no device CA's, so no dock pulls.
    refused = bodycam(*pull)
    assert refused.returncode != 0 and "certificate is refused" in refused.stderr, refused.stderr
    # A wrong fingerprint, or a dock from another CA: refused, and nothing installed.
    wrong = bodycam(*enroll_args(pki, url, "ab" * 32))
    assert wrong.returncode != 0 and f"not the expected {'ab' * 32}" in wrong.stderr, wrong.stderr
    rogue = bodycam(*enroll_args(pki, url, key, cert="rogue"))
    assert rogue.returncode != 0 and "cannot talk to the device" in rogue.stderr, rogue.stderr
    assert not (keys / "device.crt").exists() and not enrollments(store)

    done = bodycam(*enroll_args(pki, url, key))

    assert done.returncode == 0, done.stderr
    assert f"{DEVICE_ID}: enrolled, sealed as record" in done.stdout
    assert stat.S_IMODE((keys / "device.crt").stat().st_mode) == 0o644
    assert stat.S_IMODE((keys / "device.key").stat().st_mode) == 0o600
    (record,) = enrollments(store)
    payload = record["payload"]
    assert payload["dock"]["name"] == "DOCK-A" and payload["operator"] == "Li Wei"
    assert payload["replaces"] is None
    assert payload["device_certificate"]["subject"] == f"CN={DEVICE_ID}"
    assert "agency device CA" in payload["device_certificate"]["issuer"]
    # The same daemon, no restart: the dock verifies it by the enrolled certificate.
    pulled = bodycam(*pull)
    assert pulled.returncode == 0, pulled.stderr
    manifest = json.loads((tmp_path / "evidence" / DEVICE_ID / "manifest.json").read_text())
    assert manifest["status"] == "custody"
    assert manifest["device_certificate"] == payload["device_certificate"]["sha256"]
    assert verify_store(store).ok
    # Enrolled already: a second enrollment must say it replaces the certificate.
    again = bodycam(*enroll_args(pki, url, key))
    assert again.returncode != 0 and "already enrolled" in again.stderr, again.stderr
    other = bodycam(*pull[:-1], "TEST-0002")
    assert other.returncode != 0 and "not device 'TEST-0002'" in other.stderr, other.stderr
    assert len(enrollments(store)) == 1


async def _call(link: DockLink, url: str, body: Any = None,
                pin: str | None = None) -> tuple[int, dict[str, Any]]:
    """GET `url`, or POST `body` to it, as `link`'s dock (trusting the device by `pin`)."""
    connector = aiohttp.TCPConnector(ssl=link.context(pin=pin))
    method = "GET" if body is None else "POST"
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.request(method, url, json=body) as response:
        return response.status, json.loads(await response.read())


def test_enrollment_mode_serves_only_enrollment_and_refuses_a_wrong_certificate(
        tmp_path: Path, pki: Pki) -> None:
    config, store, key = shipped_device(tmp_path, pki)
    link = DockLink(pki.pem("dock.crt"), pki.pem("dock.key"), pki.pem("device-ca.pem"))
    with running_daemon(config) as daemon:
        url = f"https://127.0.0.1:{daemon.offload.port}/v1"

        def call(path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
            return asyncio.run(_call(link, f"{url}/{path}", body, pin=key))

        status, identity = call("identity")
        assert status == 200 and identity["enrolled"] is False
        assert identity["key_fingerprint"] == key
        for path in ("chain", "sealed/1"):
            status, answer = call(path)
            assert status == 403 and "not enrolled" in answer["error"], (path, answer)
        status, answer = call("officer", {"action": "return", "operator": "Li"})
        assert status == 403, answer

        def certificate(signer: Ed25519PrivateKey, device: str) -> str:
            return certify_device(pki.device_ca, device_request(signer, device)).public_bytes(
                serialization.Encoding.PEM).decode()

        good = {"certificate": certificate(daemon.key, DEVICE_ID),
                "device_ca": pki.pem("device-ca.pem").read_text(),
                "recipients": pki.pem("recipients.txt").read_text(), "operator": "Li"}
        refusals = {
            "not for this device's key": {**good, "certificate": certificate(
                Ed25519PrivateKey.generate(), DEVICE_ID)},
            "is for CN=['TEST-9999']": {**good, "certificate": certificate(daemon.key,
                                                                           "TEST-9999")},
            "not a PEM certificate": {**good, "certificate": "-----BEGIN CERTIFICATE-----"},
            "not issued by the device CA handed over": {
                **good, "device_ca": make_ca("another device CA").cert_pem.decode()},
            "device_ca: Field required": {k: v for k, v in good.items() if k != "device_ca"},
            "recipients line 1": {**good, "recipients": "age1notarecipient\n"},
            "operator: Field required": {k: v for k, v in good.items() if k != "operator"},
            "replace: Input should be a valid boolean": {**good, "replace": "yes"},
        }
        for what, body in refusals.items():
            status, answer = call("enrollment", body)
            assert status == 422 and what in answer["error"], (what, status, answer)
        assert not (store / "keys" / "device.crt").exists() and not enrollments(store)
        assert daemon.offload.enrolled is False


def test_an_enrollment_installing_a_new_dock_ca_is_served_without_a_restart(
        tmp_path: Path, pki: Pki) -> None:
    """A dock CA the device does not hold is installed only with a handover from the one it
    holds (issue 18, item 4): a dock cannot slip a CA of its own into the bundle."""
    config, store, key = shipped_device(tmp_path, pki)
    new_ca = make_ca("agency dock CA 2027")
    new_ca.write(tmp_path / "dock-ca-2027.pem")
    issue(new_ca, "DOCK-2027").write(tmp_path / "dock-2027.crt", tmp_path / "dock-2027.key")
    own_ca = make_ca("a dock's own CA")
    issue(own_ca, "DOCK-PLANTED").write(tmp_path / "planted.crt", tmp_path / "planted.key")
    old = DockLink(pki.pem("dock.crt"), pki.pem("dock.key"), pki.pem("device-ca.pem"))
    new = DockLink(tmp_path / "dock-2027.crt", tmp_path / "dock-2027.key",
                   pki.pem("device-ca.pem"), DEVICE_ID)
    planted = DockLink(tmp_path / "planted.crt", tmp_path / "planted.key",
                       pki.pem("device-ca.pem"), DEVICE_ID)
    recipients = pki.pem("recipients.txt").read_text()
    bundle = pki.pem("dock-ca.pem").read_bytes() + new_ca.cert_pem
    with running_daemon(config) as daemon:
        url = f"https://127.0.0.1:{daemon.offload.port}"
        with pytest.raises((aiohttp.ClientError, OSError)):  # the device knows only DOCK-A's CA
            asyncio.run(_call(new, f"{url}/v1/identity", pin=key))
        # A dock CA that did not issue the dock installing it would lock the docks out.
        with pytest.raises(DockError, match="did not issue the dock enrolling"):
            asyncio.run(enroll(url, old, pki.device_ca, key, recipients, "Li",
                               new_ca.cert_pem))
        # A CA of the dock's own beside the agency's, or a successor without a handover.
        for sneaked in (pki.pem("dock-ca.pem").read_bytes() + own_ca.cert_pem, bundle):
            with pytest.raises(DockError, match="no handover certificate"):
                asyncio.run(enroll(url, old, pki.device_ca, key, recipients, "Li", sneaked))
        assert not (store / "keys" / "device.crt").exists() and not enrollments(store)

        done = asyncio.run(enroll(url, old, pki.device_ca, key, recipients, "Li", bundle,
                                  handover=handover(pki.dock_ca, new_ca.certificate)
                                  .public_bytes(serialization.Encoding.PEM)))

        assert done.device == DEVICE_ID and daemon.offload.enrolled
        status, identity = asyncio.run(_call(new, f"{url}/v1/identity"))  # by the device CA
        assert status == 200 and identity["enrolled"] is True
        with pytest.raises((aiohttp.ClientError, OSError)):  # the planted CA's docks: never
            asyncio.run(_call(planted, f"{url}/v1/identity"))
        with pytest.raises(DockError, match="already enrolled"):
            asyncio.run(enroll(url, new, pki.device_ca, key, recipients, "Li"))
        renewed = asyncio.run(enroll(url, new, pki.device_ca, key, recipients, "Li",
                                     replace=True))
    (first, second) = enrollments(store)
    assert second["seq"] == renewed.seq and second["payload"]["dock"]["name"] == "DOCK-2027"
    assert second["payload"]["replaces"]["sha256"] == \
        first["payload"]["device_certificate"]["sha256"]
    assert [ca["subject"] for ca in first["payload"]["dock_ca"]] == \
        ["CN=agency dock CA,O=bodycam agency", "CN=agency dock CA 2027,O=bodycam agency"]
    assert [h["by"] for h in first["payload"]["handover"]] == \
        [first["payload"]["dock_ca"][0]["sha256"]]
    assert verify_store(store).ok


def test_a_device_enrolled_while_running_reaches_mosquitto_with_its_enrolled_certificate(
        tmp_path: Path, pki: Pki, brokers: Brokers) -> None:  # noqa: F811
    broker_pki = BrokerPki(tmp_path / "broker-pki")
    client_cas = tmp_path / "client-cas.pem"
    client_cas.write_bytes(broker_pki.ca.read_bytes() + pki.pem("device-ca.pem").read_bytes())
    broker = brokers(broker_pki, client_cas=client_cas)
    fleet = Subscriber(broker.tls_port, ["bodycam/#"],
                       tls=(broker_pki.ca, *broker_pki.issue("fleet")))
    # [mqtt] names no client certificate: the device's identity is the enrolled one.
    config, _, key = shipped_device(tmp_path, pki, device={
        "realtime": "true", "extra": mqtt_section(broker.tls_url, ca=str(broker_pki.ca))})
    link = DockLink(pki.pem("dock.crt"), pki.pem("dock.key"), pki.pem("device-ca.pem"))
    try:
        with running_daemon(config) as daemon:
            # Not enrolled: no certificate the broker accepts, so not connected.
            assert not daemon.telemetry.connected.wait(2.5)
            asyncio.run(enroll(f"https://127.0.0.1:{daemon.offload.port}", link,
                               pki.device_ca, key, pki.pem("recipients.txt").read_text(), "Li"))
            # No restart: the next reconnect (at most [mqtt] reconnect_max_s) presents it.
            wait_for(daemon.telemetry.connected.is_set, 15, "the device to connect")
            fleet.wait(lambda: fleet.on(f"bodycam/{DEVICE_ID}/status"),
                       what="the device's status, allowed by the ACL for CN=TEST-0001")
        assert fleet.on(f"bodycam/{DEVICE_ID}/availability")[0].payload == b"online"
    finally:
        fleet.close()
