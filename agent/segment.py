"""One segment on disk: MPEG-TS written through a hashing file, synced on a cadence, then sealed.

MPEG-TS is chosen because it survives a cut at any byte: after a power loss every
188-byte packet up to the last flushed one still demuxes, with no index to rebuild.
The SHA-256 and size are computed from the bytes as they are written, so sealing
never re-reads the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av

from hal.camera import StreamLayout

CONTAINER = "mpegts"
SUFFIX = ".ts"
_MICROSECONDS = Fraction(1, 1_000_000)
# Every packet goes to the OS as soon as it is muxed (a crash of the process loses
# nothing), and each audio frame is its own PES so none waits in the muxer.
_MUX_OPTIONS = {"flush_packets": "1", "pes_payload_size": "0"}


class EncodedPacket(NamedTuple):
    data: bytes
    pts_us: int
    keyframe: bool
    audio: bool


class AdtsFramer:
    """Puts the 7-byte ADTS header on raw AAC frames, as MPEG-TS carries AAC.

    The header is derived from the AudioSpecificConfig (ISO 14496-3) the encoder
    gives as extradata: object type, sampling-frequency index, channel layout.
    """

    def __init__(self, audio_specific_config: bytes) -> None:
        if len(audio_specific_config) < 2:
            raise ValueError(f"AAC AudioSpecificConfig too short: {audio_specific_config!r}")
        first, second = audio_specific_config[0], audio_specific_config[1]
        object_type = first >> 3
        frequency_index = ((first & 0x07) << 1) | (second >> 7)
        self._channels = (second >> 3) & 0x0F
        self._fixed = bytes([0xFF, 0xF1, ((object_type - 1) & 0x03) << 6
                             | frequency_index << 2 | self._channels >> 2])

    def frame(self, payload: bytes) -> bytes:
        if payload[:2] in (b"\xff\xf1", b"\xff\xf9"):
            return payload  # already ADTS
        length = len(payload) + 7
        return self._fixed + bytes([(self._channels & 0x03) << 6 | length >> 11,
                                    (length >> 3) & 0xFF, (length & 0x07) << 5 | 0x1F,
                                    0xFC]) + payload


class _HashingFile:
    """The file object the muxer writes to: every byte that reaches the file is hashed.

    A write the disk cannot take (ENOSPC) may land part of its bytes; those are hashed
    and counted, so the file sealed after a full disk matches its record to the byte.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error  # the muxer's tail after a failure must not land past a hole
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as exc:
                self.error = exc
                raise
            self.sha256.update(view[:written])
            self.size += written
            view = view[written:]
        return len(data)


@dataclass
class StreamSpan:
    """First and last presentation time and packet count of one stream in one segment."""

    first_pts_us: int | None = None
    last_pts_us: int | None = None
    packets: int = 0

    def add(self, pts_us: int) -> None:
        if self.first_pts_us is None:
            self.first_pts_us = pts_us
        self.last_pts_us = pts_us
        self.packets += 1


@dataclass
class SegmentSummary:
    path: Path
    size: int
    sha256: str
    video: StreamSpan
    audio: StreamSpan
    opened_wall_ns: int
    write_error: str | None  # why the file ends early (e.g. the disk filled), else None


class SegmentWriter:
    """Muxes packets into open/<name>.ts and syncs the file at most `flush_interval` apart."""

    def __init__(self, path: Path, layout: StreamLayout, flush_interval: float) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.video = StreamSpan()
        self.audio = StreamSpan()
        self.opened_wall_ns = time.time_ns()
        self._file = _HashingFile(path)
        self._container = av.open(self._file, "w", format=CONTAINER, options=_MUX_OPTIONS)
        # Mux-only streams: opening an encoder per segment would cost milliseconds of
        # CPU under the GIL at every cut, for packets that are already encoded.
        self._video_stream = self._container.add_mux_stream(
            "h264", width=layout.width, height=layout.height)
        self._audio_stream = None
        self._adts = None
        if layout.audio:
            self._audio_stream = self._container.add_mux_stream(layout.audio.codec,
                                                                rate=layout.audio.sample_rate)
            self._adts = AdtsFramer(layout.audio.extradata)
        self._last_sync = time.monotonic()

    def write(self, packet: EncodedPacket) -> None:
        if packet.audio and self._audio_stream is None:
            return
        av_packet = av.Packet(self._adts.frame(packet.data) if packet.audio else packet.data)
        av_packet.pts = av_packet.dts = packet.pts_us
        av_packet.time_base = _MICROSECONDS
        av_packet.is_keyframe = packet.keyframe
        if packet.audio:
            av_packet.stream = self._audio_stream
            self.audio.add(packet.pts_us)
        else:
            av_packet.stream = self._video_stream
            self.video.add(packet.pts_us)
        self._container.mux(av_packet)
        if time.monotonic() - self._last_sync >= self.flush_interval:
            os.fdatasync(self._file.fd)
            self._last_sync = time.monotonic()

    def close(self) -> SegmentSummary:
        """Write the muxer's tail, fsync and close; the file is then complete but not yet sealed.

        After a failed write the tail cannot be written either: the file is kept as it
        is, to its last written byte, and the summary says why it ends there.
        """
        try:
            self._container.close()
        except (OSError, av.FFmpegError):
            if self._file.error is None:
                raise
        os.fsync(self._file.fd)
        os.close(self._file.fd)
        error = self._file.error
        return SegmentSummary(self.path, self._file.size, self._file.sha256.hexdigest(),
                              self.video, self.audio, self.opened_wall_ns,
                              None if error is None else errno.errorcode.get(error.errno,
                                                                             str(error)))
