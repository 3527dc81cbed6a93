#!/usr/bin/env python3
"""A year-old device against a fresh one: start, memory, status, chain reads, a dock's pull.

Run from the repository root:

    python benchmarks/year_old.py [--records 250000] [--runs 5] [--json FILE]

The year-old store (`benchmarks/year_store.py`: about `--records` signed records, the
media of all but the last day purged after custody, 300 segments still held) is built
once and cached under ~/.cache/bodycam-bench. The baseline, measured in the same run,
is a fresh store: empty for the start, one day old (the same last day) for the rest.

1. Start: `bodycam run` (the simulated device, 640x480 in real time, as systemd runs it:
   NOTIFY_SOCKET set) to READY=1, `--runs` times on each store; peak memory is the
   process's VmHWM 2 s after READY. The year's first start, which builds the chain
   index from the whole chain (once, after the upgrade), is reported apart.
2. Status: CPU (`time.process_time`) per MQTT status document (`device_status`, the
   export backlog from the running ledger, and its JSON), 500 times, after one new record.
3. `GET /v1/chain?from=<head-99>` (the last 100 records) over mutual TLS from the
   device's offload server (its own process, as on the device), 50 times; wall time.
4. A dock's incremental pull of one new day: the dock's evidence folder holds the chain
   up to the day before; `bodycam dock pull` fetches the day's records and its 300
   files, verifies the copy, reports custody. Wall time, the device's CPU, and the
   dock's `verify_store` of the whole copy timed apart (the dock's verifier reads
   every record it holds, by design: docs/docking.md).

Targets: start within 0.2 s of the fresh store's and peak memory within 10 MB; status
under 5 ms of CPU; the last 100 records under 20 ms; the device's part of a pull
independent of the chain's length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import load_config
from agent.device.chain_index import ChainIndex
from agent.device.offload.custody import Ledger
from agent.device.telemetry.status import StatusSources, device_status
from agent.dock.pull import VERIFIED, DockLink, open_session, pull
from agent.evidence.chain import Chain
from agent.evidence.keys import PUBLIC_NAME, load_or_create_device_key
from agent.evidence.verify import verify_copy, verify_store
from agent.pki import DockPki
from benchmarks.cpu import process_cpu_seconds
from benchmarks.dock_pull import serve
from benchmarks.year_store import DEVICE, build, cached
from hal.clock import SimulatedClock
from tests.support.device import write_device_config

IDLE = {"device": DEVICE, "officer": "", "state": "standby", "health": "ok", "alarms": [],
        "recording": None, "current_segment": None, "longest_unsynced_ms": 0,
        "unexplained_interruptions": [], "chain_head": {"seq": 0, "hash": "0" * 64}}


def start_to_ready(config: Path, store: Path, settle_s: float = 2.0) -> tuple[float, int]:
    """Seconds from process start to READY=1, and the peak RSS (kB) `settle_s` after it."""
    with tempfile.TemporaryDirectory() as folder, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        notify = Path(folder) / "notify"
        sock.bind(str(notify))
        sock.settimeout(300)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
        started = time.perf_counter()
        daemon = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config),
                                   "--store", str(store)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096).split(b"\n"):
                pass
            seconds = time.perf_counter() - started
            time.sleep(settle_s)
            status = Path(f"/proc/{daemon.pid}/status").read_text()
            peak = int(next(line.split()[1] for line in status.splitlines()
                            if line.startswith("VmHWM:")))
            return seconds, peak
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(120)


def status_cpu_ms(store: Path, config: Any, calls: int = 500) -> float:
    """CPU per status document, the ledger caught up with one new record first."""
    index = ChainIndex.open(store / "chain.jsonl")
    ledger = Ledger(index)
    chain = Chain(store / "chain.jsonl", load_or_create_device_key(store / "keys"),
                  lambda: (DEVICE, ""), SimulatedClock().state, "benchmark")
    chain.append("alarm", {"alarm": "hot", "raised": True, "value": "76 °C"})
    sources = StatusSources(config, lambda: IDLE, SimulatedClock(), ledger)
    started = time.process_time()
    for _ in range(calls):
        json.dumps(device_status(sources))
    spent = time.process_time() - started
    chain.close()
    index.close()
    return spent / calls * 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pki(store: Path) -> DockPki:
    keys, dock = store / "keys", store / "dock"
    return DockPki(keys / "device.crt", keys / "device.key", keys / "dock-ca.pem",
                   dock / "dock.crt", dock / "dock.key", dock / "device-ca.pem")


class Device:
    """The offload server over a store, in a process of its own, as on the device."""

    def __init__(self, store: Path) -> None:
        self.port = _free_port()
        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Event()
        self.process = spawn.Process(target=serve, args=(store, self.port, ready), daemon=True)
        self.process.start()
        if not ready.wait(120):
            sys.exit("year_old: the offload server did not start")
        self.url = f"https://127.0.0.1:{self.port}"
        self.link = DockLink(_pki(store).dock_cert, _pki(store).dock_key,
                             _pki(store).device_ca)

    def close(self) -> None:
        self.process.terminate()
        self.process.join()


async def _chain_tail_ms(device: Device, head: int, gets: int) -> float:
    context = device.link.context()
    times = []
    async with open_session(device.url, context, 1) as session:
        for _ in range(gets + 1):  # the first sets up TLS; not counted
            started = time.perf_counter()
            async with session.get("v1/chain", params={"from": str(max(1, head - 99))}) as r:
                lines = (await r.read()).count(b"\n")
            times.append(time.perf_counter() - started)
            assert r.status == 200 and lines == min(100, head), (r.status, lines)
    return statistics.median(times[1:]) * 1000


def _lines(chain: Path) -> int:
    with chain.open("rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def dock_folder(store: Path, out: Path, day_start_line: int) -> float:
    """The dock's evidence folder as it was the day before: the chain up to the new day,
    verified (the state the verifier keeps for the next pull, timed: returned) and its
    manifest, as the day before's pull left them."""
    folder = out / DEVICE
    (folder / "keys").mkdir(parents=True)
    shutil.copy(store / "keys" / PUBLIC_NAME, folder / "keys" / PUBLIC_NAME)
    with (store / "chain.jsonl").open("rb") as source, \
            (folder / "chain.jsonl").open("wb") as copy:
        for number, line in enumerate(source, 1):
            if number >= day_start_line:
                break
            copy.write(line)
    started = time.perf_counter()
    report, _ = verify_copy(folder, {}, folder / VERIFIED)
    seconds = time.perf_counter() - started
    if not report.ok:
        sys.exit(f"year_old: the dock's copy of the days before does not verify: "
                 f"{report.summary()}")
    (folder / "manifest.json").write_text(json.dumps({
        "device": DEVICE, "head": report.head, "key_fingerprint": report.key_fingerprint,
        "held": [], "custody_seq": None}))
    return seconds


def last_day_start(chain: Path) -> int:
    """Line of the last day's boot record: the day the dock has not pulled yet."""
    start = 1
    with chain.open("rb") as f:
        for number, line in enumerate(f, 1):
            if b',"type":"boot",' in line:
                start = number
    return start


def incremental_pull(store: Path, work: Path, day_line: int, whole: bool = True
                     ) -> dict[str, float]:
    """The pull of the last day into a folder holding the days before, verified; and, when
    `whole`, `verify_store` of the whole copy after it, for comparison."""
    out = work / "dock-out"
    before_s = dock_folder(store, out, day_line)
    device = Device(store)
    try:
        cpu = process_cpu_seconds(device.process.pid or 0)
        started = time.perf_counter()
        result = asyncio.run(pull(device.url, out, device.link, "benchmark"))
        seconds = time.perf_counter() - started
        device_cpu = process_cpu_seconds(device.process.pid or 0) - cpu
    finally:
        device.close()
    if not result.ok:
        sys.exit(f"year_old: the pull failed: {result.problem or result.verify.summary()}")
    verify_s = float("nan")
    if whole:
        started = time.perf_counter()
        verify_store(out / DEVICE)
        verify_s = time.perf_counter() - started
    shutil.rmtree(out)
    return {"pull_s": seconds, "device_cpu_s": device_cpu, "dock_verify_s": verify_s,
            "files": len(result.fetched), "dock_first_verify_s": before_s,
            "resumed": result.resumed_from is not None}


def measure(name: str, store: Path, work: Path, runs: int, empty: bool,
            pull_only: bool = False) -> dict[str, Any]:
    config_path = write_device_config(work / f"{name}.toml", store, realtime="true",
                                      width=640, height=480, export_deadline_hours=8784,
                                      pre_event_seconds=5.0)
    figures: dict[str, Any] = {"records": 0 if empty else _lines(store / "chain.jsonl")}
    day_line = 0 if empty else last_day_start(store / "chain.jsonl")
    if pull_only:
        if empty:
            shutil.rmtree(store, ignore_errors=True)
            build(store, 1)
            day_line = 1
        figures.update(incremental_pull(store, work, day_line, whole=False))
        return figures
    if not empty:
        first, peak = start_to_ready(config_path, store)
        figures["first_start_s"], figures["first_start_peak_kb"] = first, peak
        index = store / "chain-index.sqlite"
        figures["index_bytes"] = index.stat().st_size
    starts = []
    for _ in range(runs):
        if empty:
            shutil.rmtree(store, ignore_errors=True)
        starts.append(start_to_ready(config_path, store))
    figures["start_s"] = statistics.median(s for s, _ in starts)
    figures["peak_kb"] = statistics.median(p for _, p in starts)
    if empty:  # the rest on a store one day old, the year's last day alone
        shutil.rmtree(store)
        build(store, 1)
        day_line = 1
    config, _ = load_config(config_path)
    figures["status_cpu_ms"] = status_cpu_ms(store, config)
    head = _lines(store / "chain.jsonl")
    device = Device(store)
    try:
        figures["chain_tail_ms"] = asyncio.run(_chain_tail_ms(device, head, 50))
    finally:
        device.close()
    figures.update(incremental_pull(store, work, day_line))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=250_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pull-only", action="store_true",
                        help="only the dock's pull of the last day")
    args = parser.parse_args()
    started = time.perf_counter()
    source = cached(args.records)
    print(f"year-old store: {source} ({time.perf_counter() - started:.1f} s to get)",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bodycam-year-") as tmp:
        work = Path(tmp)
        shutil.copytree(source, work / "year")
        fresh = measure("fresh", work / "fresh", work, args.runs, True, args.pull_only)
        year = measure("year", work / "year", work, args.runs, False, args.pull_only)
    if args.pull_only:
        for name, figures in (("fresh", fresh), ("year", year)):
            print(f"{name}: {figures['records']} records; pull of the last day "
                  f"{figures['pull_s']:.2f} s (device CPU {figures['device_cpu_s']:.2f} s, "
                  f"{figures['files']} files, verification resumed: {figures['resumed']}); "
                  f"the days before's whole verification {figures['dock_first_verify_s']:.1f} s")
    else:
        report(fresh, year, imports_peak_kb())
    if args.json:
        args.json.write_text(json.dumps({"fresh": fresh, "year": year}, indent=2))
    return 0


def imports_peak_kb() -> int:
    """Peak RSS of an interpreter that has only imported the daemon (and what it imports)."""
    code = ("import agent.device.daemon, pathlib; print(next(l.split()[1] for l in "
            "pathlib.Path('/proc/self/status').read_text().splitlines() "
            "if l.startswith('VmHWM:')))")
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True).stdout)


def report(fresh: dict[str, Any], year: dict[str, Any], imports_kb: int) -> None:
    rows = [
        ("chain records", "records", "{:.0f}"),
        ("start to READY=1, median (s)", "start_s", "{:.3f}"),
        ("peak RSS 2 s after READY (MB)", "peak_kb", "{:.1f}"),
        ("CPU per status document (ms)", "status_cpu_ms", "{:.3f}"),
        ("GET /v1/chain, last 100 records (ms)", "chain_tail_ms", "{:.2f}"),
        ("dock pull of the last day (s)", "pull_s", "{:.2f}"),
        ("  of which the device's CPU (s)", "device_cpu_s", "{:.2f}"),
        ("  the dock's verify_store of its whole copy (s)", "dock_verify_s", "{:.2f}"),
        ("  files fetched", "files", "{:.0f}"),
    ]
    print(f"{'':<44} {'fresh':>10} {'year-old':>10} {'year - fresh':>13}")
    for label, key, form in rows:
        scale = 1 / 1024 if key == "peak_kb" else 1
        a, b = fresh[key] * scale, year[key] * scale
        print(f"{label:<44} {form.format(a):>10} {form.format(b):>10} "
              f"{form.format(b - a):>13}")
    print(f"year-old first start (builds the index from the whole chain): "
          f"{year['first_start_s']:.2f} s, peak {year['first_start_peak_kb'] / 1024:.1f} MB; "
          f"index {year['index_bytes'] / 1e6:.1f} MB")
    print(f"peak RSS of an interpreter that only imports the daemon: {imports_kb / 1024:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
