"""`bodycam report` on what `bodycam demo` recorded: the device's store and the dock's
evidence folder, verified, with the figures the chain holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.evidence.verify import verify_store

BODYCAM = [sys.executable, "-m", "agent"]


def test_the_report_of_a_demo_shows_its_incident_and_custody(write_config,
                                                            tmp_path: Path) -> None:
    store, evidence = tmp_path / "demo", tmp_path / "evidence"
    demo = subprocess.run([*BODYCAM, "demo", "--config", str(write_config()), "--store",
                           str(store), "--evidence", str(evidence), "--seconds", "2"],
                          capture_output=True, text=True, timeout=180)
    assert demo.returncode == 0, demo.stdout + demo.stderr

    for path in (store, evidence):
        out = tmp_path / f"{path.name}.html"
        result = subprocess.run([*BODYCAM, "report", str(path), "--html", str(out), "--json"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["ok"] is True
        (report,) = document["stores"]
        (shift,) = report["shifts"]
        assert (report["device"], shift["officer"]) == ("TEST-0001", "OFC-7")
        # Two recordings, the second started within the incident: one incident, its
        # interruption explained by the officer's voice note.
        (incident,) = shift["incidents"]
        assert len(incident["recordings"]) == 2
        (gap,) = shift["interruptions"]
        assert gap["cause"] == "officer_stop_restart" and gap["explained"] is True
        figures = shift["figures"]
        assert figures["unexplained_s"] == 0 and figures["interruptions"] == 1
        verified = verify_store(Path(report["store"]))
        assert figures["recorded_s"] == round(verified.recorded_us / 1e6, 3)
        # Docked at the end of the demo: custody within the minute after the incident.
        assert incident["custody"]["dock"] == "DEMO-DOCK"
        assert 0 < incident["custody"]["delay_s"] < 60
        assert incident["archived_here"] is (path == evidence)
        page = out.read_text(encoding="utf-8")
        assert page.count("timeline\"") == 2 and "已验证 Verified" in page

    other = subprocess.run([*BODYCAM, "report", str(evidence), "--officer", "OFC-8", "--json"],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and json.loads(other.stdout)["stores"][0]["shifts"] == []
