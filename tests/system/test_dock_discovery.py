"""Discovery on the dock link (docs/docking.md, "Discovery"), with real mDNS on a veth pair in
a private network namespace: a device whose dock link is addressed after it started is
served, announced and pulled into custody by `bodycam dock serve` with no bay configured;
the link going down and the device leaving stop the polling; an announcement pointing
anywhere but at a device of the agency gets nothing pulled and no custody reported."""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from zeroconf import IPVersion, ServiceInfo, Zeroconf

from agent.device.offload.tls_http import HttpsServer, mutual_tls_context
from tests.support.device import wait_for
from tests.support.dockside import Docked, docked_device
from tests.support.fleet import dock_service
from tests.support.netns import IPV6, DockLink, dock_link
from tests.support.pki import DEVICE_ID, Pki
from tests.system.test_dock_serve import pulled, status, write_dock_toml

SERVICE = "_bodycam._tcp.local."
FLOOD = 8  # announcements pointing off the link


def discovering_dock(folder: Path, pki: Pki, link: DockLink) -> Path:
    """dock.toml with no bay: whatever it pulls it found by discovery."""
    config = write_dock_toml(folder, pki, [])
    with config.open("a") as f:
        f.write(f"[discovery]\ninterfaces = {json.dumps([link.dock_interface])}\n")
    return config


def bay(config: Path, url: str) -> str | None:
    seen: dict[str, Any] = status(config)["bays"].get(url, {})
    return seen.get("status")


def test_a_device_on_the_dock_link_is_found_pulled_and_forgotten_when_it_goes(
        tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    with ExitStack() as stack:
        link = stack.enter_context(dock_link(device_addressed=False))
        # The daemon starts before the gadget has its address: the server listens anyway.
        device: Docked = stack.enter_context(docked_device(
            tmp_path, recorded, dock_pki, address=link.device_address,
            purge_policy="after_custody"))
        url = f"https://{link.device_address}:{device.daemon.offload.port}"
        config = discovering_dock(tmp_path, dock_pki, link)
        with dock_service(config) as process:
            time.sleep(3)  # polls with nothing on the link: no bay
            assert not config.with_name("dock-state.json").exists() or \
                not status(config)["bays"]
            link.address_device()
            wait_for(lambda: pulled(config, (DEVICE_ID,)), timeout=120,
                     what="the announced device pulled")
            assert bay(config, url) == "done"
            (custody,) = device.records("custody")
            assert {s["seq"] for s in custody["payload"]["segments"]} == \
                {r["seq"] for r in device.records("segment_sealed")}

            link.down()  # taken out: nothing announced, the bay no longer polled
            wait_for(lambda: bay(config, url) == "withdrawn", timeout=30,
                     what="the bay withdrawn with the link down")
            time.sleep(2)  # several polls: not visited (it would be seen "absent")
            assert bay(config, url) == "withdrawn"

            link.up()  # docked again: found again, nothing new to pull
            wait_for(lambda: bay(config, url) == "done", timeout=60, what="found again")
            assert status(config)["devices"][DEVICE_ID]["pulls"] == 1

            stack.close()  # the daemon stops, saying goodbye on a link that stays up
            wait_for(lambda: bay(config, url) == "withdrawn", timeout=30,
                     what="the bay withdrawn after the goodbye")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        assert len(device.records("custody")) == 1


def test_a_device_on_an_ipv6_dock_link_is_found_and_pulled(
        tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    """The same on a link with IPv6 addresses only: announced over IPv6 multicast on the
    interface, resolved to an AAAA address, polled as https://[address]:port."""
    with ExitStack() as stack:
        link = stack.enter_context(dock_link(link=IPV6))
        device = stack.enter_context(docked_device(
            tmp_path, recorded, dock_pki, address=link.device_address))
        url = f"https://[{link.device_address}]:{device.daemon.offload.port}"
        config = discovering_dock(tmp_path, dock_pki, link)
        with dock_service(config) as process:
            wait_for(lambda: pulled(config, (DEVICE_ID,)), timeout=120,
                     what="the device announced over IPv6 pulled")
            assert bay(config, url) == "done"
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        (custody,) = device.records("custody")
        assert {s["seq"] for s in custody["payload"]["segments"]} == \
            {r["seq"] for r in device.records("segment_sealed")}


def test_a_device_told_not_to_announce_is_not_found(
        tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    with ExitStack() as stack:
        link = stack.enter_context(dock_link())
        device = stack.enter_context(docked_device(
            tmp_path, recorded, dock_pki, address=link.device_address, announce=False))
        config = discovering_dock(tmp_path, dock_pki, link)
        with dock_service(config) as process:
            time.sleep(6)  # many polls, and time enough for an announcement to be heard
            assert process.poll() is None
            state = status(config)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
    assert state["bays"] == {} and state["devices"] == {}
    assert not device.records("custody")


def test_an_announcement_pointing_elsewhere_gets_nothing_pulled(
        tmp_path: Path, dock_pki: Pki) -> None:
    with ExitStack() as stack:
        link = stack.enter_context(dock_link())
        # A server on the link with a certificate the agency's device CA did not issue,
        # announced as the agency's device, and one announced at the dock's own loopback.
        context = mutual_tls_context(dock_pki.pem("rogue.crt"), dock_pki.pem("rogue.key"),
                                     dock_pki.pem("dock-ca.pem"))
        rogue = HttpsServer(link.device_address, 0, lambda: context, [],
                            logging.getLogger("test.rogue"))
        rogue.start()
        stack.callback(rogue.close)
        zeroconf = Zeroconf(interfaces=[link.device_address], ip_version=IPVersion.V4Only)
        stack.callback(zeroconf.close)
        # Then a flood of such announcements, which must not fill the dock's log.
        loopback = [(f"TEST-{n:04d}", "127.0.0.1") for n in range(2, 2 + FLOOD)]
        for name, address in (("TEST-0001", link.device_address), *loopback):
            zeroconf.register_service(ServiceInfo(
                SERVICE, f"{name}.{SERVICE}", port=rogue.port, server=f"{name.lower()}.local.",
                addresses=[socket.inet_aton(address)], properties={"device": name, "api": "1"}))
        config = discovering_dock(tmp_path, dock_pki, link)
        url = f"https://{link.device_address}:{rogue.port}"
        with dock_service(config) as process:
            wait_for(lambda: config.with_name("dock-state.json").exists() and
                     bay(config, url) == "refused", timeout=60, what="the rogue refused")
            time.sleep(2)
            state = status(config)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            log = process.log.read_text()
    assert list(state["bays"]) == [url], state  # the loopback one never polled
    assert "certificate verify failed" in state["bays"][url]["error"]
    assert state["devices"] == {}  # nothing pulled, no custody reported
    assert not (tmp_path / "evidence").exists() or not any((tmp_path / "evidence").iterdir())
    assert log.count("127.0.0.1 is not on a browsed link") == 1, log
