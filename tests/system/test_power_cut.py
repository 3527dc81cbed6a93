"""Power cuts: `bodycam run` killed with SIGKILL at random moments, restarted, and accounted for."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from agent.evidence.chain import read_bodies
from agent.evidence.verify import verify_store
from tests.support.device import (
    open_recordings,
    spawn_daemon,
    trigger_start,
    wait_for,
    wall_seconds,
)

TRIALS = 20
FLUSH_S = 0.5  # the test device's [recorder] flush_interval
FRAME_S = 1 / 30


def records(store: Path) -> list[dict]:
    return read_bodies(store / "chain.jsonl")


def test_random_sigkills_are_recovered_sealed_and_resumed(write_config, tmp_path: Path) -> None:
    config = write_config(realtime="true", segment_seconds=1.0, pre_event_seconds=0.0)
    store = tmp_path / "store"
    rng = random.Random(20261128)
    kills: list[float] = []
    daemon = spawn_daemon(config, store)
    trigger_start(config)
    for _ in range(TRIALS):
        wait_for(lambda: bool(open_recordings(store)), timeout=30, what="recording")
        time.sleep(rng.uniform(0.3, 2.5))
        kills.append(time.time())
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        daemon = spawn_daemon(config, store)
    wait_for(lambda: bool(open_recordings(store)), timeout=30, what="the last resume")
    time.sleep(1.0)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0

    report = verify_store(store)
    assert report.ok, report.summary()
    chain = records(store)
    interruptions = [r["payload"] for r in chain if r["type"] == "interruption"]
    assert len(interruptions) == TRIALS, "each cut is exactly one interruption"
    stops = {r["payload"]["recording"]: r["payload"] for r in chain if r["type"] == "record_stop"}
    starts = {r["seq"]: r["payload"] for r in chain if r["type"] == "record_start"}
    lost = []
    for kill, cut in zip(kills, interruptions, strict=True):
        assert stops[cut["recording_before"]]["reason"] == "interrupted"
        assert starts[cut["recording_after"]]["trigger"] == "resume_after_interruption"
        lost.append(kill - wall_seconds(cut["start"]))
    print(f"\nmedia lost per cut over {TRIALS} SIGKILLs: median {sorted(lost)[TRIALS // 2]:.3f} s,"
          f" max {max(lost):.3f} s")
    assert max(lost) <= FLUSH_S + FRAME_S, f"media lost per cut: {sorted(lost)[-3:]} s"
    assert not list((store / "open").iterdir()), "nothing is left unsealed"
    recovered = [r["payload"] for r in chain
                 if r["type"] == "segment_sealed" and r["payload"].get("recovered")]
    assert recovered, "cuts landed mid-segment and left segments to recover"
    for segment in recovered:
        subprocess.run(["ffprobe", "-v", "error", str(store / segment["file"])], check=True)


def test_a_cut_while_under_voltage_is_sealed_with_that_cause(write_config, tmp_path: Path) -> None:
    """The firmware reports under-voltage (the simulated board's get_throttled), the alarm
    is sealed, and the board browns out (SIGKILL): the next start seals the gap as
    `under_voltage`, not as an unexplained power loss."""
    config = write_config(realtime="true", check_interval=0.2)
    store = tmp_path / "store"
    daemon = spawn_daemon(config, store)
    trigger_start(config)
    wait_for(lambda: bool(open_recordings(store)), timeout=30, what="recording")
    (store / "sim" / "firmware" / "get_throttled").write_text("50005\n")
    wait_for(lambda: any(r["type"] == "alarm" and r["payload"]["alarm"] == "under_voltage"
                         for r in records(store)), timeout=10, what="the under-voltage alarm")
    wait_for((store / "power-trouble").exists, timeout=5, what="the marker")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    (store / "sim" / "firmware" / "get_throttled").write_text("0\n")  # a fresh boot
    daemon = spawn_daemon(config, store)
    wait_for(lambda: any(r["type"] == "interruption" for r in records(store)), timeout=30,
             what="the interruption")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    [cut] = [r["payload"] for r in records(store) if r["type"] == "interruption"]
    assert cut["cause"] == "under_voltage"
    assert "the firmware reported under-voltage" in cut["detail"]
    alarms = [(r["payload"]["alarm"], r["payload"]["raised"]) for r in records(store)
              if r["type"] == "alarm"]
    assert ("under_voltage", True) in alarms and ("throttled", True) in alarms
