"""Photos: a still from the running camera, sealed and chained like a segment.

A press of the PHOTO button (or the control socket's `photo`) asks the camera for the next
frame it delivers, as that frame goes to the encoder with its overlay (time, device,
officer): the video goes on and loses no frame. The frame is encoded as a JPEG (Pillow) and
sealed as `sealed/<seq>.jpg` (`.jpg.age` when the store encrypts at rest) by a `photo`
record (docs/chain-format.md).

The camera runs whenever the daemon does (it feeds the pre-event buffer), so a photo in
standby is taken the same way as during a recording, with `recording` null. When no frame
comes within STILL_TIMEOUT_S (no camera, a hung one, one being restarted) nothing is sealed
and the officer is told (`failed`). Photos are taken one at a time on their own thread, so a
press never holds up the state machine; presses made meanwhile wait their turn.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from PIL import Image

from agent.device.seal_file import seal_file
from agent.evidence.chain import Chain
from agent.evidence.store import Store
from hal.camera.base import Camera, StillUnavailable

log = logging.getLogger(__name__)

STILL_TIMEOUT_S = 1.0  # a few frames at any supported rate; a camera this late is stalled
JPEG_QUALITY = 90
SUFFIX = ".jpg"


class PhotoTaker:
    """Takes and seals photos on its thread; `taken(record)` or `failed(reason)` after each."""

    def __init__(self, store: Store, chain: Chain, camera: Callable[[], Camera],
                 recipients: list[X25519PublicKey], taken: Callable[[dict[str, Any]], None],
                 failed: Callable[[str], None]) -> None:
        self._store = store
        self._chain = chain
        self._camera = camera  # asked at each photo: a restarted camera is a new object
        self._recipients = recipients
        self._taken = taken
        self._failed = failed
        self._requests: queue.SimpleQueue[tuple[int | None, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="photo", daemon=True)
        self._thread.start()

    def request(self, recording: int | None, source: str) -> None:
        """Take a photo soon; `recording`: the seq of the recording under way, if any."""
        self._requests.put((recording, source))

    def close(self) -> None:
        """Seal the photos asked for so far, then stop (before the camera and the chain)."""
        self._requests.put(None)
        self._thread.join()

    def take(self, recording: int | None, source: str) -> dict[str, Any]:
        """Take and seal one photo now; StillUnavailable when the camera gives no frame."""
        still = self._camera().still(STILL_TIMEOUT_S)
        height, width = still.rgb.shape[:2]
        jpeg = io.BytesIO()
        Image.fromarray(still.rgb, "RGB").save(jpeg, "JPEG", quality=JPEG_QUALITY)
        return seal_file(self._store, self._chain, "photo", SUFFIX, jpeg.getvalue(),
                         self._recipients, {"recording": recording, "source": source,
                                            "width": width, "height": height,
                                            "pts_us": still.pts_us})

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            try:
                record = self.take(*request)
            except StillUnavailable as exc:
                log.warning("no photo taken: %s", exc)
                self._failed(str(exc))
                continue
            except Exception as exc:  # a full disk, a chain that refuses: said, not fatal
                log.exception("no photo sealed")
                self._failed(f"{type(exc).__name__}: {exc}")
                continue
            log.info("photo sealed as %s", record["payload"]["file"])
            self._taken(record)
