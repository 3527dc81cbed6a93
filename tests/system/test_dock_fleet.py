"""The docking station end to end (issue 23): three devices recording and docked at once,
each its own `bodycam run`, pulled by `bodycam dock serve` into a write-once archive on a real
S3 server (SeaweedFS); one device's cable pulled out mid-transfer and the device docked
again in another bay; the dock SIGKILLed in that pull, between the archive and custody, and
restarted; the recordings stopped while the devices are pulled. In the end every sealed file
is in the archive as exactly one locked version, both the dock's folder and the archive
verify, each device's chain holds custody of every file once, each purge names a custody that
named the file's archived version, no file left a device before the archive held it, and no
file was fetched twice."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.dock.archive import MODE
from tests.support.device import BODYCAM, open_recordings, wait_for, wall_seconds
from tests.support.fleet import DeviceProcess, device_process, dock_service
from tests.support.pki import Pki
from tests.support.s3server import S3Server
from tests.system.test_dock_serve import Bay, write_dock_toml

IDS = ("FLEET-01", "FLEET-02", "FLEET-03")
BACKLOG = 5  # segments each device holds when the dock starts
RATE = 100_000  # bytes/s through the moved device's bays: about two segments a second
RETENTION_DAYS = 365  # the devices' [retention] standard_days: a shorter archive is refused (422)
PREFIX = "agency"


@dataclass
class Interruption:
    """A point where a pull of the device was cut: the dock's folder then, and the log's end."""

    held: set[str]
    log_offset: int


@dataclass
class PurgeWatch:
    """Looks at every device's sealed/ all the time: a file that leaves it must already be an
    object version in the archive at that moment (the read-back came before custody)."""

    s3: Any
    bucket: str
    devices: list[DeviceProcess]
    gone: dict[str, set[str]] = field(default_factory=dict)
    unarchived: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self) -> Iterator[PurgeWatch]:
        seen = {d.device_id: _names(d.store / "sealed") for d in self.devices}
        thread = threading.Thread(target=self._watch, args=(seen,), name="purge-watch")
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(30)

    def _watch(self, seen: dict[str, set[str]]) -> None:
        while not self._stop.wait(0.02):
            for device in self.devices:
                now = _names(device.store / "sealed")
                for name in seen[device.device_id] - now:
                    key = f"{PREFIX}/{device.device_id}/sealed/{name}"
                    listed = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)
                    if not any(v["Key"] == key for v in listed.get("Versions", [])):
                        self.unarchived.append(key)
                    self.gone.setdefault(device.device_id, set()).add(name)
                seen[device.device_id] = now


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _in_custody(device: DeviceProcess) -> list[int]:
    return [s["seq"] for c in device.records("custody") for s in c["payload"]["segments"]]


def _unsettled(device: DeviceProcess) -> str:
    """What keeps the device from done: a recording open, files not in custody or not
    purged ("" when none)."""
    purged = {f["seq"] for p in device.records("purge") for f in p["payload"]["files"]}
    sealed = set(device.sealed())
    left = [f"recording {sorted(open_recordings(device.store))} open"] \
        if open_recordings(device.store) else []
    if missing := sorted(sealed - set(_in_custody(device))):
        left.append(f"not in custody: {missing}")
    if missing := sorted(sealed - purged):
        left.append(f"not purged: {missing}")
    return f"{device.device_id}: {', '.join(left)}" if left else ""


def _state(config: Path) -> dict[str, Any]:
    """dock-state.json as `bodycam dock status --json` prints it (read here: it is written
    whole, and a poll loop should not start a process every few milliseconds)."""
    return dict(json.loads(config.with_name("dock-state.json").read_text()))


def _archived(s3: Any, bucket: str, device_id: str) -> set[str]:
    """The names of the device's sealed files that the archive holds."""
    prefix = f"{PREFIX}/{device_id}/sealed/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix):] for item in listed}


def _all_versions(s3: Any, bucket: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                   Prefix=f"{PREFIX}/"):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    return versions, markers


def test_three_recording_devices_moved_and_the_dock_killed_end_archived_once(
        tmp_path: Path, dock_pki: Pki, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    s3 = s3_server.client()
    evidence = tmp_path / "evidence"
    started = datetime.now(UTC)
    cuts: dict[str, list[Interruption]] = {device_id: [] for device_id in IDS}

    def held(device_id: str) -> set[str]:
        return _names(evidence / device_id / "sealed")

    def interrupted(device: DeviceProcess) -> None:
        cuts[device.device_id].append(Interruption(held(device.device_id), device.log_offset()))

    with ExitStack() as stack:
        devices = [stack.enter_context(device_process(
            tmp_path / device_id, None, device_id, dock_pki, {"realtime": "true"},
            purge_policy="after_custody")) for device_id in IDS]
        for device in devices:
            device.command("trigger", "start")
        wait_for(lambda: all(len(d.sealed()) >= BACKLOG for d in devices), timeout=60,
                 what=f"{BACKLOG} segments sealed on each device")
        moved = devices[2]
        first_bay = Bay(moved.port, rate=RATE)
        other_bay = Bay(moved.port, rate=RATE)  # its port kept, the cable not yet plugged in
        other_bay.unplug()
        bays = [devices[0].url, devices[1].url, f"https://127.0.0.1:{first_bay.port}",
                f"https://127.0.0.1:{other_bay.port}"]
        config = write_dock_toml(tmp_path, dock_pki, bays, max_concurrent=3, connections=1,
                                 archive={"url": f"s3://{bucket}/{PREFIX}",
                                          "retention_days": RETENTION_DAYS})
        env = s3_server.env()
        watch = stack.enter_context(PurgeWatch(s3_server.client(), bucket, devices).running())

        with dock_service(config, env) as dock:
            # The moved device's cable pulled out after its first file...
            wait_for(lambda: bool(held(moved.device_id)), timeout=60, interval=0.005,
                     what="a first file of the moved device pulled")
            first_bay.unplug()
            wait_for(lambda: _state(config)["bays"].get(bays[2], {}).get("status") in
                     ("absent", "failed"), timeout=60, what="the first bay given up")
            assert not moved.records("custody"), "the cut came after the whole pull"
            interrupted(moved)
            # ...and plugged into the other bay, where that pull goes on from what the dock
            # holds, and the dock is killed once it has archived the files and before the
            # device answers for their custody (its answers held back in the cable).
            second_bay = Bay(moved.port, other_bay.port, rate=RATE)
            wait_for(lambda: bool(_archived(s3, bucket, moved.device_id)), timeout=60,
                     interval=0.005, what="the moved device's files being archived")
            with second_bay.paused():
                wait_for(lambda: _archived(s3, bucket, moved.device_id) == held(
                    moved.device_id), timeout=30, what="the moved device's files archived")
                dock.kill()
                dock.wait(30)
        assert not moved.records("custody"), "the kill came after the moved device's custody"
        for device in devices:
            interrupted(device)

        with dock_service(config, env) as dock:
            # Pulled again while the devices go on recording: files sealed after the restart
            # reach custody before the recording stops.
            since = {d.device_id: max(d.sealed()) for d in devices}
            try:
                wait_for(lambda: all(max(_in_custody(d), default=0) > since[d.device_id]
                                     for d in devices), timeout=90)
            except AssertionError:
                raise AssertionError(
                    "files sealed since the restart not in custody: " + "; ".join(
                        f"{d.device_id}: sealed up to {max(d.sealed())}, custody up to "
                        f"{max(_in_custody(d), default=0)}, restart at {since[d.device_id]}"
                        for d in devices) + f"\n{_state(config)}\n{dock.tail(lines=80)}"
                ) from None
            # The recordings stopped as a shift ends at the dock: the moved device's in the
            # middle of a file of a pull of it, so that its last file is sealed after the head
            # that pull verified and before the custody it reports.
            wait_for(lambda: any((evidence / moved.device_id / "partial").glob("*.part")),
                     timeout=30, interval=0.002, what="a file of the moved device under way")
            with second_bay.paused():
                for device in (moved, *devices[:2]):
                    assert open_recordings(device.store)
                    device.command("press", "--long")
                wait_for(lambda: not open_recordings(moved.store), timeout=30,
                         what="the moved device's recording stopped")
            try:
                wait_for(lambda: not any(_unsettled(d) for d in devices), timeout=60)
            except AssertionError:
                raise AssertionError("; ".join(filter(None, map(_unsettled, devices))) +
                                     f"\n{_state(config)}\n{dock.tail(lines=80)}") from None
            wait_for(lambda: all(_state(config)["devices"][i]["ok"] for i in IDS), timeout=30,
                     what="the last pulls recorded")
            dock.send_signal(signal.SIGTERM)
            assert dock.wait(30) == 0, dock.tail()
        records = {d.device_id: {t: d.records(t) for t in ("custody", "purge")}
                   for d in devices}
        sealed = {d.device_id: d.sealed() for d in devices}

    # The scenario as meant: the moved device's last file sealed while a pull of it ran.
    last = max(sealed[moved.device_id])
    assert any(c["payload"]["head"]["seq"] < last < c["seq"]
               for c in records[moved.device_id]["custody"])
    assert not watch.unarchived, f"purged before the archive held them: {watch.unarchived}"
    versions, markers = _all_versions(s3, bucket)
    assert not markers
    by_key = Counter(v["Key"] for v in versions)
    for device_id in IDS:
        files = sealed[device_id]
        keys = {f"{PREFIX}/{device_id}/{p['file']}": seq for seq, p in files.items()}
        # Exactly one version of each sealed file, and nothing else under sealed/.
        archived = {k: n for k, n in by_key.items()
                    if k.startswith(f"{PREFIX}/{device_id}/sealed/")}
        assert archived == dict.fromkeys(keys, 1), device_id
        version_of = {v["Key"]: v for v in versions if v["Key"] in keys}
        for key, seq in keys.items():
            head = s3.head_object(Bucket=bucket, Key=key, VersionId=version_of[key]["VersionId"],
                                  ChecksumMode="ENABLED")
            assert head["ObjectLockMode"] == MODE and head["ContentLength"] == files[seq]["size"]
            assert head["ObjectLockRetainUntilDate"] > started + timedelta(days=RETENTION_DAYS - 1)

        # Custody of every file, each in exactly one custody record, naming its archived version.
        custody = {c["seq"]: c["payload"] for c in records[device_id]["custody"]}
        claims = Counter(s["seq"] for c in custody.values() for s in c["segments"])
        assert claims == Counter(set(files)), device_id
        # Each purge names, per file, a custody before it whose archive named that very
        # version, sealed after the archive's write of it.
        purged: Counter[int] = Counter()
        for purge in records[device_id]["purge"]:
            for item in purge["payload"]["files"]:
                purged[item["seq"]] += 1
                claim = custody[item["custody"]]
                assert item["custody"] < purge["seq"]
                assert item["seq"] in {s["seq"] for s in claim["segments"]}
                (obj,) = [o for o in claim["archive"]["objects"] if o.get("seq") == item["seq"]]
                stored = version_of[obj["key"]]
                assert obj["version_id"] == stored["VersionId"] and obj["key"] in keys
                assert stored["LastModified"].timestamp() <= wall_seconds(purge["wall"]) + 1
        assert purged == Counter(set(files)), device_id
        assert watch.gone.get(device_id) == {p["file"].rsplit("/", 1)[1] for p in files.values()}

        # Nothing fetched twice: between interruptions each file served at most once, and a
        # file the dock held whole when its pull was cut never served again.
        device = next(d for d in devices if d.device_id == device_id)
        bounds = [0, *(cut.log_offset for cut in cuts[device_id])]
        for start, end in itertools.pairwise([*bounds, None]):
            counted = Counter(device.served(start or 0, end))
            twice = sorted(seq for seq, n in counted.items() if n > 1)
            assert not twice, f"{device_id}: sealed seqs {twice} served twice in one pull"
        for cut in cuts[device_id]:
            again = {files[seq]["file"].rsplit("/", 1)[1] for seq in device.served(cut.log_offset)}
            assert again.isdisjoint(cut.held), \
                f"{device_id}: {sorted(again & cut.held)} held whole at a cut, fetched again"
        assert set(device.served()) == set(files)

    verify = subprocess.run([*BODYCAM, "verify", str(evidence)], capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.count("OK: ") == len(IDS), verify.stdout
    archive = subprocess.run([*BODYCAM, "verify", f"s3://{bucket}/{PREFIX}"],
                             capture_output=True, text=True, timeout=180,
                             env={**os.environ, **s3_server.env()})
    assert archive.returncode == 0, archive.stdout + archive.stderr
    for device_id in IDS:
        assert f"{device_id}: OK\n" in archive.stdout, archive.stdout
