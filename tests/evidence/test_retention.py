"""The retention class of each sealed file, from the chain alone: the files of a recording
that a mark marks are `marked`, whenever the mark came; every other file is `standard`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.chain import SEALED_FILE_TYPES
from agent.evidence.retention import (
    MARKED,
    STANDARD,
    custody_problems,
    file_class,
    recording_of,
)
from agent.evidence.verify import verify_copy
from tests.support.mutants import MARK, Base, kept, kept_after


def test_a_mark_makes_its_recordings_files_marked_and_no_others() -> None:
    records = [
        {"seq": 2, "type": "record_start", "payload": {"trigger": "button"}},
        {"seq": 3, "type": "segment_sealed", "payload": {"recording": 2}},
        {"seq": 4, "type": "record_stop", "payload": {"recording": 2}},
        {"seq": 5, "type": "record_start", "payload": {"trigger": "button"}},
        {"seq": 6, "type": "segment_sealed", "payload": {"recording": 5}},
        {"seq": 7, "type": "mark", "payload": {"recording": 5, "source": "button"}},
        {"seq": 8, "type": "segment_sealed", "payload": {"recording": 5}},
        {"seq": 9, "type": "file_recovered", "payload": {"came_from": "open/x.ts"}},
        {"seq": 10, "type": "voice_note", "payload": {"interruption": None}},
    ]
    marked = {r["payload"]["recording"] for r in records if r["type"] == "mark"}
    classes = {r["seq"]: file_class(recording_of(r["payload"]), marked)
               for r in records if r["type"] in SEALED_FILE_TYPES}
    assert classes == {3: STANDARD, 6: MARKED, 8: MARKED, 9: STANDARD, 10: STANDARD}


WALL = "2026-12-03T09:28:08.123456Z"
FILES = {12: {"file": "sealed/00000012.ts", "recording": 11, "wall": WALL}}
DAYS = {"standard": 365, "marked": 3650}


def _archived(until: Any) -> dict[str, Any]:
    return {"endpoint": "https://s3.example", "bucket": "evidence",
            "objects": [{"seq": 12, "key": "a/sealed/00000012.ts", "version_id": "v",
                         "retain_until": until}]}


def test_a_custody_is_judged_by_the_marks_before_it() -> None:
    """A file a mark marks after its custody was rightly held as standard then; one marked
    before it and held as standard is named, with the file, both classes and the mark."""
    held = {"segments": [{"seq": 12, "sha256": "0" * 64, "retention": STANDARD}]}

    assert custody_problems(held, FILES, {}) == []
    (problem,) = custody_problems(held, FILES, {11: 13})
    assert problem == ("holds seq 12 (sealed/00000012.ts) as 'standard', but the chain gives "
                       "it 'marked' (mark record 13 marks its recording 11 before this "
                       "custody)")


def test_an_archived_file_is_kept_its_class_days_from_its_sealing() -> None:
    """retain-until against the record's own retention_days for the class: a marked file
    archived for the standard year is named; a day of device clock ahead is allowed."""
    marked = {"segments": [{"seq": 12, "sha256": "0" * 64, "retention": MARKED}],
              "retention_days": DAYS}

    assert custody_problems({**marked, "archive": _archived("2036-11-30T09:28:09Z")},
                            FILES, {11: 13}) == []
    assert custody_problems({**marked, "archive": _archived("2036-11-29T10:00:00Z")},
                            FILES, {11: 13}) == []  # less than a day short
    (problem,) = custody_problems({**marked, "archive": _archived("2027-12-03T09:28:09Z")},
                                  FILES, {11: 13})
    assert "until 2027-12-03T09:28:09Z, short of the 2036-11-30T09:28:08Z its class " \
        "'marked' needs: 3650 days" in problem and "sealed/00000012.ts" in problem


@pytest.mark.parametrize("payload", [
    {}, {"segments": "x"}, {"segments": [1, None, {"seq": "12"}, {"seq": 12}]},
    {"segments": [{"seq": 12, "retention": ["marked"]}], "retention_days": DAYS},
    {"segments": [{"seq": 12}], "retention_days": {"standard": 10**30, "marked": 1}},
    {"segments": [{"seq": 12}], "retention_days": DAYS, "archive": {"objects": [7, {}]}},
    {"segments": [{"seq": 12}], "retention_days": DAYS, "archive": _archived(None)},
])
def test_a_custody_of_any_shape_is_read_without_a_traceback(payload: dict[str, Any]) -> None:
    """A receipt is read before it is verified (`bodycam verify s3://`): whatever it holds."""
    for problem in custody_problems(payload, FILES, {11: 13}):
        assert isinstance(problem, str) and problem


def test_a_retention_past_the_last_date_is_named_not_raised() -> None:
    late = {12: {**FILES[12], "wall": "9995-01-01T00:00:00.000000Z"}}  # + 3650 days: no date
    (problem,) = custody_problems({"segments": [{"seq": 12, "retention": MARKED}],
                                   "retention_days": DAYS,
                                   "archive": _archived("9999-12-31T23:59:59Z")}, late, {11: 13})
    assert problem.endswith("short of 3650 days from its sealing at "
                            "9995-01-01T00:00:00.000000Z (past 9999)")


def test_a_resumed_verification_judges_a_new_custody_by_the_marks_it_left_off_with(
        recorded_store: Path, tmp_path: Path) -> None:
    """The dock verifies only what the chain added since its last clean verification: the
    marks and the sealing times it kept must still tell a custody after them."""
    first = next(b for b in Base(recorded_store).bodies if b["type"] == "segment_sealed")
    n = len(Base(recorded_store).bodies)
    store, later = tmp_path / "store", tmp_path / "later"
    for copy, steps in ((store, [MARK]), (later, [MARK, kept(STANDARD)])):
        shutil.copytree(recorded_store, copy, ignore=shutil.ignore_patterns("control.sock"))
        kept_after(first, n + 1, n + 2, steps)(copy)
    state = tmp_path / "verified.json"
    report, _ = verify_copy(store, {}, state)
    assert report.ok, report.summary()
    shutil.copy(later / "chain.jsonl", store / "chain.jsonl")  # the same lines, one more

    report, copy = verify_copy(store, {}, state)

    assert copy.resumed_from == n + 3
    assert [(f.where, f.kind) for f in report.findings] == [
        (f"custody record {n + 4}", "retention")]
    assert "as 'standard', but the chain gives it 'marked'" in report.findings[0].problem
