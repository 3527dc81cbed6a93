"""The device configuration: one TOML file, validated completely at start.

Every error names the file, the key and the offending value, because the person
reading it is an installer at a docking station, not the author of this code.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from agent.config_file import ConfigFileError, Section, check, read_toml
from agent.mqtt_link import broker, check_tls_files

_REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"
_INSTALLED_CONFIG = Path(sys.prefix) / "share" / "bodycam" / "config"


class ConfigError(Exception):
    """A configuration the daemon refuses to start with."""


PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]
_DAY_S = 24 * 3600


class DeviceConfig(Section):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    officer: Annotated[str, Field(max_length=64)] = ""


class StoreConfig(Section):
    path: Annotated[str, Field(min_length=1)]
    # Held back in a preallocated file, released when the disk fills, so the chain can
    # still seal the last segment, the stop and the alarm.
    reserve_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 30)] = 8 * 1024 * 1024
    # Free space (besides the reserve) at which a recording stopped by a full disk resumes.
    resume_free_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 64 * 1024 * 1024


@dataclass(frozen=True)
class VideoMode:
    """What the camera records: frame size, frame rate and H.264 bitrate."""

    width: int
    height: int
    fps: int
    bitrate: int


ProfileName = Literal["720p30", "1080p30"]
# The named profiles agencies' tenders ask for; docs/hardware.md gives each one's cost per board.
PROFILES: dict[ProfileName, VideoMode] = {
    "720p30": VideoMode(1280, 720, 30, 4_000_000),
    "1080p30": VideoMode(1920, 1080, 30, 9_000_000),
}


class CameraConfig(Section):
    backend: Literal["sim", "picamera2"]
    # A named profile, or "auto": the board's default (hal/board.py: 1080p30 where the SoC
    # encodes H.264 in hardware, else 720p30). Or, instead of a profile, width, height and
    # fps (and bitrate) of one's own.
    profile: Literal["auto", ProfileName] | None = None
    width: Annotated[int, Field(ge=64, le=3840, multiple_of=2)] | None = None
    height: Annotated[int, Field(ge=64, le=2160, multiple_of=2)] | None = None
    fps: Annotated[int, Field(ge=1, le=120)] | None = None
    keyframe_interval: Annotated[int, Field(ge=1, le=10_000,
                                         description="frames between keyframes")]
    # Unset: the profile's.
    bitrate: Annotated[int, Field(ge=100_000, le=50_000_000)] | None = None
    realtime: bool = True
    overlay: bool = True
    # What the overlay burns into every frame, in this order: local time with its offset,
    # device id, officer id, position (while the GNSS has a fresh fix; nothing otherwise).
    overlay_fields: list[Literal["time", "device", "officer", "position"]] = [
        "time", "device", "officer", "position"]
    # The IANA zone of the overlay's time (the chain keeps UTC), e.g. "Asia/Shanghai".
    overlay_timezone: Annotated[str, Field(max_length=64)] = "UTC"
    # picamera2 only: "hardware" is the SoC's V4L2 H.264 encoder (Pi 4 and older), "software"
    # libx264 through picamera2's LibavH264Encoder (Pi 5 has no H.264 block); "auto" picks.
    encoder: Literal["auto", "hardware", "software"] = "auto"
    stall_s: Annotated[float, Field(gt=0, le=60)] = 3.0  # no frame this long is a fault
    restart_backoff_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # After this many restarts in a row without a frame, from a camera that gave frames
    # before, the daemon ends itself for systemd to start it again: picamera2 can hold a
    # dead camera until the process ends. 0 = never.
    restarts_before_exit: Annotated[int, Field(ge=0, le=1000)] = 5

    @field_validator("overlay_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ValueError, OSError, ZoneInfoNotFoundError):
            raise ValueError(f"{name!r} is not a time zone the system knows (IANA names, "
                             "e.g. \"Asia/Shanghai\" or \"UTC\")") from None
        return name

    @model_validator(mode="after")
    def _profile_or_own_size(self) -> CameraConfig:
        own = {"width": self.width, "height": self.height, "fps": self.fps}
        given = [key for key, value in own.items() if value is not None]
        if given and self.profile is not None:
            raise ValueError(f"profile = {self.profile!r} and {', '.join(given)}: the "
                             "profile sets the size and rate; set one or the other")
        if given and (len(given) < len(own) or self.bitrate is None):
            missing = [key for key, value in {**own, "bitrate": self.bitrate}.items()
                       if value is None]
            raise ValueError(f"{', '.join(given)} without {', '.join(missing)}: a size of "
                             "one's own needs width, height, fps and bitrate (or a profile)")
        return self

    def profile_for(self, board_profile: ProfileName) -> ProfileName | None:
        """The profile recorded: the one named, the board's for "auto", None for a size of
        one's own."""
        if self.width is not None:
            return None
        if self.profile is None or self.profile == "auto":
            return board_profile
        return self.profile

    def mode(self, board_profile: ProfileName) -> VideoMode:
        """What is recorded: the size of one's own, else the profile, with [camera] bitrate
        when set."""
        profile = self.profile_for(board_profile)
        if profile is None:
            assert self.width and self.height and self.fps and self.bitrate  # validated
            return VideoMode(self.width, self.height, self.fps, self.bitrate)
        mode = PROFILES[profile]
        return mode if self.bitrate is None else replace(mode, bitrate=self.bitrate)

    @property
    def lowest_fps(self) -> int:
        """The frame rate, or for "auto" the lowest any board's profile has: what the
        keyframe check must hold for before the board is known."""
        if self.fps is not None:
            return self.fps
        if self.profile in PROFILES:
            return PROFILES[self.profile].fps
        return min(mode.fps for mode in PROFILES.values())


class AudioConfig(Section):
    """Microphone and speaker. backend "sim" is a synthetic tone and a silent speaker."""

    enabled: bool = True
    backend: Literal["sim", "sounddevice", "pyaudio"] = "sim"
    input_device: str = ""       # a substring of the device name; "" = the system default
    output_device: str = ""
    # false where no speaker can be heard: a prompt then fails as absent, never sealed as heard
    speaker: bool = True
    sample_rate: Literal[8000, 16000, 22050, 32000, 44100, 48000] = 48000
    channels: Annotated[int, Field(ge=1, le=2)] = 1
    bitrate: Annotated[int, Field(ge=16_000, le=320_000)] = 64_000
    # Capture buffering asked of PortAudio: a Pi's USB or I2S microphone overruns at
    # PortAudio's "low" default while the CPU encodes video; 0.1 s is safe and costs nothing,
    # since every block is stamped with its converter time. (sounddevice; PyAudio cannot
    # ask PortAudio for a latency and keeps the device's default.)
    input_latency_s: Annotated[float, Field(gt=0, le=1)] = 0.1


# GA/T 947: the low-battery alarm while at least 5 and at most 30 minutes of recording remain.
LOW_BATTERY_WINDOW_MIN = (5, 30)


class BatteryConfig(Section):
    """Where the charge is read, and what projects the runtime left."""

    backend: Literal["sim", "sysfs", "max17048", "ina219", "none"] = "sim"
    sysfs_root: str = "/sys/class/power_supply"
    name: str = ""               # power_supply name; "" = the first of type Battery
    i2c_bus: Annotated[int, Field(ge=0, le=1023)] = 1
    # The gauge's address; unset: the chip's usual one (MAX17048 0x36, INA219 0x42).
    i2c_address: Annotated[int, Field(ge=0x03, le=0x77)] | None = None
    # INA219 boards: the shunt and the pack's cells in series (UPS HAT (B): 0.1 ohm, 2).
    shunt_ohm: Annotated[float, Field(gt=0, le=10)] = 0.1
    cells: Annotated[int, Field(ge=1, le=4)] = 2
    capacity_wh: Annotated[float, Field(gt=0, le=1000)] = 11.1
    # Unset: the published figure for this board (hal/board.py, docs/hardware.md).
    recording_draw_w: Annotated[float, Field(gt=0, le=100)] | None = None
    low_percent: Annotated[float, Field(ge=0, le=100)] = 10.0  # the self-check's
    # The low-battery alarm: at this much recording left by the runtime estimate, within
    # the standard's window of 5 to 30 minutes (GA/T 947; docs/chain-format.md, alarm).
    low_minutes: float = 20.0
    # Below this the recording is sealed and stopped while it still can be; it resumes
    # on the charger or at resume_percent.
    stop_percent: Annotated[float, Field(ge=0, le=100)] = 3.0
    resume_percent: Annotated[float, Field(ge=0, le=100)] = 5.0

    @field_validator("low_minutes")
    @classmethod
    def _in_the_alarm_window(cls, minutes: float) -> float:
        if not LOW_BATTERY_WINDOW_MIN[0] <= minutes <= LOW_BATTERY_WINDOW_MIN[1]:
            raise ValueError("the low-battery alarm must come while {} to {} minutes of "
                             "recording remain".format(*LOW_BATTERY_WINDOW_MIN))
        return minutes

    @model_validator(mode="after")
    def _resume_above_stop(self) -> BatteryConfig:
        if self.resume_percent <= self.stop_percent:
            raise ValueError(f"resume_percent = {self.resume_percent:g} must be above "
                             f"stop_percent = {self.stop_percent:g}")
        return self


class EncryptionConfig(Section):
    """Media encrypted at rest, as it is written, to the agency's age recipients.

    Recipients here are added to those installed at enrollment (keys/recipients.txt).
    """

    enabled: bool = False
    recipients: list[Annotated[str, Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$")]] = []


class ThermalConfig(Section):
    """The SoC's temperature: recording stops, sealed, before the board throttles or dies."""

    backend: Literal["sim", "sysfs", "none"] = "sim"
    zone: str = "/sys/class/thermal/thermal_zone0"
    # The firmware's under-voltage and throttling word, else the hwmon under-voltage alarm.
    firmware_flags: str = "/sys/devices/platform/soc/soc:firmware/get_throttled"
    hwmon_root: str = "/sys/class/hwmon"
    # Pi 4 and Pi 5 begin to throttle at 80 °C (docs/hardware.md): warn before, stop there.
    warn_celsius: Annotated[float, Field(gt=0, le=150)] = 75.0
    stop_celsius: Annotated[float, Field(gt=0, le=150)] = 80.0
    resume_celsius: Annotated[float, Field(gt=0, le=150)] = 70.0

    @model_validator(mode="after")
    def _resume_below_stop(self) -> ThermalConfig:
        if self.resume_celsius >= self.stop_celsius:
            raise ValueError(f"resume_celsius = {self.resume_celsius:g} must be below "
                             f"stop_celsius = {self.stop_celsius:g}")
        if self.warn_celsius >= self.stop_celsius:
            raise ValueError(f"warn_celsius = {self.warn_celsius:g} must be below "
                             f"stop_celsius = {self.stop_celsius:g}")
        return self


class ClockConfig(Section):
    """When the clock counts as synchronised (docs/hardware.md, Clock)."""

    backend: Literal["sim", "kernel"] = "sim"
    # An extra bound on the kernel's maximum error; the default is the kernel's own limit.
    # Under about 1100 ms it alarms on a healthy device between timesyncd's 2048 s polls.
    max_error_ms: Annotated[float, Field(gt=0, le=16000)] = 16000.0


class SelfCheckConfig(Section):
    shift_hours: Annotated[float, Field(gt=0, le=24)] = 10.0
    export_deadline_hours: Annotated[float, Field(gt=0, le=366 * 24)] = 24.0
    run_at_start: bool = True


class VoiceConfig(Section):
    """What the device says: the notice of Art. 13 and its spoken prompts, per language."""

    folder: str = ""             # WAV files; relative to the config file; "" = shipped audio
    languages: list[Literal["zh", "en"]] = ["zh", "en"]
    notice_on_record: bool = True
    notice_text: dict[str, str] = {
        "zh": "为保护您的合法权益，监督我们的执法行为，本次执法全程录音录像",
        "en": "To protect your lawful rights and to supervise our enforcement, this "
              "enforcement is being audio and video recorded in full.",
    }


class CuesConfig(Section):
    """The officer's reminders and alarms; each can be turned off."""

    # While recording; 0 = off.
    reminder_interval_s: Annotated[float, Field(ge=0, le=_DAY_S)] = 120.0
    check_interval_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    alarm_repeat_s: Annotated[float, Field(gt=0, le=_DAY_S)] = 300.0
    battery_alarm: bool = True
    clock_alarm: bool = True
    storage_alarm: bool = True
    storage_low_minutes: Annotated[float, Field(ge=0, le=1e9)] = 60.0  # 1e9: "always"


class VoiceNoteConfig(Section):
    """The officer's spoken explanation of an interruption (Art. 16)."""

    wait_s: Annotated[float, Field(gt=0, le=120)] = 10.0      # for speech to begin
    silence_s: Annotated[float, Field(gt=0, le=30)] = 2.0     # of quiet that ends it
    max_s: Annotated[float, Field(gt=0, le=600)] = 120.0
    speech_dbfs: Annotated[float, Field(ge=-90, le=0)] = -45.0
    # While an interruption is unexplained: a reminder this often; 0 = off.
    reminder_interval_s: Annotated[float, Field(ge=0, le=_DAY_S)] = 300.0


class RecorderConfig(Section):
    segment_seconds: PositiveSeconds
    flush_interval: Annotated[float, Field(gt=0, le=10)] = 1.0
    pre_event_seconds: Annotated[float, Field(ge=0, le=120)] = 30.0
    pre_event_audio: bool = False
    # A stop by the officer and a new start within this time are one incident: the gap is
    # an interruption to explain (Art. 16).
    same_incident_s: Annotated[float, Field(ge=0, le=_DAY_S)] = 600.0


class GpioConfig(Section):
    pin_factory: Literal["mock", "native", "lgpio", "rpigpio", "pigpio"]
    button_pin: Annotated[int, Field(ge=0, le=53)] = 17
    button_pull_up: bool = True
    stop_hold_seconds: Annotated[float, Field(ge=0.5, le=30)] = 3.0
    # Contact bounce on the record and function buttons: an edge counts once the level has
    # held this long (lgpio's debounce). 0 = off.
    button_bounce_s: Annotated[float, Field(ge=0, le=0.2)] = 0.03
    # The indicators of GA/T 947: red, video being recorded; yellow, sound being recorded;
    # green, power (agent/device/indicators.py).
    record_led_pin: Annotated[int, Field(ge=0, le=53)] = 27
    audio_led_pin: Annotated[int, Field(ge=0, le=53)] = 25
    status_led_pin: Annotated[int, Field(ge=0, le=53)] = 22
    buzzer_pin: Annotated[int, Field(ge=0, le=53)] = 23  # a buzzer or a vibration motor
    # The function button: a press explains an interruption, a hold declares an exemption.
    function_button_pin: Annotated[int, Field(ge=0, le=53)] = 24
    exemption_hold_seconds: Annotated[float, Field(ge=0.5, le=30)] = 2.0
    # The audio button: a press in standby starts a sound-only recording, a hold stops it.
    # None: no such button (no sound-only gesture).
    audio_pin: Annotated[int, Field(ge=0, le=53)] | None = None
    # The PHOTO button: a press takes a still from the camera (none = no photo button).
    photo_pin: Annotated[int, Field(ge=0, le=53)] | None = None
    # External trigger inputs (holster sensor, vehicle signal): name -> BCM pin. Active when
    # the input closes to ground (pulled up) unless trigger_pull_up = false. They only start.
    trigger_pins: dict[Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")],
                       Annotated[int, Field(ge=0, le=53)]] = {}
    trigger_pull_up: bool = True
    trigger_bounce_s: Annotated[float, Field(ge=0, le=1)] = 0.05

    @model_validator(mode="after")
    def _distinct_pins(self) -> GpioConfig:
        pins = {"button_pin": self.button_pin, "record_led_pin": self.record_led_pin,
                "audio_led_pin": self.audio_led_pin,
                "status_led_pin": self.status_led_pin, "buzzer_pin": self.buzzer_pin,
                "function_button_pin": self.function_button_pin,
                **({"audio_pin": self.audio_pin} if self.audio_pin is not None else {}),
                **({"photo_pin": self.photo_pin} if self.photo_pin is not None else {}),
                **{f"trigger_pins.{name}": pin for name, pin in self.trigger_pins.items()}}
        if len(set(pins.values())) != len(pins):
            raise ValueError(f"pins must be distinct, got {pins}")
        return self


class MqttConfig(Section):
    """Fleet telemetry (docs/telemetry.md). Off unless enabled here or by `--mqtt URL`."""

    enabled: bool = False
    url: str = "mqtts://localhost:8883"   # mqtt://host[:1883] or mqtts://host[:8883]
    ca: str = ""                 # CA bundle (PEM) for mqtts; relative to this file; "" = system
    # The client certificate (PEM, CN = [device] id) and its key; both "" = once the device
    # is enrolled, the enrolled certificate (<store>/keys/device.crt) and the signing key.
    cert: str = ""
    key: str = ""
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    reconnect_max_s: Annotated[int, Field(ge=1, le=3600)] = 60
    outbox_limit: Annotated[int, Field(ge=1000, le=10_000_000)] = 100_000
    drain_on_exit_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    discovery: bool = True       # Home Assistant MQTT discovery
    discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "homeassistant"

    @field_validator("url")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        broker(url)  # raises ValueError, saying what is wrong
        return url

    @model_validator(mode="after")
    def _tls_files_suit_the_broker(self) -> MqttConfig:
        check_tls_files(self.url, self.ca, self.cert, self.key)
        return self

    @property
    def tls(self) -> bool:
        return broker(self.url).tls

    @property
    def host(self) -> str:
        return broker(self.url).host

    @property
    def port(self) -> int:
        return broker(self.url).port
class DockConfig(Section):
    """The offload server the docking station pulls from, and when footage in custody goes.

    The dock CA (relative to the store) is the only trust anchor for clients. The server
    presents the enrolled certificate (keys/device.crt) with the signing key; before
    enrollment a self-signed one for that key (docs/docking.md, "Enrollment").
    """

    enabled: bool = False
    address: str = "127.0.0.1"   # the dock link's address only, never every interface
    port: Annotated[int, Field(ge=0, le=65535)] = 8443  # 0: any free port (tests)
    announce: bool = True        # mDNS/DNS-SD on the dock link while it is up (Discovery)
    dock_ca: str = "keys/dock-ca.pem"  # where enrollment installs it
    purge_policy: Literal["space", "after_custody"] = "space"
    # "space": purge under this free.
    purge_free_below_mb: Annotated[int, Field(ge=0, le=1 << 32)] = 2048
    purge_check_s: Annotated[float, Field(gt=0, le=_DAY_S)] = 60.0
    export_alarm: bool = True    # Art. 20: export_overdue when not in custody in time

    @field_validator("address")
    @classmethod
    def _one_link(cls, address: str) -> str:
        """An IP address of one link: the server binds it at start, often before the link
        is up, where a name may not resolve (the server would stay off all shift); and
        0.0.0.0 or :: would serve every interface."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError("not an IP address (the device's address on the dock link, "
                             "e.g. 192.168.7.2)") from None
        if ip.is_unspecified:
            raise ValueError("would serve every interface; give the dock link's address "
                             "only") from None
        return address

    def path(self, store: Path, name: str) -> Path:
        return store / os.path.expanduser(name)
class RetentionConfig(Section):
    """The agency's retention of each class of sealed file (agent/evidence/retention.py),
    in days: sealed into every custody record, for the dock and the archive to keep each file
    at least that long (docs/docking.md, "Retention"). Art. 21 keeps recordings at least a
    year: a shorter standard retention is refused."""

    standard_days: Annotated[int, Field(ge=365, le=36_500)] = 365
    marked_days: Annotated[int, Field(ge=1, le=36_500)] = 3650

    @model_validator(mode="after")
    def _marked_longer(self) -> RetentionConfig:
        if self.marked_days <= self.standard_days:
            raise ValueError(f"[retention] marked_days = {self.marked_days} must be longer "
                             f"than standard_days = {self.standard_days}: marked footage is "
                             "kept longer")
        return self

    def as_record(self) -> dict[str, int]:
        return {"standard": self.standard_days, "marked": self.marked_days}


class GnssConfig(Section):
    """Where the location comes from: gpsd's JSON protocol over TCP, a scripted fix, or none."""

    backend: Literal["gpsd", "sim", "none"] = "none"
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 2947
    # The simulated receiver's fix (degrees, metres); a sealed segment says how old it is.
    sim_lat: Annotated[float, Field(ge=-90, le=90)] = 52.520008
    sim_lon: Annotated[float, Field(ge=-180, le=180)] = 13.404954
    sim_alt_m: Annotated[float, Field(ge=-11_000, le=100_000)] = 34.0


class Config(Section):
    device: DeviceConfig
    store: StoreConfig
    camera: CameraConfig
    audio: AudioConfig = AudioConfig()
    recorder: RecorderConfig
    gpio: GpioConfig
    battery: BatteryConfig = BatteryConfig()
    clock: ClockConfig = ClockConfig()
    thermal: ThermalConfig = ThermalConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    selfcheck: SelfCheckConfig = SelfCheckConfig()
    voice: VoiceConfig = VoiceConfig()
    cues: CuesConfig = CuesConfig()
    voice_note: VoiceNoteConfig = VoiceNoteConfig()
    mqtt: MqttConfig = MqttConfig()

    @model_validator(mode="after")
    def _discovery_needs_a_plain_id(self) -> Config:
        if self.mqtt.enabled and self.mqtt.discovery and "." in self.device.id:
            raise ValueError(f"[device] id = {self.device.id!r}: Home Assistant discovery "
                             "topics admit only letters, digits, _ and -: "
                             "rename the device or set [mqtt] discovery = false")
        return self
    dock: DockConfig = DockConfig()
    gnss: GnssConfig = GnssConfig()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _real_microphone_runs_in_real_time(self) -> Config:
        if (self.audio.enabled and self.audio.backend != "sim" and self.camera.backend == "sim"
                and not self.camera.realtime):
            raise ValueError(f"[audio] backend = {self.audio.backend!r} records in real time: "
                             "set [camera] realtime = true")
        return self

    @model_validator(mode="after")
    def _audio_button_has_a_microphone(self) -> Config:
        if self.gpio.audio_pin is not None and not self.audio.enabled:
            raise ValueError(f"[gpio] audio_pin = {self.gpio.audio_pin} starts sound-only "
                             "recordings: set [audio] enabled = true, or remove audio_pin")
        return self

    @model_validator(mode="after")
    def _keyframes_fit_segments(self) -> Config:
        gop_seconds = self.camera.keyframe_interval / self.camera.lowest_fps
        if gop_seconds > self.recorder.segment_seconds:
            raise ValueError(
                f"[camera] keyframe_interval = {self.camera.keyframe_interval} frames at "
                f"{self.camera.lowest_fps} fps is {gop_seconds:g} s, longer than "
                f"[recorder] segment_seconds = {self.recorder.segment_seconds:g}: "
                "segments can only start on a keyframe")
        return self

    @property
    def store_path(self) -> Path:
        return Path(os.path.expanduser(self.store.path))


def voice_folder(config: Config, config_path: Path) -> Path:
    """The folder of the spoken audio: as configured, else the shipped config/audio."""
    if config.voice.folder:
        return (config_path.parent / os.path.expanduser(config.voice.folder)).resolve()
    return default_config_path().parent / "audio"


def mqtt_file(config: Config, config_path: Path,
              name: Literal["ca", "cert", "key"]) -> Path | None:
    """A TLS file of [mqtt], relative to the config file; None when not set."""
    value = getattr(config.mqtt, name)
    return (config_path.parent / os.path.expanduser(value)).resolve() if value else None


def default_config_path(name: str = "sim.toml") -> Path:
    """The shipped file: beside the source tree, else where the wheel installed it."""
    for folder in (_REPO_CONFIG, _INSTALLED_CONFIG):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"shipped configuration {name} not found in {_REPO_CONFIG} "
                      f"or {_INSTALLED_CONFIG}")


def load_config(path: Path | None = None, store: Path | None = None,
                mqtt: str | None = None) -> tuple[Config, Path]:
    """Read and validate `path` (the simulated device when None); `store` overrides [store],
    `mqtt` (a broker URL, from `--mqtt`) turns [mqtt] on with that url."""
    path = path or default_config_path()
    try:
        raw = read_toml(path)
        if store is not None:
            raw.setdefault("store", {})["path"] = str(store)
        if mqtt is not None:
            raw.setdefault("mqtt", {}).update(enabled=True, url=mqtt)
        config = check(Config, raw, path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    check_store_writable(config.store_path, path)
    check_mqtt_files(config, path)
    return config, path


def check_store_writable(store: Path, source: Path) -> None:
    """Refuse a store we cannot create or write: finding out at the first segment is too late."""
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = store / ".write-probe"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"config error in {source}: [store] path = {str(store)!r}: "
                          f"not writable ({exc.strerror})") from exc


def check_mqtt_files(config: Config, source: Path) -> None:
    """Refuse TLS files that are not there: a device that cannot connect says so at start."""
    if not config.mqtt.enabled:
        return
    for name in ("ca", "cert", "key"):
        file = mqtt_file(config, source, name)
        if file is not None and not file.is_file():
            raise ConfigError(f"config error in {source}: [mqtt] {name} = "
                              f"{getattr(config.mqtt, name)!r}: no such file ({file})")
