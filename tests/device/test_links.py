"""agent.links: the addresses held on links that are up, by address or by interface name;
and the device's announcer, which never announces on a loopback or non-IP address."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from agent.device.offload.announce import Announcer
from agent.links import links_up


def test_a_link_is_found_by_its_address_or_its_name() -> None:
    (by_address,) = links_up(["127.0.0.1"])
    assert by_address.interface == "lo"
    assert by_address.network == ipaddress.ip_network("127.0.0.0/8")
    by_name = {str(link.address) for link in links_up(["lo"])}
    assert "127.0.0.1" in by_name


def test_an_address_no_link_holds_is_no_link() -> None:
    assert links_up(["198.51.100.7", "no-such-if0"]) == ()


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "0.0.0.0", "localhost"])
def test_the_announcer_never_announces_on_a_loopback_or_non_ip_address(address: str) -> None:
    before = threading.active_count()
    announcer = Announcer("TEST-0001", address, 8443)
    announcer.start()
    assert threading.active_count() == before  # no thread, no zeroconf
    announcer.close()
