"""dock.toml: what `bodycam dock serve` and `bodycam dock status` read.

The dock is another machine than the device, so it does not share the device's config
module, only the way a configuration file is read and checked (agent.config_file):
whatever is wrong is one line naming the file, the key and the value (docs/docking.md,
"Dock service").
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from agent.config_file import ConfigFileError, Section, check, read_toml, short
from agent.mqtt_link import Broker, broker, check_tls_files, tls_context

MAX_MBIT = 100_000.0  # a bay's cap, 100 Gbit/s: above any dock link
_BAY = re.compile(r"https://[^\s/]+(:\d{1,5})?/?")
_INTERFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # a Linux interface name (IFNAMSIZ)
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?")


class ServiceConfigError(Exception):
    """A dock.toml the service refuses to start with: one line."""


def _beside(folder: Path, name: str) -> Path:
    """A path in dock.toml: relative to the file's folder, ~ its owner's home."""
    return folder / Path(name).expanduser()


def _folder(info: ValidationInfo) -> Path:
    """dock.toml's folder, which load_service_config gives the validators."""
    assert isinstance(info.context, dict)
    folder: Path = info.context["folder"]
    return folder


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("empty")
    return text


def _a_file(name: str, info: ValidationInfo) -> str:
    """A file the service reads at start and at each pull: there before it starts."""
    try:
        there = _beside(_folder(info), name).is_file()
    except OSError as exc:  # a name too long, a folder not searchable
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    if not there:
        raise ValueError("no such file")
    return name


Text = Annotated[str, AfterValidator(_not_blank)]
File = Annotated[Text, AfterValidator(_a_file)]
Mbit = Annotated[float, Field(ge=0, le=MAX_MBIT)]  # 0: uncapped


def _each(values: Any, fits: Callable[[str], object], why: str) -> Any:
    """Each item of a list checked before the list is typed, so that the error shows the
    whole list (`bays = [1]: 1 is not ...`) rather than an index."""
    for value in values if isinstance(values, list) else ():
        if not isinstance(value, str) or not fits(value):
            raise ValueError(f"{value!r:.100} is not {why}")
    return values


def _bay(address: str) -> str:
    """A bay as the service names it: its address without the trailing slash."""
    return address.rstrip("/")


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Tls(Section):
    """As dock pull's --cert, --key, --ca."""

    cert: File
    key: File
    ca: File


class ArchiveSettings(Section):
    """As dock pull's --archive (docs/archive.md)."""

    url: str
    endpoint: Text | None = None  # None: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS
    retention_days: Annotated[int, Field(ge=1, le=36_500)] = 365
    marked_retention_days: Annotated[int, Field(ge=1, le=36_500)] = 3650  # 重要标记

    @field_validator("url")
    @classmethod
    def _bucket(cls, url: str) -> str:
        if not _S3_URL.fullmatch(url):
            raise ValueError("not s3://BUCKET[/PREFIX]")
        return url

    @model_validator(mode="after")
    def _marked_longer(self) -> ArchiveSettings:
        if self.marked_retention_days <= self.retention_days:
            raise ValueError(f"marked_retention_days = {self.marked_retention_days}: not "
                             f"longer than retention_days = {self.retention_days} (marked "
                             "footage is kept longer)")
        return self


class _Mqtt(Section):
    url: str
    id: str
    ca: File | None = None
    cert: File | None = None
    key: File | None = None
    heartbeat_s: Annotated[float, Field(ge=0.1, le=3600)] = 60.0
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_max_s: Annotated[int, Field(ge=1, le=3600)] = 60

    @field_validator("url")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        broker(url)  # raises ValueError, saying what is wrong
        return url

    @field_validator("id")
    @classmethod
    def _topic_level(cls, dock_id: str) -> str:
        if not _TOPIC_LEVEL.fullmatch(dock_id):
            raise ValueError("not 1 to 64 letters, digits, '.', '_' or '-' (a topic level)")
        return dock_id

    @model_validator(mode="after")
    def _tls_files_load(self, info: ValidationInfo) -> _Mqtt:
        """The files suit the broker, and load: a dock that cannot connect says so at start."""
        check_tls_files(self.url, self.ca, self.cert, self.key)
        ca, cert, key = _mqtt_files(_folder(info), self)
        for name, files, what in (("ca", (ca,), "CA"),
                                  ("cert", (ca, cert, key), "certificate with its key")):
            if getattr(self, name) is not None:
                try:
                    tls_context(*files)
                except (ssl.SSLError, OSError) as exc:
                    raise ValueError(f"{name} = {short(getattr(self, name))}: not a PEM "
                                     f"{what} ({exc})") from None
        return self


class _Discovery(Section):
    enabled: bool = True
    interfaces: list[str] | None = None  # required while enabled

    @field_validator("interfaces", mode="before")
    @classmethod
    def _names_or_addresses(cls, names: Any) -> Any:
        return _each(names, lambda name: _INTERFACE.fullmatch(name) or _address(name),
                     "an interface name (usb0) or an address of the dock (192.168.7.1)")

    @field_validator("interfaces")
    @classmethod
    def _distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError("not a list of distinct interface names or addresses")
        return names

    @model_validator(mode="after")
    def _some_while_enabled(self) -> _Discovery:
        if self.enabled and self.interfaces is None:
            raise ValueError("missing key interfaces (the dock's links to find devices "
                             "on), or enabled = false")
        if self.enabled and not self.interfaces:
            raise ValueError("interfaces = []: no link to find devices on (or enabled = "
                             "false)")
        return self


class _DockToml(Section):
    """The file as written; ServiceConfig is what the service uses of it."""

    operator: Text  # named in every custody report (Art. 22)
    evidence: Text
    state: Text | None = None  # None: dock-state.json beside the evidence folder
    bays: list[str] | None = None  # may be left out with [discovery]
    max_concurrent: Annotated[int, Field(ge=1, le=64)] = 4
    connections: Annotated[int, Field(ge=1, le=32)] = 4
    poll_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    bay_mbit: Mbit = 0.0
    bay_mbit_override: dict[str, Mbit] = {}  # by bay address
    tls: _Tls
    archive: ArchiveSettings | None = None
    mqtt: _Mqtt | None = None
    discovery: _Discovery | None = None

    @field_validator("bays", mode="before")
    @classmethod
    def _addresses(cls, bays: Any) -> Any:
        return _each(bays, _BAY.fullmatch, "an address like https://10.0.0.2:8443")

    @field_validator("bays")
    @classmethod
    def _distinct(cls, bays: list[str] | None) -> list[str] | None:
        named = None if bays is None else [_bay(bay) for bay in bays]
        if named is not None and len(set(named)) != len(named):
            raise ValueError("not a list of distinct device addresses")
        return named

    @field_validator("bay_mbit_override")
    @classmethod
    def _by_bay(cls, caps: dict[str, float]) -> dict[str, float]:
        return {_bay(bay): mbit for bay, mbit in caps.items()}

    @model_validator(mode="after")
    def _devices_to_pull(self) -> _DockToml:
        if not (self.discovery and self.discovery.enabled):
            if self.bays is None:
                raise ValueError("missing key bays (or [discovery] to find devices)")
            if not self.bays:
                raise ValueError("bays = []: no device to pull (or [discovery] to find "
                                 "devices)")
        return self

    @model_validator(mode="after")
    def _caps_of_bays(self) -> _DockToml:
        for bay, mbit in self.bay_mbit_override.items():
            if bay not in (self.bays or ()):
                raise ValueError(f"[bay_mbit_override] {bay} = {mbit:g}: not one of bays")
        return self


@dataclass(frozen=True)
class MqttSettings:
    """The dock's status over MQTT (docs/telemetry.md, "Dock")."""

    url: str
    broker: Broker
    dock_id: str
    ca: Path | None
    cert: Path | None
    key: Path | None
    heartbeat_s: float
    keepalive_s: int
    reconnect_max_s: int


@dataclass(frozen=True)
class ServiceConfig:
    """dock.toml checked, its paths made whole, [tls] and [discovery] as the service uses
    them."""

    path: Path
    operator: str
    evidence: Path
    state: Path
    bays: tuple[str, ...]
    cert: Path
    key: Path
    ca: Path
    max_concurrent: int
    connections: int
    poll_s: float
    archive: ArchiveSettings | None
    mqtt: MqttSettings | None
    bay_mbit: float  # each pull's cap, Mbit/s; 0: uncapped
    bay_mbit_override: dict[str, float]  # by bay address
    discovery: tuple[str, ...]  # links to discover devices on (names, addresses); (): off

    def mbit_for(self, bay: str) -> float:
        """The cap of a pull in `bay` (0: uncapped)."""
        return self.bay_mbit_override.get(bay, self.bay_mbit)


def load_service_config(path: Path) -> ServiceConfig:
    """Read and check dock.toml; paths in it are relative to its folder."""
    folder = path.parent
    try:
        dock = check(_DockToml, read_toml(path), path, context={"folder": folder})
    except ConfigFileError as exc:
        raise ServiceConfigError(exc.lines[0]) from None
    evidence = _beside(folder, dock.evidence)
    mqtt = dock.mqtt
    discovery = dock.discovery
    return ServiceConfig(
        path=path, operator=dock.operator, evidence=evidence,
        state=_beside(folder, dock.state) if dock.state else evidence.parent / "dock-state.json",
        bays=tuple(dock.bays or ()),
        cert=_beside(folder, dock.tls.cert), key=_beside(folder, dock.tls.key),
        ca=_beside(folder, dock.tls.ca), max_concurrent=dock.max_concurrent,
        connections=dock.connections, poll_s=dock.poll_s, archive=dock.archive,
        mqtt=None if mqtt is None else MqttSettings(
            mqtt.url, broker(mqtt.url), mqtt.id, *_mqtt_files(folder, mqtt),
            mqtt.heartbeat_s, mqtt.keepalive_s, mqtt.reconnect_max_s),
        bay_mbit=dock.bay_mbit,
        bay_mbit_override=dict(dock.bay_mbit_override),
        discovery=tuple(discovery.interfaces or ()) if discovery and discovery.enabled else ())


def _mqtt_files(folder: Path, mqtt: _Mqtt) -> tuple[Path | None, Path | None, Path | None]:
    """[mqtt] ca, cert and key beside dock.toml; None where not set."""
    ca, cert, key = (None if name is None else _beside(folder, name)
                     for name in (mqtt.ca, mqtt.cert, mqtt.key))
    return ca, cert, key
