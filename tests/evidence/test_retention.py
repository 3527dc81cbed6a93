"""The retention class of each sealed file, from the chain alone: the files of a recording
that a mark marks are `marked`, whenever the mark came; every other file is `standard`."""

from __future__ import annotations

from agent.evidence.chain import SEALED_FILE_TYPES
from agent.evidence.retention import MARKED, STANDARD, file_class, recording_of


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
