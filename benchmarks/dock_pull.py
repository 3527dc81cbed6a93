#!/usr/bin/env python3
"""Dock pull: pull-and-verify throughput over loopback mutual TLS, against nginx + curl.

Run from the repository root:

    python benchmarks/dock_pull.py [--gib 2] [--segment-mib 32] [--connections 4]

1. Store (not timed): three real segments are recorded on the simulated device
   (320x240); their bytes are repeated to `--segment-mib` each (as big as a 60 s
   segment at 4 Mbit/s) and each file made distinct with one MPEG-TS null packet
   holding its index, until `--gib` of segments. They are sealed with the device
   key into a chain built by `agent.evidence.chain.Chain`: one recording per segment, so the
   verifier's continuity check holds, every file under a `segment_sealed` record
   with its size and SHA-256.
2. Device: `agent.device.offload.server.OffloadServer` over that store in its own process (as on
   the device), mutual TLS with certificates from `agent.pki`; its CPU is read
   from /proc around each pull.
3. Agent: `agent.dock.pull.pull` (the code behind `bodycam dock pull`), timed from the
   first request to the custody receipt: chain, every segment streamed to disk and
   hashed as it arrives, `verify_store` over the whole copy (every signature and
   link; the files' SHA-256 are those taken while receiving), custody report and
   receipt.
4. Baseline: nginx (one worker, TLS 1.3 with the same device certificate and Ed25519 key, client
   certificates required against the same dock CA) serving the same sealed/ folder;
   `curl` with the dock's certificate fetching every file to disk, `--parallel`
   with as many connections. Timed from start to exit. curl does not verify.
   Also printed, for what it costs to do the agent's work with those tools: the
   same fetch followed by `sha256sum` of every file and `sync` of every file.
5. Agent and baseline alternate `--repeats` times into fresh folders; medians.

Also timed, each repeat, the two parts of the dock's work no verifying pull can
skip: SHA-256 of every file from the page cache on one core (`hashlib`), and
writing every file durably (around the page cache with the dock's own
`DirectFile`, then fsync) as many at a time as there are connections, with
nothing else running: the disk's share.

Target: agent at least 0.8 of the baseline's throughput, and at least 400 Mbit/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import DockConfig, RetentionConfig
from agent.device.chain_index import ChainIndex
from agent.device.offload.custody import Ledger
from agent.device.offload.server import DockedDevice, OffloadServer
from agent.dock.direct_file import BUFFER, DirectFile
from agent.dock.pull import DockLink, pull
from agent.evidence.chain import Chain, read_bodies
from agent.evidence.keys import fingerprint, load_or_create_device_key
from agent.evidence.store import Store
from agent.pki import DockPki, write_dock_pki
from benchmarks.cpu import process_cpu_seconds
from hal.clock import SimulatedClock
from tests.support.device import record_segments, write_device_config

TS_PACKET = 188
DEVICE = "BENCH-0001"


def _null_packet(index: int, device: int = 0) -> bytes:
    """An MPEG-TS null packet (PID 0x1FFF) carrying `index` (and `device`): makes each file
    distinct."""
    payload = index.to_bytes(8, "big") + device.to_bytes(8, "big")
    return bytes([0x47, 0x1F, 0xFF, 0x10]) + payload + b"\xff" * (TS_PACKET - 4 - len(payload))


Template = tuple[dict[str, Any], bytes]


def record_templates(root: Path) -> list[Template]:
    """Three real segments recorded on the simulated device: their sealed records and bytes."""
    source = root / "source"
    record_segments(write_device_config(root / "source.toml", source / "store"), 3)
    real = [b for b in read_bodies(source / "store" / "chain.jsonl")
            if b["type"] == "segment_sealed"][:3]
    templates = [(r, (source / "store" / r["payload"]["file"]).read_bytes()) for r in real]
    shutil.rmtree(source)
    return templates


def seal_store(folder: Path, templates: list[Template], total: int, segment_size: int,
               device: str = DEVICE, number: int = 0) -> tuple[Store, int]:
    """A store in `folder` of the templates' bytes replicated to `total`, sealed by
    `device`; returns it and the file count. `number` makes its files differ from other
    devices'."""
    store = Store(folder).prepare()
    key = load_or_create_device_key(store.keys)
    chain = Chain(store.chain, key, lambda: (device, "BENCH-OFFICER"), SimulatedClock().state,
                  "benchmark")
    chain.append("boot", {"benchmark": "dock_pull",
                          "key_fingerprint": fingerprint(key.public_key())})
    count = total // segment_size
    for index in range(count):
        template, blob = templates[index % len(templates)]
        body = blob * (segment_size // len(blob)) + _null_packet(index, number)
        path = store.open / f"{index:08d}-00000.ts"
        path.write_bytes(body)
        path.chmod(0o444)
        recording = chain.append("record_start", {"trigger": "benchmark"})["seq"]
        payload = {**template["payload"], "recording": recording, "index": 0,
                   "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        payload.pop("file")
        chain.append("segment_sealed", payload, name_for_seq=store.move_to_sealed(path))
        audio = template["payload"]["audio"]
        chain.append("record_stop", {"recording": recording, "reason": "benchmark",
                                     "segments": 1,
                                     "video_frames": template["payload"]["video"]["packets"],
                                     "audio_packets": audio["packets"] if audio else 0})
    chain.close()
    return store, count


def build_store(root: Path, total: int, segment_size: int) -> tuple[Store, int]:
    """A store of real segment bytes replicated to `total`; returns it and the file count."""
    return seal_store(root / "device", record_templates(root), total, segment_size)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(store_root: Path, port: int, ready: Any, device: str = DEVICE,
          go: Any = None) -> None:
    """The device's offload server, alone in this process, until terminated; with `go`,
    it listens only once `go` is set (a device docked at that moment)."""
    store = Store(store_root)
    chain = Chain(store.chain, load_or_create_device_key(store.keys),
                  lambda: (device, "BENCH-OFFICER"), SimulatedClock().state, "benchmark-serve")
    index = ChainIndex.open(store.chain)
    config = DockConfig(enabled=True, port=port)
    server = OffloadServer(DockedDevice(device, load_or_create_device_key(store.keys), store,
                                        chain, Ledger(index), index, SimulatedClock(),
                                        lambda: None,
                                        lambda: "BENCH-OFFICER", RetentionConfig(), dict),
                           config)
    if go is not None:
        ready.set()
        go.wait()
    server.start()
    ready.set()
    while True:
        time.sleep(3600)


def run_agent(url: str, out: Path, pki: DockPki, connections: int,
              device_pid: int) -> tuple[float, int, bool, float, float]:
    """Seconds, bytes, whether it verified, and the CPU seconds the device and the dock
    (this process) spent on it."""
    link = DockLink(pki.dock_cert, pki.dock_key, pki.device_ca)
    device_cpu, dock_cpu = process_cpu_seconds(device_pid), _cpu(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = asyncio.run(pull(url, out, link, "benchmark", connections=connections))
    seconds = time.perf_counter() - started
    return (seconds, result.bytes_fetched, result.ok and result.verify.ok,
            process_cpu_seconds(device_pid) - device_cpu, _cpu(resource.RUSAGE_SELF) - dock_cpu)


NGINX_CONF = """
user root;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
daemon off;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  default_type application/octet-stream;
  sendfile on;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {dock_ca};
    ssl_verify_client on;
    root {root};
  }}
}}
"""


def start_nginx(work: Path, port: int, pki: DockPki, root: Path) -> subprocess.Popen[bytes]:
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=port, cert=pki.device_cert,
                                      key=pki.device_key, dock_ca=pki.dock_ca, root=root))
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return nginx
        time.sleep(0.05)
    nginx.terminate()
    raise RuntimeError(f"nginx did not listen; see {work / 'error.log'}")


def run_curl(port: int, names: list[str], out: Path, pki: DockPki, connections: int,
             nginx_pids: list[int]) -> tuple[float, float, int, float]:
    """Seconds to fetch, seconds to fetch + `sha256sum` + `sync` (the same work as the
    agent's, less the chain), the bytes, and the CPU seconds nginx and curl spent on
    the fetch."""
    out.mkdir(parents=True)
    # The device certificate names the device, not an address: curl checks that name.
    command = ["curl", "--silent", "--show-error", "--fail", "--no-progress-meter", "--parallel",
               "--parallel-max", str(connections), "--cert", str(pki.dock_cert),
               "--key", str(pki.dock_key), "--cacert", str(pki.device_ca),
               "--resolve", f"{DEVICE}:{port}:127.0.0.1"]
    for name in names:
        command += [f"https://{DEVICE}:{port}/sealed/{name}", "-o", str(out / name)]
    cpu = process_cpu_seconds(*nginx_pids) + _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    fetched = time.perf_counter() - started
    cpu = process_cpu_seconds(*nginx_pids) + _cpu(resource.RUSAGE_CHILDREN) - cpu
    files = [str(out / name) for name in names]
    subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync", *files], check=True)
    return (fetched, time.perf_counter() - started, sum(p.stat().st_size for p in out.iterdir()),
            cpu)


def _cpu(who: int) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF) or its children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def sha256_alone(files: list[Path]) -> float:
    """Seconds to SHA-256 every file from the page cache on one core: the verifier's floor."""
    started = time.perf_counter()
    for path in files:
        with path.open("rb") as f:
            hashlib.file_digest(f, "sha256")
    return time.perf_counter() - started


def durable_write_alone(files: list[Path], out: Path, writers: int) -> float:
    """Seconds to write every file to `out` around the page cache and fsync it, `writers`
    at a time, with the dock's own writer: what the disk alone takes for a durable copy."""
    out.mkdir()

    def write(source: Path) -> None:
        target = out / source.name
        with source.open("rb") as f, DirectFile(target) as copy:
            while block := f.read(BUFFER):
                copy.write(block)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    started = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, files))
    seconds = time.perf_counter() - started
    shutil.rmtree(out)
    return seconds


def mbit(size: int, seconds: float) -> float:
    return size * 8 / 1e6 / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--segment-mib", type=int, default=32)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for tool in ("nginx", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"dock_pull: {tool} is not installed (scripts/setup installs it)")

    with tempfile.TemporaryDirectory(prefix="bodycam-dockbench-") as tmp:
        root = Path(tmp)
        store, count = build_store(root, int(args.gib * 2**30), args.segment_mib * 2**20)
        pki = write_dock_pki(store.keys, load_or_create_device_key(store.keys), root / "dock",
                             DEVICE, "BENCH-DOCK")
        names = sorted(p.name for p in store.sealed.iterdir())
        files = [store.sealed / n for n in names]
        total = sum(f.stat().st_size for f in files)
        cores = len(os.sched_getaffinity(0))
        print(f"store: {count} segments, {total / 2**30:.2f} GiB; "
              f"{args.connections} connections; {args.repeats} repeats", flush=True)

        agent_port, nginx_port = _free_port(), _free_port()
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, as on the device
        ready = spawn.Event()
        device = spawn.Process(target=serve, args=(store.root, agent_port, ready), daemon=True)
        device.start()
        if not ready.wait(30):
            sys.exit("dock_pull: the offload server did not start")
        (root / "nginx").mkdir()
        nginx = start_nginx(root / "nginx", nginx_port, pki, store.root)
        agent_rates, curl_rates, same_work_rates, verified = [], [], [], True
        hash_rates, disk_rates, bounds = [], [], []
        cpu_per_gib: dict[str, list[float]] = {"device": [], "dock": [], "nginx + curl": []}
        workers = [int(pid) for pid in Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children")
                   .read_text().split()]
        try:
            for repeat in range(args.repeats):
                out = root / f"agent-{repeat}"
                seconds, size, ok, device_cpu, dock_cpu = run_agent(
                    f"https://127.0.0.1:{agent_port}", out, pki, args.connections, device.pid)
                verified &= ok and size == total
                cpu_per_gib["device"].append(device_cpu / (size / 2**30))
                cpu_per_gib["dock"].append(dock_cpu / (size / 2**30))
                agent_rates.append(mbit(size, seconds))
                shutil.rmtree(out)
                seconds, same_work, size, cpu = run_curl(
                    nginx_port, names, root / f"curl-{repeat}", pki, args.connections,
                    [nginx.pid, *workers])
                curl_rates.append(mbit(size, seconds))
                cpu_per_gib["nginx + curl"].append(cpu / (size / 2**30))
                same_work_rates.append(mbit(size, same_work))
                shutil.rmtree(root / f"curl-{repeat}")
                hashing = sha256_alone(files)
                hash_rates.append(mbit(size, hashing))
                disk_rates.append(mbit(size, durable_write_alone(files, root / "disk",
                                                                 args.connections)))
                # A verifying pull whose transfer cost what nginx's and curl's does, plus
                # the hash, spread over every core with none idle: how fast it could be.
                best = max(seconds, (cpu + hashing) / cores)
                bounds.append(seconds / best)
                print(f"repeat {repeat + 1}: agent pull+verify+custody "
                      f"{agent_rates[-1]:.0f} Mbit/s, nginx+curl {curl_rates[-1]:.0f} Mbit/s, "
                      f"+sha256sum+sync {same_work_rates[-1]:.0f} Mbit/s, "
                      f"SHA-256 alone {hash_rates[-1]:.0f} Mbit/s, "
                      f"durable write alone {disk_rates[-1]:.0f} Mbit/s", flush=True)
        finally:
            nginx.terminate()
            nginx.wait(10)
            device.terminate()
            device.join(10)

    agent, baseline = statistics.median(agent_rates), statistics.median(curl_rates)
    same_work, hashing = statistics.median(same_work_rates), statistics.median(hash_rates)
    disk = statistics.median(disk_rates)
    bound = statistics.median(bounds)
    print(f"\nagent (bodycam dock pull, verified, custody): {agent:.0f} Mbit/s "
          f"({agent / 8:.0f} MB/s)\n"
          f"baseline (nginx + curl, not verified):       {baseline:.0f} Mbit/s "
          f"({baseline / 8:.0f} MB/s)\n"
          f"same work (nginx + curl + sha256sum + sync): {same_work:.0f} Mbit/s "
          f"({same_work / 8:.0f} MB/s); agent / same work: {agent / same_work:.2f}\n"
          f"SHA-256 of every byte alone, one core:       {hashing:.0f} Mbit/s "
          f"(the verifier's floor: {baseline / hashing:.2f} of a core-second per second "
          "of the baseline's fetch)\n"
          f"{f'durable write alone, {args.connections} at a time:':<45}{disk:.0f} Mbit/s "
          f"(the disk alone takes {baseline / disk:.2f} of the baseline's fetch time)\n"
          f"bound for a verifying pull on {cores} cores whose transfer costs nginx's and "
          f"curl's CPU (that CPU plus the SHA-256, no core idle): {bound:.2f} of the baseline\n"
          "CPU-seconds per GiB: " + ", ".join(f"{who} {statistics.median(values):.2f}"
                                              for who, values in cpu_per_gib.items()) + "\n"
          f"ratio agent / baseline: {agent / baseline:.2f} (target >= 0.8); "
          f"agent >= 400 Mbit/s: {'yes' if agent >= 400 else 'NO'}; every pull verified: "
          f"{'yes' if verified else 'NO'}")
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
