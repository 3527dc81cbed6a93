"""`bodycam demo`: the whole daemon on the simulated device, driven as an officer would drive it."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.chain import read_bodies
from agent.config import load_config
from agent.daemon import Daemon
from agent.state import Shutdown
from agent.verify import verify_store


def run_demo(config_path: Path | None, store: Path | None, seconds: float,
             mqtt: str | None = None) -> int:
    store = store or Path(tempfile.mkdtemp(prefix="bodycam-demo-"))
    config, config_path = load_config(config_path, store, mqtt)
    daemon = Daemon(config, config_path)
    thread = threading.Thread(target=daemon.run, name="daemon",
                              kwargs={"install_signals": False, "selfcheck_at_start": False})
    thread.start()
    if not daemon.ready.wait(30):
        raise RuntimeError("the daemon did not come up within 30 s")
    _say(f"device {config.device.id} up; store {store}")
    _say("pre-shift self-check")
    print(daemon.selfcheck().render(), flush=True)
    _say("press: recording starts, the notice is played")
    daemon.controls.press()
    time.sleep(seconds)
    _say(f"hold for {config.gpio.stop_hold_seconds:g} s: recording stops")
    daemon.controls.press(long=True)
    reached = daemon.telemetry is not None and daemon.telemetry.connected.is_set()
    daemon.post(Shutdown("demo finished"))
    thread.join()

    report = verify_store(store)
    records = _records(store)
    gaps = sum(1 for finding in report.findings if finding.kind in ("gap", "overlap"))
    first = sorted((store / "sealed").glob("*.ts"))
    print(f"\nself-check: {_selfcheck_line(records)}\n"
          f"notice:     {_notice_line(records)}\n"
          f"segments:   {report.segments} in {report.recordings} recording(s)\n"
          f"duration:   {report.recorded_us / 1e6:.1f} s of video "
          f"(including the pre-event buffer)\n"
          f"frames:     {report.video_frames}\n"
          f"gaps:       {gaps}\n"
          f"verify:     {report.summary()}\n"
          f"telemetry:  {_telemetry_line(daemon, reached)}")
    if first:
        print(f"play:       ffplay {first[0]}")
    return 0 if report.ok else 1


def _records(store: Path) -> list[dict[str, Any]]:
    return read_bodies(store / "chain.jsonl")


def _selfcheck_line(records: list[dict[str, Any]]) -> str:
    checks = [r for r in records if r["type"] == "self_check"]
    if not checks:
        return "not run"
    payload = checks[-1]["payload"]
    failing = [i["name"] for i in payload["items"] if i["status"] != "pass"]
    return (f"{payload['overall'].upper()}, {len(payload['items'])} items, sealed as record "
            f"{checks[-1]['seq']}" + (f" (not passed: {', '.join(failing)})" if failing else ""))


def _notice_line(records: list[dict[str, Any]]) -> str:
    notices = [r for r in records if r["type"] == "notice_played"]
    if not notices:
        return "not played"
    parts = notices[-1]["payload"]["parts"]
    return (f"played {', '.join(p['language'] for p in parts)} from {parts[0]['started']}, "
            f"sealed as record {notices[-1]['seq']}")


def _telemetry_line(daemon: Daemon, reached: bool) -> str:
    """Whether the demo reached a broker (`reached`: connected before shutdown)."""
    telemetry = daemon.telemetry
    if telemetry is None:
        return "off (no broker configured; --mqtt mqtt://host:port publishes)"
    kept = f"{len(telemetry.outbox)} event(s) left in {telemetry.outbox.path}"
    if not reached:
        return f"{daemon.config.mqtt.url} not reachable: {kept}"
    return (f"published to {daemon.config.mqtt.url}: {telemetry.delivered} event(s) "
            f"delivered on {telemetry.topics.events}, status and availability; {kept}")


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)
