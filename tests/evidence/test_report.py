"""`bodycam report`: the figures an auditor asks for, from a chain whose minutes are known,
and the report of a real store, verified before it is drawn."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from agent.cli import main
from agent.evidence.report.page import render
from agent.evidence.report.source import StoreReport, Window
from agent.evidence.report.timeline import analyse, select, total
from agent.evidence.verify import Report
from tests.support import report_chain as known
from tests.support.report_chain import at, us

S = 1_000_000


def test_the_figures_of_a_shift_are_the_minutes_the_chain_holds() -> None:
    shifts = analyse(known.shift_records())
    assert [(s.officer, s.began_by, s.ended_by) for s in shifts] == [
        ("OFC-7", "boot", "shutdown: SIGTERM"), ("OFC-9", "boot", "shutdown: SIGTERM")]
    first = shifts[0]
    assert first.restarts == 1  # the boot after a crash continues the shift
    figures = first.figures()
    assert figures.recorded_us == known.RECORDED_S * S
    assert figures.pre_event_us == known.PRE_EVENT_S * S
    assert figures.audio_only_us == known.AUDIO_ONLY_S * S
    assert figures.interrupted_us == known.INTERRUPTED_S * S
    assert (figures.unexplained_us, figures.unexplained) == (known.UNEXPLAINED_S * S, 1)
    assert (figures.incidents, figures.in_custody, figures.awaiting_custody) == (2, 1, 1)
    assert figures.longest_custody_delay_us == known.CUSTODY_DELAY_S * S
    assert (figures.marks, figures.photos, figures.exemptions) == (1, 1, 1)


def test_recordings_joined_by_interruptions_are_one_incident_taken_into_custody_whole() -> None:
    first = analyse(known.shift_records())[0]
    joined, alone = first.incidents
    assert [r.mode for r in joined.recordings] == ["video", "video", "audio"]
    assert [g.cause for g in joined.interruptions] == ["camera_fault", "officer_stop_restart"]
    assert [g.explained for g in joined.interruptions] == [False, True]
    assert (len(joined.marks), len(joined.photos)) == (1, 1)  # made during recording 1
    assert joined.start == us(at(8, 10)) - 2 * S  # the pre-event buffer is part of it
    assert joined.end == us(at(8, 35))
    assert joined.custody is not None and joined.custody.dock == "DOCK-1"
    assert alone.custody is None and alone.custody_delay_us is None  # not yet in custody
    battery = [s for s in first.spans if s.kind == "battery"]
    assert [(s.start, s.end) for s in battery] == [(us(at(9, 20)), us(at(9, 25)))]


def test_a_shift_is_one_officers_from_before_the_issue_to_after_the_return() -> None:
    """Issued and returned at the dock while the daemon runs: the pre-shift self-check
    before the issue, and the custody after the return, belong to the officer's shift; a
    device issued again without a restart begins another."""
    w = known.Writer()
    w.officer = ""
    w.add(at(7, 0), "boot")
    w.add(at(7, 1), "self_check", overall="pass")
    for officer, hour in (("OFC-1", 8), ("OFC-2", 12), ("OFC-2", 16)):
        w.officer = officer
        w.add(at(hour, 0), "officer_assigned", action="issue", officer=officer)
        start = w.add(at(hour, 10), "record_start", trigger="button")
        w.add(at(hour, 20), "record_stop", recording=start, reason="button_hold")
        w.officer = ""
        w.add(at(hour + 3, 0), "officer_assigned", action="return", officer="")
        w.add(at(hour + 3, 5), "custody", dock={"name": "D"}, segments=[])
    w.add(at(20, 0), "shutdown", reason="SIGTERM")
    shifts = analyse(w.records)
    assert [(s.officer, s.began_by, s.ended_by, len(s.incidents)) for s in shifts] == [
        ("OFC-1", "boot", "officer returned", 1),
        ("OFC-2", "officer_assigned", "officer returned", 1),
        ("OFC-2", "officer_assigned", "shutdown: SIGTERM", 1)]
    assert [e.kind for e in shifts[0].events] == ["self_check", "custody"]
    assert shifts[0].start == us(at(7, 0)) and shifts[0].end == us(at(11, 5))
    # Recordings that sealed no file: nothing awaits custody.
    assert (total(shifts).incidents, total(shifts).awaiting_custody) == (3, 0)


def test_the_clock_band_follows_each_records_clock() -> None:
    first, second = analyse(known.shift_records())
    assert {s.kind for s in first.spans if s.kind.startswith("clock:")} == {"clock:good"}
    assert {s.kind for s in second.spans if s.kind.startswith("clock:")} == {"clock:poor"}


def test_officer_and_time_select_whole_shifts_and_their_figures() -> None:
    shifts = analyse(known.shift_records())
    assert [s.officer for s in select(shifts, officer="OFC-9")] == ["OFC-9"]
    assert [s.number for s in select(shifts, since=us(at(9, 50)))] == [2]
    assert [s.number for s in select(shifts, until=us(at(9, 0)))] == [1]
    assert select(shifts, officer="OFC-7", since=us(at(10, 0))) == []
    assert total(shifts).recorded_us == (known.RECORDED_S + 60) * S


def test_records_of_any_shape_are_drawn_as_far_as_they_go() -> None:
    """A store that failed verification may hold anything its records can: each field of
    each payload replaced by a value of the wrong type, the analysis still ends."""
    records = known.shift_records()
    for index, record in enumerate(records):
        for name in list(record["payload"]):
            for wrong in (None, "x", 7, [1], {"a": 1}, True):
                damaged = [dict(r) for r in records]
                damaged[index] = {**record, "payload": {**record["payload"], name: wrong}}
                analyse(damaged)
        analyse([*records[:index], {**record, "payload": "not an object"}, *records[index:]])
        analyse([*records[:index], {**record, "wall": "yesterday"}, *records[index + 1:]])


def test_what_records_say_is_shown_as_text_never_as_markup() -> None:
    records = known.shift_records()
    hostile = "<script>alert(1)</script>"
    for record in records:
        record["officer"] = hostile if record["officer"] == "OFC-9" else record["officer"]
        for name in ("cause", "trigger", "reason", "source", "detail"):
            if name in record["payload"]:
                record["payload"][name] = hostile
    page = render([StoreReport("<store>", hostile, Report("<store>", ""),
                               analyse(records), 2)], Window(), us(at(11, 0)))
    assert "<script" not in page and page.count("&lt;script&gt;") > 5


def report(*args: str) -> int:
    return main(["report", *args])


def test_a_store_that_verifies_is_said_so_at_the_top(store_copy: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    out = tmp_path / "report.html"
    assert report(str(store_copy), "--html", str(out), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    shift = document["stores"][0]["shifts"][0]
    assert shift["figures"]["recorded_s"] >= 5 and shift["figures"]["unexplained_s"] == 0
    page = out.read_text(encoding="utf-8")
    assert _first_verdict(page).startswith("已验证 Verified")
    assert page.count("timeline\"") == 2  # the shift's timeline and its incident's
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"<(script|link|img|iframe)\b|\burl\(|@import", page)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}


def test_a_tampered_store_is_reported_as_not_verified_at_the_top(
        store_copy: Path, tmp_path: Path) -> None:
    segment = sorted((store_copy / "sealed").glob("*.ts"))[1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    out = tmp_path / "report.html"
    assert report(str(store_copy), "--html", str(out)) == 1
    page = out.read_text(encoding="utf-8")
    verdict = _first_verdict(page)
    assert verdict.startswith("未通过验证 NOT VERIFIED"), verdict
    findings = re.findall(r"<li>([^<]*)</li>", page)
    assert any(segment.name in f and "SHA-256 differs" in f for f in findings), findings
    assert "timeline\"" in page  # and still drawn from the records


def _first_verdict(page: str) -> str:
    found = re.search(r'<div class="verdict [a-z]+"><strong>([^<]+)</strong>', page)
    assert found, page[:500]
    return found.group(1)


@pytest.mark.parametrize(("args", "said"), [
    (["--from", "yesterday"], "--from 'yesterday': not a time"),
    (["--zone", "Mars/Olympus"], "--zone 'Mars/Olympus': not a time zone"),
    (["--from", "2026-12-03T10:00", "--to", "2026-12-03T09:00"], "is after --to"),
    (["--html", "/nonexistent/r.html"], "--html /nonexistent/r.html: cannot be written"),
])
def test_bad_input_is_one_line_and_exit_2(store_copy: Path, args: list[str], said: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    if "--html" not in args:
        args = [*args, "--json"]
    assert report(str(store_copy), *args) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err


def test_a_folder_without_a_chain_is_one_line_and_exit_2(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    assert report(str(tmp_path), "--json") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no chain.jsonl there" in err and err.count("\n") == 1, err


def test_a_witness_of_one_device_given_for_an_evidence_folder_of_two_is_exit_2(
        store_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evidence = tmp_path / "evidence"
    for device in ("A", "B"):
        shutil.copytree(store_copy, evidence / device)
        (evidence / device / "manifest.json").write_text("{}")
    assert report(str(evidence), "--head", f"1:{'0' * 64}", "--json") == 2
    err = capsys.readouterr().err
    assert "holds 2 devices' stores: give --head and --receipt with the one device's folder" \
        in err and err.count("\n") == 1, err
