"""A dock link for mDNS tests: a veth pair (the device's end and the dock's) in a network
namespace of the test's own, so multicast runs on real interfaces without touching the
host's network.

Only the calling thread enters the namespace (unshare(2) of CLONE_NEWNET), so what it starts
afterwards (the daemon's threads, `bodycam dock serve`) runs there too; on exit the thread
goes back to the host's namespace, and the private one goes with the last thread in it.
Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), as the CI runs.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class DockLink:
    device_interface: str = "bc-device"
    dock_interface: str = "bc-dock"
    device_address: str = "10.23.0.2"
    dock_address: str = "10.23.0.1"
    prefix: int = 24

    def address_device(self) -> None:
        """The device's end gets its address (the gadget configured after boot)."""
        _address(self.device_address, self.prefix, self.device_interface)

    def down(self) -> None:
        """The cable out: the device's end down, the dock's end without carrier."""
        _ip("link", "set", self.device_interface, "down")

    def up(self) -> None:
        _ip("link", "set", self.device_interface, "up")


# An IPv6 link: unique local addresses (RFC 4193), which a URL can hold without a scope.
IPV6 = DockLink(device_address="fd23::2", dock_address="fd23::1", prefix=64)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _address(address: str, prefix: int, interface: str) -> None:
    """Without duplicate address detection, an IPv6 address is usable at once."""
    nodad = ["nodad"] if ":" in address else []
    _ip("addr", "add", f"{address}/{prefix}", "dev", interface, *nodad)


@contextmanager
def dock_link(device_addressed: bool = True, link: DockLink = DockLink()) -> Iterator[DockLink]:
    """The link up, the dock's end addressed, the device's end too unless told not to."""
    if os.geteuid() != 0:
        pytest.skip("a private network namespace needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            _ip("link", "set", "lo", "up")
            _ip("link", "add", link.device_interface, "type", "veth", "peer", "name",
                link.dock_interface)
            _address(link.dock_address, link.prefix, link.dock_interface)
            _ip("link", "set", link.dock_interface, "up")
            _ip("link", "set", link.device_interface, "up")
            if device_addressed:
                link.address_device()
            yield link
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host's network")
    finally:
        os.close(home)
