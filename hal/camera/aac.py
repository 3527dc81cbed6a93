"""AAC encoding of PCM blocks of any length, with presentation times counted in samples."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np


class AacEncoder:
    """PyAV's native AAC encoder fed whole frames from a small carry-over buffer.

    Packet pts are in samples from the first sample fed; the first packet is the
    encoder's priming packet, `frame_size` samples before zero.
    """

    def __init__(self, sample_rate: int, channels: int, bitrate: int) -> None:
        self._context = av.CodecContext.create("aac", "w")
        self._context.sample_rate = sample_rate
        self._context.layout = "mono" if channels == 1 else "stereo"
        self._context.format = "fltp"
        self._context.time_base = Fraction(1, sample_rate)
        self._context.bit_rate = bitrate
        self._context.open()
        self.channels = channels
        self.sample_rate = sample_rate
        self.frame_size = self._context.frame_size
        extradata = self._context.extradata
        assert extradata is not None  # an open AAC encoder holds its AudioSpecificConfig
        self.extradata = bytes(extradata)
        self._pending = np.zeros((0, channels), dtype=np.float32)
        self._samples = 0

    def encode(self, pcm: np.ndarray) -> list[av.Packet[Any]]:
        """`pcm` is float32 shaped (frames, channels); returns the packets now complete."""
        self._pending = np.concatenate([self._pending, pcm.astype(np.float32, copy=False)])
        packets = []
        while len(self._pending) >= self.frame_size:
            block, self._pending = (self._pending[: self.frame_size],
                                    self._pending[self.frame_size:])
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp",
                                               layout=self._context.layout.name)
            frame.sample_rate = self.sample_rate
            frame.pts = self._samples
            self._samples += self.frame_size
            packets.extend(self._context.encode(frame))
        return packets
