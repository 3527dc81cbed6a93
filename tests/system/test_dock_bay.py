"""A dock's bay, over real mutual TLS on loopback: its bandwidth cap bounds what a pull
reads per second over all its connections, and the copy still verifies byte for byte;
`dock status` shows the device, its officer and its pull's progress as it goes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.evidence.verify import verify_store
from tests.support.device import BODYCAM, wait_for
from tests.support.dockside import Docked, sealed_segments, snapshot
from tests.support.fleet import dock_service
from tests.support.mosquitto import Brokers, Subscriber, free_port
from tests.support.mosquitto import Pki as MqttPki
from tests.support.pki import Pki
from tests.system.test_dock_serve import status, write_dock_toml
from tests.system.test_systemd import NotifySocket

SEGMENTS = 8


def test_a_capped_pull_takes_at_least_the_time_its_cap_implies(
        device: Docked, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = sum(r["payload"]["size"] for r in sealed_segments(device.store))
    seconds = 2.0  # on loopback the same pull uncapped takes a fraction of this
    mbit = total * 8 / 1e6 / seconds
    out = tmp_path / "evidence"
    started = time.monotonic()
    code = main(["dock", "pull", "--out", str(out), *_tls(device), "--connections", "4",
                 "--max-mbit", f"{mbit:.6f}"])
    elapsed = time.monotonic() - started
    assert code == 0, capsys.readouterr()
    # A lower bound only: the cap cannot make a pull faster, so this holds on any machine,
    # and an uncapped pull of these bytes on loopback does not meet it.
    assert elapsed >= seconds, f"{total} bytes in {elapsed:.2f} s under a {mbit:.3f} Mbit/s cap"
    folder = out / "TEST-0001"
    assert snapshot(folder) == snapshot(device.store)
    assert verify_store(folder).ok


def _tls(device: Docked) -> list[str]:
    pem = device.pki.pem
    return ["--device", device.url, "--cert", str(pem("dock.crt")), "--key", str(pem("dock.key")),
            "--ca", str(pem("device-ca.pem")), "--operator", "Li"]


def test_status_shows_each_bay_s_device_officer_stage_and_pending_as_the_pull_goes(
        device: Docked, tmp_path: Path) -> None:
    assert main(["dock", "officer", "issue", "--officer", "OFC-9", *_tls(device)]) == 0
    sealed = sealed_segments(device.store)
    total = sum(r["payload"]["size"] for r in sealed)
    # Capped to last about 4 s, for the status to be read while it runs.
    config = write_dock_toml(tmp_path, device.pki, [device.url],
                             bay_mbit=round(total * 8 / 1e6 / 4, 6))
    seen: list[dict[str, Any]] = []
    with dock_service(config) as process:
        def sample() -> bool:
            if config.with_name("dock-state.json").exists():
                view = status(config)
                seen.append(view["bays"].get(device.url, {}))
                return bool(view["devices"].get("TEST-0001", {}).get("ok"))
            return False
        wait_for(sample, timeout=120, interval=0.05, what="the device pulled")
        wait_for(lambda: status(config)["bays"][device.url].get("progress", {})
                 .get("stage") == "custody" and status(config)["bays"][device.url]["status"]
                 == "done", timeout=10, what="the last progress published")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0

    fetching = [bay["progress"] for bay in seen if bay.get("status") == "pulling" and
                bay.get("progress", {}).get("stage") == "fetching"]
    assert fetching, seen
    for progress in fetching:
        assert progress["bytes_total"] == total and progress["files_total"] == len(sealed)
        assert progress["pending_bytes"] == total - progress["bytes_fetched"]
        assert progress["pending_files"] == len(sealed) - progress["files_fetched"]
    fetched = [progress["bytes_fetched"] for progress in fetching]
    assert fetched == sorted(fetched) and fetched[0] < total  # rising, seen before the end
    assert any(0 < n < total for n in fetched), fetched
    assert all(bay["officer"] == "OFC-9" and bay["device"] == "TEST-0001"
               for bay in seen if bay.get("status") in ("pulling", "done"))

    view = status(config)
    bay, last = view["bays"][device.url], view["devices"]["TEST-0001"]
    assert (bay["status"], bay["device"], bay["officer"], bay["error"]) == (
        "done", "TEST-0001", "OFC-9", None)
    assert bay["progress"] == {"stage": "custody", "files_total": len(sealed),
                               "bytes_total": total, "files_fetched": len(sealed),
                               "bytes_fetched": total, "pending_files": 0, "pending_bytes": 0}
    # The durable state keeps counts, not the seqs of every file ever fetched.
    assert last["fetched_total"] == len(sealed) and "fetched_seqs" not in last
    text = subprocess.run([*BODYCAM, "dock", "status", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"bay {device.url}: done TEST-0001 (officer OFC-9) since " in text
    assert f"custody: {len(sealed)} of {len(sealed)} file(s)" in text
    assert "pending 0 file(s), 0.0 MB" in text


def _with_mqtt(config: Path, **mqtt: object) -> Path:
    config.write_text(config.read_text() + "[mqtt]\n" + "".join(
        f"{key} = {json.dumps(str(value) if isinstance(value, Path) else value)}\n"
        for key, value in mqtt.items()))
    return config


def test_the_dock_publishes_each_bay_over_mqtt_and_says_when_it_goes(
        device: Docked, tmp_path: Path, brokers: Brokers, pki: MqttPki) -> None:
    assert main(["dock", "officer", "issue", "--officer", "OFC-9", *_tls(device)]) == 0
    total = sum(r["payload"]["size"] for r in sealed_segments(device.store))
    broker = brokers(pki)  # TLS, client certificates required, the shipped ACL
    cert, key = pki.issue("DOCK-7")
    config = _with_mqtt(write_dock_toml(tmp_path, device.pki, [device.url],
                                        bay_mbit=round(total * 8 / 1e6 / 3, 6)),
                        url=broker.tls_url, id="DOCK-7", ca=pki.ca, cert=cert, key=key,
                        heartbeat_s=1)
    fleet = Subscriber(broker.tls_port, ["bodycam-dock/#"], tls=(pki.ca, *pki.issue("fleet")))
    base = "bodycam-dock/DOCK-7"
    bay_topic = f"{base}/bay/127.0.0.1_{device.daemon.offload.port}"
    try:
        with dock_service(config) as process:
            fleet.wait(lambda: any(b["status"] == "done" and b["stage"] == "custody"
                                   for b in fleet.json_on(bay_topic)),
                       timeout=120, what="the bay done")
            fleet.wait(lambda: len(fleet.on(f"{base}/status")) >= 3, timeout=10,
                       what="status heartbeats")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            fleet.wait(lambda: _availability(fleet, base)[-1:] == [b"offline"],
                       what="offline at SIGTERM")
        assert _availability(fleet, base)[0] == b"online"

        bays = fleet.json_on(bay_topic)
        statuses = [b["status"] for b in bays]
        assert "pulling" in statuses and statuses[-1] == "done"
        assert statuses.index("pulling") < len(statuses) - 1
        assert all(b["device"] == "TEST-0001" and b["officer"] == "OFC-9" and b["error"] is None
                   for b in bays if b["status"] in ("pulling", "done"))
        fetched = [b["progress"]["bytes_fetched"] for b in bays if b["progress"]]
        assert fetched == sorted(fetched) and any(0 < n < total for n in fetched), fetched
        last = bays[-1]
        assert last["progress"] == {"files_total": len(sealed_segments(device.store)),
                                    "bytes_total": total,
                                    "files_fetched": len(sealed_segments(device.store)),
                                    "bytes_fetched": total}
        assert (last["pending_files"], last["pending_bytes"]) == (0, 0)
        status = fleet.json_on(f"{base}/status")[-1]
        assert status["dock"] == "DOCK-7" and status["bays"] == 1
        assert status["statuses"] == {"done": 1} and status["pending_bytes"] == 0

        # Killed, the dock cannot say it: the broker's last will does.
        with dock_service(config) as process:
            fleet.wait(lambda: _availability(fleet, base)[-1:] == [b"online"], timeout=30,
                       what="online again")
            process.kill()
            process.wait(30)
            fleet.wait(lambda: _availability(fleet, base)[-1:] == [b"offline"], timeout=30,
                       what="offline by the last will")
    finally:
        fleet.close()
    # Retained: a supervisor that connects later reads each bay and the dock at once.
    late = Subscriber(broker.tls_port, ["bodycam-dock/#"], tls=(pki.ca, *pki.issue("fleet")))
    try:
        late.wait(lambda: bool(late.on(bay_topic) and late.on(f"{base}/availability")),
                  what="the retained bay and availability")
        assert late.json_on(bay_topic)[-1]["status"] == "done"
        assert late.on(f"{base}/availability")[-1].payload == b"offline"
    finally:
        late.close()


def test_a_dock_certificate_cannot_publish_as_another_dock(
        tmp_path: Path, dock_pki: Pki, brokers: Brokers, pki: MqttPki) -> None:
    broker = brokers(pki)
    cert, key = pki.issue("DOCK-8")
    config = _with_mqtt(write_dock_toml(tmp_path, dock_pki, [f"https://127.0.0.1:{free_port()}"]),
                        url=broker.tls_url, id="DOCK-7", ca=pki.ca, cert=cert, key=key,
                        heartbeat_s=0.2)
    fleet = Subscriber(broker.tls_port, ["bodycam-dock/#"], tls=(pki.ca, *pki.issue("fleet")))
    try:
        with dock_service(config) as process:
            wait_for(lambda: config.with_name("dock-state.json").exists(), timeout=30,
                     what="the empty bay seen")
            time.sleep(2)  # heartbeats, each refused
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            output = process.log.read_text()
        assert not [m for m in fleet.messages if m.topic.startswith("bodycam-dock/DOCK-7/")]
        assert output.count("refuses the dock's status") == 1, output
        assert "is [mqtt] id the CN of the dock's certificate" in output
    finally:
        fleet.close()


def _availability(fleet: Subscriber, base: str) -> list[bytes]:
    return [m.payload for m in fleet.on(f"{base}/availability")]


def test_a_broker_out_of_reach_never_holds_up_a_pull(device: Docked, tmp_path: Path) -> None:
    config = _with_mqtt(write_dock_toml(tmp_path, device.pki, [device.url]),
                        url=f"mqtt://127.0.0.1:{free_port()}", id="DOCK-7")
    with dock_service(config) as process:
        wait_for(lambda: config.with_name("dock-state.json").exists() and
                 status(config)["devices"].get("TEST-0001", {}).get("ok", False),
                 timeout=60, what="the device pulled with no broker")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert device.records("custody")


def test_under_systemd_the_dock_says_ready_pings_the_watchdog_and_says_stopping(
        device: Docked, tmp_path: Path) -> None:
    config = write_dock_toml(tmp_path, device.pki, [device.url])
    notify = NotifySocket(tmp_path / "notify")
    try:
        with dock_service(config, {"NOTIFY_SOCKET": str(notify.path),
                              "WATCHDOG_USEC": "1500000"}) as process:
            ready = notify.wait_for("READY=1")
            notify.wait_for("STATUS=1 done of 1 bay(s)", timeout=60)
            notify.pump(1.5)
            assert len(notify.pings(ready)) >= 2, notify.messages  # every WatchdogSec/3
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            notify.wait_for("STOPPING=1", timeout=5)
    finally:
        notify.close()


def test_an_mqtt_certificate_that_is_none_is_one_line_and_exit_2(
        tmp_path: Path, dock_pki: Pki) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    config = _with_mqtt(write_dock_toml(tmp_path, dock_pki, ["https://127.0.0.1:1"]),
                        url="mqtts://127.0.0.1:1", id="DOCK-7", cert=junk, key=junk)
    for command in ("serve", "status"):
        done = subprocess.run([*BODYCAM, "dock", command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"bodycam dock: config error in {config}: [mqtt] cert = "
                                      f"'{junk}': not a PEM certificate with its key")
        assert done.stderr.count("\n") == 1, done.stderr
