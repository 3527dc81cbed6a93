"""Custody needs the bytes: a report built from public hashes, or over other bytes, or on
another dock's nonce, takes nothing into custody; the real pull still does (issue 18)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from agent.evidence.chain import SEALED_FILE_TYPES, record_hash, split_line
from agent.evidence.possession import file_proof
from agent.evidence.verify import verify_store
from tests.support.device import wait_for
from tests.support.dockside import Docked, docked_device, snapshot
from tests.support.pki import Pki

SEGMENTS = 6


async def _request(device: Docked, method: str, path: str, link: str,
                   **kwargs: Any) -> tuple[int, bytes, dict[str, str]]:
    connector = aiohttp.TCPConnector(ssl=device.link(link).context())
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.request(method, URL(device.url + path, encoded=True), **kwargs) as response:
        return response.status, await response.read(), dict(response.headers)


def request(device: Docked, method: str, path: str, link: str = "dock",
            **kwargs: Any) -> tuple[int, bytes]:
    status, body, _ = asyncio.run(_request(device, method, path, link, **kwargs))
    return status, body


def post_custody(device: Docked, report: dict[str, Any],
                 link: str = "dock") -> tuple[int, str, str | None]:
    """(status, error or receipt, Retry-After) of one custody report."""
    status, body, headers = asyncio.run(_request(device, "POST", "/v1/custody", link,
                                                 json=report))
    answer = json.loads(body)
    return status, answer.get("error") or answer["receipt"], headers.get("Retry-After")


def nonce(device: Docked, link: str = "dock") -> str:
    status, body = request(device, "GET", "/v1/identity", link)
    assert status == 200, body
    return str(json.loads(body)["nonce"])


def proven_report(evidence: Path, nonce: str) -> dict[str, Any]:
    """What the dock client sends for the files in `evidence`: each with its proof."""
    sealed = _sealed_records((evidence / "chain.jsonl").read_bytes())
    return {"report_id": str(uuid.uuid4()), "nonce": nonce, "operator": "operator Li",
            "head": verify_store(evidence).head,
            "segments": [{"seq": r["seq"], "sha256": r["payload"]["sha256"],
                          "proof": file_proof(evidence / r["payload"]["file"], nonce)}
                         for r in sealed]}


def _sealed_records(chain: bytes) -> list[dict[str, Any]]:
    bodies = [json.loads(split_line(line)[0]) for line in chain.splitlines()]
    return [b for b in bodies if b["type"] in SEALED_FILE_TYPES]


def test_a_report_from_the_public_chain_alone_takes_nothing_and_the_real_pull_does(
        tmp_path: Path, recorded: Path, dock_pki: Pki) -> None:
    """The attack of issue 18 item 1: a valid dock certificate, not one byte of footage
    downloaded, the hashes read off GET /v1/chain. Nothing may be sealed or purged, and the
    export alarm stays up; then the project's own pull takes custody and purges as before."""
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody",
                       device={"export_deadline_hours": 0.0001, "check_interval": 0.1}) as device:
        wait_for(lambda: device.records("alarm"), timeout=20, what="the export alarm")
        files = snapshot(device.store)
        status, chain = request(device, "GET", "/v1/chain")
        assert status == 200
        last = chain.splitlines()[-1]
        head = json.loads(split_line(last)[0])["seq"]
        claims = [{"seq": r["seq"], "sha256": r["payload"]["sha256"]}
                  for r in _sealed_records(chain)]
        assert len(claims) >= SEGMENTS
        fresh = nonce(device)
        forged = {"report_id": str(uuid.uuid4()), "nonce": fresh, "operator": "mallory",
                  "head": {"seq": head, "hash": record_hash(split_line(last)[0])},
                  "segments": claims}

        status, answer = request(device, "POST", "/v1/custody", json=forged)

        assert status == 422, answer
        assert "no proof of possession" in json.loads(answer)["error"]
        # Nor a "proof" made from what is public: the hash under the nonce (sent from the
        # forger's other certificate, which that wrong proof then holds off a while).
        guessed = {**forged, "report_id": str(uuid.uuid4()), "nonce": nonce(device, "dock-b"),
                   "segments": [{**c, "proof": c["sha256"]} for c in claims]}
        status, error, _ = post_custody(device, guessed, "dock-b")
        assert status == 422 and "does not hold the sealed bytes" in error
        status, error, retry_after = post_custody(
            device, {**guessed, "report_id": str(uuid.uuid4()),
                     "nonce": nonce(device, "dock-b")}, "dock-b")
        assert status == 429 and retry_after is not None and "without reading" in error
        assert not device.records("custody") and not device.records("purge")
        assert snapshot(device.store) == files
        assert "export_overdue" in device.daemon.status()["alarms"]
        assert len(device.records("alarm")) == 1

        result = device.pull(tmp_path / "dock")

        assert result.ok, result.problem
        (custody,) = device.records("custody")
        assert {s["seq"] for s in custody["payload"]["segments"]} == {c["seq"] for c in claims}
        assert sorted(result.purged) == sorted(c["seq"] for c in claims)
        assert not list((device.store / "sealed").iterdir())
        assert snapshot(tmp_path / "dock" / "TEST-0001") == files
        wait_for(lambda: len(device.records("alarm")) == 2, timeout=20, what="the alarm cleared")
        assert verify_store(device.store).ok


def test_a_proof_over_altered_bytes_is_refused(tmp_path: Path, recorded: Path, dock_pki: Pki,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device, \
            caplog.at_level(logging.WARNING, logger="agent.device.offload.server"):
        pulled = device.pull(tmp_path / "dock", custody=False)
        assert pulled.verify.ok and pulled.custody_seq is None
        evidence = tmp_path / "dock" / "TEST-0001"
        files = snapshot(device.store)
        victim = _sealed_records((evidence / "chain.jsonl").read_bytes())[2]
        path = evidence / victim["payload"]["file"]
        path.chmod(0o644)
        original = path.read_bytes()
        path.write_bytes(original[:1000] + bytes([original[1000] ^ 1]) + original[1001:])

        status, answer = request(device, "POST", "/v1/custody",
                                 json=proven_report(evidence, nonce(device)))

        assert status == 422, answer
        error = json.loads(answer)["error"]
        assert f"seq {victim['seq']}" in error and "does not hold the sealed bytes" in error
        assert not device.records("custody") and not device.records("purge")
        assert snapshot(device.store) == files

        # The same dock with the right bytes, on a fresh nonce: held off for a while after
        # its wrong proof (refused without a read, logged once), then accepted.
        path.write_bytes(original)
        for _ in range(3):
            status, error, retry_after = post_custody(device,
                                                      proven_report(evidence, nonce(device)))
            assert status == 429 and retry_after is not None, error
        time.sleep(int(retry_after))
        status, answer, _ = post_custody(device, proven_report(evidence, nonce(device)))
        assert status == 200, answer
        assert len(device.records("custody")) == 1 and device.records("purge")
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 2, refusals  # the wrong proof, and the first of three 429s


def test_a_nonce_serves_only_the_dock_that_asked_for_it(tmp_path: Path, recorded: Path,
                                                        dock_pki: Pki) -> None:
    """Dock B can neither spend dock A's nonce nor, by asking for many, evict it."""
    with docked_device(tmp_path, recorded, dock_pki) as device:
        pulled = device.pull(tmp_path / "dock", custody=False)
        assert pulled.verify.ok
        evidence = tmp_path / "dock" / "TEST-0001"
        of_a = nonce(device, "dock")

        # B's report is refused on the nonce, before anything else is looked at.
        stolen = proven_report(evidence, of_a)
        stolen["segments"] = [{k: v for k, v in c.items() if k != "proof"}
                              for c in stolen["segments"]]
        status, answer = request(device, "POST", "/v1/custody", "dock-b", json=stolen)
        assert status == 409, answer
        assert "DOCK-B" in json.loads(answer)["error"]
        for _ in range(70):  # more than the device ever kept for all docks together
            nonce(device, "dock-b")
        assert not device.records("custody")

        status, answer = request(device, "POST", "/v1/custody", "dock",
                                 json=proven_report(evidence, of_a))

        assert status == 200, answer
        (custody,) = device.records("custody")
        assert custody["payload"]["dock"]["name"] == "DOCK-A"
