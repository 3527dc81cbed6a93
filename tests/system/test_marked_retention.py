"""A recording marked important (重要标记) is kept on the device until a dock's custody holds
it under the `marked` retention: a custody without the class (an older dock) lets the
standard footage go and keeps the marked; the project's dock lists the marked files again
with their class, and only then are they purged."""

from __future__ import annotations

import json
from pathlib import Path

from agent.device.state import State
from agent.evidence.retention import MARKED, STANDARD
from agent.evidence.verify import verify_store
from tests.evidence.test_chain_format import run_procedure, tools  # noqa: F401  (a fixture)
from tests.support.device import wait_for
from tests.support.dockside import docked_device, sealed_segments
from tests.support.pki import Pki
from tests.system.test_dock import _report, request


def test_marked_footage_stays_until_custody_holds_it_as_marked(
        tmp_path: Path, recorded: Path, dock_pki: Pki, tools: Path) -> None:  # noqa: F811
    with docked_device(tmp_path, recorded, dock_pki, purge_policy="after_custody") as device:
        daemon = device.daemon
        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        marked = daemon.recorder.recording_id
        daemon.controls.press()  # the mark
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 2, what="segments")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        [mark] = device.records("mark")
        assert mark["payload"] == {"recording": marked, "source": "button"}
        segments = sealed_segments(device.store)
        kept = {r["seq"] for r in segments if r["payload"]["recording"] == marked}
        assert kept and len(kept) < len(segments)

        # An older dock: custody of everything, no class said.
        pulled = device.pull(tmp_path / "dock", custody=False)
        assert pulled.verify.ok, pulled.verify.summary()
        evidence = tmp_path / "dock" / "TEST-0001"
        status, answer = request(device, "POST", "/v1/custody",
                                 json=_report(device, evidence))
        assert status == 200, answer
        assert set(json.loads(answer)["purged"]) == {r["seq"] for r in segments} - kept
        assert all((device.store / r["payload"]["file"]).exists() for r in segments
                   if r["seq"] in kept), "the marked recording stays on the device"

        # A dock that claims the wrong class is refused, and nothing more is purged.
        wrong = _report(device, evidence, segments=[
            {"seq": seq, "sha256": r["payload"]["sha256"], "retention": STANDARD}
            for r in segments if (seq := r["seq"]) in kept])
        status, answer = request(device, "POST", "/v1/custody", json=wrong)
        assert status == 422 and b"retention" in answer, answer
        assert len(device.records("purge")) == 1

        # The project's dock lists the marked files again as marked: now they may go.
        result = device.pull(tmp_path / "dock")
        assert result.ok, result.problem
        assert sorted(result.purged) == sorted(kept)
        custody = device.records("custody")[-1]
        assert {(s["seq"], s.get("retention")) for s in custody["payload"]["segments"]} == \
            {(seq, MARKED) for seq in kept}
        assert custody["payload"]["retention_days"] == {"standard": 365, "marked": 3650}
        purge = device.records("purge")[-1]
        assert {(f["seq"], f["retention"], f["custody"]) for f in purge["payload"]["files"]} \
            == {(seq, MARKED, custody["seq"]) for seq in kept}
        manifest = json.loads((evidence / "manifest.json").read_text())
        assert {h["seq"] for h in manifest["held"] if h["retention"] == MARKED} == kept
        assert [m["recording"] for m in manifest["marks"]] == [marked]

    on_device = verify_store(device.store)
    assert on_device.ok, on_device.summary()
    shell = run_procedure(device.store, tools, tmp_path / "work")
    assert shell.returncode == 0 and "FAIL" not in shell.stdout, shell.stdout[-2000:]
