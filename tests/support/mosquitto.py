"""A real, private Mosquitto for each test, and an MQTT subscriber that records what it hears.

The broker runs from its own config file in the test's folder on free ports: one plain
listener, and one TLS listener that requires a client certificate, takes the certificate's
CN as the username and applies the project's shipped ACL (config/mosquitto/acl). The
certificates are made here with `cryptography`: a CA, the broker (localhost), and one
client certificate per name asked for.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

SHIPPED_ACL = Path(__file__).resolve().parents[2] / "config" / "mosquitto" / "acl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pki:
    """A CA in `folder`, the broker's certificate for localhost, and client certificates."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bodycam test CA")])
        self._ca_name = name
        self._ca_cert = (self._builder(name, self._ca_key.public_key())
                         .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                         .sign(self._ca_key, hashes.SHA256()))
        self.ca = self._write("ca.pem", self._ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = self.issue("localhost", server=True)

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._ca_name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def issue(self, common_name: str, server: bool = False) -> tuple[Path, Path]:
        """(certificate, key) files for `common_name`, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                              common_name)]), key.public_key())
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return (self._write(f"{common_name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{common_name}.key", key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption())))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path


class Broker:
    """`mosquitto -c <folder>/mosquitto.conf`; stop and start keep the ports and, with
    persistence, the persistent sessions and their queued messages."""

    def __init__(self, folder: Path, pki: Pki | None = None, persistence: bool = True,
                 client_cas: Path | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if pki else None
        self.conf = folder / "mosquitto.conf"
        lines = ["per_listener_settings true",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {folder}/",
                 "max_queued_messages 1000000",
                 "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "log_dest stderr"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp_path
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if pki:
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {client_cas or pki.ca}", f"certfile {pki.server_cert}",
                      f"keyfile {pki.server_key}", "require_certificate true",
                      "use_identity_as_username true", f"acl_file {SHIPPED_ACL}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                             stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent sessions and exits."""
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None


class Subscriber:
    """A paho client that keeps every message it receives, with the time it came."""

    def __init__(self, url_port: int, topics: list[str], client_id: str = "",
                 persistent: bool = False, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.received_ns: list[int] = []
        self._cond = threading.Condition()
        self._topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        if tls:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        properties = None
        if persistent:  # MQTT 5: the session outlives the connection only with an expiry
            properties = mqtt.Properties(mqtt.PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        self.connected = threading.Event()
        self.client.connect("localhost" if tls else "127.0.0.1", url_port, keepalive=10,
                            clean_start=not persistent, properties=properties)
        self.client.loop_start()
        assert self.connected.wait(10), "the subscriber could not connect"

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any,
                    _p: Any) -> None:
        if not reason.is_failure:
            if not flags.session_present:
                client.subscribe([(topic, 1) for topic in self._topics])
            self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self.received_ns.append(time.monotonic_ns())
            self._cond.notify_all()

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def json_on(self, topic: str) -> list[Any]:
        return [json.loads(m.payload) for m in self.on(topic)]

    def wait(self, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        with self._cond:
            if not self._cond.wait_for(condition, timeout):
                raise AssertionError(f"timed out waiting for {what or condition}; heard "
                                     f"{[(m.topic, m.payload[:80]) for m in self.messages]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Brokers:
    """What a test needs: a factory of started brokers, stopped at the end."""

    folder: Path
    started: list[Broker] = field(default_factory=list)

    def __call__(self, pki: Pki | None = None, persistence: bool = True,
                 client_cas: Path | None = None) -> Broker:
        """`client_cas`: the CAs whose client certificates the TLS listener accepts (default:
        `pki`'s own), e.g. with the agency's device CA for enrolled devices."""
        broker = Broker(self.folder / f"broker-{len(self.started)}", pki, persistence,
                        client_cas)
        broker.start()
        self.started.append(broker)
        return broker


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Brokers]:
    made = Brokers(tmp_path / "mosquitto")
    yield made
    for broker in made.started:
        broker.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def mqtt_section(url: str, **values: object) -> str:
    """An [mqtt] section for a device config (appended to tests.support.device's FAST_DEVICE)."""
    settings = {"enabled": True, "url": url, "heartbeat_s": 1.0, "drain_on_exit_s": 2.0,
                "reconnect_max_s": 1, **values}
    return "\n[mqtt]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                 for key, value in settings.items())
