#!/usr/bin/env python3
"""Telemetry events: latency to a subscriber, the agent's CPU per event, and outbox drain rate.

Run from the repository root (needs the `mosquitto` binary):

    python benchmarks/mqtt_events.py [--events 10000] [--rate 1000]

A private Mosquitto is started on a free port; the subscriber is a separate process
(so its CPU is not the agent's), subscribed at QoS 1 to the device's events.

1. Latency: `--events` events, one every 1/`--rate` s, each handed to the agent the way
   the chain hands it a sealed record (`Telemetry.on_record`: outbox insert, wake the
   publisher). Latency is that call to the subscriber's receipt, both on CLOCK_MONOTONIC.
   The agent's CPU (all its threads: outbox, publisher, paho) is `time.process_time()`
   over the run, per 1,000 events.
2. Drain: `--events` events are put in the outbox while the agent is not connected (a
   broker outage), then it connects; the rate is events over the time until the last
   PUBACK has taken the last event out of the outbox.

Targets: p99 latency under 20 ms, drain at least 2,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.device.telemetry.mqtt import Telemetry
from agent.device.telemetry.outbox import Outbox
from tests.support.device import wait_for, write_device_config
from tests.support.mosquitto import Broker, mqtt_section

DEVICE = "TEST-0001"
EVENTS = f"bodycam/{DEVICE}/events"


def subscribe(port: int, count: int, out: Path) -> None:
    """The subscriber process: receive `count` events, write "seq receipt_ns" lines."""
    received: list[tuple[int, int]] = []
    done = threading.Event()
    ready = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        received.append((json.loads(message.payload)["seq"], time.monotonic_ns()))
        if len(received) >= count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe(EVENTS, qos=1)
    client.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    done.wait(600)
    client.loop_stop()
    out.write_text("".join(f"{seq} {ns}\n" for seq, ns in received))


def start_subscriber(port: int, count: int, out: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, __file__, "--subscriber", str(port), str(count),
                                str(out)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def body(seq: int) -> dict:
    """A record body shaped like a sealed segment's (what the chain hands its listeners)."""
    return {"seq": seq, "prev": "0" * 64, "type": "segment_sealed", "device": DEVICE,
            "officer": "OFC-7", "wall": "2026-11-28T08:00:00.000000Z",
            "payload": {"file": f"sealed/{seq:08d}.ts", "sha256": "ab" * 32, "size": 1_234_567,
                        "recording": 1, "index": seq, "first_pts_us": seq * 1_000_000,
                        "last_pts_us": seq * 1_000_000 + 966_667, "frames": 30}}


def make_telemetry(folder: Path, port: int) -> Telemetry:
    config_path = write_device_config(folder / "device.toml", folder / "store")
    config_path.write_text(config_path.read_text()
                           + mqtt_section(f"mqtt://127.0.0.1:{port}", heartbeat_s=3600.0,
                                          discovery=False))
    config, path = load_config(config_path)
    outbox = Outbox(folder / "outbox.sqlite", DEVICE, config.mqtt.outbox_limit)
    outbox.catch_up(lambda _line: (), 0)
    return Telemetry(config, path, outbox, seal=lambda *_: None)


def latency(folder: Path, broker: Broker, events: int, rate: float) -> dict[str, float]:
    out = folder / "latency.txt"
    subscriber = start_subscriber(broker.port, events, out)
    telemetry = make_telemetry(folder / "latency", broker.port)
    telemetry.start(lambda: {}, {})
    wait_for(telemetry.connected.is_set, 10, "the agent to connect")
    sent: dict[int, int] = {}
    interval_ns = int(1e9 / rate)
    cpu0, start = time.process_time(), time.monotonic_ns()
    for seq in range(1, events + 1):
        time.sleep(max(0, start + seq * interval_ns - time.monotonic_ns()) / 1e9)
        sent[seq] = time.monotonic_ns()
        telemetry.on_record(body(seq), f"{seq:064x}")
    wait_for(lambda: len(telemetry.outbox) == 0, 60, "every PUBACK")
    cpu = time.process_time() - cpu0
    subscriber.wait(60)
    telemetry.close()
    received = dict(tuple(map(int, line.split())) for line in out.read_text().splitlines())
    assert sorted(received) == list(range(1, events + 1)), "every event arrived"
    ms = sorted((received[seq] - sent[seq]) / 1e6 for seq in sent)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[int(len(ms) * 0.99) - 1],
            "max_ms": ms[-1], "cpu_ms_per_1000": cpu * 1000 / (events / 1000)}


def drain(folder: Path, broker: Broker, events: int) -> dict[str, float]:
    out = folder / "drain.txt"
    subscriber = start_subscriber(broker.port, events, out)
    telemetry = make_telemetry(folder / "drain", broker.port)
    for seq in range(1, events + 1):       # the outage: nobody to publish to
        telemetry.on_record(body(seq), f"{seq:064x}")
    assert len(telemetry.outbox) == events
    start = time.monotonic()
    telemetry.start(lambda: {}, {})
    wait_for(lambda: len(telemetry.outbox) == 0, 120, "the outbox to drain")
    seconds = time.monotonic() - start
    subscriber.wait(60)
    telemetry.close()
    seqs = [int(line.split()[0]) for line in out.read_text().splitlines()]
    assert seqs == list(range(1, events + 1)), "every event once, in order"
    return {"seconds": seconds, "events_per_s": events / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second offered")
    parser.add_argument("--subscriber", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        port, count, out = args.subscriber
        subscribe(int(port), int(count), Path(out))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="bodycam-mqtt-bench-"))
    for name in ("latency", "drain"):
        (folder / name).mkdir()
    broker = Broker(folder / "broker", persistence=False)
    broker.start()
    try:
        lat = latency(folder, broker, args.events, args.rate)
        print(f"latency over {args.events} events at {args.rate:g}/s: p50 {lat['p50_ms']:.2f} ms,"
              f" p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms (target p99 < 20 ms)")
        print(f"agent CPU: {lat['cpu_ms_per_1000']:.0f} ms per 1,000 events")
        dr = drain(folder, broker, args.events)
        print(f"drain of a {args.events}-event outbox: {dr['seconds']:.2f} s, "
              f"{dr['events_per_s']:.0f} events/s (target >= 2,000/s)")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
