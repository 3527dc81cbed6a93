"""One segment on disk: MPEG-TS written through a hashing file, synced on a cadence, then sealed.

MPEG-TS is chosen because it survives a cut at any byte: after a power loss every
188-byte packet up to the last flushed one still demuxes, with no index to rebuild.
The SHA-256 and size are computed from the bytes as they are written, so sealing
never re-reads the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.durable import fsync_dir
from agent.evidence.age import AgeEncryptor, encryption_record
from hal.camera.base import StreamLayout

CONTAINER = "mpegts"
SUFFIX = ".ts"
AGE_SUFFIX = ".age"
_MICROSECONDS = Fraction(1, 1_000_000)
# Every packet goes to the OS as soon as it is muxed (a crash of the process loses
# nothing), each audio frame is its own PES, and the muxer interleaves by time only as
# far as one packet (max_interleave_delta, in us): by default it would hold video back
# until the audio encoder's output, a few frames behind, caught up, so that a power cut
# would lose those frames too.
_MUX_OPTIONS = {"flush_packets": "1", "pes_payload_size": "0", "max_interleave_delta": "1"}
# Encrypting, bytes wait for a whole 64 KiB age chunk anyway: the muxer may then fill its
# own buffer (this size) before handing them over, one call instead of one per packet.
_ENCRYPTED_MUX_OPTIONS = {**_MUX_OPTIONS, "flush_packets": "0"}
_MUXER_BUFFER = 32768


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


class _Digest:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def add(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        self.size += len(data)


class _SegmentFile:
    """The file object the muxer writes to: hashes what the muxer gives (the plaintext)
    and what reaches the disk (the stored bytes), encrypting in between when there are
    recipients, so that no plaintext is ever written.

    A write the disk cannot take (ENOSPC) may land part of its bytes; those are hashed
    and counted, so the file sealed after a full disk matches its record to the byte.
    """

    def __init__(self, path: Path, recipients: list[X25519PublicKey]) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.stored = _Digest()
        self.plaintext_size = 0
        self.encryptor = AgeEncryptor(recipients) if recipients else None
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error  # the muxer's tail after a failure must not land past a hole
        self.plaintext_size += len(data)
        if self.encryptor:
            if stored := self.encryptor.update(data):
                self._store(stored)
        else:
            self._store(data)  # the stored bytes are the plaintext
        return len(data)

    def finish(self) -> None:
        if self.encryptor and self.error is None:
            self._store(self.encryptor.finalize())

    @property
    def plaintext_on_disk(self) -> int:
        if self.encryptor:
            return self.encryptor.plaintext_written
        return self.stored.size

    def _store(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as exc:
                self.error = exc
                raise
            self.stored.add(view[:written])
            view = view[written:]


@dataclass
class StreamSpan:
    """First and last presentation time and packet count of one stream in one segment."""

    first_pts_us: int | None = None
    last_pts_us: int | None = None
    packets: int = 0
    recent: deque[tuple[int, int]] | None = None  # (pts, packets so far), when asked for

    def as_record(self) -> dict[str, int | None]:
        return {"first_pts_us": self.first_pts_us, "last_pts_us": self.last_pts_us,
                "packets": self.packets}

    def up_to(self, pts_us: int) -> dict[str, int | None] | None:
        """The span of the packets at or before `pts_us`; None if `recent` is too short."""
        if self.last_pts_us is None or self.last_pts_us <= pts_us:
            return self.as_record()
        for pts, packets in reversed(self.recent or ()):
            if pts <= pts_us:
                return {"first_pts_us": self.first_pts_us, "last_pts_us": pts,
                        "packets": packets}
        return None

    def add(self, pts_us: int) -> None:
        if self.first_pts_us is None:
            self.first_pts_us = pts_us
        self.last_pts_us = pts_us
        self.packets += 1
        if self.recent is not None:
            self.recent.append((pts_us, self.packets))


class Progress:
    """Beside an encrypted segment: how much of it the chunks on disk hold, in times.

    Recovery cannot read an encrypted segment's times without the key; this small
    file (numbers only, no media) tells it, as of the last sync. At every sync a
    checkpoint is taken: the plaintext handed over so far, and per stream the span
    of packets surely written out by then. The muxer holds a packet back until every
    stream has one at least as late (it interleaves by time), so each stream counts
    up to the earliest of the streams' latest timestamps (the writer keeps a short
    record of its recent packets for this). A checkpoint counts once the disk holds
    its plaintext plus a whole muxer buffer (where its last bytes may still have
    been).
    """

    SIZE = 512
    SUFFIX = ".progress"

    def __init__(self, segment: Path, encryption: dict[str, object], audio: bool,
                 video: bool = True) -> None:
        self.path = segment.with_name(segment.name + self.SUFFIX)
        self._encryption = encryption
        self._audio = audio
        self._video = video
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        empty = StreamSpan().as_record()
        self._taken = {"video": empty, "audio": empty}  # the last checkpoint's spans
        self._checkpoints: deque[tuple[int, dict[str, dict[str, int | None]]]] = deque()
        self._durable = self._taken

    def checkpoint(self, handed_over: int, video: StreamSpan, audio: StreamSpan) -> None:
        """Taken with the muxer still, just before the segment's sync: the spans of what
        was handed over so far."""
        latest = [span.last_pts_us for span, present in ((video, self._video),
                                                         (audio, self._audio)) if present]
        taken = dict(self._taken)
        if None not in latest:
            for kind, span in (("video", video), ("audio", audio)):
                taken[kind] = span.up_to(min(latest)) or taken[kind]
        self._taken = taken
        self._checkpoints.append((handed_over + _MUXER_BUFFER, taken))

    def commit(self, on_disk: int) -> None:
        """After the segment's sync, with what was on disk when it began: never claims more
        than is durable."""
        while self._checkpoints and self._checkpoints[0][0] <= on_disk:
            self._durable = self._checkpoints.popleft()[1]
        self._write(self._durable)

    def finished(self, video: StreamSpan, audio: StreamSpan) -> None:
        """The muxer and the encryptor wrote out everything, and it is synced."""
        self._checkpoints.clear()
        self._durable = {"video": video.as_record(), "audio": audio.as_record()}
        self._write(self._durable)

    def _write(self, spans: dict[str, dict[str, int | None]]) -> None:
        state = {"encryption": self._encryption, **spans}
        os.pwrite(self._fd, json.dumps(state).encode().ljust(self.SIZE), 0)
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    @classmethod
    def remove(cls, segment: Path) -> None:
        segment.with_name(segment.name + cls.SUFFIX).unlink(missing_ok=True)

    @classmethod
    def read(cls, segment: Path) -> dict[str, Any] | None:
        try:
            return json.loads(segment.with_name(segment.name + cls.SUFFIX).read_bytes())
        except (OSError, ValueError):
            return None


@dataclass
class SegmentSummary:
    path: Path
    size: int
    sha256: str
    video: StreamSpan
    audio: StreamSpan
    opened_wall_ns: int
    write_error: str | None  # why the file ends early (e.g. the disk filled), else None
    plaintext: dict[str, int | str] | None  # sha256 and size before encryption, if known


class SegmentWriter:
    """Muxes packets into open/<name>.ts (`.ts.age` when encrypting to `recipients`): the
    layout's video and audio streams, or its audio stream alone when not `video` (a
    sound-only recording).

    The writer thread muxes (`write`); the syncer thread makes it durable (`sync`), so a
    slow fdatasync never holds up a packet; the sealer thread closes it (`close`), after
    any sync in progress. `unsynced_since` is when the oldest byte not yet covered by a
    sync was written: the syncer's deadline counts from it.
    """

    def __init__(self, path: Path, layout: StreamLayout,
                 recipients: list[X25519PublicKey], video: bool = True) -> None:
        self.path = path.with_name(path.name + AGE_SUFFIX) if recipients else path
        self.video = StreamSpan()
        self.audio = StreamSpan()
        self.opened_wall_ns = time.time_ns()
        self._file = _SegmentFile(self.path, recipients)
        self.progress = None
        if recipients:
            self.progress = Progress(self.path, encryption_record(recipients),
                                     audio=layout.audio is not None, video=video)
            self.video.recent, self.audio.recent = deque(maxlen=512), deque(maxlen=512)
        self._container = av.open(self._file, "w", format=CONTAINER,
                                  options=_ENCRYPTED_MUX_OPTIONS if recipients else _MUX_OPTIONS,
                                  buffer_size=_MUXER_BUFFER)
        # Mux-only streams: opening an encoder per segment would cost milliseconds of
        # CPU under the GIL at every cut, for packets that are already encoded.
        self._video_stream = self._container.add_mux_stream(
            "h264", width=layout.width, height=layout.height) if video else None
        self._audio_stream = None
        self._adts = None
        if layout.audio:
            self._audio_stream = self._container.add_mux_stream(layout.audio.codec,
                                                                rate=layout.audio.sample_rate)
            self._adts = AdtsFramer(layout.audio.extradata)
        self.unsynced_since: float | None = None
        self._muxing = threading.Lock()   # the muxer's state, against a sync's snapshot
        self._syncing = threading.Lock()  # a sync in progress, against close
        self._closed = False
        self._named = False  # whether open/ has been synced since the file was created

    def write(self, packet: EncodedPacket) -> bool:
        """Mux one packet; True when it is the first written since the last sync began (the
        syncer has a new deadline)."""
        if (self._audio_stream if packet.audio else self._video_stream) is None:
            return False
        with self._muxing:
            self._mux(packet)
            if self.unsynced_since is not None:
                return False
            self.unsynced_since = time.monotonic()
            return True

    def _mux(self, packet: EncodedPacket) -> None:
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

    def sync(self) -> float | None:
        """Make durable every byte written so far; returns the age (s) the oldest of them
        had when it became durable, or None when there was nothing to sync."""
        with self._syncing:
            if self._closed:
                return None
            with self._muxing:  # what is written now is what this fdatasync covers
                since, self.unsynced_since = self.unsynced_since, None
                if since is None:
                    return None
                on_disk = self._file.plaintext_on_disk
                if self.progress:
                    self.progress.checkpoint(self._file.plaintext_size, self.video, self.audio)
            os.fdatasync(self._file.fd)
            if not self._named:  # the file's name in open/ (and its .progress), once
                fsync_dir(self.path.parent)
                self._named = True
            if self.progress:
                self.progress.commit(on_disk)
            return time.monotonic() - since

    def close(self) -> SegmentSummary:
        """Write the muxer's tail, fsync and close; the file is then complete but not yet sealed.

        After a failed write the tail cannot be written either: the file is kept as it
        is, to its last written byte, and the summary says why it ends there.
        """
        with self._syncing, self._muxing:
            self._closed = True
            self.unsynced_since = None
            try:
                self._container.close()
                self._file.finish()
            except (OSError, av.FFmpegError):
                if self._file.error is None:
                    raise
            os.fchmod(self._file.fd, 0o444)  # sealed material; durable with the fsync below
            os.fsync(self._file.fd)
            os.close(self._file.fd)
        if self.progress:
            if self._file.error is None:
                self.progress.finished(self.video, self.audio)
            self.progress.close()
        error, stored, encryptor = self._file.error, self._file.stored, self._file.encryptor
        return SegmentSummary(
            self.path, stored.size, stored.sha256.hexdigest(), self.video, self.audio,
            self.opened_wall_ns,
            None if error is None else errno.errorcode.get(error.errno, str(error)),
            # After a failed write the plaintext given is more than what decrypts.
            {"sha256": encryptor.plaintext_sha256.hexdigest(),
             "size": self._file.plaintext_size}
            if encryptor and error is None else None)
