"""`bodycam dock serve`: the dock as a service polling its bays, against real docked devices
over mutual TLS, run as its own process: every device pulled, verified and in custody; a
device docked late pulled at a later poll; a SIGKILL mid-pull and a restart fetch nothing
twice and purge nothing before custody; SIGTERM ends it; a bad dock.toml is one line."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.verify import verify_store
from tests.support.device import (
    BODYCAM,
    record_segments,
    running_daemon,
    wait_for,
    write_device_config,
)
from tests.support.dockside import Docked, copy_store, dock_config, snapshot
from tests.support.fleet import dock_service
from tests.support.pki import Pki
from tests.support.s3server import S3Server

SEGMENTS = 4
IDS = ("TEST-0001", "TEST-0002", "TEST-0003")


def _as(config: Path, device_id: str) -> Path:
    config.write_text(config.read_text().replace('id = "TEST-0001"', f'id = "{device_id}"'))
    return config


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One recorded store per device id."""
    root = tmp_path_factory.mktemp("stores")
    for device_id in IDS:
        config = _as(write_device_config(root / f"{device_id}.toml", root / device_id),
                     device_id)
        record_segments(config, SEGMENTS)
    return {device_id: root / device_id for device_id in IDS}


@contextmanager
def docked(folder: Path, recorded: Path, device_id: str, pki: Pki,
           **dock: object) -> Iterator[Docked]:
    store = copy_store(recorded, folder / "device")
    pki.install_on_device(store / "keys", device_id)
    with running_daemon(_as(dock_config(folder, store, **dock), device_id)) as daemon:
        assert daemon.offload is not None
        yield Docked(daemon, store, pki)


def write_dock_toml(folder: Path, pki: Pki, bays: list[str], **values: Any) -> Path:
    lines = ['operator = "operator Li"', f'evidence = "{folder / "evidence"}"',
             f"bays = {json.dumps(bays)}", "poll_s = 0.5"]
    archive = values.pop("archive", None)
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    lines += ["[tls]", f'cert = "{pki.pem("dock.crt")}"', f'key = "{pki.pem("dock.key")}"',
              f'ca = "{pki.pem("device-ca.pem")}"']
    if archive:
        lines += ["[archive]", *(f"{k} = {json.dumps(v)}" for k, v in archive.items())]
    path = folder / "dock.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def status(config: Path) -> dict[str, Any]:
    done = subprocess.run([*BODYCAM, "dock", "status", "--config", str(config), "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout))


def custody_done(devices: list[Docked]) -> bool:
    return all(d.records("custody") for d in devices)


def pulled(config: Path, ids: tuple[str, ...]) -> bool:
    """The service's state says each device's last pull went through (written after the
    device sealed custody)."""
    if not config.with_name("dock-state.json").exists():
        return False
    devices = status(config)["devices"]
    return all(devices.get(i, {}).get("ok") for i in ids)


def _devices(stack: ExitStack, tmp_path: Path, stores: dict[str, Path], pki: Pki,
             ids: tuple[str, ...] = IDS, **dock: object) -> list[Docked]:
    return [stack.enter_context(docked(tmp_path / device_id, stores[device_id], device_id, pki,
                                       **dock)) for device_id in ids]


def test_the_service_pulls_every_docked_device_into_custody_and_status_says_so(
        tmp_path: Path, stores: dict[str, Path], dock_pki: Pki) -> None:
    with ExitStack() as stack:
        devices = _devices(stack, tmp_path, stores, dock_pki, purge_policy="after_custody")
        config = write_dock_toml(tmp_path, dock_pki, [d.url for d in devices], max_concurrent=2)
        with dock_service(config) as process:
            wait_for(lambda: pulled(config, IDS), timeout=120, what="every device pulled")
            time.sleep(2)  # more polls: a device with nothing new is not pulled again
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, process.log.read_text()

        state = status(config)
        for device_id, device in zip(IDS, devices, strict=True):
            (custody,) = device.records("custody")  # exactly one: no empty custody per poll
            sealed = {r["seq"] for r in device.records("segment_sealed")}
            assert {s["seq"] for s in custody["payload"]["segments"]} == sealed
            (purge,) = device.records("purge")  # purged after custody, all of it
            assert {f["seq"] for f in purge["payload"]["files"]} == sealed
            last = state["devices"][device_id]
            assert last["ok"] and last["verified"] and last["pulls"] == 1
            assert last["custody_seq"] == custody["seq"]
            # Every file in the evidence folder, byte for byte, fetched once.
            assert snapshot(tmp_path / "evidence" / device_id) == snapshot(stores[device_id])
            assert last["fetched_total"] == len(sealed) and last["custody_reports"] == 1
            assert verify_store(tmp_path / "evidence" / device_id).ok
        assert {bay["status"] for bay in state["bays"].values()} == {"done"}
        verify = subprocess.run([*BODYCAM, "verify", str(tmp_path / "evidence")],
                                capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert verify.stdout.count("OK: ") == len(IDS)
        text = subprocess.run([*BODYCAM, "dock", "status", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        assert f"{IDS[1]}: ok at " in text and "custody record" in text


def test_a_device_docked_later_is_pulled_at_a_later_poll(
        tmp_path: Path, stores: dict[str, Path], dock_pki: Pki) -> None:
    with ExitStack() as stack:
        (first,) = _devices(stack, tmp_path, stores, dock_pki, ids=IDS[:1])
        # The late device's port, free until it is docked: the bay is configured by it.
        with docked(tmp_path / "probe", stores[IDS[1]], IDS[1], dock_pki) as probe:
            late_port = probe.daemon.offload.port
        late_bay = f"https://127.0.0.1:{late_port}"
        config = write_dock_toml(tmp_path, dock_pki, [first.url, late_bay])
        with dock_service(config) as process:
            wait_for(lambda: custody_done([first]), timeout=120, what="the first device")
            wait_for(lambda: status(config)["bays"].get(late_bay, {}).get("status") == "absent",
                     timeout=30, what="the empty bay seen absent")
            assert process.poll() is None  # an empty bay is not an error
            late = stack.enter_context(docked(tmp_path / IDS[1], stores[IDS[1]], IDS[1],
                                              dock_pki, port=late_port))
            wait_for(lambda: pulled(config, IDS[:2]), timeout=120, what="the late device")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        assert status(config)["devices"][IDS[1]]["ok"] and late.records("custody")
        assert verify_store(tmp_path / "evidence" / IDS[1]).ok


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_mid_pull_and_restarted_the_service_fetches_nothing_twice(
        tmp_path: Path, stores: dict[str, Path], dock_pki: Pki, stop: signal.Signals) -> None:
    with ExitStack() as stack:
        devices = _devices(stack, tmp_path, stores, dock_pki, purge_policy="after_custody")
        on_devices = [snapshot(d.store) for d in devices]
        # One pull at a time: when the first file lands, the other devices wait their turn.
        config = write_dock_toml(tmp_path, dock_pki, [d.url for d in devices],
                                 max_concurrent=1, connections=1)
        evidence = tmp_path / "evidence"
        with dock_service(config) as process:
            wait_for(lambda: any((evidence / i / "sealed").is_dir() and
                                 any((evidence / i / "sealed").iterdir()) for i in IDS),
                     timeout=120, interval=0.005, what="a first file pulled")
            process.send_signal(stop)
            code = process.wait(30)  # SIGTERM: the pulls under way cancelled, a clean exit
            assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
        held_at_kill = {i: held_files(evidence / i / "sealed") for i in IDS}
        assert not custody_done(devices), "the kill came after every pull"
        for device, files in zip(devices, on_devices, strict=True):
            if not device.records("custody"):
                assert snapshot(device.store) == files  # nothing purged before custody

        with dock_service(config) as process:
            wait_for(lambda: pulled(config, IDS), timeout=120, what="every device pulled")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0

        state = status(config)["devices"]
        for device_id, device in zip(IDS, devices, strict=True):
            sealed = {r["seq"]: r["payload"]["file"] for r in device.records("segment_sealed")}
            in_custody = [s["seq"] for c in device.records("custody")
                          for s in c["payload"]["segments"]]
            assert sorted(in_custody) == sorted(sealed)  # each file in custody exactly once
            # Every file held, and those held at the kill never fetched again (the very files
            # the first run settled), so the restart fetched exactly the others.
            held = held_files(evidence / device_id / "sealed")
            assert set(held) == {f.rsplit("/", 1)[-1] for f in sealed.values()}
            assert {name: held[name] for name in held_at_kill[device_id]} == \
                held_at_kill[device_id]
            assert state[device_id]["ok"]
            assert verify_store(evidence / device_id).ok


def held_files(sealed: Path) -> dict[str, tuple[int, int]]:
    """Each file the evidence folder holds, by name, as the file it is (inode and change
    time): a file fetched again is settled as a new file over its name."""
    if not sealed.is_dir():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_ctime_ns) for p in sealed.iterdir()}


class Bay:
    """A bay's cable: a TCP relay to the device, slowed to `rate` bytes/s from the device,
    that can be unplugged (every connection cut, nothing answering) or hold the device's
    bytes back a while (`paused`: a pull caught mid-file)."""

    def __init__(self, target: int, port: int = 0, rate: float = 100_000) -> None:
        self.target, self.rate = target, rate
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                dock, _ = self.listener.accept()
            except OSError:
                return
            device = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [dock, device]
            threading.Thread(target=self._relay, args=(dock, device, 0), daemon=True).start()
            threading.Thread(target=self._relay, args=(device, dock, self.rate),
                             daemon=True).start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.flowing.clear()
        try:
            yield
        finally:
            self.flowing.set()

    def _relay(self, source: socket.socket, sink: socket.socket, rate: float) -> None:
        try:
            while data := source.recv(16384):
                if rate:  # from the device
                    self.flowing.wait()
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def unplug(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() under way (Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_device_taken_out_mid_pull_and_docked_in_another_bay_is_finished_there(
        tmp_path: Path, stores: dict[str, Path], dock_pki: Pki) -> None:
    evidence = tmp_path / "evidence"
    sealed_dir = evidence / IDS[0] / "sealed"
    with ExitStack() as stack:
        (device,) = _devices(stack, tmp_path, stores, dock_pki, ids=IDS[:1],
                             purge_policy="after_custody")
        first = Bay(device.daemon.offload.port)
        with socket.create_server(("127.0.0.1", 0)) as spare:
            other_port = spare.getsockname()[1]  # the other bay, empty for now
        bays = [f"https://127.0.0.1:{first.port}", f"https://127.0.0.1:{other_port}"]
        config = write_dock_toml(tmp_path, dock_pki, bays, connections=1)
        with dock_service(config) as process:
            wait_for(lambda: sealed_dir.is_dir() and any(sealed_dir.iterdir()), timeout=120,
                     interval=0.005, what="a first file pulled")
            first.unplug()
            wait_for(lambda: status(config)["bays"].get(bays[0], {}).get("status") in
                     ("absent", "failed"), timeout=60, what="the first bay given up")
            held = held_files(sealed_dir)  # what the cut pull left
            assert not device.records("custody") and not device.records("purge")
            Bay(device.daemon.offload.port, other_port)
            wait_for(lambda: pulled(config, IDS[:1]), timeout=120, what="pulled again")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        last = status(config)["devices"][IDS[0]]
        assert last["bay"] == bays[1]
        sealed = {r["seq"]: r["payload"]["file"].rsplit("/", 1)[-1]
                  for r in device.records("segment_sealed")}
        (custody,) = device.records("custody")
        assert sorted(s["seq"] for s in custody["payload"]["segments"]) == sorted(sealed)
        now = held_files(sealed_dir)
        assert held and set(now) == set(sealed.values())
        assert {name: now[name] for name in held} == held  # none of them fetched again
        assert verify_store(evidence / IDS[0]).ok


def test_one_device_answering_in_two_bays_is_pulled_once(
        tmp_path: Path, stores: dict[str, Path], dock_pki: Pki) -> None:
    with ExitStack() as stack:
        (device,) = _devices(stack, tmp_path, stores, dock_pki, ids=IDS[:1])
        port = device.daemon.offload.port
        bays = [f"https://127.0.0.1:{port}", f"https://localhost:{port}"]
        config = write_dock_toml(tmp_path, dock_pki, bays)
        with dock_service(config) as process:
            wait_for(lambda: pulled(config, IDS[:1]), timeout=120, what="the device pulled")
            time.sleep(2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        assert len(device.records("custody")) == 1
        assert status(config)["devices"][IDS[0]]["pulls"] == 1
        assert verify_store(tmp_path / "evidence" / IDS[0]).ok


@pytest.mark.parametrize(("text", "message"), [
    ("bays = []\n", "bays = []: no device to pull"),
    ('bays = ["10.0.0.2:8443"]\n', "is not an address like https://10.0.0.2:8443"),
    ("max_concurrent = 0\n", "max_concurrent = 0: Input should be greater than or equal to 1"),
    ("colour = 1\n", "unknown key colour"),
    ('[tls]\ncert = "nope.pem"\n', "[tls] cert = 'nope.pem': no such file"),
    ("bays = [\n", "not valid TOML"),
])
def test_a_bad_dock_toml_is_one_line_and_exit_2(tmp_path: Path, dock_pki: Pki, text: str,
                                                message: str) -> None:
    good = write_dock_toml(tmp_path, dock_pki, ["https://127.0.0.1:1"]).read_text()
    config = tmp_path / "dock.toml"
    key = text.split("=")[0].strip()
    if key == "[tls]\ncert":
        bad = good.replace(f'cert = "{dock_pki.pem("dock.crt")}"', 'cert = "nope.pem"')
    elif key in good:
        bad = "\n".join(line for line in good.splitlines() if not line.startswith(key)) + "\n"
        bad = text + bad if not text.startswith("[") else bad + text
    else:
        bad = text + good
    config.write_text(bad)
    for command in ("serve", "status"):
        done = subprocess.run([*BODYCAM, "dock", command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        assert done.stderr.startswith(f"bodycam dock: config error in {config}")


def test_with_an_archive_everything_is_archived_once(
        tmp_path: Path, stores: dict[str, Path], dock_pki: Pki, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    with ExitStack() as stack:
        devices = _devices(stack, tmp_path, stores, dock_pki, ids=IDS[:2],
                           purge_policy="after_custody")
        config = write_dock_toml(tmp_path, dock_pki, [d.url for d in devices],
                                 archive={"url": f"s3://{bucket}/agency", "retention_days": 365})
        env = s3_server.env()
        with dock_service(config, env) as process:
            wait_for(lambda: pulled(config, IDS[:2]), timeout=120, what="both pulled")
            time.sleep(2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        with dock_service(config, env) as process:  # restarted: nothing more to archive
            time.sleep(3)  # some polls
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
    versions = s3_server.client().list_object_versions(Bucket=bucket, Prefix="agency/")
    keys = [v["Key"] for v in versions["Versions"] if "/sealed/" in v["Key"]]
    assert len(keys) == len(set(keys)) == sum(
        len(d.records("segment_sealed")) for d in devices)
    for device_id, device in zip(IDS, devices, strict=False):
        (custody,) = device.records("custody")
        assert custody["payload"]["archive"]["bucket"] == bucket
        assert status(config)["devices"][device_id]["archived"] == len(
            device.records("segment_sealed"))


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_dock_unit_verifies_with_the_devices_hardening(tmp_path: Path) -> None:
    from tests.system.test_systemd import UNIT, verify_unit

    dock_unit = UNIT.with_name("bodycam-dock.service")
    result = verify_unit(dock_unit, tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = dock_unit.read_text().splitlines()
    assert "ExecStart=/opt/bodycam/.venv/bin/bodycam dock serve --config " \
           "/etc/bodycam/dock.toml" in lines
    for line in ("Type=notify", "NotifyAccess=main", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/bodycam-dock", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=", "RestartPreventExitStatus=2",
                 "SystemCallFilter=@system-service", "ProtectHome=yes", "WatchdogSec=30"):
        assert line in lines
    # Every hardening key of the device's unit is in the dock's, bar the device's hardware.
    device_keys = {line.split("=")[0] for line in UNIT.read_text().splitlines()
                   if "=" in line and not line.startswith("#")}
    dock_keys = {line.split("=")[0] for line in lines if "=" in line and not line.startswith("#")}
    assert device_keys - dock_keys == {
        "AmbientCapabilities", "RuntimeDirectory",
        "WorkingDirectory", "TimeoutStartSec", "Nice", "StartLimitIntervalSec"}
