"""The flush cadence is a ceiling (issue 19, item 3): every byte a segment writer hands the
OS is covered by an fdatasync that begins within `flush_interval` of its write, whether or
not more packets follow, and a slow fdatasync never holds up a packet.

The contract this stands on is fdatasync(2)'s: what was written to the file before the call
is durable when it returns. `os.fdatasync` is wrapped only to note when each call began and
ended and how large the file was then; the real call still runs on a real file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.device.recording import segment
from agent.device.recording.segment import EncodedPacket, SegmentWriter
from agent.device.recording.syncer import Syncer
from hal.camera.base import StreamLayout
from tests.support.page_cache import page_cache

INTERVAL = 0.2
FPS = 30
LAYOUT = StreamLayout(320, 240, FPS, None)


@dataclass(frozen=True)
class Sync:
    began: float
    ended: float
    size: int  # of the file when the call began: what it makes durable


@dataclass
class Syncs:
    done: list[Sync] = field(default_factory=list)
    latency_s: float = 0.0  # a slow card: each call takes this long


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Syncs]:
    seen = Syncs()
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        began, size = time.monotonic(), os.fstat(fd).st_size
        time.sleep(seen.latency_s)
        real(fd)
        seen.done.append(Sync(began, time.monotonic(), size))

    monkeypatch.setattr(segment.os, "fdatasync", fdatasync)
    yield seen


def frame(index: int) -> EncodedPacket:
    payload = b"\x00\x00\x00\x01\x65" + bytes([index % 256]) * 2000
    return EncodedPacket(payload, index * 1_000_000 // FPS, index == 0, False)


def record(tmp_path: Path, bursts: list[tuple[int, float]]) -> list[tuple[float, int]]:
    """Write `count` frames in real time, then pause `pause` seconds, for each burst; the
    time and file size after each write."""
    writes: list[tuple[float, int]] = []
    syncer = Syncer(INTERVAL, lambda age: None)
    writer = SegmentWriter(tmp_path / "seg.ts", LAYOUT, [])
    syncer.watch(writer)
    index = 0
    try:
        for count, pause in bursts:
            for _ in range(count):
                if writer.write(frame(index)):
                    syncer.written()
                writes.append((time.monotonic(), os.path.getsize(writer.path)))
                index += 1
                time.sleep(1 / FPS)
            time.sleep(pause)
    finally:
        writer.close()
        syncer.forget(writer)
        syncer.stop()
    return writes


def test_bytes_are_durable_within_the_interval_even_when_no_packet_follows(
        tmp_path: Path, syncs: Syncs) -> None:
    """A camera that stalls, or a recording's last packets before a pause: the bytes written
    just before must not wait for the next packet to be synced."""
    writes = record(tmp_path, [(10, 4 * INTERVAL), (10, 4 * INTERVAL)])
    slack = 0.1  # scheduling on a loaded two-core machine
    for written_at, size in writes:
        covering = next((s for s in syncs.done if s.began >= written_at and s.size >= size), None)
        assert covering is not None, f"the write at {size} bytes was never synced"
        assert covering.began - written_at <= INTERVAL + slack, (
            f"{size} bytes written at {written_at:.3f} waited "
            f"{covering.began - written_at:.3f} s for a sync (interval {INTERVAL} s)")


def test_a_slow_fdatasync_holds_up_no_write(tmp_path: Path, syncs: Syncs) -> None:
    syncs.latency_s = 0.3
    longest = 0.0
    syncer = Syncer(INTERVAL, lambda age: None)
    writer = SegmentWriter(tmp_path / "seg.ts", LAYOUT, [])
    syncer.watch(writer)
    try:
        for index in range(45):
            started = time.monotonic()
            if writer.write(frame(index)):
                syncer.written()
            longest = max(longest, time.monotonic() - started)
            time.sleep(1 / FPS)
    finally:
        writer.close()
        syncer.forget(writer)
        syncer.stop()
    assert len(syncs.done) >= 2, "the syncs ran meanwhile"
    assert longest < 0.1, f"a write waited {longest:.3f} s behind a 0.3 s fdatasync"


def test_close_waits_for_a_sync_in_progress(tmp_path: Path, syncs: Syncs) -> None:
    """The sealer's close and the syncer's sync of the same file never overlap: no
    fdatasync on a closed (perhaps reused) descriptor."""
    syncs.latency_s = 0.3
    ages: list[float] = []
    syncer = Syncer(0.01, ages.append)
    writer = SegmentWriter(tmp_path / "seg.ts", LAYOUT, [])
    syncer.watch(writer)
    writer.write(frame(0))
    syncer.written()
    time.sleep(0.1)  # the sync has begun and is sleeping inside fdatasync
    closer = threading.Thread(target=writer.close)
    closer.start()
    closer.join(5)
    syncer.forget(writer)
    syncer.stop()
    assert ages and ages[0] >= 0.3, "the sync that was in progress completed"


def test_an_open_segment_survives_a_power_cut_after_its_first_sync(tmp_path: Path) -> None:
    """fdatasync makes the bytes durable, not the file's name in open/ (POSIX asks for a
    sync of the folder): without it a cut mid-segment would lose the whole segment."""
    store = tmp_path / "store"
    (store / "open").mkdir(parents=True)
    with page_cache(store) as cache:
        syncer = Syncer(INTERVAL, lambda age: None)
        writer = SegmentWriter(store / "open" / "seg.ts", LAYOUT, [])
        syncer.watch(writer)
        for index in range(10):
            if writer.write(frame(index)):
                syncer.written()
        time.sleep(3 * INTERVAL)  # the deadline passed: synced, no packet since
        written = writer.path.read_bytes()
        after = cache.cut(tmp_path / "after", names="synced")
        syncer.stop()
    assert (after / "open" / "seg.ts").read_bytes() == written
