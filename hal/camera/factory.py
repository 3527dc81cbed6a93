"""Chooses the camera backend the configuration names; each backend's libraries load only
when it is chosen, so the simulated device never imports picamera2 and a Pi never PyAV's
encoder."""

from __future__ import annotations

from collections.abc import Callable

from agent.config import Config
from hal.camera.base import AudioLayout, Camera, StreamLayout
from hal.camera.mode import video_mode


def open_camera(config: Config, officer: Callable[[], str] | None = None,
                position: Callable[[], str] | None = None) -> Camera:
    """The configured backend; hardware libraries are imported only when chosen. For the
    overlay, `officer`: who wears the device now (default: the configured officer);
    `position`: where it is, as the overlay shows it (default: nothing)."""
    if config.camera.backend == "sim":
        from hal.camera.sim import SimulatedCamera

        camera: Camera = SimulatedCamera(config, officer, position)
    else:
        from hal.camera.picamera import PiCamera

        camera = PiCamera(config, officer, position)
    if config.audio.enabled and config.audio.backend != "sim":
        from hal.absent import open_or_absent
        from hal.audio import AbsentMicrophone, open_microphone
        from hal.camera.microphone_track import CameraWithMicrophone

        # A dead microphone must not stop the video: the track stays, empty.
        audio = config.audio
        microphone = open_or_absent(
            "microphone", lambda: open_microphone(audio),
            lambda reason: AbsentMicrophone(audio.sample_rate, audio.channels, reason), {})
        return CameraWithMicrophone(camera, microphone, config.audio)
    return camera


def expected_layout(config: Config) -> StreamLayout:
    """The streams the configured camera will deliver, for a camera not (yet) opened."""
    audio = None
    if config.audio.enabled and (config.camera.backend == "sim" or config.audio.backend != "sim"):
        from hal.camera.aac import AacEncoder

        aac = AacEncoder(config.audio.sample_rate, config.audio.channels, config.audio.bitrate)
        audio = AudioLayout("aac", aac.sample_rate, aac.channels, aac.frame_size, aac.extradata)
    mode = video_mode(config)
    return StreamLayout(mode.width, mode.height, mode.fps, audio)
