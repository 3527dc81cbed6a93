#!/usr/bin/env python3
"""`bodycam verify` on year-old stores of growing length: throughput and peak memory.

Run from the repository root:

    python benchmarks/verify_year.py [--records 50000 100000 250000] [--single]

Each store is `benchmarks/year_store.py`'s (built once, cached). `bodycam verify` runs in
its own process, as an investigator runs it; peak memory is the largest sum of the
resident sizes of the verifier and its worker processes, sampled every 20 ms, and each
process's own VmHWM. `--single` also runs it in one process (no workers). The same run
measures, just before and after each run, what one core does of the one cost no code
here can cut, Ed25519 verification (`cryptography`, as the verifier calls it), and
prints the verifier's rate against it (the ratio: above 1 only with more than one core).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.year_store import cached

_RUN = ("import sys; from pathlib import Path; from agent.evidence.verify import verify_store; "
        "r = verify_store(Path(sys.argv[1]), workers=int(sys.argv[2])); "
        "print(r.records, r.ok, r.summary()[:120])")


def signatures_per_s(count: int = 4000) -> float:
    """One core's Ed25519 verifications per second, on records of a chain's size."""
    key = Ed25519PrivateKey.generate()
    data = os.urandom(1300)
    signature, public = key.sign(data), key.public_key()
    started = time.perf_counter()
    for _ in range(count):
        public.verify(signature, data)
    return count / (time.perf_counter() - started)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        queue += [int(child) for child in children]
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def verify(store: Path, workers: int | None) -> dict[str, float]:
    """One `bodycam verify` (or verify_store with `workers`) of `store`."""
    command = [sys.executable, "-m", "agent", "verify", str(store)] if workers is None else \
        [sys.executable, "-c", _RUN, str(store), str(workers)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_sum, hwm = 0, {}
    while process.poll() is None:
        pids = _tree(process.pid)
        peak_sum = max(peak_sum, sum(_status_kb(pid, "VmRSS") for pid in pids))
        for pid in pids:
            hwm[pid] = max(hwm.get(pid, 0), _status_kb(pid, "VmHWM"))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    out = process.stdout.read().decode() if process.stdout else ""
    if process.returncode != 0:
        sys.exit(f"verify_year: verify of {store} failed: {out[-400:]}")
    records = sum(1 for _ in (store / "chain.jsonl").open("rb"))
    return {"seconds": seconds, "records": records, "per_s": records / seconds,
            "peak_mb": peak_sum / 1024, "main_mb": hwm.get(process.pid, 0) / 1024,
            "worker_mb": max([v for k, v in hwm.items() if k != process.pid] or [0]) / 1024,
            "processes": len(hwm)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[50_000, 100_000, 250_000])
    parser.add_argument("--single", action="store_true", help="also in one process")
    args = parser.parse_args()
    stores = {records: cached(records) for records in args.records}
    print(f"cores: {os.cpu_count()}; one core's Ed25519 verifications measured just before "
          "and after each run (the machine is shared: its load moves)")
    print(f"{'records':>8} {'mode':>10} {'s':>7} {'records/s':>10} {'1-core sigs/s':>13} "
          f"{'ratio':>6} {'peak MB (sum)':>13} {'main MB':>8} {'worker MB':>9} {'load':>5}")
    for store in stores.values():
        modes: list[int | None] = [None, 0] if args.single else [None]
        for workers in modes:
            before = signatures_per_s()
            got = verify(store, workers)
            ceiling = (before + signatures_per_s()) / 2
            mode = "bodycam" if workers is None else "1 process"
            print(f"{got['records']:>8,} {mode:>10} {got['seconds']:>7.1f} "
                  f"{got['per_s']:>10,.0f} {ceiling:>13,.0f} {got['per_s'] / ceiling:>6.2f} "
                  f"{got['peak_mb']:>13.1f} {got['main_mb']:>8.1f} {got['worker_mb']:>9.1f} "
                  f"{os.getloadavg()[0]:>5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
