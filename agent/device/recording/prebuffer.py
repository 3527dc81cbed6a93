"""The pre-event buffer: the last seconds before the button press, kept in memory only."""

from __future__ import annotations

from collections import deque

from agent.device.recording.segment import EncodedPacket


class PreEventBuffer:
    """Whole GOPs covering at least `window_us` before the newest packet.

    The buffer always starts on a keyframe, so the first segment is decodable from
    its first byte; with a window of 0 it still holds the current GOP, which is the
    least the recording can start with. Audio is kept only when asked for.
    """

    def __init__(self, window_us: int, keep_audio: bool) -> None:
        self._window_us = window_us
        self._keep_audio = keep_audio
        self._gops: deque[list[EncodedPacket]] = deque()

    def add(self, packet: EncodedPacket) -> None:
        if packet.audio:
            if self._keep_audio and self._gops:
                self._gops[-1].append(packet)
            return
        if packet.keyframe:
            self._gops.append([packet])
            gops = self._gops
            while len(gops) > 1 and packet.pts_us - gops[1][0].pts_us >= self._window_us:
                gops.popleft()
        elif self._gops:
            self._gops[-1].append(packet)

    def drain(self) -> list[EncodedPacket]:
        packets = [packet for gop in self._gops for packet in gop]
        self._gops.clear()
        return packets
