"""The daemon's start time: from process start to READY=1 on the systemd notify socket.

Runs `bodycam run` as systemd would (NOTIFY_SOCKET set, a fresh store each time) with
the simulated device (config/sim.toml) and with the Pi's configuration
(config/default.toml, where on a machine without the hardware every part is absent),
and reports the median and the worst of --runs starts, against a bare interpreter's
start. Usage: python benchmarks/startup.py [--runs 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"sim": ROOT / "config" / "sim.toml", "pi": ROOT / "config" / "default.toml"}
TARGET_S = 1.0


def time_to_ready(config: Path, folder: Path) -> float:
    notify = folder / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(60)
        env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER",)}
        env["NOTIFY_SOCKET"] = str(notify)
        started = time.perf_counter()
        daemon = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config),
                                   "--store", str(folder / "store")], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096).split(b"\n"):
                pass
            return time.perf_counter() - started
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)


def bare_interpreter() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    bare = [bare_interpreter() for _ in range(args.runs)]
    figures["python -c pass"] = {"median_s": statistics.median(bare), "max_s": max(bare)}
    for name, config in CONFIGS.items():
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                times.append(time_to_ready(config, Path(folder)))
        figures[f"bodycam run ({name})"] = {"median_s": statistics.median(times),
                                            "max_s": max(times)}
    print(f"{'start to READY=1':<28} {'median':>8} {'worst':>8}   (runs: {args.runs}, "
          f"target < {TARGET_S:g} s)")
    for name, figure in figures.items():
        print(f"{name:<28} {figure['median_s']:>7.3f}s {figure['max_s']:>7.3f}s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
