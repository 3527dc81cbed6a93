#!/usr/bin/env python3
"""`bodycam dock status --device`: what does the per-item view cost on a long chain?

Run from the repository root:

    python benchmarks/dock_items.py [--records 100000]

Builds a synthetic evidence folder in a temporary directory: a chain of `--records`
sealed-file records (well-formed lines with a dummy signature: the view parses, it does
not verify), an archive journal naming the first half, 1,000 files held in `sealed/`;
then times `agent.dock.items.device_items` over it and prints the wall time, the peak
RSS and the totals per stage. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import resource
import tempfile
import time
from pathlib import Path

from agent.dock.items import device_items

DEVICE = "BENCH-0001"


def build(folder: Path, records: int) -> None:
    for sub in ("sealed", "partial", "receipts"):
        (folder / sub).mkdir(parents=True)
    sig = base64.b64encode(b"x" * 64).decode()
    with (folder / "chain.jsonl").open("wb") as chain:
        for seq in range(1, records + 1):
            body = {"seq": seq, "type": "segment_sealed", "wall": "2026-12-03T00:00:00.000000Z",
                    "payload": {"file": f"sealed/{seq:08d}.ts", "size": 1000,
                                "sha256": "ab" * 32, "recording": "r"}}
            line = json.dumps(body, separators=(",", ":"))[:-1] + f',"sig":"{sig}"}}\n'
            chain.write(line.encode())
    with (folder / "archived.jsonl").open("wb") as journal:
        for seq in range(1, records // 2):
            journal.write(json.dumps({"seq": seq, "file": f"sealed/{seq:08d}.ts", "key": "k",
                                      "version_id": "v", "size": 1000, "sha256": "ab" * 32,
                                      "retain_until": "2027-12-03T00:00:00Z"}).encode() + b"\n")
    for seq in range(records // 2, min(records, records // 2 + 1000)):
        (folder / "sealed" / f"{seq:08d}.ts").write_bytes(b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp) / DEVICE, args.records)
        chain_mb = (Path(tmp) / DEVICE / "chain.jsonl").stat().st_size / 1e6
        started = time.perf_counter()
        view = device_items(Path(tmp), DEVICE)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    totals = {stage: n for stage, n in view["totals"].items() if n}
    print(f"{args.records} records ({chain_mb:.1f} MB chain): {seconds:.2f} s, "
          f"peak RSS {peak:.0f} MB (the whole process), {totals}")


if __name__ == "__main__":
    main()
