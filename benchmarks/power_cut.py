#!/usr/bin/env python3
"""Power cuts that lose the page cache: media lost per cut, against the documented bound.

Run from the repository root, as root (it mounts a FUSE file system):

    python benchmarks/power_cut.py [--cuts 200] [--baseline-cuts 100]

1. Power cuts: `bodycam run` (the simulated device of tests/support/device.py: 320x240 in real
   time, 1 s segments, `flush_interval = 0.5`) records onto the power-cut file system
   (tests/support/powercut_fs.py: nothing is durable before its fsync). `--cuts` times, at a
   random moment 0.3 to 2.5 s into the resumed recording, the file system's process is killed
   (every un-synced byte and name is gone) and then the daemon (SIGKILL); the file system is
   mounted again on what survived and the daemon started on it, which recovers and resumes by
   itself. Media lost per cut is the cut's wall time minus the wall time of the last packet on
   disk, as the sealed interruption record states it; where no packet of the recording
   survived, the time since its `record_start` (a floor).
2. Baseline, in the same run: the same, but only the daemon is killed (SIGKILL) and the file
   system keeps what it was given: the crash the older power-cut tests and
   benchmarks/power_cuts.py model, where the operating system keeps its page cache.

Bound (docs/recorder.md): `flush_interval` + one frame = 533 ms here. It exits 0 after printing
(it measures, it does not judge), and 1 if a store does not verify or a cut was not exactly one
interruption.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.power_cuts import BOUND_S, CutRecorder, percentile


def campaign(root: Path, how: str, count: int, rng: random.Random
             ) -> tuple[CutRecorder, float, list[str]]:
    """`count` cuts of one recording: the recorder (closed), the wall time taken, and what is
    wrong with the store at the end (nothing, when it verifies and each cut is one
    interruption)."""
    recorder = CutRecorder(root)
    started = time.monotonic()
    try:
        recorder.campaign([how] * count, rng, progress)
        recorder.stop()
        verified = recorder.verify()
        problems = [*recorder.findings, *(line for line in verified.stdout.splitlines()
                                          if verified.returncode and not line.startswith("note"))]
        if len(recorder.interruptions()) != count:
            problems.append(f"{len(recorder.interruptions())} interruptions for {count} cuts")
    finally:
        recorder.close()
    return recorder, time.monotonic() - started, problems


def progress(done: int) -> None:
    if done % 25 == 0:
        print(f"  {done} cuts", flush=True)


def row(name: str, lost: list[float]) -> str:
    return (f"{name:<40} {len(lost):>4}   p50 {percentile(lost, 50) * 1000:6.0f} ms   "
            f"p99 {percentile(lost, 99) * 1000:6.0f} ms   max {max(lost) * 1000:6.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--baseline-cuts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bodycam-power-cut-"))
    rng = random.Random(args.seed)
    try:
        print(f"{args.cuts} power cuts (page cache lost) ...", flush=True)
        power, power_s, power_problems = campaign(root / "power", "random", args.cuts, rng)
        print(f"{args.baseline_cuts} process kills (page cache kept: the baseline) ...",
              flush=True)
        kill, kill_s, kill_problems = campaign(root / "kill", "process", args.baseline_cuts, rng)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lost = [cut.lost_s for cut in power.cuts if cut.lost_s is not None]
    survived = [cut.lost_s for cut in power.cuts
                if cut.lost_s is not None and not cut.nothing_survived]
    baseline = [cut.lost_s for cut in kill.cuts if cut.lost_s is not None]
    print(f"\nmedia lost per cut{'':<22} cuts")
    print(row("power cut, every cut", lost))
    print(row("power cut, where a packet survived", survived))
    print(row("baseline: process killed, cache kept", baseline))
    print(f"\nbound (flush_interval + fdatasync allowance + one frame): {BOUND_S * 1000:.0f} ms; "
          "power cuts over it: "
          f"{sum(x > BOUND_S for x in lost)} of {len(lost)}; cuts that left no packet of the "
          f"recording: {sum(cut.nothing_survived for cut in power.cuts)}")
    print(f"ratio power cut / baseline:   p50 {percentile(lost, 50) / percentile(baseline, 50):.1f}"
          f"   p99 {percentile(lost, 99) / percentile(baseline, 99):.1f}"
          f"   max {max(lost) / max(baseline):.1f}")
    print(f"wall time: {power_s:.0f} s for {args.cuts} power cuts, {kill_s:.0f} s for "
          f"{args.baseline_cuts} process kills")
    for name, problems in (("power cuts", power_problems), ("baseline", kill_problems)):
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
    return 1 if power_problems or kill_problems else 0


if __name__ == "__main__":
    sys.exit(main())
