#!/usr/bin/env python3
"""Custody's proof of possession: what does the device spend checking one report?

Run from the repository root:

    python benchmarks/custody_proof.py [--files 64] [--mib 16] [--repeats 3]

Writes `--files` files of `--mib` MiB of random bytes (a day's footage in
miniature), then, alternating `--repeats` times, medians:

1. **device**: `agent.device.offload.custody.check_proofs`, exactly as a custody
   report runs it: HMAC-SHA256 under a nonce over each file, read from disk (the
   check drops each file's pages from the cache after reading it, so every run
   reads from the disk, not from memory);
2. **dock**: `agent.dock.pull._prove` for each file, the SHA-256 and the proof in one
   read, as the dock builds its report;
3. for comparison, plain SHA-256 and keyed BLAKE2b over the same files, in memory.

Prints wall and CPU seconds per GiB, and MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.device.offload.custody import SealedFile, check_proofs
from agent.dock.pull import _prove
from agent.evidence.possession import file_proof


def timed(work: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        (root / "sealed").mkdir()
        files, payloads = [], []
        for seq in range(1, args.files + 1):
            data = secrets.token_bytes(args.mib * 2**20)
            name = f"sealed/{seq:08d}.ts"
            (root / name).write_bytes(data)
            files.append(SealedFile(seq, name, hashlib.sha256(data).hexdigest(), len(data), ""))
            payloads.append(data)
        os.sync()
        gib = args.files * args.mib / 1024
        nonce = secrets.token_urlsafe(24)
        proofs = [(f, file_proof(root / f.file, nonce)) for f in files]
        key = secrets.token_bytes(32)
        runs: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.repeats):
            for name, work in (
                ("device: check_proofs (HMAC-SHA256, from disk)",
                 lambda: check_proofs(root, nonce, proofs)),
                ("dock: SHA-256 + proof in one read (from disk)",
                 lambda: [_prove(root, {"file": f.file, "sha256": f.sha256}, nonce)
                          for f in files]),
                ("SHA-256 alone, in memory",
                 lambda: [hashlib.sha256(d).digest() for d in payloads]),
                ("keyed BLAKE2b, in memory",
                 lambda: [hashlib.blake2b(d, key=key).digest() for d in payloads]),
            ):
                runs.setdefault(name, []).append(timed(work))
    print(f"{args.files} files x {args.mib} MiB = {gib:.2f} GiB, median of {args.repeats}")
    for name, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        print(f"  {name:48s} {wall / gib:6.2f} s/GiB wall  {cpu / gib:6.2f} CPU-s/GiB  "
              f"{gib * 1024 / wall * 1.048576:7.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
