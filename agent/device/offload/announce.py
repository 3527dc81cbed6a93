"""The offload service announced by mDNS/DNS-SD on the dock link, for a dock to find the
device without a configured bay (docs/docking.md, "Discovery").

Announced only on the interface holding `[dock] address` and only while that link is up:
when the address appears the service is announced, when it goes it is withdrawn; never on a
loopback address (the demo's and the tests' dock is on the same machine). What is
announced is what the link already shows anyone who opens a TLS handshake (the device id in
its certificate, the port), nothing more; a dock still trusts only the mutual TLS
(docs/security.md). Everything runs on a thread of its own and on zeroconf's: announcing
never holds up recording, and a failure is logged, never fatal.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from agent.links import LinkAddress, links_up, watch_links

log = logging.getLogger(__name__)

SERVICE = "_bodycam._tcp.local."
API = "1"  # the offload API's version, as in its paths (/v1)
# Seconds a dock may keep the records without hearing them again: RFC 6762's 120 for address
# records, for all of them (a dock's zeroconf keeps the service pointer longer: docking.md).
TTL_S = 120
_RETRY_S = 60.0  # after a failed announcement, on the same link


class Announcer:
    """Follows the dock link (`agent.links.watch_links`) and announces on it while it is up."""

    def __init__(self, device_id: str, address: str, port: int, check_s: float = 30.0) -> None:
        self._address, self._check_s = address, check_s
        self._retry_at = 0.0
        host = re.sub(r"[^A-Za-z0-9-]", "-", device_id)[:50].lower()
        self._name = f"{device_id[:63]}.{SERVICE}"
        self._txt = {"device": device_id, "api": API}
        self._server, self._port = f"bodycam-{host}.local.", port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="announce", daemon=True)
        self._on: tuple[Zeroconf, ServiceInfo] | None = None  # announced, on this link

    def start(self) -> None:
        try:
            address = ipaddress.ip_address(self._address)
        except ValueError:
            address = None
        if address is None or address.is_loopback or address.is_unspecified:
            log.info("offload service not announced: [dock] address = %r is not one link's "
                     "address", self._address)
            return
        self._thread.start()

    def close(self) -> None:
        """Stop following the link; a goodbye if it is up, so a dock stops polling at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._on is not None:
            self._withdraw(goodbye=bool(links_up([self._address])))

    def _follow(self) -> None:
        watch_links((self._address,), self._stop, self._look, self._check_s)

    def _look(self, links: tuple[LinkAddress, ...]) -> None:
        link = next(iter(links), None)
        if link is None and self._on is not None:
            log.info("dock link %s down: offload service no longer announced", self._address)
            self._withdraw(goodbye=False)  # nothing would carry it
        elif link is not None and self._on is None and time.monotonic() >= self._retry_at:
            try:
                self._announce(link)
            except (OSError, ZeroconfError) as exc:
                log.warning("offload service not announced on %s (%s), tried again in %.0f "
                            "s: %s", link.interface, self._address, _RETRY_S, exc)
                self._retry_at = time.monotonic() + _RETRY_S

    def _announce(self, link: LinkAddress) -> None:
        v4 = link.address.version == 4
        zeroconf = Zeroconf(interfaces=[str(link.address) if v4 else link.index],
                            ip_version=IPVersion.V4Only if v4 else IPVersion.V6Only)
        info = ServiceInfo(SERVICE, self._name, port=self._port, properties=self._txt,
                           server=self._server, addresses=[link.address.packed],
                           host_ttl=TTL_S, other_ttl=TTL_S)
        try:
            zeroconf.register_service(info, allow_name_change=False)
        except BaseException:
            zeroconf.close()
            raise
        self._on = zeroconf, info
        log.info("offload service announced on %s (%s:%d) as %s", link.interface,
                 link.address, self._port, self._name)

    def _withdraw(self, goodbye: bool) -> None:
        if self._on is None:
            return
        zeroconf, info = self._on
        self._on = None
        try:
            if goodbye:
                zeroconf.unregister_service(info)
            else:  # closing would send goodbyes, and fail, on a link that is gone
                zeroconf.loop.call_soon_threadsafe(zeroconf.registry.async_remove, info)
            zeroconf.close()
        except (OSError, ZeroconfError) as exc:
            log.warning("offload service withdrawn without a goodbye: %s", exc)
