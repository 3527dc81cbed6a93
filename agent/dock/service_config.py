"""dock.toml: what `bodycam dock serve` and `bodycam dock status` read.

The dock is another machine than the device, so it does not share the device's config
module; it keeps the same habit: whatever is wrong is one line naming the file, the key and
the value (docs/docking.md, "Dock service").
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from agent.mqtt_link import Broker, broker, tls_context
from agent.toml_file import TomlFileError, read_toml

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEYS = {"operator", "evidence", "state", "bays", "max_concurrent", "connections", "poll_s",
         "bay_mbit", "bay_mbit_override", "tls", "archive", "mqtt", "discovery"}
_TLS_KEYS = {"cert", "key", "ca"}
_ARCHIVE_KEYS = {"url", "endpoint", "retention_days", "marked_retention_days"}
_MQTT_KEYS = {"url", "id", "ca", "cert", "key", "heartbeat_s", "keepalive_s", "reconnect_max_s"}
_DISCOVERY_KEYS = {"enabled", "interfaces"}
_INTERFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # a Linux interface name (IFNAMSIZ)
MAX_MBIT = 100_000.0  # a bay's cap, 100 Gbit/s: above any dock link


class ServiceConfigError(Exception):
    """A dock.toml the service refuses to start with: one line."""


@dataclass(frozen=True)
class ArchiveSettings:
    url: str
    endpoint: str | None
    retention_days: int
    marked_retention_days: int = 3650  # a recording marked important (重要标记)


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
    path: Path
    operator: str
    evidence: Path
    state: Path
    bays: tuple[str, ...]
    cert: Path
    key: Path
    ca: Path
    max_concurrent: int = 4
    connections: int = 4
    poll_s: float = 5.0
    archive: ArchiveSettings | None = None
    mqtt: MqttSettings | None = None
    bay_mbit: float = 0.0  # each pull's cap, Mbit/s; 0: uncapped
    bay_mbit_override: dict[str, float] = field(default_factory=dict)  # by bay address
    discovery: tuple[str, ...] = ()  # links to discover devices on (names, addresses)

    def mbit_for(self, bay: str) -> float:
        """The cap of a pull in `bay` (0: uncapped)."""
        return self.bay_mbit_override.get(bay, self.bay_mbit)


class _Reader:
    """Takes keys out of one table, each checked, with the table's name for the message."""

    def __init__(self, path: Path, table: dict[str, Any], name: str, allowed: set[str]) -> None:
        self.path, self.table, self.name = path, table, name
        for key in table:
            if key not in allowed:
                self.fail(f"unknown key {self._key(key)}")

    def _key(self, key: str) -> str:
        return f"[{self.name}] {key}" if self.name else key

    def fail(self, message: str) -> NoReturn:
        raise ServiceConfigError(f"config error in {self.path}: {message}")

    def bad(self, key: str, why: str) -> NoReturn:
        self.fail(f"{self._key(key)} = {self.table[key]!r:.200}: {why}")

    def text(self, key: str, default: str | None = None) -> str:
        if key not in self.table:
            if default is None:
                self.fail(f"missing key {self._key(key)}")
            return str(default)
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            self.bad(key, "not a non-empty string")
        if _CONTROL.search(value):
            self.bad(key, "control characters (NUL, newline, ...) are not allowed")
        return str(value)

    def file(self, key: str) -> Path:
        path = self.path.parent / Path(self.text(key)).expanduser()
        if not path.is_file():
            self.bad(key, "no such file")
        return path

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.bad(key, "not true or false")
        return value

    def number(self, key: str, default: float, low: float, high: float,
               whole: bool = True) -> float:
        value = self.table.get(key, default)
        number = isinstance(value, int) or (not whole and isinstance(value, float))
        if isinstance(value, bool) or not number or not low <= float(value) <= high:
            self.bad(key, f"not a {'whole ' if whole else ''}number from {low:g} to {high:g}")
        return float(value)


def load_service_config(path: Path) -> ServiceConfig:
    """Read and check dock.toml; paths in it are relative to its folder."""
    try:
        raw = read_toml(path)
    except TomlFileError as exc:
        raise ServiceConfigError(str(exc)) from None
    top = _Reader(path, raw, "", _KEYS)
    tls = _Reader(path, _table(top, "tls"), "tls", _TLS_KEYS)
    discovery = _discovery(top)
    bays = raw.get("bays", None if not discovery else [])
    if bays is None:
        top.fail("missing key bays (or [discovery] to find devices)")
    if not isinstance(bays, list) or not (bays or discovery) or \
            len(set(map(str, bays))) != len(bays):
        top.bad("bays", "not a list of distinct device addresses")
    for bay in bays:
        if not isinstance(bay, str) or not re.fullmatch(r"https://[^\s/]+(:\d{1,5})?/?", bay):
            top.bad("bays", f"{bay!r:.100} is not an address like https://10.0.0.2:8443")
    evidence = path.parent / Path(top.text("evidence")).expanduser()
    archive = None
    if "archive" in raw:
        section = _Reader(path, _table(top, "archive"), "archive", _ARCHIVE_KEYS)
        url = section.text("url")
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?", url):
            section.bad("url", "not s3://BUCKET[/PREFIX]")
        days = int(section.number("retention_days", 365, 1, 36500))
        marked_days = int(section.number("marked_retention_days", 3650, 1, 36500))
        if marked_days <= days:
            section.fail(f"[archive] marked_retention_days = {marked_days}: not longer than "
                         f"retention_days = {days} (marked footage is kept longer)")
        archive = ArchiveSettings(url, section.text("endpoint") if "endpoint" in
                                  section.table else None, days, marked_days)
    mqtt = _mqtt(_Reader(path, _table(top, "mqtt"), "mqtt", _MQTT_KEYS)) \
        if "mqtt" in raw else None
    bay_mbit = top.number("bay_mbit", 0, 0, MAX_MBIT, whole=False)
    override: dict[str, float] = {}
    if "bay_mbit_override" in raw:
        caps = _Reader(path, _table(top, "bay_mbit_override"), "bay_mbit_override",
                       {b.rstrip("/") for b in bays} | set(bays))
        override = {bay.rstrip("/"): caps.number(bay, 0, 0, MAX_MBIT, whole=False)
                    for bay in caps.table}
    return ServiceConfig(
        path=path, operator=top.text("operator"), evidence=evidence,
        state=path.parent / Path(top.text("state", str(evidence.parent / "dock-state.json"))),
        bays=tuple(b.rstrip("/") for b in bays),
        cert=tls.file("cert"), key=tls.file("key"), ca=tls.file("ca"),
        max_concurrent=int(top.number("max_concurrent", 4, 1, 64)),
        connections=int(top.number("connections", 4, 1, 32)),
        poll_s=float(top.number("poll_s", 5.0, 0.1, 3600, whole=False)),
        archive=archive, mqtt=mqtt, bay_mbit=bay_mbit, bay_mbit_override=override,
        discovery=discovery)


def _mqtt(section: _Reader) -> MqttSettings:
    url = section.text("url")
    try:
        address = broker(url)
    except ValueError as exc:
        section.bad("url", str(exc))
    dock_id = section.text("id")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", dock_id):
        section.bad("id", "not 1 to 64 letters, digits, '.', '_' or '-' (a topic level)")
    ca, cert, key = (section.file(name) if name in section.table else None
                     for name in ("ca", "cert", "key"))
    if (cert is None) != (key is None):
        section.bad("cert" if cert else "key", "a client certificate needs its key, and a key "
                    "its certificate")
    if not address.tls and (ca or cert):
        section.bad("url", "ca, cert and key need mqtts://")
    for name, files, what in (("ca", (ca,), "CA"),
                              ("cert", (ca, cert, key), "certificate with its key")):
        if name in section.table:
            try:
                tls_context(*files)
            except (ssl.SSLError, OSError) as exc:
                section.bad(name, f"not a PEM {what} ({exc})")
    return MqttSettings(url, address, dock_id, ca, cert, key,
                        section.number("heartbeat_s", 60, 0.1, 3600, whole=False),
                        int(section.number("keepalive_s", 30, 5, 3600)),
                        int(section.number("reconnect_max_s", 60, 1, 3600)))


def _discovery(top: _Reader) -> tuple[str, ...]:
    """[discovery]'s links; none (no table, or enabled = false): discovery is off."""
    if "discovery" not in top.table:
        return ()
    section = _Reader(top.path, _table(top, "discovery"), "discovery", _DISCOVERY_KEYS)
    if not section.flag("enabled", True):
        return ()
    interfaces = section.table.get("interfaces")
    if interfaces is None:
        section.fail("missing key [discovery] interfaces")
    if not isinstance(interfaces, list) or not interfaces or \
            len(set(map(str, interfaces))) != len(interfaces):
        section.bad("interfaces", "not a list of distinct interface names or addresses")
    for name in interfaces:
        if not isinstance(name, str) or not (_INTERFACE.fullmatch(name) or _address(name)):
            section.bad("interfaces", f"{name!r:.100} is not an interface name (usb0) "
                        "or an address of the dock (192.168.7.1)")
    return tuple(interfaces)


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _table(reader: _Reader, key: str) -> dict[str, Any]:
    value = reader.table.get(key)
    if value is None:
        reader.fail(f"missing table [{key}]")
    if not isinstance(value, dict):
        reader.bad(key, "not a table")
    return dict(value)
