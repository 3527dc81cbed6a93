"""The dock's status over MQTT, in the device's conventions (docs/telemetry.md, "Dock").

    bodycam-dock/<dock>/availability   retained "online"; the last will makes it "offline"
    bodycam-dock/<dock>/status         retained JSON, the whole dock: on change and every
                                       heartbeat
    bodycam-dock/<dock>/bay/<bay key>  retained JSON, one bay: when it changes, at most
                                       once a second (agent/dock/board.py)

The service's event loop only hands the latest view over; a thread of its own publishes,
and paho's thread connects and reconnects with back-off (agent/mqtt_link.py): a broker
slow, refusing or gone never holds up a pull. Nothing piles up while disconnected: the
messages are retained states, so each (re)connection publishes the view as it is then.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.dock.service_config import MqttSettings
from agent.mqtt_link import new_client, stop_network, tls_context

log = logging.getLogger(__name__)
OFFLINE_WAIT_S = 2.0  # at a clean stop, the longest wait for "offline" to reach the broker
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def bay_key(bay: str) -> str:
    """A bay's topic level, from its address: https://10.0.1.2:8443 is 10.0.1.2_8443."""
    return _TOPIC_UNSAFE.sub("_", bay.split("://", 1)[-1]).strip("_") or "_"


def bay_payload(bay: str, seen: dict[str, Any]) -> dict[str, Any]:
    """One bay as a supervisor reads it: who is docked, how far its pull is, what failed."""
    progress = seen.get("progress")
    return {"bay": bay, "device": seen.get("device"), "officer": seen.get("officer"),
            "status": seen.get("status"),
            "stage": progress["stage"] if progress else None,
            "pending_files": progress["pending_files"] if progress else None,
            "pending_bytes": progress["pending_bytes"] if progress else None,
            "progress": None if not progress else {
                key: progress[key] for key in ("files_total", "bytes_total", "files_fetched",
                                               "bytes_fetched")},
            "error": seen.get("error"), "since": seen.get("since")}


class DockStatus:
    """One dock's MQTT session: `start`, then `show` each new view, `close` at the end."""

    def __init__(self, settings: MqttSettings) -> None:
        self._settings = settings
        self.base = f"bodycam-dock/{settings.dock_id}"
        self.availability = f"{self.base}/availability"
        context = tls_context(settings.ca, settings.cert, settings.key) \
            if settings.broker.tls else None
        self._client = new_client(f"bodycam-dock-{settings.dock_id}", self.availability,
                                  settings.reconnect_max_s, context, log)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._refused = False  # said once until the broker takes a message again
        self._lock = threading.Lock()
        self._view: dict[str, dict[str, Any]] | None = None
        self._published: dict[str, dict[str, Any]] = {}  # bay: its payload the broker has
        self._resend = False  # connected again: everything, as the broker may have lost it
        self._kick = threading.Event()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._worker = threading.Thread(target=self._work, name="dock-mqtt", daemon=True)

    def start(self) -> None:
        """Connect in the background (retrying with back-off) and begin publishing."""
        broker = self._settings.broker
        self._client.connect_async(broker.host, broker.port, self._settings.keepalive_s,
                                   clean_start=True)
        self._client.loop_start()
        self._worker.start()

    def show(self, view: dict[str, dict[str, Any]]) -> None:
        """The board's listener, on the event loop: hands the view over, never waits."""
        with self._lock:
            self._view = view
        self._kick.set()

    def close(self) -> None:
        """Publish the last view, then say "offline" ourselves: a clean disconnect does not
        fire the last will."""
        self._stop.set()
        self._kick.set()
        if self._worker.is_alive():
            self._worker.join()
        if self.connected.is_set():
            try:
                self._publish_view(beat=True)
                info = self._client.publish(self.availability, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout=OFFLINE_WAIT_S)
            except (RuntimeError, ValueError) as exc:  # the link dropped in between
                log.warning("'offline' not published (%s): the broker's will says it", exc)
            self.connected.clear()
            self._client.disconnect()
        stop_network(self._client, self._settings.url)

    def _work(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            self._kick.wait(timeout=max(0.0, next_beat - time.monotonic()))
            self._kick.clear()
            if self._stop.is_set() or not self.connected.is_set():
                continue
            try:
                beat = time.monotonic() >= next_beat
                if self._publish_view(beat) or beat:
                    next_beat = time.monotonic() + self._settings.heartbeat_s
            except Exception:  # a bad moment on the wire must not end the status
                log.exception("dock status over MQTT")
                time.sleep(1.0)

    def _publish_view(self, beat: bool) -> bool:
        """The bays that changed since the broker last had them, and the dock's status when
        any did or at a heartbeat; whether anything was published."""
        with self._lock:
            view = self._view
            resend, self._resend = self._resend, False
        if resend:
            self._published, beat = {}, True
        if view is None:
            return False
        bays = {bay: bay_payload(bay, seen) for bay, seen in view.items()}
        changed = {bay: payload for bay, payload in bays.items()
                   if self._published.get(bay) != payload}
        for bay, payload in changed.items():
            self._publish(f"{self.base}/bay/{bay_key(bay)}", payload)
        self._published.update(changed)
        if not (changed or beat):
            return False
        statuses = Counter(str(payload["status"]) for payload in bays.values())
        self._publish(f"{self.base}/status", {
            "dock": self._settings.dock_id, "version": __version__,
            "wall": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "bays": len(bays), "statuses": dict(sorted(statuses.items())),
            "pulling": sorted(str(p["device"]) for p in bays.values()
                              if p["status"] == "pulling"),
            "pending_files": sum(p["pending_files"] or 0 for p in bays.values()),
            "pending_bytes": sum(p["pending_bytes"] or 0 for p in bays.values()),
            "errors": sum(1 for p in bays.values() if p["error"]),
            "heartbeat_s": self._settings.heartbeat_s})
        return True

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1,
                             retain=True)

    # --- paho's thread ----------------------------------------------------------------------

    def _on_connect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason: ReasonCode, _properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the connection: %s", self._settings.url, reason)
            return
        log.info("dock status: connected to %s", self._settings.url)
        self._client.publish(self.availability, "online", qos=1, retain=True)
        with self._lock:
            self._resend = True
        self.connected.set()
        self._kick.set()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, _mid: int,
                    reason: ReasonCode, _properties: Any) -> None:
        if reason.is_failure and not self._refused:
            log.warning("the broker %s refuses the dock's status (%s): is [mqtt] id the CN "
                        "of the dock's certificate, and does its ACL let it publish under "
                        "%s/?", self._settings.url, reason, self.base)
        self._refused = reason.is_failure

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason: ReasonCode, _properties: Any) -> None:
        if self.connected.is_set():
            log.warning("disconnected from %s (%s); reconnecting with back-off",
                        self._settings.url, reason)
        self.connected.clear()
