"""Links planted in a store never move other files: not off the device, not into the dock.

Against a running device on loopback, pulled by the real dock: a symbolic link or a hard
link planted in the device's sealed/ (to the device's own private key) is refused (403)
and never listed, while every real sealed file still pulls byte for byte; bytes that do
not match the chain are kept owner-only on the dock; and a link planted in the dock's
evidence folder is refused before the dock writes or counts anything through it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from agent.device.offload import sealed
from agent.dock.pull import DockError
from agent.evidence.keys import PRIVATE_NAME
from agent.logs import Throttled
from tests.support.dockside import Docked, sealed_segments, snapshot


def _get(device: Docked, path: str) -> tuple[int, bytes]:
    async def get() -> tuple[int, bytes]:
        connector = aiohttp.TCPConnector(ssl=device.link().context())
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get(URL(device.url + path, encoded=True)) as response:
            return response.status, await response.read()
    return asyncio.run(get())


def _replace(path: Path, plant: Any) -> None:
    path.unlink()
    plant(path)


def test_links_in_sealed_are_neither_served_nor_listed_and_real_files_still_pull(
        device: Docked, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # This test's own window.
    monkeypatch.setattr(sealed, "_refusals", Throttled(sealed.log, sealed.WARN_EVERY_S))
    key = device.store / "keys" / PRIVATE_NAME
    secret = key.read_bytes()
    segments = sealed_segments(device.store)
    by_symlink, by_hard_link, by_fifo = segments[1], segments[2], segments[3]
    planted = {Path(r["payload"]["file"]).name for r in (by_symlink, by_hard_link, by_fifo)}
    real = {name: digest for name, digest in snapshot(device.store).items()
            if name not in planted}
    _replace(device.store / by_symlink["payload"]["file"], lambda p: p.symlink_to(key))
    _replace(device.store / by_hard_link["payload"]["file"], lambda p: os.link(key, p))
    _replace(device.store / by_fifo["payload"]["file"], os.mkfifo)  # must not hang a thread
    (device.store / "sealed" / "99999999.ts").symlink_to("/etc/shadow")

    for record in (by_symlink, by_hard_link, by_fifo, by_symlink):
        status, body = _get(device, f"/v1/sealed/{record['seq']}")
        assert status == 403, (status, body[:200])
        assert secret not in body
    refusals = [r for r in caplog.records if r.name == sealed.log.name]
    assert len(refusals) == 1, "one warning, not one per request"
    assert "not served: a symbolic link" in refusals[0].getMessage()
    status, body = _get(device, "/v1/sealed/99999999")
    assert status == 404 and b"root:" not in body
    status, body = _get(device, "/v1/chain")
    assert status == 200 and b"99999999" not in body

    out = tmp_path / "evidence"
    result = device.pull(out)
    assert not result.ok and "refused to serve" in (result.problem or ""), result.problem
    assert not device.records("custody")
    folder = out / "TEST-0001"
    assert snapshot(folder) == real, "every real sealed file pulls, byte for byte"
    for path in out.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), f"the device key reached the dock: {path}"


def test_bytes_that_do_not_match_the_chain_are_kept_owner_only(device: Docked,
                                                               tmp_path: Path) -> None:
    segment = sealed_segments(device.store)[1]
    served = device.store / segment["payload"]["file"]
    _replace(served, lambda p: p.write_bytes(b"not what the chain seals\n" * 100))

    out = tmp_path / "evidence"
    result = device.pull(out)
    assert not result.ok and "sha256" in (result.problem or "")
    partial = out / "TEST-0001" / "partial"
    (mismatch,) = partial.glob("*.mismatch")
    assert stat.S_IMODE(partial.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(mismatch.stat().st_mode) & 0o077 == 0
    assert not device.records("custody")


@pytest.mark.parametrize("plant", ["symlink partial", "hard link partial", "fifo partial",
                                   "symlink chain", "symlink manifest", "symlink sealed",
                                   "symlink journal"])
def test_a_link_planted_in_the_evidence_folder_is_never_followed(
        device: Docked, tmp_path: Path, plant: str) -> None:
    segment = sealed_segments(device.store)[1]
    name = Path(segment["payload"]["file"]).name
    folder = tmp_path / "evidence" / "TEST-0001"
    for sub in ("sealed", "partial", "receipts"):
        (folder / sub).mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    if plant == "symlink sealed":  # a true copy, but one the dock does not hold
        shutil.copyfile(device.store / segment["payload"]["file"], victim)
    else:
        victim.write_bytes(b"a file the dock must not touch\n")
    before = victim.read_bytes()
    at = {"symlink partial": folder / "partial" / f"{name}.part",
          "hard link partial": folder / "partial" / f"{name}.part",
          "fifo partial": folder / "partial" / f"{name}.part",
          "symlink chain": folder / "chain.jsonl",
          "symlink manifest": folder / "manifest.json.tmp",
          "symlink sealed": folder / "sealed" / name,
          "symlink journal": folder / "archived.jsonl"}[plant]
    if plant.startswith("hard link"):
        os.link(victim, at)
    elif plant.startswith("fifo"):  # a pull must not hang on it
        os.mkfifo(at)
    else:
        at.symlink_to(victim)

    try:
        device.pull(tmp_path / "evidence")
        refusal = ""
    except DockError as exc:
        refusal = str(exc)
    assert victim.read_bytes() == before, "the dock wrote through the link"
    assert not device.records("custody"), "custody reported for a file the dock does not hold"
    assert str(at) in refusal and ("link" in refusal or "regular" in refusal), refusal
