"""Fleet telemetry against a real Mosquitto that each test starts on free ports."""

from __future__ import annotations

import itertools
import json
import logging
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import ConfigError, load_config
from agent.device.chain_index import ChainIndex
from agent.device.daemon import Daemon
from agent.device.telemetry.mqtt import Telemetry, open_telemetry
from agent.device.telemetry.outbox import Outbox
from agent.evidence.chain import Chain, read_bodies, read_records
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from agent.mqtt_link import NETWORK_STOP_S
from hal.clock import SimulatedClock
from tests.support.device import running_daemon, spawn_daemon, trigger_start, wait_for
from tests.support.mosquitto import Brokers, Pki, Subscriber, free_port, mqtt_section

DEVICE = "TEST-0001"
TOPIC = f"bodycam/{DEVICE}"


@pytest.fixture
def mqtt_config(write_config: Callable[..., Path]) -> Callable[..., Path]:
    """A fast simulated device with an [mqtt] section pointing at `url`."""

    def write(url: str, **mqtt: object) -> Path:
        path = write_config(realtime="true")
        path.write_text(path.read_text() + mqtt_section(url, **mqtt))
        return path

    return write


def unique_in_order(events: list[dict]) -> list[dict]:
    """The subscriber's contract: deliveries are at least once, so keep the first of each id."""
    first: dict[str, dict] = {}
    for event in events:
        first.setdefault(event["id"], event)
    return list(first.values())


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "message"), [
    ('url = "http://broker:1883"', "[mqtt] url = 'http://broker:1883': expected mqtt://"),
    ('url = "mqtts://broker"\ncert = "a.pem"', "a client certificate needs its key"),
    ('url = "mqtt://broker"\nca = "ca.pem"', "ca, cert and key need mqtts://"),
    ('url = "mqtts://broker"\nca = "missing-ca.pem"', "[mqtt] ca = 'missing-ca.pem': no such file"),
    ("outbox_limit = 10", "[mqtt] outbox_limit = 10: Input should be greater than or equal"),
])
def test_bad_mqtt_config_names_file_key_and_value(write_config: Callable[..., Path],
                                                  section: str, message: str) -> None:
    path = write_config()
    path.write_text(path.read_text() + f"\n[mqtt]\nenabled = true\n{section}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_command_line_broker_turns_mqtt_on(write_config: Callable[..., Path]) -> None:
    config, _ = load_config(write_config())
    assert not config.mqtt.enabled
    config, _ = load_config(write_config(), mqtt="mqtts://fleet.example:9883")
    assert config.mqtt.enabled and config.mqtt.tls
    assert (config.mqtt.host, config.mqtt.port) == ("fleet.example", 9883)


# --- against the broker ----------------------------------------------------------------------

def test_status_availability_and_discovery_reach_a_late_subscriber(
        brokers: Brokers, mqtt_config: Callable[..., Path]) -> None:
    broker = brokers()
    with running_daemon(mqtt_config(broker.url)) as daemon:
        wait_for(lambda: daemon.telemetry.connected.is_set(), 10, "the agent to connect")
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, 20, "a sealed segment")
        # Connected after the fact: only retained messages can tell it anything.
        late = Subscriber(broker.port, [f"{TOPIC}/status", f"{TOPIC}/availability",
                                        "homeassistant/#"])
        late.wait(lambda: late.on(f"{TOPIC}/availability") and late.on(f"{TOPIC}/status"))
        assert late.on(f"{TOPIC}/availability")[0].retain
        assert late.on(f"{TOPIC}/availability")[0].payload == b"online"
        head = daemon.chain.head.as_dict()
        late.wait(lambda: any(s["chain_head"] == daemon.chain.head.as_dict()
                              for s in late.json_on(f"{TOPIC}/status")),
                  what="a status with the current chain head (heartbeat 1 s)")
        status = late.json_on(f"{TOPIC}/status")[-1]
        assert status["state"] == "recording" and status["chain_head"]["seq"] >= head["seq"]
        assert status["battery"]["percent"] == 100 and status["storage"]["hours_left"] > 0
        assert status["export"]["overdue"] is False and status["export"]["oldest_sealed"]

        config_topic = f"homeassistant/sensor/{DEVICE}/battery/config"
        late.wait(lambda: late.on(config_topic))
        battery = json.loads(late.on(config_topic)[0].payload)
        assert battery["availability_topic"] == f"{TOPIC}/availability"
        assert battery["state_topic"] == f"{TOPIC}/status"
        assert battery["device"]["identifiers"] == [f"bodycam_{DEVICE}"]
        # Home Assistant restarts: it says so, and every device publishes its configs again.
        late.client.publish("homeassistant/status", "online", qos=1)
        late.wait(lambda: len(late.on(config_topic)) == 2, what="discovery published again")
    late.wait(lambda: late.on(f"{TOPIC}/availability")[-1].payload == b"offline",
              what="offline on a clean shutdown")
    late.close()


def test_sigkill_leaves_offline_from_the_last_will(brokers: Brokers, tmp_path: Path,
                                                   mqtt_config: Callable[..., Path]) -> None:
    broker = brokers()
    watcher = Subscriber(broker.port, [f"{TOPIC}/availability"])
    agent = spawn_daemon(mqtt_config(broker.url), tmp_path / "store")
    try:
        watcher.wait(lambda: [m.payload for m in watcher.messages] == [b"online"])
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        watcher.wait(lambda: watcher.messages[-1].payload == b"offline",
                     what="the broker to publish the last will")
    finally:
        agent.kill()
        watcher.close()
    fresh = Subscriber(broker.port, [f"{TOPIC}/availability"])
    fresh.wait(lambda: fresh.messages and fresh.messages[0].payload == b"offline")
    assert fresh.messages[0].retain, "the will is retained: a dashboard started later sees it"
    fresh.close()


def test_broker_outage_every_event_once_and_in_order(brokers: Brokers, tmp_path: Path,
                                                     mqtt_config: Callable[..., Path]) -> None:
    broker = brokers()
    fleet = Subscriber(broker.port, [f"{TOPIC}/events"], client_id="fleet", persistent=True)
    config, path = load_config(mqtt_config(broker.url))
    store = Store(config.store_path).prepare()
    chain = Chain(store.chain, load_or_create_device_key(store.keys),
                  lambda: (DEVICE, "OFC"), SimulatedClock().state, "boot")
    telemetry = open_telemetry(config, path, chain, store, ChainIndex.open(store.chain))
    telemetry.start(lambda: {}, {})
    wait_for(telemetry.connected.is_set, 10, "the agent to connect")
    seqs = [chain.append("alarm", {"n": n})["seq"] for n in range(100)]
    broker.stop()
    wait_for(lambda: not telemetry.connected.is_set(), 10, "the agent to see the outage")
    seqs += [chain.append("segment_sealed", {"n": n})["seq"] for n in range(400)]
    assert len(telemetry.outbox) >= 400, "the outage's events wait in the outbox"
    time.sleep(1.0)
    broker.start()
    fleet.wait(lambda: {e["seq"] for e in fleet.json_on(f"{TOPIC}/events")} >= set(seqs),
               timeout=30, what="every event after the outage")
    wait_for(lambda: len(telemetry.outbox) == 0, 10, "the outbox to empty on PUBACKs")
    telemetry.close()
    chain.close()
    fleet.close()

    events = unique_in_order(fleet.json_on(f"{TOPIC}/events"))
    assert [e["seq"] for e in events] == seqs, "each event exactly once, in chain order"
    bodies = read_bodies(store.chain)
    assert [e["prev"] for e in events] == [b["prev"] for b in bodies]
    assert all(a["hash"] == b["prev"] for a, b in itertools.pairwise(events)), \
        "the broker side can follow the chain from event to event"


def test_restarting_the_agent_during_an_outage_loses_nothing(
        brokers: Brokers, tmp_path: Path, mqtt_config: Callable[..., Path]) -> None:
    broker = brokers()
    fleet = Subscriber(broker.port, [f"{TOPIC}/events"], client_id="fleet", persistent=True)
    config = mqtt_config(broker.url)
    store = tmp_path / "store"
    agent = spawn_daemon(config, store)
    try:
        fleet.wait(lambda: fleet.json_on(f"{TOPIC}/events"), what="the boot event")
        broker.stop()
        trigger_start(config)
        wait_for(lambda: sum(b["type"] == "segment_sealed" for b in read_bodies(
            store / "chain.jsonl")) >= 2, 20, "segments sealed during the outage")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        agent = spawn_daemon(config, store)          # a new process, still no broker
        trigger_start(config)
        wait_for(lambda: read_bodies(store / "chain.jsonl")[-1]["type"] == "segment_sealed",
                 20, "a segment sealed by the restarted agent")
        broker.start()
        head = read_bodies(store / "chain.jsonl")[-1]["seq"]
        fleet.wait(lambda: any(e["seq"] >= head for e in fleet.json_on(f"{TOPIC}/events")),
                   timeout=30, what="the outage's events, once the broker is back")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    chain = read_bodies(store / "chain.jsonl")
    assert chain[-1]["type"] == "shutdown"
    fleet.wait(lambda: any(e["seq"] == chain[-1]["seq"] for e in fleet.json_on(
        f"{TOPIC}/events")), what="the shutdown event, sent before going offline")
    fleet.close()
    events = unique_in_order(fleet.json_on(f"{TOPIC}/events"))
    assert [e["seq"] for e in events] == [b["seq"] for b in chain]
    assert [e["type"] for e in events].count("boot") == 2


def test_a_device_certificate_cannot_publish_as_another_device(brokers: Brokers, pki: Pki,
                                                               tmp_path: Path) -> None:
    broker = brokers(pki)
    fleet = Subscriber(broker.tls_port, ["bodycam/#"], tls=(pki.ca, *pki.issue("fleet")))
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="a", protocol=mqtt.MQTTv5)
    cert, key = pki.issue("TEST-A")
    device.tls_set(ca_certs=str(pki.ca), certfile=str(cert), keyfile=str(key))
    acks: dict[int, object] = {}
    device.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, reason)
    device.connect("localhost", broker.tls_port)
    device.loop_start()
    try:
        forged = device.publish("bodycam/TEST-B/events", b'{"id":"forged"}', qos=1)
        own_cmd = device.publish("bodycam/TEST-A/cmd", b'{"id":"self","cmd":"locate"}', qos=1)
        honest = device.publish("bodycam/TEST-A/events", b'{"id":"honest"}', qos=1)
        wait_for(lambda: len(acks) == 3, 10, "three PUBACKs")
        fleet.wait(lambda: fleet.on("bodycam/TEST-A/events"))
        time.sleep(0.3)
        assert [m.topic for m in fleet.messages] == ["bodycam/TEST-A/events"]
        assert acks[forged.mid].is_failure and acks[forged.mid].getName() == "Not authorized"
        assert acks[own_cmd.mid].is_failure, "a device cannot send itself commands"
        assert not acks[honest.mid].is_failure
    finally:
        device.disconnect()
        device.loop_stop()
        fleet.close()


def test_the_agent_over_tls_with_its_certificate(brokers: Brokers, pki: Pki,
                                                 mqtt_config: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    broker = brokers(pki)
    cert, key = pki.issue(DEVICE)
    fleet = Subscriber(broker.tls_port, ["bodycam/#"], tls=(pki.ca, *pki.issue("fleet")))
    with running_daemon(mqtt_config(broker.tls_url, ca=str(pki.ca), cert=str(cert),
                                    key=str(key))) as daemon:
        fleet.wait(lambda: fleet.on(f"{TOPIC}/status") and fleet.on(f"{TOPIC}/events"))
        assert fleet.on(f"{TOPIC}/availability")[0].payload == b"online"
        assert daemon.telemetry.connected.is_set()
    fleet.close()


def test_commands_safe_ones_run_the_rest_are_refused_answered_and_logged(
        brokers: Brokers, mqtt_config: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.device.telemetry.mqtt")
    broker = brokers()
    fleet = Subscriber(broker.port, [f"{TOPIC}/cmd/response"])
    with running_daemon(mqtt_config(broker.url)) as daemon:
        wait_for(lambda: daemon.telemetry.connected.is_set(), 10, "the agent to connect")
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.recording_id is not None, 10, "recording")
        buzzes = _count_buzzes(daemon)
        for command in ({"id": "c1", "cmd": "stop"}, {"id": "c2", "cmd": "purge"},
                        {"id": "c3", "cmd": "locate"}, {"id": "c4", "cmd": "status"},
                        {"id": "c5", "cmd": "selfcheck"}):
            fleet.client.publish(f"{TOPIC}/cmd", json.dumps(command), qos=1)
        fleet.client.publish(f"{TOPIC}/cmd", b"not json", qos=1)
        fleet.wait(lambda: len(fleet.messages) == 6, timeout=60, what="six answers")
        answers = {a["id"]: a for a in fleet.json_on(f"{TOPIC}/cmd/response")}
        assert daemon.recorder.recording_id is not None, "nothing remote stops a recording"
        assert buzzes() >= 5, "locate buzzed"
    bodies = read_bodies(daemon.store.chain)
    records = [b["payload"] for b in bodies if b["type"] == "command"]
    refused = [b["payload"] for b in bodies if b["type"] == "remote_commands_refused"]
    assert answers["c1"]["accepted"] is False and "not allowed" in answers["c1"]["reason"]
    assert answers["c2"]["accepted"] is False
    assert answers["c3"] == {"id": "c3", "cmd": "locate", "accepted": True,
                             "result": {"pulses": 5}}
    assert answers["c4"]["accepted"] is True
    assert answers["c5"]["accepted"] is True and answers["c5"]["result"]["overall"] in (
        "pass", "warn", "fail")
    assert answers[None]["accepted"] is False and "not a command" in answers[None]["reason"]
    assert [(r["id"], r["cmd"], r["accepted"]) for r in records] == [
        ("c3", "locate", True), ("c4", "status", True), ("c5", "selfcheck", True)]
    # Refusals are sealed together (at most one record a minute), each of these few whole.
    assert sum(r["refused"] for r in refused) == 3
    assert [(s["id"], s["cmd"]) for r in refused for s in r["samples"]] == [
        ("c1", "stop"), ("c2", "purge"), (None, None)]
    refusals = [r.getMessage() for r in caplog.records if "refused remote command" in
                r.getMessage()]
    assert len(refusals) == 3 and "stop (id c1)" in refusals[0]
    assert verify_store(daemon.store.root).ok, "command records are part of a valid chain"
    fleet.close()


FLOOD = 10_000
DEEP = {"id": "deep", "cmd": json.loads('{"a":' * 50 + "1" + "}" * 50)}


def test_a_command_flood_costs_no_frame_and_grows_the_chain_by_a_bounded_amount(
        brokers: Brokers, mqtt_config: Callable[..., Path]) -> None:
    """Issue 18: 20,000 refused commands sealed 12.3 MB in 88 s, a 200 MB one took the daemon
    to 775 MiB, a deeply nested one vanished. Now, while recording: one command a little
    over the size cap and one nested too deeply are answered with the reason; one far over
    it never reaches the device (its MQTT 5 Maximum Packet Size, honoured by Mosquitto);
    a flood of 10,000 costs no frame and a few records; and the fleet is served after it."""
    broker = brokers()
    fleet = Subscriber(broker.port, [f"{TOPIC}/cmd/response"])
    with running_daemon(mqtt_config(broker.url)) as daemon:
        wait_for(lambda: daemon.telemetry.connected.is_set(), 10, "the agent to connect")
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, 20, "a sealed segment")
        first_seq = daemon.chain.head.seq + 1
        started = time.monotonic()

        send = lambda payload: fleet.client.publish(f"{TOPIC}/cmd", payload, qos=1)  # noqa: E731
        send(json.dumps({"id": "big", "cmd": "status", "pad": "x" * 2000}))
        send(json.dumps({"id": "huge", "cmd": "status", "pad": "x" * (1 << 20)}))
        send(json.dumps(DEEP))
        fleet.wait(lambda: len(fleet.messages) == 2, what="the two refusals answered")
        for n in range(FLOOD):
            last = send(json.dumps({"id": f"f{n}", "cmd": "stop"}))
        last.wait_for_publish(60)
        legit = 0
        while not [a for a in fleet.json_on(f"{TOPIC}/cmd/response")
                   if str(a["id"]).startswith("legit")]:
            assert legit < 20, "the fleet is still refused after the flood"
            legit += 1
            send(json.dumps({"id": f"legit{legit}", "cmd": "status"}))
            time.sleep(1.5)
        flood_s = time.monotonic() - started
        sealed = daemon.recorder.stats.segments_sealed
        wait_for(lambda: daemon.recorder.stats.segments_sealed > sealed, 10,
                 "one more segment after the flood")
    answers = fleet.json_on(f"{TOPIC}/cmd/response")
    fleet.close()

    refusals = [a for a in answers if not a["accepted"]]
    assert "2" in refusals[0]["reason"] and "over the 1024-byte limit" in refusals[0]["reason"]
    assert "nested more than 4 levels" in refusals[1]["reason"]
    served = [a for a in answers if str(a["id"]).startswith("legit")]
    assert served and all(a["accepted"] for a in served)
    # Every flood command was refused; only the few the rate let through got an answer.
    assert sum(1 for a in answers if str(a["id"]).startswith("f")) <= 10 + flood_s

    lines = [(json.loads(line), len(line) + 1) for _, line in read_records(daemon.store.chain)]
    during = [(body, size) for body, size in lines if body["seq"] >= first_seq]
    assert not [b for b, _ in during if b["type"] in ("interruption", "alarm")]
    assert daemon.recorder.stats.packets_lost == 0
    video = [b["payload"]["video"] for b, _ in during if b["type"] == "segment_sealed"]
    assert len(video) >= 2
    frame_us = 1e6 / video[0]["fps"]
    for segment in video:  # every frame the camera timed is in the segments, none missing
        span = round((segment["last_pts_us"] - segment["first_pts_us"]) / frame_us)
        assert segment["packets"] == span + 1, segment
    gaps = [b["first_pts_us"] - a["last_pts_us"] for a, b in itertools.pairwise(video)]
    assert all(abs(gap - frame_us) < frame_us / 2 for gap in gaps), gaps

    commands = [(b, size) for b, size in during
                if b["type"] in ("command", "remote_commands_refused")]
    aggregate = [b["payload"] for b, _ in commands if b["type"] == "remote_commands_refused"]
    assert len(aggregate) <= 1 + math.ceil(flood_s / 60) + 1
    assert len(commands) <= len(aggregate) + len(served), [b["type"] for b, _ in commands]
    assert sum(size for _, size in commands) <= 8 * 1024, "bytes sealed for the flood"
    reasons = sum((Counter(r["reasons"]) for r in aggregate), Counter())
    assert reasons["too_large"] == 1, "the 2 KB one; the broker never sent the 1 MiB one"
    assert reasons["too_deep"] == 1
    assert reasons["not_allowed"] + reasons["rate_limited"] + reasons["busy"] == \
        FLOOD + legit - len(served)
    assert reasons["rate_limited"] >= FLOOD - 10 - flood_s
    assert verify_store(daemon.store.root).ok


def _count_buzzes(daemon: Daemon) -> Callable[[], int]:
    """How many times the buzzer (a MockFactory pin) has gone high from now on."""
    pin = daemon.controls.buzzer.pin
    pin.clear_states()
    return lambda: sum(1 for change in pin.states[1:] if change.state)


class SilentBroker:
    """A broker that accepts the first connection, never acknowledges a publish and drops it
    after `drop_after` s; later connections it accepts and never answers (no CONNACK)."""

    def __init__(self, drop_after: float = 1.0) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._drop_after = drop_after
        threading.Thread(target=self._serve, name="silent-broker", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections.append(conn)
            conn.recv(65536)  # CONNECT
            if len(self.connections) == 1:
                conn.sendall(bytes([0x20, 3, 0, 0, 0]))  # CONNACK: success, no properties
                time.sleep(self._drop_after)
                conn.close()

    def close(self) -> None:
        self._server.close()
        for conn in self.connections:
            conn.close()


def test_close_is_bounded_while_the_broker_does_not_answer_the_connect(
        mqtt_config: Callable[..., Path]) -> None:
    """Shutting down while paho waits for a CONNACK, with events in flight from the last
    connection: paho's loop_stop() waited for its thread until keepalive_s (here 30 s)."""
    broker = SilentBroker()
    config, path = load_config(mqtt_config(f"mqtt://127.0.0.1:{broker.port}", keepalive_s=30))
    store = Store(config.store_path).prepare()
    chain = Chain(store.chain, load_or_create_device_key(store.keys),
                  lambda: (DEVICE, "OFC"), SimulatedClock().state, "boot")
    telemetry = open_telemetry(config, path, chain, store, ChainIndex.open(store.chain))
    try:
        telemetry.start(lambda: {}, {})
        wait_for(telemetry.connected.is_set, 10, "the agent to connect")
        for n in range(20):
            chain.append("alarm", {"n": n})
        wait_for(lambda: not telemetry.connected.is_set(), 10, "the broker to drop it")
        wait_for(lambda: len(broker.connections) >= 2, 10, "the agent to connect again")
        time.sleep(0.2)  # its CONNECT is sent; no CONNACK will come
        started = time.monotonic()
        telemetry.close()
        took = time.monotonic() - started
    finally:
        broker.close()
        chain.close()
    assert took < NETWORK_STOP_S + 3, f"close() took {took:.1f} s"
    outbox = Outbox(store.root / "outbox.sqlite", DEVICE, config.mqtt.outbox_limit)
    assert len(outbox) == 20, "nothing was acknowledged: every event waits for the next run"
    outbox.close()


def test_no_broker_the_daemon_records_and_keeps_the_events(
        mqtt_config: Callable[..., Path]) -> None:
    with running_daemon(mqtt_config(f"mqtt://127.0.0.1:{free_port()}")) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 2, 20, "two segments")
        telemetry: Telemetry = daemon.telemetry
        assert not telemetry.connected.is_set()
        assert len(telemetry.outbox) >= 4, "boot, record_start and the segments wait"


def test_demo_publishes_to_the_broker_and_says_so(brokers: Brokers, write_config: Callable[
        ..., Path], tmp_path: Path) -> None:
    broker = brokers()
    fleet = Subscriber(broker.port, [f"{TOPIC}/#"])
    store = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "agent", "demo", "--config",
                             str(write_config(realtime="true")), "--store", str(store),
                             "--seconds", "2", "--mqtt", broker.url],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("telemetry:"))
    chain = read_bodies(store / "chain.jsonl")
    assert f"published to {broker.url}: {len(chain)} event(s) delivered" in line
    assert "0 event(s) left" in line
    fleet.wait(lambda: fleet.on(f"{TOPIC}/availability")[-1:] and
               fleet.on(f"{TOPIC}/availability")[-1].payload == b"offline")
    assert [e["seq"] for e in unique_in_order(fleet.json_on(f"{TOPIC}/events"))] == [
        b["seq"] for b in chain]
    fleet.close()
