"""The recorder: the camera's Output, cutting the continuous packet stream into sealed segments.

Four threads, so that neither the disk nor the chain ever holds up the encoder:
- the encoder thread calls `outputframe`, which only files the packet (pre-event
  buffer in standby, the write queue while recording) and returns;
- the writer thread muxes packets into the open segment, rotating on the first
  keyframe at or past the target length (in a sound-only recording, on the first audio
  packet, each of which decodes alone), so every packet lands in exactly one segment
  and presentation times run on across the cut;
- the syncer thread makes what was written durable, by a deadline (syncer.py);
- the sealer thread closes finished segments, moves them to sealed/ and signs them
  into the chain.

When the disk fills, the segment keeps every byte the disk took and is sealed; the
store's reserve is released so the chain can say so, and `on_fault` tells the daemon,
which stops the recording as an interruption. Until then packets are dropped, counted.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.config import RecorderConfig
from agent.device.recording.prebuffer import PreEventBuffer
from agent.device.recording.segment import (
    AGE_SUFFIX,
    SUFFIX,
    EncodedPacket,
    Progress,
    SegmentSummary,
    SegmentWriter,
)
from agent.device.recording.syncer import Syncer
from agent.evidence.age import encryption_record
from agent.evidence.chain import Chain, utc_iso
from agent.evidence.store import Store
from hal.camera.base import StreamLayout

log = logging.getLogger(__name__)


@dataclass
class _Recording:
    """One recording, from start to stop: its id is the seq of its record_start record."""

    id: int
    trigger: str
    audio_only: bool = False  # sound without video: the camera's video packets are left out
    pre_event: dict[str, int | None] = field(default_factory=dict)
    segments: int = 0
    video_frames: int = 0
    audio_packets: int = 0
    last_segment: str | None = None
    sealed: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class _Stop:
    recording: _Recording


@dataclass
class RecorderStats:
    """Figures of the packet path, for status and benchmarks."""

    frames_seen: int = 0
    packets: int = 0
    packets_lost: int = 0
    packets_dropped_disk_full: int = 0
    max_queue_depth: int = 0
    longest_rotation_s: float = 0.0
    segments_sealed: int = 0
    # The oldest byte's age when its sync completed: what a power cut could have lost.
    longest_unsynced_s: float = 0.0


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class Recorder:
    def __init__(self, layout: StreamLayout, store: Store, chain: Chain,
                 config: RecorderConfig,
                 on_fault: Callable[[str, str], None] = lambda cause, detail: None,
                 recipients: list[X25519PublicKey] | None = None,
                 location: Callable[[], dict[str, Any]] | None = None,
                 write_gate: Callable[[], None] | None = None) -> None:
        self._layout = layout
        self._store = store
        self._chain = chain
        self._config = config
        self._on_fault = on_fault
        self._recipients = recipients or []
        self._location = location  # the fields saying where the device was (hal/gnss.py)
        self._segment_us = int(config.segment_seconds * 1_000_000)
        self._prebuffer = PreEventBuffer(int(config.pre_event_seconds * 1_000_000),
                                         config.pre_event_audio)
        self._lock = threading.Lock()
        self._recording: _Recording | None = None
        self._queue: queue.SimpleQueue[EncodedPacket | _Recording | _Stop | None] = \
            queue.SimpleQueue()
        self._seal_queue: queue.SimpleQueue[tuple[SegmentWriter, _Recording, int] | _Stop
                                            | None] = queue.SimpleQueue()
        self.stats = RecorderStats()
        self.current_segment: str | None = None
        self.last_frame_mono_ns: int | None = None
        # Owned by the writer thread:
        self._writing: _Recording | None = None
        self._segment: SegmentWriter | None = None
        self._index = 0
        self._failing = False
        self._disk_full = False
        # CLOCK_MONOTONIC ns at which each worker took the item it is on; None while it waits.
        self._busy_since: dict[str, int | None] = {"segment writer": None,
                                                   "segment sealer": None}
        # Called before each write: where the simulated device's storage can stall.
        self._write_gate = write_gate
        self._writer = threading.Thread(target=self._write_loop, name="segment-writer",
                                        daemon=True)
        self._sealer = threading.Thread(target=self._seal_loop, name="segment-sealer",
                                        daemon=True)
        self._syncer = Syncer(config.flush_interval, self._synced)
        self._writer.start()
        self._sealer.start()

    # --- the camera's Output (encoder thread) -------------------------------------------

    def outputframe(self, frame: bytes | None, keyframe: bool = True,
                    timestamp: int | None = None, packet: Any = None,
                    audio: bool = False) -> None:
        data = frame if frame is not None else bytes(packet)
        encoded = EncodedPacket(data, timestamp, keyframe, audio)
        if not audio:
            self.stats.frames_seen += 1
            self.last_frame_mono_ns = time.monotonic_ns()
        with self._lock:
            if self._recording is None:
                self._prebuffer.add(encoded)
                return
            if self._recording.audio_only and not audio:
                return
            self._queue.put(encoded)
        self.stats.packets += 1

    # --- control (the daemon's thread) --------------------------------------------------

    @property
    def recording_id(self) -> int | None:
        recording = self._recording
        return recording.id if recording else None

    def start(self, trigger: str, media_origin_ns: int | None = None,
              audio_only: bool = False) -> int:
        """Seal a record_start, then record from the pre-event buffer on; `audio_only`
        records the sound without the video (docs/recorder.md).

        `media_origin_ns` is CLOCK_MONOTONIC at presentation time 0: with the record's
        own mono_ns and wall time it places every frame of the recording in real time.
        """
        if self._recording is not None:
            return self._recording.id
        if audio_only and self._layout.audio is None:
            raise ValueError("a sound-only recording needs the microphone ([audio] enabled)")
        record = self._chain.append("record_start", {
            "trigger": trigger,
            "mode": "audio" if audio_only else "video",
            "media_origin_mono_ns": media_origin_ns,
            "pre_event_ms": round(self._config.pre_event_seconds * 1000),
            "pre_event_audio": self._config.pre_event_audio,
        })
        recording = _Recording(record["seq"], trigger, audio_only)
        with self._lock:
            buffered = self._prebuffer.drain()
            if audio_only:
                buffered = [packet for packet in buffered if packet.audio]
            recording.pre_event = _pre_event_span(buffered, self._layout)
            self._queue.put(recording)
            for packet in buffered:
                self._queue.put(packet)
            self._recording = recording
        return recording.id

    def discard_buffered(self) -> None:
        """Forget the pre-event buffer: a restarted camera starts a new timeline."""
        with self._lock:
            dropped = len(self._prebuffer.drain())
        log.info("pre-event buffer of the old camera discarded (%d packets)", dropped)

    def stop(self, reason: str) -> dict[str, Any] | None:
        """Seal the open segment and a record_stop; returns the record, or None if idle."""
        with self._lock:
            recording, self._recording = self._recording, None
            if recording is None:
                return None
            self._queue.put(_Stop(recording))
        recording.sealed.wait()
        return self._chain.append("record_stop", {
            "recording": recording.id,
            "reason": reason,
            "last_segment": recording.last_segment,
            "segments": recording.segments,
            "video_frames": recording.video_frames,
            "audio_packets": recording.audio_packets,
        })

    def busy_s(self) -> dict[str, float]:
        """Seconds each worker thread has spent on the item it is on (0 while it waits): what
        the watchdog asks, since a hung disk shows as a worker that never finishes."""
        now = time.monotonic_ns()
        busy = {**self._busy_since, "segment syncer": self._syncer.syncing_since_ns}
        return {name: 0.0 if since is None else (now - since) / 1e9
                for name, since in busy.items()}

    def _take(self, items: queue.SimpleQueue[Any], worker: str) -> Any:
        self._busy_since[worker] = None
        item = items.get()
        self._busy_since[worker] = time.monotonic_ns()
        return item

    def close(self) -> None:
        """End the worker threads; call after stop()."""
        self._queue.put(None)
        self._writer.join()
        self._sealer.join()
        self._syncer.stop()

    # --- writer thread ------------------------------------------------------------------

    def _write_loop(self) -> None:
        while (item := self._take(self._queue, "segment writer")) is not None:
            if isinstance(item, _Recording):
                self._writing, self._index, self._disk_full = item, 0, False
            elif isinstance(item, _Stop):
                self._cut()
                self._seal_queue.put(item)
                self.current_segment = None
            elif self._disk_full:
                self.stats.packets_dropped_disk_full += 1
            else:
                try:
                    self._write(item)
                    self._failing = False
                except OSError as exc:
                    if exc.errno in _DISK_FULL:
                        self._fill_up(exc)
                    else:
                        self._lose(item)
                except (av.FFmpegError, ValueError):
                    self._lose(item)
        self._seal_queue.put(None)

    def _lose(self, packet: EncodedPacket) -> None:
        """Never let one bad packet end the recording: count the loss, seal what was
        written, and go on with a new segment."""
        self.stats.packets_lost += 1
        if not self._failing:
            log.critical("recording %d: packet at %s us lost, segment %d cut",
                         self._writing.id, packet.pts_us, self._index, exc_info=True)
        self._failing = True
        self._cut()

    def _fill_up(self, error: OSError) -> None:
        """The disk is full: seal the segment to its last written byte, free the reserve
        so the chain can record it, and report the fault; drop packets until stopped."""
        self._disk_full = True
        self.stats.packets_dropped_disk_full += 1
        self._store.release_reserve()
        log.critical("recording %d: the disk is full (%s); segment %d sealed as written",
                     self._writing.id, error.strerror, self._index)
        self._cut()
        self._on_fault("storage_full", f"{error.strerror} writing segment {self._index}")

    def _write(self, packet: EncodedPacket) -> None:
        if packet.pts_us is None:
            raise ValueError("a packet without a timestamp cannot be placed in the recording")
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, self._queue.qsize())
        segment = self._segment
        audio_only = self._writing.audio_only
        # A video recording cuts on a keyframe, a sound-only one on any audio packet.
        span = None if segment is None else segment.audio if audio_only else segment.video
        rotating = (span is not None and span.first_pts_us is not None
                    and packet.audio == audio_only and (audio_only or packet.keyframe)
                    and packet.pts_us - span.first_pts_us >= self._segment_us)
        if self._write_gate:
            self._write_gate()
        started = time.perf_counter()
        if rotating:
            self._cut()
        if self._segment is None:
            self._segment = self._open_segment(self._writing, self._index)
        if self._segment.write(packet):
            self._syncer.written()
        if rotating:
            self.stats.longest_rotation_s = max(self.stats.longest_rotation_s,
                                                time.perf_counter() - started)

    def _cut(self) -> None:
        """Hand the open segment to the sealer; the next packet opens the next one."""
        if self._segment is not None:
            self._seal_queue.put((self._segment, self._writing, self._index))
            self._segment = None
            self._index += 1

    def _open_segment(self, recording: _Recording, index: int) -> SegmentWriter:
        name = f"{recording.id:08d}-{index:05d}{SUFFIX}"
        self.current_segment = f"open/{name}{AGE_SUFFIX if self._recipients else ''}"
        segment = SegmentWriter(self._store.open / name, self._layout, self._recipients,
                                video=not recording.audio_only)
        self._syncer.watch(segment)
        return segment

    def _synced(self, age_s: float) -> None:
        self.stats.longest_unsynced_s = max(self.stats.longest_unsynced_s, age_s)

    # --- sealer thread ------------------------------------------------------------------

    def _seal_loop(self) -> None:
        while (item := self._take(self._seal_queue, "segment sealer")) is not None:
            if isinstance(item, _Stop):
                item.recording.sealed.set()
                continue
            segment, recording, index = item
            try:
                try:
                    summary = segment.close()
                finally:
                    self._syncer.forget(segment)
                self._seal(summary, recording, index)
            except (OSError, av.FFmpegError):
                # The file stays where it is (open/ or sealed/) for recovery at next start;
                # the recording goes on, and stop() must never wait for a seal that failed.
                log.critical("could not seal segment %d of recording %d (%s)", index,
                             recording.id, segment.path, exc_info=True)

    def _seal(self, summary: SegmentSummary, recording: _Recording, index: int) -> None:
        """Renamed (read-only since its close) to its chain seq, durable, then signed into
        the chain."""
        payload: dict[str, Any] = {
            "recording": recording.id,
            "index": index,
            "container": "mpegts",
            "size": summary.size,
            "sha256": summary.sha256,
            "opened": utc_iso(summary.opened_wall_ns),
            "video": {**summary.video.as_record(), "fps": self._layout.fps,
                      "width": self._layout.width, "height": self._layout.height},
            "audio": None,
        }
        if self._location:
            payload.update(self._location())
        if index == 0:
            payload["pre_event"] = recording.pre_event
        if summary.write_error:
            payload["write_error"] = summary.write_error  # the file ends where the disk did
        if self._recipients:
            payload["encryption"] = encryption_record(self._recipients)
            payload["plaintext"] = summary.plaintext
        if self._layout.audio:
            audio = self._layout.audio
            payload["audio"] = {**summary.audio.as_record(), "codec": audio.codec,
                                "samples": summary.audio.packets * audio.samples_per_packet,
                                "sample_rate": audio.sample_rate,
                                "samples_per_packet": audio.samples_per_packet}
        record = self._chain.append("segment_sealed", payload,
                                    name_for_seq=self._store.move_to_sealed(summary.path))
        recording.last_segment = record["payload"]["file"]
        Progress.remove(summary.path)
        recording.segments += 1
        recording.video_frames += summary.video.packets
        recording.audio_packets += summary.audio.packets
        self.stats.segments_sealed += 1
        log.info("sealed segment %d of recording %d (%d bytes)", index, recording.id,
                 summary.size)


def _pre_event_span(packets: list[EncodedPacket], layout: StreamLayout) -> dict[str, int | None]:
    """Which part of the first segment the device held from before the press (by its video;
    in a sound-only recording, by its sound)."""
    video = [packet.pts_us for packet in packets if not packet.audio]
    audio = [packet.pts_us for packet in packets if packet.audio]
    times, step = ((video, layout.frame_interval_us) if video or not layout.audio
                   else (audio, layout.audio.packet_duration_us))
    if not times:
        return {"video_packets": 0, "audio_packets": 0, "first_pts_us": None, "duration_us": 0}
    return {"video_packets": len(video), "audio_packets": len(audio),
            "first_pts_us": times[0], "duration_us": times[-1] - times[0] + int(step)}


