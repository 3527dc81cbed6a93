#!/usr/bin/env python3
"""The chain slices' renewal: how many requests does a pull make as slices accumulate?

Run from the repository root:

    python benchmarks/archive_slices.py [--slices 1 100 1000]

Starts a private SeaweedFS (tests/support/s3server.py) on loopback. For each count N, a
new bucket holds N chain slices of one device (one line each, as N earlier pulls of
another dock left them: this dock's journal does not know them), then `archive_pull`
archives one new sealed file at each of three pulls:

1. **renewal due**: the slices are locked for a day only, shorter than the new file's
   year, so every one is extended (`renew_slices`: HeadObject, PutObjectRetention, and
   HeadObject again to read it back), RENEWAL past what the file needs, and entered in
   the evidence folder's journal (archived.jsonl);
2. **steady**: the next pull, whose file needs no more than the renewal already gave:
   the journal knows every slice kept long enough, so none is read. With a pull a day, a
   slice is extended about once in RENEWAL (30 days), so this is the usual pull;
3. **steady, no memory**: the same pull by a dock whose journal does not know the
   slices (the journal removed first: a dock that never pulled this device, or lost its
   folder): each slice is read (HeadObject), none extended, and each then remembered.

Prints, for each, the requests the pull made by S3 operation (the probe, done once per
client before, is not counted) and its wall time. The store runs on the same 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.dock.archive import MODE, Archive, Location, archive_pull
from agent.dock.journal import JOURNAL
from tests.support.s3server import S3Server, seaweedfs

DEVICE = "D"
YEAR = timedelta(days=365)


def _slices(server: S3Server, bucket: str, count: int) -> None:
    """`count` slices of one line each, locked for a day: as earlier pulls left them."""
    client, until = server.client(), datetime.now(UTC) + timedelta(days=1)

    def put(line: int) -> None:
        client.put_object(Bucket=bucket, Key=f"bench/{DEVICE}/chain/{line:08d}-{line:08d}.jsonl",
                          Body=b'{"seq":%d}\n' % line, ObjectLockMode=MODE,
                          ObjectLockRetainUntilDate=until)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(1, count + 1)))


def _pull(archive: Archive, folder: Path, seq: int) -> tuple[Counter[str], float]:
    """One pull archiving one new file, whose record is chain line `seq`."""
    file = f"sealed/{seq:08d}.ts"
    (folder / file).write_bytes(b"\x47" * 188 * 50 + seq.to_bytes(4, "big"))
    with (folder / "chain.jsonl").open("ab") as chain:
        chain.write(b'{"seq":%d}\n' % seq)
    sha256 = hashlib.sha256((folder / file).read_bytes()).hexdigest()
    record: dict[str, Any] = {"seq": seq, "type": "segment_sealed",
                              "wall": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}",
                              "payload": {"file": file, "sha256": sha256}}
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[1]] += 1

    archive.client.meta.events.register("before-call.s3", count)
    started = time.monotonic()
    archive_pull(archive, DEVICE, folder, [record], [seq], lambda _: YEAR)
    wall = time.monotonic() - started
    archive.client.meta.events.unregister("before-call.s3", count)
    return calls, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archive-slices-") as tmp, \
            seaweedfs(Path(tmp) / "seaweedfs") as server:
        for count in args.slices:
            folder = Path(tmp) / f"device-{count}"
            (folder / "sealed").mkdir(parents=True)
            (folder / "keys").mkdir()
            (folder / "keys" / "device.pub").write_bytes(b"a device key\n")
            (folder / "chain.jsonl").write_bytes(b"".join(
                b'{"seq":%d}\n' % line for line in range(1, count + 1)))
            bucket = server.bucket()
            _slices(server, bucket, count)
            archive = Archive(Location(bucket, "bench"), server.client())
            archive.probe()
            for label, seq in (("renewal due", count + 1), ("steady", count + 2),
                               ("no memory", count + 3)):
                if label == "no memory":
                    (folder / JOURNAL).unlink()
                calls, wall = _pull(archive, folder, seq)
                ops = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
                print(f"{count:5} slices  {label:11}  {sum(calls.values()):5} requests "
                      f"in {wall:6.2f} s  ({ops})")


if __name__ == "__main__":
    main()
