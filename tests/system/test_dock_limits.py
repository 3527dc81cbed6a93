"""The offload server's limits against peers on the dock link, over real TLS on loopback.

Peers with no dock certificate cannot keep a dock out (handshake deadline, limits per
address and in all, no session slot before a certificate is verified) nor fill the log;
a dock's request bodies are bounded before they are read and cost the recorder no frame.
The attackers connect from other loopback addresses (127.0.0.2 and up), as peers on a
link do; the dock from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import select
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from agent.device.offload import tls_http
from agent.device.state import State
from agent.evidence.chain import read_bodies
from tests.support.device import wait_for
from tests.support.dockside import Docked, docked_device
from tests.support.pki import Pki

# The first bytes of a TLS record holding a 512-byte ClientHello: a handshake begun.
HELLO_START = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03])


def _connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


class _Flood:
    """Peers without a certificate that keep `per_address` connections open from each of
    `addresses`, half of them trickling a ClientHello a byte every `trickle_s`, half
    silent, each reconnecting as soon as the device cuts it."""

    def __init__(self, port: int, addresses: int, per_address: int, trickle_s: float) -> None:
        self.port, self.trickle_s = port, trickle_s
        self.stop = threading.Event()
        self.connections = 0
        self._threads = [threading.Thread(target=self._peer, args=(f"127.0.0.{2 + a}", n % 2),
                                          daemon=True)
                         for a in range(addresses) for n in range(per_address)]

    def __enter__(self) -> _Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)

    def _peer(self, address: str, trickles: int) -> None:
        while not self.stop.is_set():
            try:
                with _connect(self.port, address) as peer:
                    self.connections += 1
                    peer.settimeout(self.trickle_s)
                    sent = 0
                    while not self.stop.is_set():
                        if trickles and sent < len(HELLO_START):
                            peer.send(HELLO_START[sent:sent + 1])
                            sent += 1
                        with contextlib.suppress(TimeoutError):
                            if not peer.recv(1):
                                break  # cut by the device
            except OSError:
                self.stop.wait(0.05)


def test_a_slow_handshake_flood_keeps_no_dock_out(device: Docked, tmp_path: Path) -> None:
    """Peers on 4 addresses hold every handshake the device takes (32), trickling or
    silent, and reconnect at once when cut: a dock's pull still goes through, in about
    its usual time."""
    alone = time.monotonic()
    assert device.pull(tmp_path / "first").ok
    alone = time.monotonic() - alone
    port = device.daemon.offload.port
    with _Flood(port, addresses=4, per_address=10, trickle_s=2.0) as flood:
        wait_for(lambda: flood.connections >= 40, timeout=10, what="the flood to connect")
        time.sleep(1)
        started = time.monotonic()
        result = device.pull(tmp_path / "second")
        took = time.monotonic() - started
    assert result.ok, result.problem
    assert took < max(5 * alone, 3.0), f"the pull took {took:.1f} s, {alone:.1f} s alone"


def test_a_trickled_handshake_is_cut_at_its_deadline(
        device: Docked, monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.2 s keeps no handshake alive past HANDSHAKE_S from accept."""
    monkeypatch.setattr(tls_http, "HANDSHAKE_S", 1)
    with _connect(device.daemon.offload.port, "127.0.0.2") as peer:
        peer.settimeout(0.2)
        started = time.monotonic()
        trickle = iter(HELLO_START + bytes(1000))
        while time.monotonic() < started + 5:
            try:
                peer.send(bytes([next(trickle)]))
                if peer.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break  # reset: cut all the same
        assert time.monotonic() - started < 3


def test_a_flood_of_bad_handshakes_writes_two_lines_a_window(
        device: Docked, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Refused handshakes are logged once per REFUSAL_LOG_S, then summed up with counts:
    hundreds of refusals a second write at most two lines a window."""
    monkeypatch.setattr(tls_http, "REFUSAL_LOG_S", 1.0)
    port = device.daemon.offload.port
    stranger = ssl.create_default_context()  # a client without any certificate
    stranger.check_hostname, stranger.verify_mode = False, ssl.CERT_NONE
    attempts = itertools.count()

    def knock(source: str, stop: float) -> None:
        while time.monotonic() < stop:
            with contextlib.suppress(OSError), _connect(port, source) as raw:
                if next(attempts) % 2:
                    raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not TLS at all
                    raw.recv(1)
                else:
                    with stranger.wrap_socket(raw) as tls:
                        tls.recv(1)

    with caplog.at_level(logging.INFO, logger="agent.device.offload.tls_http"):
        started = time.monotonic()
        knockers = [threading.Thread(target=knock, args=(f"127.0.0.{2 + n}", started + 3.0))
                    for n in range(4)]
        for thread in knockers:
            thread.start()
        for thread in knockers:
            thread.join()
        time.sleep(1.6)  # the last window ends and is summed up
        windows = (time.monotonic() - started) / tls_http.REFUSAL_LOG_S
    knocked = next(attempts)
    lines = [r for r in caplog.records if r.name == "agent.device.offload.tls_http"]
    assert knocked > 200
    assert len(lines) <= 2 * (windows + 1), [r.getMessage() for r in lines][:10]
    assert sum(len(r.getMessage()) for r in lines) < 1000 * len(lines)
    counted = sum(int(r.getMessage().split()[0]) for r in lines if "more connection" in
                  r.getMessage())
    assert counted + sum("more connection" not in r.getMessage() for r in lines) == knocked
    assert device.pull(device.store.parent / "evidence").ok


def _dock_socket(device: Docked) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", device.daemon.offload.port), timeout=5)
    return device.link().context().wrap_socket(raw)


def _status(connection: ssl.SSLSocket) -> int:
    return int(connection.recv(4096).split(b" ", 2)[1])


@pytest.mark.parametrize(("method", "path", "length"), [
    ("POST", "/v1/custody", 8 * 2**20),
    ("POST", "/v1/officer", 64 * 2**10),
    ("POST", "/v1/enrollment", 2 * 2**20),
    ("GET", "/v1/identity", 1),
])
def test_an_oversized_body_is_refused_before_it_is_read(
        device: Docked, method: str, path: str, length: int) -> None:
    """Only the headers are sent: the device answers 413 at once, from Content-Length,
    without waiting for (or buffering) one byte of the body."""
    with _dock_socket(device) as dock:
        dock.sendall(f"{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        assert _status(dock) == 413
    assert not device.records("custody") and not device.records("officer_assigned")


def _custody_flood(claims: int) -> tuple[bytes, bytes]:
    """The headers and the body of a custody report naming `claims` files, none real."""
    report = {"report_id": "flood-0001", "nonce": "n" * 32, "operator": "flood",
              "head": {"seq": 1, "hash": "0" * 64},
              "segments": [{"seq": 1 + n, "sha256": "a" * 64} for n in range(claims)]}
    body = json.dumps(report).encode()
    return (f"POST /v1/custody HTTP/1.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode(), body


def test_a_flood_of_large_custody_reports_costs_the_recording_no_frame(
        tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    """16 docks at once send custody reports of 32 MiB for as long as a recording runs:
    each is refused, and the recording loses no frame, is not interrupted, and every
    frame its record_stop counts was written."""
    head, body = _custody_flood(32 * 2**20 // 100)
    with docked_device(tmp_path, recorded, dock_pki, {"realtime": "true"}) as device:
        daemon = device.daemon
        stop, refused = threading.Event(), []

        def dock_flood() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError), _dock_socket(device) as dock:
                    dock.settimeout(120)
                    dock.sendall(head)
                    if not select.select([dock], [], [], 0.5)[0]:  # no answer yet: the body
                        dock.sendall(body)
                    refused.append(_status(dock))

        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.RECORDING, timeout=10,
                 what="the recording to start")
        flooders = [threading.Thread(target=dock_flood, daemon=True) for _ in range(16)]
        for thread in flooders:
            thread.start()
        time.sleep(8)
        stop.set()
        for thread in flooders:
            thread.join(120)
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is not State.RECORDING, timeout=30,
                 what="the recording to stop")
        lost = daemon.recorder.stats.packets_lost
    records = list(read_bodies(device.store / "chain.jsonl"))
    assert not [r for r in records if r["type"] in ("interruption", "custody")]
    assert lost == 0
    stop_record = [r for r in records if r["type"] == "record_stop"][-1]["payload"]
    assert stop_record["reason"] != "camera_fault"
    # 8 s of recording at 30 fps, plus the pre-event buffer, all sealed.
    assert stop_record["video_frames"] >= 8 * 30
    assert refused and set(refused) <= {413, 503}, set(refused)  # at once, unread
