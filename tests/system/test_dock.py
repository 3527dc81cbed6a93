"""Docking over real mutual TLS on loopback: pull, verify, custody, purge, and every refusal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import http.client
import json
import socket
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from agent.cli import main
from agent.device.enrollment import rotate
from agent.device.offload import tls_http
from agent.dock.bulk import BulkLink, Connections, Download
from agent.dock.direct_file import ALIGN
from agent.dock.pull import pull
from agent.evidence.chain import Chain, read_bodies
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.possession import file_proof
from agent.evidence.verify import verify_store
from hal.clock import SimulatedClock
from tests.evidence.test_chain_format import run_procedure, tools  # noqa: F401  (a fixture)
from tests.support.device import running_daemon, wait_for
from tests.support.dockside import (
    Docked,
    copy_store,
    dock_config,
    docked_device,
    sealed_segments,
    snapshot,
)
from tests.support.pki import Pki

SEGMENTS = 16


async def _request(device: Docked, method: str, path: str, link: str = "dock",
                   **kwargs: Any) -> tuple[int, bytes]:
    """One request with a dock's certificate; the path is sent exactly as written."""
    connector = aiohttp.TCPConnector(ssl=device.link(link).context())
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.request(method, URL(device.url + path, encoded=True), **kwargs) as response:
        return response.status, await response.read()


def request(device: Docked, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    return asyncio.run(_request(device, method, path, **kwargs))


# --- the happy path ---------------------------------------------------------------------


def test_full_pull_verifies_and_takes_custody(device: Docked, tmp_path: Path) -> None:
    out = tmp_path / "evidence"
    sealed = sealed_segments(device.store)
    assert len(sealed) >= SEGMENTS

    result = device.pull(out)

    assert result.ok, result.problem or result.verify.summary()
    folder = out / "TEST-0001"
    assert sorted(result.fetched) == [r["seq"] for r in read_bodies(device.store / "chain.jsonl")
                                      if r["type"] in ("segment_sealed", "voice_note")]
    assert snapshot(folder) == snapshot(device.store)
    copy = verify_store(folder)
    assert copy.ok and copy.segments == len(sealed), copy.summary()
    # The device sealed one custody record naming every segment with its hash...
    (custody,) = device.records("custody")
    assert custody["seq"] == result.custody_seq
    assert custody["payload"]["dock"]["name"] == "DOCK-A"
    assert custody["payload"]["operator"] == "operator Li"
    assert {(s["seq"], s["sha256"]) for s in custody["payload"]["segments"]} >= \
        {(r["seq"], r["payload"]["sha256"]) for r in sealed}
    # ...and returned it, signed, as the receipt; the manifest says what is held.
    receipt = (folder / "receipts" / f"{custody['seq']:08d}-custody.jsonl").read_bytes()
    assert receipt in (device.store / "chain.jsonl").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "custody" and manifest["custody_seq"] == custody["seq"]
    assert len(manifest["held"]) == len(result.fetched)
    assert not list((folder / "partial").iterdir())
    # The default policy purges only when space runs low: everything is still on the device.
    assert not device.records("purge") and verify_store(device.store).ok

    again = device.pull(out)
    assert again.ok and again.fetched == [] and again.custody_seq > custody["seq"]
    # Files already in custody are not reported again: the chain does not grow with them.
    assert device.records("custody")[-1]["payload"]["segments"] == []
    # The second pull verified only the records since the first's head, and its report
    # and manifest are those of the whole copy.
    assert again.resumed_from == result.verify.head_seq
    assert again.verify.segments == copy.segments and again.verify.ok
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["held"]) == len(result.fetched)
    assert manifest["verify"]["resumed_from"] == result.verify.head_seq


def test_purge_frees_space_and_both_copies_still_verify(tmp_path: Path, recorded: Path,
                                                       dock_pki: Pki, tools: Path) -> None:  # noqa: F811
    # A threshold no disk meets: "space needed" at once, so everything in custody goes.
    with docked_device(tmp_path, recorded, dock_pki, purge_free_below_mb=10**9) as device:
        sealed = sealed_segments(device.store)
        before = sum(p.stat().st_size for p in (device.store / "sealed").iterdir())

        result = device.pull(tmp_path / "dock-a")

        assert result.ok, result.problem
        assert sorted(result.purged) == sorted(result.fetched)
        (purge,) = device.records("purge")
        assert purge["payload"]["reason"] == "space"
        assert {f["seq"] for f in purge["payload"]["files"]} == set(result.fetched)
        assert all(f["custody"] == result.custody_seq for f in purge["payload"]["files"])
        left = sum(p.stat().st_size for p in (device.store / "sealed").iterdir())
        assert left == 0 < before
        assert sum(r["payload"]["size"] for r in sealed) <= before - left
        # A second dock that never held them: the purged files are gone (410), and the
        # chain still proves that they left after custody.
        other = device.pull(tmp_path / "dock-b")
        assert other.ok and other.fetched == [], other.problem
        assert verify_store(tmp_path / "dock-b" / "TEST-0001").purged == len(result.fetched)
    on_device = verify_store(device.store)
    assert on_device.ok and on_device.purged == len(result.fetched), on_device.summary()
    assert verify_store(tmp_path / "dock-a" / "TEST-0001").ok
    assert main(["verify", str(device.store)]) == 0
    assert main(["verify", str(tmp_path / "dock-a" / "TEST-0001")]) == 0
    # And with standard tools alone, by the procedure of docs/chain-format.md.
    shell = run_procedure(device.store, tools, tmp_path / "work")
    assert shell.returncode == 0 and "FAIL" not in shell.stdout, shell.stdout[-2000:]
    assert shell.stdout.count("was purged after custody") == len(result.fetched)


def _report(device: Docked, evidence: Path, **change: Any) -> dict[str, Any]:
    """A correct custody report for what `evidence` holds, with a fresh nonce, then `change`."""
    status, body = request(device, "GET", "/v1/identity")
    assert status == 200
    copy = verify_store(evidence)
    nonce = json.loads(body)["nonce"]
    held = [{"seq": r["seq"], "sha256": r["payload"]["sha256"],
             "proof": file_proof(evidence / r["payload"]["file"], nonce)}
            for r in sealed_segments(evidence)]
    return {"report_id": str(uuid.uuid4()), "nonce": nonce,
            "operator": "operator Li", "head": copy.head, "segments": held, **change}


def test_custody_refused_for_wrong_unknown_partial_malformed_replayed(
        tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device:
        pulled = device.pull(tmp_path / "dock", custody=False)
        assert pulled.ok is False and pulled.problem is None and pulled.verify.ok
        evidence = tmp_path / "dock" / "TEST-0001"
        files = snapshot(device.store)
        good = _report(device, evidence)
        first, second = good["segments"][0], good["segments"][1]
        wrong = {**first, "sha256": "0" * 64}
        refusals = {
            "wrong hash": _report(device, evidence, segments=[wrong, *good["segments"][1:]]),
            "unknown segment": _report(device, evidence,
                                       segments=[*good["segments"], {"seq": 999_999,
                                                                     "sha256": "a" * 64}]),
            "not a sealed file": _report(device, evidence,
                                         segments=[*good["segments"], {"seq": 1,
                                                                       "sha256": "a" * 64}]),
            "partial": _report(device, evidence, segments=good["segments"][1:]),
            "listed twice": _report(device, evidence, segments=[first, *good["segments"]]),
            "nonce never issued": {**good, "nonce": "x" * 32},
            "head of another chain": _report(device, evidence,
                                             head={"seq": good["head"]["seq"], "hash": "b" * 64}),
            "missing field": {k: v for k, v in good.items() if k != "operator"},
            "float seq": _report(device, evidence, segments=[{**second, "seq": 2.0}]),
        }
        for what, body in refusals.items():
            status, answer = request(device, "POST", "/v1/custody", json=body)
            assert 400 <= status < 500, (what, status, answer)
            assert "error" in json.loads(answer), what
        for raw in (b"{", b"[]", b"null", b'{"report_id": 5}'):
            status, _ = request(device, "POST", "/v1/custody", data=raw,
                                headers={"Content-Type": "application/json"})
            assert status in (400, 422), raw
        assert not device.records("custody") and not device.records("purge")
        assert snapshot(device.store) == files

        status, answer = request(device, "POST", "/v1/custody", json=good)
        assert status == 200, answer
        assert json.loads(answer)["purged"]
        (purge,) = device.records("purge")
        replays = {
            "same report again": good,
            "same report id, fresh nonce": _report(device, evidence,
                                                   report_id=good["report_id"]),
            "older head, fresh nonce": _report(device, evidence,
                                               head={"seq": first["seq"],
                                                     "hash": _hash_of(device, first["seq"])},
                                               segments=[]),
        }
        for what, body in replays.items():
            status, answer = request(device, "POST", "/v1/custody", json=body)
            assert status == 409, (what, status, answer)
        assert len(device.records("custody")) == 1 and device.records("purge") == [purge]


def _hash_of(device: Docked, seq: int) -> str:
    return device.daemon.ledger.refresh().hashes[seq]


@pytest.mark.parametrize("client", ["none", "rogue", "expired"])
def test_clients_without_a_dock_certificate_are_refused(device: Docked, client: str) -> None:
    before = (device.store / "chain.jsonl").read_bytes()
    context = ssl.create_default_context(cafile=device.pki.pem("device-ca.pem"))
    context.check_hostname = False  # the device is named by its id, not by 127.0.0.1
    if client != "none":
        context.load_cert_chain(device.pki.pem(f"{client}.crt"), device.pki.pem(f"{client}.key"))

    async def attempt() -> int:
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get(f"{device.url}/v1/identity") as response:
            return response.status

    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        asyncio.run(attempt())
    assert (device.store / "chain.jsonl").read_bytes() == before
    assert request(device, "GET", "/v1/identity")[0] == 200  # a real dock still gets in


def test_traversal_and_malformed_sequence_numbers_are_refused(device: Docked) -> None:
    segment = sealed_segments(device.store)[0]["seq"]
    assert request(device, "GET", f"/v1/sealed/{segment}")[0] == 200
    for path in ("/v1/sealed/..%2Fkeys%2Fdevice.key", "/v1/sealed/%2E%2E%2Fchain.jsonl",
                 "/v1/sealed/../keys/device.key", "/v1/sealed/..%2F..%2F..%2Fetc%2Fpasswd",
                 "/v1/sealed/-1", "/v1/sealed/0", f"/v1/sealed/0{segment}",
                 f"/v1/sealed/{segment}.0", f"/v1/sealed/{segment}%00", "/v1/sealed/1e3",
                 f"/v1/sealed/+{segment}", "/v1/sealed/99999999999999999999",
                 "/v1/sealed/%20" + str(segment), "/v1/sealed/1",
                 "/v1/chain?from=abc", "/v1/chain?from=-1", "/v1/chain?from=0",
                 "/v1/chain?from=1%2F..", "/v1/../keys/device.key"):
        status, body = request(device, "GET", path)
        assert 400 <= status < 500, (path, status)
        assert b"PRIVATE KEY" not in body and not body.startswith(b"\x47"), path


def _raw_exchange(device: Docked, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """`request` as bytes on a dock's TLS connection; the status, headers and body back."""
    with socket.create_connection(("127.0.0.1", device.daemon.offload.port), timeout=10) as raw, \
            device.link().context().wrap_socket(raw) as tls:
        tls.sendall(request)
        answer = http.client.HTTPResponse(tls, method=request.split(b" ", 1)[0].decode())
        answer.begin()
        return answer.status, dict(answer.getheaders()), answer.read()


def test_malformed_http_gets_a_json_refusal_and_never_a_5xx(device: Docked) -> None:
    segment = sealed_segments(device.store)[0]
    size = segment["payload"]["size"]
    cases = [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /v1/identity HTTP/9.9\r\n\r\n", 505),
        (b"DELETE /v1/identity HTTP/1.1\r\n\r\n", 405),
        (b"TRACE /v1/identity HTTP/1.1\r\n\r\n", 405),
        (b"GET /v1/nothing-here HTTP/1.1\r\n\r\n", 404),
        (b"POST /v1/custody HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
        (b"POST /v1/custody HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /v1/custody HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /v1/identity HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ]
    for raw, expected in cases:
        status, headers, body = _raw_exchange(device, raw)
        assert status == expected, (raw[:60], status, body[:200])
        assert headers["Content-Type"].startswith("application/json"), raw[:60]
        assert json.loads(body)["error"], raw[:60]
        if status == 405:
            assert headers["Allow"] == "GET"
    # HEAD: the headers a GET would have, no body.
    status, headers, body = _raw_exchange(
        device, f"HEAD /v1/sealed/{segment['seq']} HTTP/1.1\r\n\r\n".encode())
    assert (status, headers["Content-Length"], headers["X-Sha256"], body) == \
        (200, str(size), segment["payload"]["sha256"], b"")
    assert request(device, "GET", "/v1/identity")[0] == 200  # still serving


def test_a_stalled_client_holds_up_no_dock(device: Docked) -> None:
    """Handshakes and requests run on each connection's own thread: connections that
    never finish their handshake, or their request, do not stop a dock's pull."""
    port = device.daemon.offload.port
    with contextlib.ExitStack() as stack:
        for _ in range(3):  # TCP only, never a ClientHello
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        raw = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        half = stack.enter_context(device.link().context().wrap_socket(raw))
        half.sendall(b"POST /v1/custody HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        segment = sealed_segments(device.store)[0]
        data = (device.store / segment["payload"]["file"]).read_bytes()
        assert request(device, "GET", f"/v1/sealed/{segment['seq']}",
                       timeout=aiohttp.ClientTimeout(total=10)) == (200, data)
    assert not device.records("custody")


def test_a_stalled_client_is_cut_when_its_time_runs_out(
        device: Docked, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dock cable pulled mid-handshake or mid-request frees the connection: the device
    closes a handshake silent for HANDSHAKE_S and a request silent for IDLE_S."""
    monkeypatch.setattr(tls_http, "HANDSHAKE_S", 1)
    monkeypatch.setattr(tls_http, "IDLE_S", 1)
    port = device.daemon.offload.port

    def seconds_until_closed(connection: socket.socket) -> float:
        started = time.monotonic()
        # Cut without close_notify (an SSL error, a reset): closed all the same.
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            assert connection.recv(1) == b""
        return time.monotonic() - started

    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        assert 0.8 < seconds_until_closed(silent) < 5
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with device.link().context().wrap_socket(raw) as half:
        half.sendall(b"POST /v1/custody HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        assert 0.8 < seconds_until_closed(half) < 5
    assert not device.records("custody")
    assert request(device, "GET", "/v1/identity")[0] == 200  # still serving


def test_a_dock_that_stops_reading_is_cut_when_its_time_runs_out(
        device: Docked, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A dock that asks for files and never reads them holds a device thread only until
    the send times out: requests for 32 MiB, pipelined on one connection, fill every
    buffer between the two, and the device gives up after IDLE_S."""
    monkeypatch.setattr(tls_http, "IDLE_S", 1)
    segment = sealed_segments(device.store)[0]
    get = f"GET /v1/sealed/{segment['seq']} HTTP/1.1\r\n\r\n".encode()
    raw = socket.create_connection(("127.0.0.1", device.daemon.offload.port), timeout=10)
    with caplog.at_level("INFO", logger="agent.device.offload.tls_http"), \
            device.link().context().wrap_socket(raw) as stalled:
        stalled.sendall(get * (32 * 2**20 // segment["payload"]["size"] + 1))
        wait_for(lambda: "no progress for 1 s" in caplog.text, timeout=10,
                 what="the device to give up sending")
    assert "connection lost after" in caplog.text
    assert request(device, "GET", "/v1/identity")[0] == 200  # still serving


def test_sealed_files_come_only_from_the_device_key_the_session_checked(
        device: Docked, tmp_path: Path) -> None:
    link = device.link()
    record = sealed_segments(device.store)[0]
    url = f"{device.url}/v1/sealed/{record['seq']}"
    served = ssl.get_server_certificate(("127.0.0.1", device.daemon.offload.port))
    right = BulkLink(link.cert, link.key, link.device_ca,
                     BulkLink.pin(ssl.PEM_cert_to_DER_cert(served)))
    wrong = dataclasses.replace(right, pinned_key="sha256//" + "A" * 43 + "=")

    with pytest.raises(ConnectionError, match="libcurl error 90"), Connections(wrong) as bulk:
        bulk.fetch(Download(tmp_path / "wrong.part", 0, hashlib.sha256()), url)
    download = Download(tmp_path / "right.part", 0, hashlib.sha256())
    with Connections(right) as bulk:
        bulk.fetch(download, url)

    assert download.status == 200
    assert download.digest.hexdigest() == record["payload"]["sha256"]
    assert (tmp_path / "right.part").read_bytes() == \
        (device.store / record["payload"]["file"]).read_bytes()


class _CuttingProxy:
    """A TCP relay on loopback that cuts its `cut_connection`th connection after
    `cut_after` bytes from the device: a dock cable pulled in the middle of a segment."""

    def __init__(self, target_port: int, cut_connection: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_connection = cut_connection
        self.cut_after = cut_after
        self.connections = 0
        self.cuts = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.cut_after if self.connections == self.cut_connection else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                       budget: int | None) -> None:
            sent = 0
            while data := await source.read(65536):
                if budget is not None and sent + len(data) > budget:
                    sink.write(data[: budget - sent])
                    await sink.drain()
                    await asyncio.sleep(0.3)  # the bytes before the cut reach the dock
                    self.cuts += 1
                    break
                sink.write(data)
                sent += len(data)
                await sink.drain()
            for w in (writer, up_writer):
                w.close()

        with contextlib.suppress(asyncio.CancelledError):  # the proxy closing
            await asyncio.gather(pipe(reader, up_writer, None),
                                 pipe(up_reader, writer, limit), return_exceptions=True)


def test_resume_after_a_cut_connection(device: Docked, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    sizes = [r["payload"]["size"] for r in sealed_segments(device.store)]
    # One connection for the API calls, then one for the sealed files, one after the
    # other (TLS adds well under 1 % to them): cut it half way through the fourth.
    proxy = _CuttingProxy(device.daemon.offload.port, cut_connection=2,
                          cut_after=sum(sizes[:3]) + sizes[3] // 2)

    async def pull_through_proxy() -> Any:
        port = await proxy.start()
        async with proxy.server:
            return await pull(f"https://127.0.0.1:{port}", tmp_path / "dock", device.link(),
                              "operator Li", connections=1)

    with caplog.at_level("INFO", logger="agent.device.offload.server.access"):
        result = asyncio.run(pull_through_proxy())

    # The API's, the files' and, after the cut, the files' again: not one per file.
    assert proxy.cuts == 1 and proxy.connections == 3 < len(sizes)
    assert result.ok, result.problem
    resumed = [r.getMessage() for r in caplog.records if " 206 " in r.getMessage()]
    assert len(resumed) == 1 and "/v1/sealed/" in resumed[0], resumed
    assert snapshot(tmp_path / "dock" / "TEST-0001") == snapshot(device.store)


def test_a_partial_file_from_an_earlier_pull_is_resumed_and_checked(device: Docked,
                                                                     tmp_path: Path) -> None:
    segment = sealed_segments(device.store)[2]
    name = Path(segment["payload"]["file"]).name
    data = (device.store / segment["payload"]["file"]).read_bytes()
    partial = tmp_path / "dock" / "TEST-0001" / "partial"
    partial.mkdir(parents=True)
    (partial / f"{name}.part").write_bytes(data[: len(data) // 2])
    whole = sealed_segments(device.store)[3]["payload"]["file"]  # complete, cut before its rename
    (partial / f"{Path(whole).name}.part").write_bytes((device.store / whole).read_bytes())
    result = device.pull(tmp_path / "dock")
    assert result.ok, result.problem
    assert (tmp_path / "dock" / "TEST-0001" / "sealed" / name).read_bytes() == data
    assert snapshot(tmp_path / "dock" / "TEST-0001") == snapshot(device.store)

    # Bytes that are not the device's in a partial file: caught by the hash, no custody.
    # (A resume keeps whole 4 KiB blocks only, the dock writes with O_DIRECT: three of them.)
    custody = len(device.records("custody"))
    later = sealed_segments(device.store)[-1]
    assert later["payload"]["size"] > 3 * ALIGN
    (tmp_path / "dock2" / "TEST-0001" / "partial").mkdir(parents=True)
    (tmp_path / "dock2" / "TEST-0001" / "partial" /
     f"{Path(later['payload']['file']).name}.part").write_bytes(b"\x47" * (3 * ALIGN + 100))
    bad = device.pull(tmp_path / "dock2")
    assert not bad.ok and "sha256" in bad.problem
    assert len(device.records("custody")) == custody


@pytest.mark.parametrize("damage", ["segment", "record"])
def test_a_broken_chain_is_reported_and_nothing_acknowledged(
        tmp_path: Path, recorded: Path, dock_pki: Pki, damage: str) -> None:
    broken = copy_store(recorded, tmp_path / "broken")
    segment = sealed_segments(broken)[4]
    if damage == "segment":
        path = broken / segment["payload"]["file"]
        path.chmod(0o644)
        data = bytearray(path.read_bytes())
        data[5000] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        chain = broken / "chain.jsonl"
        chain.write_bytes(chain.read_bytes().replace(b'"index":3,', b'"index":9,', 1))
    with docked_device(tmp_path / "docked", broken, dock_pki) as device:
        result = device.pull(tmp_path / "dock")
        assert not result.ok and result.problem and result.custody_seq is None
        assert ("sha256" in result.problem) if damage == "segment" else \
            ("signature" in result.problem)
        assert not device.records("custody") and not device.records("purge")
        manifest = json.loads((tmp_path / "dock" / "TEST-0001" / "manifest.json").read_text())
        assert manifest["status"] == "refused" and manifest["problem"] == result.problem


def test_officer_issue_and_return_and_the_clock_from_the_dock(device: Docked) -> None:
    status, answer = request(device, "POST", "/v1/officer",
                             json={"action": "issue", "officer": "OFC-42", "operator": "Li"})
    assert status == 200, answer
    (issued,) = device.records("officer_assigned")
    assert issued["payload"] == {"action": "issue", "officer": "OFC-42", "previous": "OFC-7",
                                 "operator": "Li", "dock": issued["payload"]["dock"]}
    assert issued["officer"] == "OFC-42"  # the record that assigns names the new officer
    assert device.daemon.status()["officer"] == "OFC-42"
    for bad in ({"action": "issue", "operator": "Li"},
                {"action": "issue", "officer": "../x", "operator": "Li"},
                {"action": "lend", "officer": "OFC-1", "operator": "Li"},
                {"action": "return", "officer": "OFC-1", "operator": "Li"}):
        assert 400 <= request(device, "POST", "/v1/officer", json=bad)[0] < 500, bad
    status, _ = request(device, "POST", "/v1/officer", json={"action": "return", "operator": "Li"})
    assert status == 200 and device.daemon.status()["officer"] == ""

    clock = device.daemon.clock
    target = {"time_ns": clock.now_ns(), "operator": "Li"}
    assert request(device, "POST", "/v1/clock", json=target)[0] == 409  # synchronised
    assert not device.records("clock_step")
    clock.step(-3600)
    status, answer = request(device, "POST", "/v1/clock",
                             json={"time_ns": __import__("time").time_ns(), "operator": "Li"})
    assert status == 200, answer
    (step,) = device.records("clock_step")
    assert 3599 * 10**9 < step["payload"]["step_ns"] < 3601 * 10**9
    assert abs(clock.offset_s) < 1
    assert verify_store(device.store).ok


def test_export_overdue_alarm_until_the_dock_takes_custody(tmp_path: Path, recorded: Path,
                                                          dock_pki: Pki) -> None:
    with docked_device(tmp_path, recorded, dock_pki,
                       device={"export_deadline_hours": 0.0001, "check_interval": 0.1}) as device:
        wait_for(lambda: device.records("alarm"), timeout=20, what="the export alarm")
        (raised,) = device.records("alarm")
        assert raised["payload"]["alarm"] == "export_overdue" and raised["payload"]["raised"]
        assert "not in custody" in raised["payload"]["value"]
        assert "export_overdue" in device.daemon.status()["alarms"]
        assert device.pull(tmp_path / "dock").ok
        wait_for(lambda: len(device.records("alarm")) == 2, timeout=20, what="the alarm cleared")
        assert device.records("alarm")[1]["payload"]["raised"] is False


def _append(store: Path, type_: str, payload: dict[str, Any]) -> None:
    """Seal a record with the device's own key, as the daemon would."""
    chain = Chain(store / "chain.jsonl", load_or_create_device_key(store / "keys"),
                  lambda: ("TEST-0001", "OFC-7"), SimulatedClock().state, "test-boot")
    chain.append(type_, payload)
    chain.close()


def test_the_verifier_accepts_a_missing_file_only_under_a_purge_after_custody(
        store_copy: Path) -> None:
    first, second = sealed_segments(store_copy)[:2]
    held = [{"seq": r["seq"], "file": r["payload"]["file"], "sha256": r["payload"]["sha256"],
             "size": r["payload"]["size"]} for r in (first, second)]
    (store_copy / second["payload"]["file"]).unlink()
    report = verify_store(store_copy)
    assert not report.ok and "missing (deleted)" in str(report.findings[0])

    # A purge record alone does not excuse it: nothing held the file first.
    _append(store_copy, "purge", {"reason": "space", "free_bytes": 0,
                                  "files": [{**held[1], "custody": None}]})
    report = verify_store(store_copy)
    assert not report.ok and "deleted without custody" in str(report.findings[0])

    # Custody of the first, then its purge with the right hash: that file may go.
    _append(store_copy, "custody", {"report_id": "r-00000001", "dock": {}, "operator": "Li",
                                    "head": report.head, "segments": held[:1]})
    _append(store_copy, "purge", {"reason": "space", "free_bytes": 0,
                                  "files": [{**held[0], "custody": report.head["seq"] + 1}]})
    (store_copy / first["payload"]["file"]).unlink()
    report = verify_store(store_copy)
    assert report.purged == 1  # the first: gone under custody, no finding
    assert [str(f) for f in report.findings] == [
        f"purge record {report.records - 2}: deletes {held[1]['file']} (seq {held[1]['seq']}), "
        "which no earlier custody record holds with that hash (deleted without custody)",
        f"segment {held[1]['file']} (record {held[1]['seq']}): is missing (deleted)"]


def test_ranges_of_a_sealed_file(device: Docked) -> None:
    segment = sealed_segments(device.store)[0]
    data = (device.store / segment["payload"]["file"]).read_bytes()
    path = f"/v1/sealed/{segment['seq']}"
    assert request(device, "GET", path) == (200, data)
    for header, part in (("bytes=100-", data[100:]), ("bytes=0-9", data[:10]),
                         ("bytes=-188", data[-188:]), (f"bytes={len(data) - 1}-", data[-1:])):
        assert request(device, "GET", path, headers={"Range": header}) == (206, part), header
    for header in (f"bytes={len(data)}-", "bytes=5-2", "bytes=abc", "items=0-1",
                   "bytes=0-1,5-6"):
        status, _ = request(device, "GET", path, headers={"Range": header})
        assert status == 416, header


def test_the_dock_commands(device: Docked, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    tls = ["--device", device.url, "--cert", str(device.pki.pem("dock.crt")),
           "--key", str(device.pki.pem("dock.key")), "--ca", str(device.pki.pem("device-ca.pem")),
           "--operator", "Li"]
    assert main(["dock", "officer", "issue", "--officer", "OFC-9", *tls]) == 0
    assert device.daemon.status()["officer"] == "OFC-9"
    assert main(["dock", "pull", "--out", str(tmp_path / "ev"), *tls]) == 0
    out = capsys.readouterr().out
    assert "custody: record" in out and f"bodycam verify {tmp_path / 'ev' / 'TEST-0001'}" in out
    with pytest.raises(SystemExit, match="synchronised"):
        main(["dock", "clock", *tls])
    rogue = [*tls[:2], "--cert", str(device.pki.pem("rogue.crt")),
             "--key", str(device.pki.pem("rogue.key")), *tls[6:]]
    with pytest.raises(SystemExit, match="cannot talk to the device"):
        main(["dock", "pull", "--out", str(tmp_path / "ev2"), *rogue])


@pytest.mark.parametrize("dock_ca", [None, b"-----BEGIN CERTIFICATE-----\nnot one\n"])
def test_a_dock_link_without_a_dock_ca_never_stops_recording(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, dock_ca: bytes | None) -> None:
    """No dock CA, or a file that is not one: the error names it, and recording goes on."""
    store = tmp_path / "store"
    if dock_ca is not None:
        (store / "keys").mkdir(parents=True, mode=0o700)
        (store / "keys" / "dock-ca.pem").write_bytes(dock_ca)
    with caplog.at_level("ERROR"), running_daemon(dock_config(tmp_path, store)) as daemon:
        assert daemon.offload is None
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 2, what="2 segments")
    expected = "[dock] dock_ca = 'keys/dock-ca.pem': no file" if dock_ca is None else \
        f"[dock] offload TLS: client CA {store / 'keys' / 'dock-ca.pem'}: OpenSSL will not load it"
    assert f"offload server not started: {expected}" in caplog.text
    assert verify_store(store).ok


def test_custody_after_a_key_rotation(tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    """The receipt is signed by the key in force after the rotation, not the first key in
    keys/device.pub: the dock must check it by the key the verified chain hands over to."""
    store = copy_store(recorded, tmp_path / "rotated")
    keys = store / "keys"
    key = load_or_create_device_key(keys, store / "chain.jsonl")
    chain = Chain(store / "chain.jsonl", key, lambda: ("TEST-0001", "OFC-7"),
                  SimulatedClock().state, "test-boot")
    try:
        rotate(keys, chain, key, "TEST-0001", "yearly")
    finally:
        chain.close()
    with docked_device(tmp_path, store, dock_pki) as device:
        result = device.pull(tmp_path / "evidence")
        assert result.ok and result.custody_seq is not None, \
            result.problem or result.verify.summary()
        (custody,) = device.records("custody")
        # The next pull goes on from the verifier's state, the rotated key with it.
        again = device.pull(tmp_path / "evidence")
        assert again.ok and again.resumed_from == result.verify.head_seq, \
            again.problem or again.verify.summary()
    assert custody["seq"] == result.custody_seq
