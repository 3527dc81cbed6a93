#!/usr/bin/env python3
"""The dock's archive writes: what does one sealed file cost to archive and read back?

Run from the repository root:

    python benchmarks/archive_put.py [--files 8] [--mib 32]

Starts a private SeaweedFS (tests/support/s3server.py) on loopback, writes `--files`
files of `--mib` MiB of random bytes, then archives them twice into new buckets:

1. **archive**: `Archive.put_file`, as a pull does: PutObject under COMPLIANCE
   retention with the sealed SHA-256 (which the store checks), then HeadObject of the
   version (size, checksum, lock, retention) before it counts;
2. **plain**: boto3's `put_object` of the same files, no lock, no checksum given (boto3
   computes its default CRC32), nothing read back: the baseline.

Prints wall time, Mbit/s and the dock's CPU-seconds per GiB (this process only; the
server's CPU is its own). The store runs on the same 2 cores: a store elsewhere frees
them for the dock.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.dock.archive import Archive, Location, retain_until
from tests.support.s3server import S3Server, seaweedfs


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(label: str, files: list[tuple[Path, str]], put: Callable[[Path, str], None]) -> None:
    total = sum(path.stat().st_size for path, _ in files)
    started, cpu = time.monotonic(), _cpu()
    for path, sha256 in files:
        put(path, sha256)
    wall, used = time.monotonic() - started, _cpu() - cpu
    print(f"{label:8} {total / 2**20:6.0f} MiB in {wall:6.2f} s  "
          f"{total * 8 / 1e6 / wall:5.0f} Mbit/s  {used / (total / 2**30):5.2f} CPU-s/GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mib", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        root = Path(tmp)
        files = []
        for index in range(args.files):
            path = root / f"{index + 1:08d}.ts"
            path.write_bytes(os.urandom(args.mib << 20))
            files.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
        with seaweedfs(root / "seaweedfs") as server:
            archive = _archive(server)
            now = datetime.now(UTC)
            until = retain_until(now, timedelta(days=365), now)

            def archived(path: Path, sha256: str) -> None:
                archive.put_file(f"bench/D/sealed/{path.name}", path, sha256, until)

            _run("archive", files, archived)
            client, bucket = server.client(), server.bucket()

            def plain(path: Path, _: str) -> None:
                with path.open("rb") as body:
                    client.put_object(Bucket=bucket, Key=f"bench/{path.name}", Body=body)

            _run("plain", files, plain)


def _archive(server: S3Server) -> Archive:
    archive = Archive(Location(server.bucket(), "bench"), server.client())
    archive.probe()
    return archive


if __name__ == "__main__":
    main()
