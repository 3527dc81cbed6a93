"""The dock's archive journal (archived.jsonl) on a real file: a torn last line, as a power
cut leaves one, is not read, and the next entry is read after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dock import journal
from agent.dock.direct_file import ForeignFile


def _entry(seq: int) -> dict[str, object]:
    return {"seq": seq, "file": f"sealed/{seq:08d}.ts", "key": f"agency/D/sealed/{seq:08d}.ts",
            "version_id": f"v{seq}", "size": 10, "sha256": "ab" * 32,
            "retain_until": "2027-12-03T00:00:00Z"}


def test_a_torn_last_line_is_not_read_and_the_next_entry_is(tmp_path: Path) -> None:
    journal.append(tmp_path, _entry(3))
    journal.append(tmp_path, _entry(4))
    whole = (tmp_path / journal.JOURNAL).read_bytes()
    with (tmp_path / journal.JOURNAL).open("ab") as f:
        f.write(whole.splitlines()[0][:25])  # a power cut in the middle of a third line

    entries, torn = journal.read(tmp_path)
    assert sorted(entries) == [3, 4] and torn == 1
    assert entries[4]["version_id"] == "v4"

    journal.append(tmp_path, _entry(5))
    entries, torn = journal.read(tmp_path)
    assert sorted(entries) == [3, 4, 5] and torn == 1  # the torn line stays apart, unread


def test_the_journal_is_never_written_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / journal.JOURNAL).symlink_to(target)
    with pytest.raises(ForeignFile):
        journal.append(folder, _entry(3))
    with pytest.raises(ForeignFile):
        journal.read(folder)
    assert target.read_bytes() == b""
