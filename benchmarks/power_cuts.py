#!/usr/bin/env python3
"""Power cuts: media lost per cut, and the time recovery takes at start.

Run from the repository root:

    python benchmarks/power_cuts.py [--cuts 200] [--segments 1000]

1. Cuts: `bodycam run` on the simulated device (320x240, real time, 1 s segments,
   flush every 0.5 s) is killed with SIGKILL at a random moment 0.3 to 2.5 s into
   each recording and started again; it recovers and resumes by itself. Media lost
   per cut is the kill's wall time minus the wall time of the last packet on disk,
   as the sealed interruption record states it. Also printed: restart to recording
   again (process start, imports, recovery, first record_start).
2. Recovery on a full store: a recording of `--segments` segments (made as fast as
   the encoder goes) is cut by SIGKILL; the time of the recovery step alone
   (the chain index opened and caught up, `move_orphans_back`, `recover` and the
   unexplained interruptions, as the daemon calls them at start) is measured on
   that store, median of 5 copies.

Target: max loss at most 1.0 s + one frame; recovery under 1 s at 1,000 segments.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import load_config
from agent.device.chain_index import ChainIndex
from agent.device.recording.recovery import move_orphans_back, recover
from agent.evidence.chain import Chain, read_bodies
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from hal.camera.factory import open_camera
from hal.clock import SimulatedClock
from tests.support.device import (
    open_recordings,
    spawn_daemon,
    trigger_start,
    wait_for,
    wall_seconds,
    write_device_config,
)


def cuts(root: Path, count: int, rng: random.Random) -> tuple[list[float], list[float]]:
    store = root / "store"
    config = write_device_config(root / "cuts.toml", store, realtime="true",
                                 segment_seconds=1.0, pre_event_seconds=0.0)
    daemon = spawn_daemon(config, store)
    trigger_start(config)
    kills, restarts = [], []
    for n in range(count):
        wait_for(lambda: bool(open_recordings(store)), timeout=30, what="recording")
        time.sleep(rng.uniform(0.3, 2.5))
        kills.append(time.time())
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        before = open_recordings(store)
        started = time.monotonic()
        daemon = spawn_daemon(config, store)
        wait_for(lambda b=before: bool(open_recordings(store) - b), timeout=30,
                 what="the resumed recording")
        restarts.append(time.monotonic() - started)
        if (n + 1) % 20 == 0:
            print(f"  {n + 1} cuts", flush=True)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    interruptions = [b["payload"] for b in read_bodies(store / "chain.jsonl")
                     if b["type"] == "interruption"]
    assert len(interruptions) == count, f"{len(interruptions)} interruptions for {count} cuts"
    lost = [kill - wall_seconds(cut["start"])
            for kill, cut in zip(kills, interruptions, strict=True)]
    return lost, restarts


def recovery_time(root: Path, segments: int) -> tuple[float, int]:
    store = root / "full"
    config = write_device_config(root / "full.toml", store, realtime="false",
                                 segment_seconds=0.5, pre_event_seconds=0.0)
    daemon = spawn_daemon(config, store)
    trigger_start(config)
    wait_for(lambda: len(list((store / "sealed").glob("*.ts"))) >= segments, timeout=600,
             what=f"{segments} segments")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    layout = open_camera(load_config(config)[0]).layout
    times = []
    for attempt in range(5):
        copy = root / f"full-{attempt}"
        shutil.copytree(store, copy, ignore=shutil.ignore_patterns("control.sock"))
        copy_store = Store(copy)
        chain = Chain(copy_store.chain, load_or_create_device_key(copy_store.keys),
                      lambda: ("BENCH", ""), SimulatedClock().state, "bench")
        started = time.perf_counter()
        index = ChainIndex.open(copy_store.chain)  # caught up, as the daemon opens it at start
        history = index.start_records(copy_store.sealed)
        move_orphans_back(copy_store, history, chain.head.seq)
        recover(copy_store, chain, layout, history)
        index.unexplained()  # the daemon's list for the status
        times.append(time.perf_counter() - started)
        index.close()
        chain.close()
    held = len(list((store / "sealed").glob("*.ts")))
    return statistics.median(times), held


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bodycam-cuts-"))
    print(f"{args.cuts} SIGKILLs of bodycam run ...", flush=True)
    lost, restarts = cuts(root, args.cuts, random.Random(args.seed))
    print(f"recovery on a store of {args.segments} segments ...", flush=True)
    recovery, held = recovery_time(root, args.segments)
    frame = 1 / 30
    print(f"\nmedia lost per cut ({args.cuts} cuts)   p50 {pct(lost, 50) * 1000:6.0f} ms   "
          f"p99 {pct(lost, 99) * 1000:6.0f} ms   max {max(lost) * 1000:6.0f} ms   "
          f"(target max <= {(1.0 + frame) * 1000:.0f} ms: "
          f"{'met' if max(lost) <= 1.0 + frame else 'NOT met'})")
    print(f"restart to recording again            p50 {pct(restarts, 50) * 1000:6.0f} ms   "
          f"p99 {pct(restarts, 99) * 1000:6.0f} ms   max {max(restarts) * 1000:6.0f} ms")
    print(f"recovery step, store of {held} segments   median of 5: {recovery * 1000:.0f} ms "
          f"(target < 1000 ms: {'met' if recovery < 1.0 else 'NOT met'})")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
