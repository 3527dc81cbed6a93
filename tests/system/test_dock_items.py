"""`bodycam dock status --device ID`: where each sealed file of a device stands on the dock,
read from its evidence folder after real pulls from a docked device (and a real S3 store,
SeaweedFS): archived but not in custody after a pull cut before custody, in custody after a
good pull, purged once the dock has read the device's purge; the dock's archive journal
(archived.jsonl) survives a torn last line; a folder mid-pull shows pending and partial."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.dock import pull as dock_pull
from agent.dock.archive import Archive, Location
from agent.dock.journal import JOURNAL
from agent.dock.journal import read as read_journal
from agent.dock.pull import DockError, pull
from agent.evidence.verify import verify_store
from tests.support.device import wait_for
from tests.support.dockside import Docked, docked_device
from tests.support.pki import Pki
from tests.support.s3server import S3Server
from tests.system.test_dock_serve import Bay, write_dock_toml

DEVICE = "TEST-0001"


def _items(config: Path, capsys: pytest.CaptureFixture[str],
           device: str = DEVICE) -> dict[str, Any]:
    assert main(["dock", "status", "--config", str(config), "--device", device, "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def _pull(device: Docked, out: Path, url: str | None = None, **kwargs: Any) -> Any:
    return asyncio.run(pull(url or device.url, out, device.link(), "operator Li", **kwargs))


def _stages(view: dict[str, Any]) -> dict[int, str]:
    return {item["seq"]: item["stage"] for item in view["items"]}


@pytest.mark.parametrize("stop", ["cut", "refused"])
def test_items_archived_before_custody_then_in_custody_then_purged(
        tmp_path: Path, recorded: Path, dock_pki: Pki, s3_server: S3Server, stop: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    archive = Archive(Location(s3_server.bucket(), "agency"), s3_server.client())
    evidence = tmp_path / "evidence"
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device:
        config = write_dock_toml(tmp_path, dock_pki, [device.url])
        sealed = {r["seq"] for r in device.records("segment_sealed")}

        # A pull cut between the archive and custody, or whose custody the device refuses
        # (an archive kept 30 days, short of the device's year, by a dock that archives for
        # its own days only, as docks did before they read the device's): each file
        # archived and read back all the same.
        if stop == "cut":
            cut = _pull(device, evidence, archive=archive, custody=False)
            assert cut.problem is None
        else:
            monkeypatch.setattr(dock_pull, "archive_days", lambda _identity, days: days)
            cut = _pull(device, evidence, archive=archive, retention=timedelta(days=30))
            assert cut.custody_seq is None and "422" in cut.problem, cut.problem
        assert set(cut.archived.files) == sealed
        assert not device.records("custody")
        view = _items(config, capsys)
        assert _stages(view) == dict.fromkeys(sealed, "archived")
        assert view["totals"]["archived"] == len(sealed) and view["totals"]["custody"] == 0
        # The journal also remembers the chain slice the pull wrote: no sealed file, no
        # damaged line to the view.
        assert read_journal(evidence / DEVICE).slices and view["notes"] == []
        for item in view["items"]:  # the dock's own account names the versions read back
            held = cut.archived.files[item["seq"]]
            assert (item["key"], item["version_id"]) == (held.key, held.version_id)

        # A power cut in the middle of a journal line: that line is not read.
        journal = evidence / DEVICE / JOURNAL
        whole = journal.read_bytes()
        with journal.open("ab") as f:
            f.write(whole[:30])
        view = _items(config, capsys)
        assert _stages(view) == dict.fromkeys(sealed, "archived")
        assert any("torn" in note for note in view["notes"])

        # The good pull: the same versions (nothing archived twice), custody sealed.
        good = _pull(device, evidence, archive=archive)
        assert good.ok, good.problem
        assert {seq: held.version_id for seq, held in good.archived.files.items()} == \
            {seq: held.version_id for seq, held in cut.archived.files.items()}
        view = _items(config, capsys)
        assert _stages(view) == dict.fromkeys(sealed, "custody")
        assert {item["custody_seq"] for item in view["items"]} == {good.custody_seq}
        assert main(["dock", "status", "--config", str(config), "--device", DEVICE]) == 0
        text = capsys.readouterr().out
        assert f"custody (record {good.custody_seq})" in text
        assert f"totals: {len(sealed)} custody" in text

        # The device purged them after custody; the next pull copies its purge record.
        assert device.records("purge")
        _pull(device, evidence, archive=archive, custody=False)
        assert _stages(_items(config, capsys)) == dict.fromkeys(sealed, "purged")
        assert verify_store(evidence / DEVICE).ok  # the journal is no stranger to the store

    # A damaged folder: each damage a note, the rest read, never a traceback.
    folder = evidence / DEVICE
    (folder / "verified.json").write_bytes(b"{")
    with (folder / "chain.jsonl").open("ab") as f:
        f.write(b"not a record\n")
    for receipt in (folder / "receipts").iterdir():
        receipt.chmod(0o644)
        receipt.write_bytes(b"\xff")
    view = _items(config, capsys)
    assert _stages(view) == dict.fromkeys(sealed, "purged")  # the chain's custody and purge
    notes = " ".join(view["notes"])
    assert "verified.json: not read" in notes and "chain.jsonl: 1 line(s)" in notes
    assert "receipts/" in notes

    # No device of that id; an id that is a path: one line, exit 2.
    for name in ("TEST-0404", "..", "../evidence", "", "TEST\0"):
        assert main(["dock", "status", "--config", str(config), "--device", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bodycam dock: no evidence folder for device") and \
            err.count("\n") == 1


def test_a_folder_mid_pull_shows_pending_and_partial_files_then_verified(
        tmp_path: Path, recorded: Path, dock_pki: Pki,
        capsys: pytest.CaptureFixture[str]) -> None:
    evidence = tmp_path / "evidence"
    partial = evidence / DEVICE / "partial"
    with docked_device(tmp_path, recorded, dock_pki) as device:
        bay = Bay(device.daemon.offload.port, rate=20_000)  # a slow cable: one file at a time
        config = write_dock_toml(tmp_path, dock_pki, [device.url])
        puller = threading.Thread(target=_pull_until_unplugged, args=(
            device, evidence, f"https://127.0.0.1:{bay.port}"))
        puller.start()
        views: list[dict[str, Any]] = []

        def part_way() -> bool:  # the view as an operator reads it while a file comes in
            if not partial.is_dir():
                return False
            views.append(_items(config, capsys))
            return "partial" in _stages(views[-1]).values()

        try:
            wait_for(part_way, timeout=120, interval=0.05, what="a file part-way in the view")
        finally:
            bay.unplug()
            puller.join(120)
        # Docked again, pulled and verified, no custody asked: every file held, verified.
        assert _pull(device, evidence, custody=False).verify.ok
        after = _items(config, capsys)
    assert set(_stages(after).values()) == {"verified"}
    assert after["totals"]["verified"] == len(after["items"])
    view = views[-1]
    stages = _stages(view)
    assert len(stages) == len(device.records("segment_sealed"))
    assert "pending" in stages.values()
    assert set(stages.values()) <= {"held", "partial", "pending"}
    (part,) = [item for item in view["items"] if item["stage"] == "partial"]
    assert part["bytes"] >= 0  # durable bytes so far (written in large blocks)
    assert view["totals"]["pending"] == list(stages.values()).count("pending")


def _pull_until_unplugged(device: Docked, evidence: Path, url: str) -> None:
    with contextlib.suppress(DockError):  # the bay unplugged mid-pull, as intended
        _pull(device, evidence, url, connections=1, custody=False)
