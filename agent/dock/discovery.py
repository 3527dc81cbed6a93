"""Devices found by mDNS/DNS-SD on the dock's own links, as bays to poll (docs/docking.md,
"Discovery").

Discovery is only a hint of where to knock: a discovered bay is polled exactly like a
configured one, so what is pulled and what custody is reported rest on the mutual TLS with
the device CA and the pull's device checks, never on an announcement. An announcement is
taken only for an address on a browsed link that is up (not, say, the dock's loopback or a
server elsewhere), and a device stops being a bay when it says goodbye, when its records
expire, or when the link it was found on goes down.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

from agent.links import LinkAddress, watch_links
from agent.logs import Throttled

log = logging.getLogger(__name__)

SERVICE = "_bodycam._tcp.local."  # as agent/device/offload/announce.py announces it
_RESOLVE_MS = 3000
_MOST = 256  # devices taken from the links at once: a flood of announcements is not polled


class Discovery:
    """Browses on `interfaces` (names or addresses), following them as they come and go
    (`agent.links.watch_links`); `bays()` is the device URLs announced there now."""

    def __init__(self, interfaces: tuple[str, ...], check_s: float = 30.0) -> None:
        self._interfaces, self._check_s = interfaces, check_s
        self._browsing: tuple[LinkAddress, ...] = ()
        self._found: dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="discovery", daemon=True)
        self._zeroconf: Zeroconf | None = None
        # Anyone on a browsed link can announce as often as they like.
        self._ignored = Throttled(log, what="announcements ignored")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._browse(())

    def bays(self) -> set[str]:
        """The URL of each device announced on a browsed link that is up now."""
        with self._lock:
            networks = [link.network for link in self._browsing]
            return {url for address, url in self._found.values()
                    if any(address in network for network in networks)}

    def _follow(self) -> None:
        watch_links(self._interfaces, self._stop, self._look, self._check_s)

    def _look(self, links: tuple[LinkAddress, ...]) -> None:
        if {link.address for link in links} != {link.address for link in self._browsing}:
            if not links:
                log.info("discovery paused: none of %s is up", ", ".join(self._interfaces))
            self._browse(links)

    def _browse(self, links: tuple[LinkAddress, ...]) -> None:
        """Browse on exactly these links (none: stop); what was found elsewhere is kept
        only until the browser on the new links says otherwise."""
        if self._zeroconf is not None:
            self._zeroconf.close()
            self._zeroconf = None
        with self._lock:
            self._found.clear()
            self._browsing = links
        if not links:
            return
        v4 = [str(link.address) for link in links if link.address.version == 4]
        v6 = sorted({link.index for link in links if link.address.version == 6})
        try:
            self._zeroconf = Zeroconf(
                interfaces=[*v4, *v6],
                ip_version=IPVersion.All if v4 and v6 else
                IPVersion.V4Only if v4 else IPVersion.V6Only)
            ServiceBrowser(self._zeroconf, SERVICE, handlers=[self._changed])
        except (OSError, ZeroconfError) as exc:
            log.error("discovery on %s failed, tried again when the links change or in %.0f "
                      "s: %s", ", ".join(self._interfaces), self._check_s, exc)
            with self._lock:
                self._browsing = ()
            return
        log.info("discovering devices on %s", ", ".join(
            f"{link.interface} ({link.address})" for link in links))

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str,
                 state_change: ServiceStateChange, **_: Any) -> None:
        """On the browser's thread: resolve what is announced, forget what says goodbye."""
        if state_change is ServiceStateChange.Removed:
            with self._lock:
                found = self._found.pop(name, None)
            log.info("device %s withdrawn%s", name, f" ({found[1]})" if found else "")
            return
        info = zeroconf.get_service_info(service_type, name, _RESOLVE_MS)
        if info is None or not info.port:
            return
        with self._lock:
            networks = [link.network for link in self._browsing]
        addresses = [ipaddress.ip_address(a) for a in info.parsed_scoped_addresses()
                     if "%" not in a]
        address = next((a for a in addresses if any(a in n for n in networks)), None)
        if address is None:
            self._ignored.warning(f"announcement {name} ignored: "
                                  f"{', '.join(map(str, addresses)) or 'no address'} is not "
                                  "on a browsed link")
            return
        host = str(address) if address.version == 4 else f"[{address}]"
        url = f"https://{host}:{info.port}"
        with self._lock:
            full = len(self._found) >= _MOST and name not in self._found
            if not full:
                self._found[name] = address, url
        if full:
            self._ignored.warning(f"announcement {name} ignored: {_MOST} devices found "
                                  "already")
            return
        log.info("device %s announced at %s", name, url)
