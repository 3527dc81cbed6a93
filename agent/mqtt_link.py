"""An MQTT 5 session in the fleet's conventions, for the device and the dock alike.

Both publish a retained `availability` whose last will is `offline`, over TLS whose
broker certificate and host name are always checked (CERT_REQUIRED, no switch to turn it
off), with paho-mqtt 2.x (`CallbackAPIVersion.VERSION2`) connecting and reconnecting on
its own thread so that no broker ever holds up the work (docs/telemetry.md). What each
publishes is its own (agent/device/telemetry/mqtt.py, agent/dock/status_mqtt.py).
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

NETWORK_STOP_S = 3.0  # at close, the longest wait for paho's network thread to end


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool


def broker(url: str) -> Broker:
    """mqtt://host[:1883] or mqtts://host[:8883], nothing more; ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError("expected mqtt://host:port or mqtts://host:port")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("expected mqtt://host:port or mqtts://host:port, nothing more")
    tls = parts.scheme == "mqtts"
    return Broker(parts.hostname, port or (8883 if tls else 1883), tls)


def check_tls_files(url: str, ca: str | None, cert: str | None, key: str | None) -> None:
    """A client certificate comes with its key, and any TLS file needs mqtts://;
    ValueError says what is wrong, as `key = value: why` within the [mqtt] table."""
    if bool(cert) != bool(key):
        raise ValueError(f"cert = {cert!r}, key = {key!r}: a client certificate needs its "
                         "key: set both or neither")
    if not broker(url).tls and (ca or cert):
        raise ValueError(f"url = {url!r}: ca, cert and key need mqtts://")


def tls_context(ca: Path | None, cert: Path | None = None,
                key: Path | None = None) -> ssl.SSLContext:
    """The broker's certificate checked against `ca` (None: the system's CAs) and its host
    name; `cert` and `key`, when given, the client's identity."""
    context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def new_client(client_id: str, availability: str, reconnect_max_s: int,
               context: ssl.SSLContext | None, logger: logging.Logger) -> mqtt.Client:
    """A client whose last will makes `availability` "offline" (retained, QoS 1), that
    reconnects with back-off from 1 s to `reconnect_max_s`, over TLS when given a context."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.will_set(availability, "offline", qos=1, retain=True)
    client.reconnect_delay_set(1, reconnect_max_s)
    client.enable_logger(logger)
    client.suppress_exceptions = True  # a bug in a callback must not end paho's thread
    if context is not None:
        client.tls_set_context(context)
        client.tls_insecure_set(False)
    return client


def stop_network(client: mqtt.Client, url: str) -> None:
    """paho's loop_stop() waits without a bound for its thread, and that thread goes on
    while messages are in flight on a socket: one whose CONNACK never comes (a broker
    that accepts the connection and does not answer) keeps it until the keepalive. Wait at
    most NETWORK_STOP_S; left behind, the thread ends with the process (its daemon flag),
    and a broker that did accept the session sends the last will."""
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(NETWORK_STOP_S)
    if stopper.is_alive():
        log.warning("the MQTT client did not stop within %g s (no answer from %s); "
                    "left behind", NETWORK_STOP_S, url)
