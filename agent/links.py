"""Which of some links are up now, with their addresses: what the device's announcement on the
dock link and the dock's discovery of devices follow (docs/docking.md, "Discovery").

A link counts while its interface is up and running (IFF_UP and IFF_RUNNING: carrier, for a
USB gadget a host at the other end) and holds the address. Links come and go with a cable:
`watch_links` looks again when the kernel says a link or an address changed (rtnetlink),
not on a short timer; looking is one getifaddrs(3) and an ioctl per link (SIOCGIFFLAGS:
it answers for the caller's network namespace, where sysfs need not).
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import ifaddr

_IFF_UP, _IFF_RUNNING = 0x1, 0x40  # linux/if.h
_SIOCGIFFLAGS = 0x8913  # linux/sockios.h
_IFREQ = struct.Struct("16sh")  # struct ifreq: the name, then the flags
# rtnetlink's groups (linux/rtnetlink.h): links, IPv4 and IPv6 addresses.
_RTMGRP_LINK, _RTMGRP_IPV4_IFADDR, _RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
_unlisted = ""  # the last reason the addresses could not be listed, logged once

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkAddress:
    """One address held on an interface that is up."""

    interface: str
    index: int  # the interface's index: how multicast sockets name an IPv6 link
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    network: ipaddress.IPv4Network | ipaddress.IPv6Network


def links_up(wanted: Iterable[str]) -> tuple[LinkAddress, ...]:
    """The addresses among `wanted` (each an address, or an interface's name for all of its
    addresses) held now on interfaces that are up. IPv6 link-local addresses are left out:
    an address in a URL must not need its interface named beside it."""
    names = set(wanted)
    held = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError as exc:  # no netlink (a sandbox without AF_NETLINK): as if no link
        global _unlisted
        if str(exc) != _unlisted:
            log.error("the links' addresses cannot be listed: %s", exc)
            _unlisted = str(exc)
        return ()
    for adapter in adapters:
        for ip in adapter.ips:
            address = ipaddress.ip_address(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
            if address.is_link_local and address.version == 6:
                continue
            if (adapter.name in names or str(address) in names) and _running(adapter.name):
                network = ipaddress.ip_network(f"{address}/{ip.network_prefix}", strict=False)
                held.append(LinkAddress(adapter.name, adapter.index or 0, address, network))
    return tuple(held)


def _running(interface: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            answer = fcntl.ioctl(probe, _SIOCGIFFLAGS, _IFREQ.pack(interface.encode(), 0))
    except OSError:
        return False  # gone since getifaddrs saw it
    flags = _IFREQ.unpack(answer[:_IFREQ.size])[1]
    return flags & (_IFF_UP | _IFF_RUNNING) == _IFF_UP | _IFF_RUNNING


def watch_links(wanted: tuple[str, ...], stop: threading.Event,
                look: Callable[[tuple[LinkAddress, ...]], None], check_s: float = 30.0) -> None:
    """Calls `look` with `links_up(wanted)`: at once, whenever the kernel says a link or an
    address changed, and at least every `check_s`, until `stop` is set (seen within 1 s)."""
    changes = _Changes()
    try:
        changed, looked = True, -math.inf
        while not stop.is_set():
            if changed or time.monotonic() >= looked + check_s:
                looked = time.monotonic()
                look(links_up(wanted))
            changed = changes.wait(1.0)
    finally:
        changes.close()


class _Changes:
    """Waits for the kernel to say a link or an address changed. Without netlink (a sandbox
    that forbids it) every wait runs its whole time out, and callers look again then."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        try:
            self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                         socket.NETLINK_ROUTE)
            self._socket.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
            self._socket.setblocking(False)
        except OSError as exc:
            log.warning("link changes not followed (%s): looked at every few seconds", exc)
            self.close()

    def wait(self, timeout: float) -> bool:
        """True when something changed within `timeout` seconds (what is read is dropped:
        the caller looks at the links again)."""
        if self._socket is None:
            time.sleep(timeout)
            return True
        ready, _, _ = select.select([self._socket], [], [], timeout)
        changed = False
        while ready:
            try:
                changed |= bool(self._socket.recv(65536))
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: changes were lost, so something changed
                changed = True
                break  # what is still queued is read at the next wait
        return changed

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
