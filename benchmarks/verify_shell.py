#!/usr/bin/env python3
"""The documented shell procedure against `bodycam verify`: time per record, and linearity.

Run from the repository root:

    python benchmarks/verify_shell.py [--records 10000] [--repeats 3] [--ffprobe]

1. **The store** (not timed): the simulated device records one recording of 160x120
   0.5 s segments, as fast as the encoder goes, until the chain holds `--records`
   records. Making it takes about ten minutes, so it is kept in
   `~/.cache/bodycam-agent/verify-shell/<key>/store`, the key naming this benchmark's
   store version, the agent's version and the record count; delete it to make a new one.
2. **Prefixes**: copies of the chain's first quarter, half and all of it, each with the
   files its records seal (a prefix of a chain is a store that verifies).
3. On each, alternating `--repeats` times, wall seconds and CPU seconds (user + system
   of every process it started; medians) of
   `bodycam verify STORE` (a new process, as a user runs it) and of the shell procedure of
   docs/chain-format.md run as written (`verify_chain`, PATH holding only the standard
   tools) without ffprobe, as it runs by default (the signatures that close each key's
   records). On the whole store only, once: the procedure with its step 6 (every record's
   own signature, one `openssl` process per record) and, with `--ffprobe`, with its step 5
   (one `ffprobe` process per segment: about a quarter of an hour on 2 cores).

Prints seconds and milliseconds per record for each; exits 1 if a run does not verify.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import __version__
from agent.evidence.chain import SEALED_FILE_TYPES, read_bodies
from tests.support.device import BODYCAM, running_daemon, wait_for, write_device_config
from tests.support.shell_procedure import run_procedure, standard_tools

STORE_VERSION = 1  # bump when the way the store is made changes
CACHE = Path.home() / ".cache" / "bodycam-agent" / "verify-shell"
# The chain besides the segments: boot, record_start, record_stop, shutdown.
OTHER_RECORDS = 4
DEFAULT = "shell procedure"
EVERY_SIGNATURE = "shell procedure, every signature"
WITH_FFPROBE = "shell procedure, with ffprobe"
ONCE = (EVERY_SIGNATURE, WITH_FFPROBE)  # run once, on the whole store only


def cached_store(records: int) -> Path:
    """A store of about `records` records, made once and kept in CACHE."""
    folder = CACHE / f"v{STORE_VERSION}-agent{__version__}-{records}"
    store = folder / "store"
    if (folder / "complete").exists():
        return store
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"making a store of {records} records in {folder} (about ten minutes)...", flush=True)
    config = write_device_config(folder / "device.toml", store, segment_seconds=0.5,
                                 width=160, height=120, bitrate=100_000,
                                 pre_event_seconds=0.0)
    with running_daemon(config) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= records - OTHER_RECORDS,
                 timeout=3600, what="the segments")
    (folder / "complete").touch()
    return store


def prefix(store: Path, records: int, to: Path) -> Path:
    """A copy of `store` holding its first `records` records and the files they seal."""
    (to / "keys").mkdir(parents=True)
    shutil.copy(store / "keys" / "device.pub", to / "keys" / "device.pub")
    lines = (store / "chain.jsonl").read_bytes().splitlines(keepends=True)[:records]
    (to / "chain.jsonl").write_bytes(b"".join(lines))
    (to / "sealed").mkdir()
    for body in read_bodies(to / "chain.jsonl"):
        if body["type"] in SEALED_FILE_TYPES:
            name = body["payload"]["file"]
            shutil.copy(store / name, to / name)
    return to


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the processes it ran (user + system)."""
    start, cpu = time.perf_counter(), children_cpu()
    result = run()
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"did not verify:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ffprobe", action="store_true",
                        help="also time step 5 (ffprobe on every segment) on the whole store")
    args = parser.parse_args()
    full = cached_store(args.records)
    total = len((full / "chain.jsonl").read_bytes().splitlines())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tools = standard_tools(root / "tools", ffprobe=False)
        with_ffprobe = standard_tools(root / "tools-ffprobe", ffprobe=True)
        sizes = sorted({max(1, total // 4), max(1, total // 2), total})
        print(f"{'records':>8} {'what':<34} {'wall s':>8} {'ms/record':>10} {'CPU s':>8} "
              f"{'CPU ms/record':>14}  (medians)")
        for size in sizes:
            store = prefix(full, size, root / f"store-{size}")
            runs: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
                "bodycam verify": partial(subprocess.run, [*BODYCAM, "verify", str(store)],
                                          capture_output=True, text=True, check=False),
                DEFAULT: partial(run_procedure, store, tools, root / "work", timeout=3600),
                EVERY_SIGNATURE: partial(run_procedure, store, tools, root / "work",
                                         every_signature=True, timeout=3600),
                WITH_FFPROBE: partial(run_procedure, store, with_ffprobe,
                                      root / "work", timeout=3600),
            }
            if size != total:
                for name in ONCE:
                    del runs[name]
            if not args.ffprobe:
                runs.pop(WITH_FFPROBE, None)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
            for repeat in range(args.repeats):
                for name, run in runs.items():
                    if repeat == 0 or name not in ONCE:
                        times[name].append(timed(run))
                    shutil.rmtree(root / "work", ignore_errors=True)
            for name, runs_done in times.items():
                wall = statistics.median(w for w, _ in runs_done)
                cpu = statistics.median(c for _, c in runs_done)
                print(f"{size:>8} {name:<34} {wall:>8.1f} {wall / size * 1000:>10.2f} "
                      f"{cpu:>8.1f} {cpu / size * 1000:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
