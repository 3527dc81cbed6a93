"""`bodycam demo`: the whole daemon on the simulated device, driven as an officer would drive it."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from agent.config import load_config
from agent.daemon import Daemon
from agent.state import Shutdown
from agent.verify import verify_store


def run_demo(config_path: Path | None, store: Path | None, seconds: float) -> int:
    store = store or Path(tempfile.mkdtemp(prefix="bodycam-demo-"))
    config, config_path = load_config(config_path, store)
    daemon = Daemon(config, config_path)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False},
                              name="daemon")
    thread.start()
    if not daemon.ready.wait(30):
        raise RuntimeError("the daemon did not come up within 30 s")
    _say(f"device {config.device.id} up; store {store}")
    _say("press: recording starts")
    daemon.controls.press()
    time.sleep(seconds)
    _say(f"hold for {config.gpio.stop_hold_seconds:g} s: recording stops")
    daemon.controls.press(long=True)
    daemon.post(Shutdown("demo finished"))
    thread.join()

    report = verify_store(store)
    gaps = sum(1 for finding in report.findings if finding.kind in ("gap", "overlap"))
    first = sorted((store / "sealed").glob("*.ts"))
    print(f"\nsegments: {report.segments} in {report.recordings} recording(s)\n"
          f"duration: {report.recorded_us / 1e6:.1f} s of video "
          f"(including the pre-event buffer)\n"
          f"frames:   {report.video_frames}\n"
          f"gaps:     {gaps}\n"
          f"verify:   {report.summary()}")
    if first:
        print(f"play:     ffplay {first[0]}")
    return 0 if report.ok else 1


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)
