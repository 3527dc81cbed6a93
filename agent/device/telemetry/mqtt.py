"""Fleet telemetry over MQTT (paho-mqtt 2.x, MQTT 5): availability, status, events, commands.

Topics (docs/telemetry.md):

    bodycam/<device>/availability   retained "online"; the last will makes it "offline"
    bodycam/<device>/status         retained JSON, on change and every heartbeat
    bodycam/<device>/events         QoS 1 JSON, one per sealed chain record, from the outbox
    bodycam/<device>/cmd            locate, selfcheck, status; anything else is refused
                                    (rate, size and nesting limits: intake.py)
    bodycam/<device>/cmd/response   the answer to each command, by its id

Telemetry never holds up recording: the chain listener only writes the event into
the outbox (one SQLite insert) and wakes the publisher thread; paho's own thread
connects, reconnects with back-off, and reports PUBACKs, after which an event
leaves the outbox. With no broker the daemon records as ever and the outbox grows.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.config import Config, mqtt_file
from agent.device.chain_index import ChainIndex
from agent.device.telemetry import intake
from agent.device.telemetry.discovery import discovery_messages
from agent.device.telemetry.outbox import Outbox
from agent.evidence.chain import Chain
from agent.evidence.store import Store
from agent.mqtt_link import new_client, stop_network, tls_context

log = logging.getLogger(__name__)

WINDOW = 100            # events in flight (published, PUBACK not yet in)
HA_STATUS_ONLINE = b"online"

Command = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Topics:
    availability: str
    status: str
    events: str
    cmd: str
    response: str

    @classmethod
    def for_device(cls, device: str) -> Topics:
        base = f"bodycam/{device}"
        return cls(f"{base}/availability", f"{base}/status", f"{base}/events", f"{base}/cmd",
                   f"{base}/cmd/response")


class Telemetry:
    """One device's MQTT session. `on_record` is the chain listener."""

    def __init__(self, config: Config, config_path: Path, outbox: Outbox,
                 seal: Callable[[str, dict[str, Any]], Any],
                 enrolled: Callable[[], tuple[Path, Path] | None] | None = None) -> None:
        self._config = config
        self._enrolled = enrolled  # (certificate, key): the client identity when none is set
        self._context: ssl.SSLContext | None = None
        self._identity: tuple[Path, Path] | None = None  # the enrolled one, once presented
        self._mqtt = config.mqtt
        self._device = config.device.id
        self.topics = Topics.for_device(self._device)
        self.outbox = outbox
        self._seal = seal
        self._status: Callable[[], dict[str, Any]] = dict
        self._commands: dict[str, Command] = {}
        self._lock = threading.Lock()
        self._pending: dict[int, int | None] = {}   # mid -> outbox id (None: not an event)
        self._early: set[int] = set()               # PUBACKs that beat their publish() home
        self._acked: list[int] = []
        self._sent_upto = 0
        self.delivered = 0                          # events acknowledged by the broker
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._status_due = True
        self._discovery_due = False
        self.connected = threading.Event()
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-cmd")
        self._accepting_commands = True
        self._bucket = intake.TokenBucket(intake.RATE_PER_S, intake.BURST)
        self._waiting = threading.BoundedSemaphore(intake.MAX_WAITING)
        self.refusals = intake.RefusalTally()
        self._worker = threading.Thread(target=self._work, name="telemetry", daemon=True)
        self._client = self._make_client(config_path)

    def _make_client(self, config_path: Path) -> mqtt.Client:
        cert: Path | None = None
        if self._mqtt.tls:
            ca, cert, key = (mqtt_file(self._config, config_path, name)
                             for name in ("ca", "cert", "key"))
            self._context = tls_context(ca, cert, key)
        client = new_client(f"bodycam-{self._device}", self.topics.availability,
                            self._mqtt.reconnect_max_s, self._context, log)
        client.max_inflight_messages_set(WINDOW)
        client.max_queued_messages_set(0)
        if self._context is not None and cert is None and self._enrolled is not None:
            client.on_pre_connect = self._present_enrolled_identity
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _present_enrolled_identity(self, _client: mqtt.Client, _userdata: Any) -> None:
        """Before each connection attempt: once a dock has enrolled the device, present
        the enrolled certificate. Loaded into the live context, so an enrollment at the
        dock takes effect at the next (re)connect, without a restart."""
        assert self._context is not None and self._enrolled is not None
        identity = self._enrolled()
        if identity is not None and identity != self._identity:
            self._context.load_cert_chain(*identity)
            self._identity = identity
            log.info("MQTT: presenting the enrolled certificate %s", identity[0])

    # --- the daemon's side -------------------------------------------------------------------

    def start(self, status: Callable[[], dict[str, Any]], commands: dict[str, Command]) -> None:
        """Connect in the background (retrying with back-off) and begin publishing."""
        self._status = status
        self._commands = {**commands, "status": self._status_now}
        # MQTT 5: a compliant broker never sends this client a packet over this size (it
        # drops it), so an oversized command costs the device nothing; the broker's own
        # max_packet_size bounds what it takes in (config/mosquitto/mosquitto.conf).
        properties = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        properties.MaximumPacketSize = intake.MAX_PACKET_BYTES
        self._client.connect_async(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive_s,
                                   clean_start=True, properties=properties)
        self._client.loop_start()
        self._worker.start()

    def on_record(self, body: dict[str, Any], hash_: str) -> None:
        """The chain listener: into the outbox, and wake the publisher."""
        self.outbox.add_record(body, hash_)
        self._kick.set()

    def status_changed(self) -> None:
        self._status_due = True
        self._kick.set()

    def stop_commands(self) -> None:
        """Shutting down: no new command runs; one running is waited for; refusals not yet
        sealed are sealed now, before the daemon's shutdown record."""
        self._accepting_commands = False
        self._runner.shutdown(wait=True, cancel_futures=True)
        self._seal_refusals(final=True)

    def close(self) -> None:
        """Deliver what the outbox holds (for up to [mqtt] drain_on_exit_s), then say
        "offline" ourselves: a clean disconnect does not fire the last will."""
        self.stop_commands()
        deadline = time.monotonic() + self._mqtt.drain_on_exit_s
        self.status_changed()
        while self.connected.is_set() and time.monotonic() < deadline and (
                len(self.outbox) or self._pending):
            time.sleep(0.01)
        self._stop.set()
        self._kick.set()
        if self._worker.is_alive():
            self._worker.join()
        self._remove_acked()
        if self.connected.is_set():
            info = self._client.publish(self.topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:  # the link dropped in between
                log.warning("'offline' not published (%s): the broker's will says it", exc)
            self.connected.clear()  # a disconnect we asked for: nothing to warn about
            self._client.disconnect()
        stop_network(self._client, self._mqtt.url)
        backlog = len(self.outbox)
        self.outbox.close()
        log.info("telemetry closed; %d event(s) wait in the outbox", backlog)

    # --- the publisher thread ---------------------------------------------------------------

    def _work(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            refusals_due = self.refusals.due_in()
            wait = next_beat - time.monotonic()
            self._kick.wait(timeout=max(0.0, wait if refusals_due is None else
                                        min(wait, refusals_due)))
            self._kick.clear()
            try:
                self._seal_refusals()
                self._remove_acked()
                if not self.connected.is_set():
                    continue
                if self._discovery_due:
                    self._discovery_due = False
                    self._publish_discovery()
                if self._status_due or time.monotonic() >= next_beat:
                    self._status_due = False
                    next_beat = time.monotonic() + self._mqtt.heartbeat_s
                    self._publish_status()
                self._drain()
            except Exception:  # a bad moment on the wire must not end telemetry
                log.exception("telemetry")
                time.sleep(1.0)

    def _drain(self) -> None:
        """Publish the next events in order, keeping at most WINDOW in flight."""
        with self._lock:
            room = WINDOW - sum(1 for v in self._pending.values() if v is not None)
        if room <= 0:
            return
        for outbox_id, body in self.outbox.take(room, after=self._sent_upto):
            self._publish(self.topics.events, body, retain=False, outbox_id=outbox_id)
            self._sent_upto = outbox_id

    def _publish(self, topic: str, payload: bytes | str, retain: bool,
                 outbox_id: int | None = None) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                if outbox_id is not None:
                    self._acked.append(outbox_id)
            else:
                self._pending[info.mid] = outbox_id

    def _remove_acked(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
        if acked:
            self.outbox.remove(acked)
            self.delivered += len(acked)

    def _publish_status(self) -> None:
        status = {**self._status(), "outbox": len(self.outbox)}
        self._publish(self.topics.status, json.dumps(status, separators=(",", ":")), True)

    def _publish_discovery(self) -> None:
        if not self._mqtt.discovery:
            return
        for topic, payload in discovery_messages(self._mqtt.discovery_prefix, self._device,
                                                 self.topics.status, self.topics.availability,
                                                 __version__):
            self._publish(topic, payload, retain=True)

    # --- paho's thread ----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason: ReasonCode, _properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the connection: %s", self._mqtt.url, reason)
            return
        log.info("connected to %s", self._mqtt.url)
        self._publish(self.topics.availability, "online", retain=True)
        subscriptions = [(self.topics.cmd, 1)]
        if self._mqtt.discovery:
            subscriptions.append((f"{self._mqtt.discovery_prefix}/status", 1))
        client.subscribe(subscriptions)
        self._discovery_due = self._status_due = True
        self.connected.set()
        self._kick.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason: ReasonCode, _properties: Any) -> None:
        if self.connected.is_set():
            log.warning("disconnected from %s (%s); reconnecting with back-off",
                        self._mqtt.url, reason)
        self.connected.clear()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int,
                    reason: ReasonCode, _properties: Any) -> None:
        """PUBACK: the broker has the message. Runs under paho's lock: only bookkeeping here."""
        with self._lock:
            if mid not in self._pending:
                self._early.add(mid)
                return
            outbox_id = self._pending.pop(mid)
            if outbox_id is not None:
                self._acked.append(outbox_id)
        if reason.is_failure:
            # Retrying cannot change the broker's mind; the chain on the device keeps the record.
            log.error("broker refused message %d (outbox id %s): %s", mid, outbox_id, reason)
        self._kick.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.cmd:
            self._receive_command(message.payload)
        elif message.payload == HA_STATUS_ONLINE:  # Home Assistant (re)started
            self._discovery_due = True
            self._kick.set()

    # --- commands ---------------------------------------------------------------------------

    def _receive_command(self, raw: bytes) -> None:
        """paho's thread: the checks that cost nothing, before anything is queued. Over the
        rate, or with MAX_WAITING already queued, a command is only counted: answering each
        one of a flood would make the device echo the flood."""
        if not self._accepting_commands:
            return
        if not self._bucket.take():
            self._count_refusal("rate_limited")
            return
        if not self._waiting.acquire(blocking=False):
            self._count_refusal("busy")
            return
        size = len(raw)
        if size > intake.MAX_COMMAND_BYTES:
            raw = b""  # refused unread; not held in the queue
        try:
            self._runner.submit(self._command, raw, size)
        except RuntimeError:  # shut down between the check and the submit
            self._waiting.release()

    def _command(self, raw: bytes, size: int) -> None:
        """Check, run (if it is one of the safe few) and answer one command; seal it if it
        ran, count it if it was refused. Never silent: anything unforeseen is logged."""
        try:
            request, reason, refusal = self._parse(raw, size)
            command_id = str(request.get("id"))[:64] if request.get("id") is not None else None
            name = str(request.get("cmd"))[:64] if request.get("cmd") is not None else None
            answer: dict[str, Any] = {"id": command_id, "cmd": name,
                                      "accepted": refusal is None}
            if refusal is not None:
                log.warning("refused remote command %s (id %s): %s", name, command_id, refusal)
                answer["reason"] = refusal
                self._count_refusal(reason, {"id": command_id, "cmd": name, "reason": reason})
            else:
                self._seal("command", {"id": command_id, "cmd": name, "source": "mqtt",
                                       "accepted": True, "refusal": None})
                log.info("remote command %s (id %s)", name, command_id)
                try:
                    answer["result"] = self._commands[name]()
                except Exception as exc:
                    log.exception("remote command %s failed", name)
                    answer["error"] = str(exc)
            self._publish(self.topics.response, json.dumps(answer, separators=(",", ":")),
                          False)
        except Exception:  # an executor swallows what its job raises: say it here
            log.exception("remote command of %d bytes not handled", size)
        finally:
            self._waiting.release()

    def _parse(self, raw: bytes, size: int) -> tuple[dict[str, Any], str, str | None]:
        """(the request, the refusal's reason key, the refusal in words or None)."""
        if size > intake.MAX_COMMAND_BYTES:
            return {}, "too_large", (f"command of {size} bytes refused: over the "
                                     f"{intake.MAX_COMMAND_BYTES}-byte limit")
        if intake.nesting_depth(raw, intake.MAX_NESTING) > intake.MAX_NESTING:
            return {}, "too_deep", (f"command nested more than {intake.MAX_NESTING} levels "
                                    f"deep refused: a command is a flat JSON object")
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            return {}, "not_a_command", f"not a command: {exc}"
        name = request.get("cmd")
        if not isinstance(name, str) or name not in self._commands:
            return request, "not_allowed", (f"command {str(name)[:64]!r} is not allowed "
                                            f"remotely: only {', '.join(sorted(self._commands))}")
        return request, "", None

    def _count_refusal(self, reason: str, sample: dict[str, Any] | None = None) -> None:
        if self.refusals.count(reason, sample):
            self._kick.set()  # the publisher thread seals it: never paho's thread

    def _seal_refusals(self, final: bool = False) -> None:
        """One `remote_commands_refused` record for the refusals counted since the last."""
        payload = self.refusals.take(final)
        if payload is not None:
            self._seal(intake.RECORD_TYPE, payload)
            if payload["reasons"].keys() & {"rate_limited", "busy"}:  # logged only here
                log.warning("refused %d remote command(s) in %g s: %s", payload["refused"],
                            payload["seconds"], payload["reasons"])

    def _status_now(self) -> dict[str, Any]:
        self.status_changed()
        return {"published": True}


def open_telemetry(config: Config, config_path: Path, chain: Chain, store: Store,
                   index: ChainIndex, enrolled: Callable[[], tuple[Path, Path] | None] | None = None
                   ) -> Telemetry | None:
    """The outbox (caught up from the chain) and the client, listening to the chain from now
    on; None when [mqtt] is off, or when it cannot be set up (logged: recording goes on).
    `enrolled` gives the enrolled (certificate, key), the client identity when [mqtt] sets
    none; it is asked before every connection attempt, so a device enrolled at the dock
    while running presents its certificate at its next connection."""
    if not config.mqtt.enabled:
        return None
    try:
        outbox = Outbox(store.root / "outbox.sqlite", config.device.id,
                        config.mqtt.outbox_limit)
        outbox.catch_up(index.lines_after, chain.head.seq)
        telemetry = Telemetry(config, config_path, outbox, chain.append, enrolled)
    except Exception:
        log.exception("telemetry is off: it could not be set up; recording is not affected")
        return None
    chain.listeners.append(telemetry.on_record)
    return telemetry
