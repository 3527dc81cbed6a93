"""Which of some links are up now, with their addresses: what the device's announcement on the
dock link and the dock's discovery of devices follow (docs/docking.md, "Discovery").

A link counts while its interface is up and running (IFF_UP and IFF_RUNNING: carrier, for a
USB gadget a host at the other end) and holds the address. Links come and go with a cable,
so callers ask again every few seconds; asking is one getifaddrs(3) and an ioctl per link
(SIOCGIFFLAGS: it answers for the caller's network namespace, where sysfs need not).
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import ifaddr

_IFF_UP, _IFF_RUNNING = 0x1, 0x40  # linux/if.h
_SIOCGIFFLAGS = 0x8913  # linux/sockios.h
_IFREQ = struct.Struct("16sh")  # struct ifreq: the name, then the flags
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
