"""The dock's archive journal (archived.jsonl) on a real file: a torn last line, as a power
cut leaves one, is not read, and the next entry is read after it."""

from __future__ import annotations

from datetime import UTC, datetime
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

    account = journal.read(tmp_path)
    assert sorted(account.files) == [3, 4] and account.bad == 1
    assert account.files[4]["version_id"] == "v4"

    journal.append(tmp_path, _entry(5))
    account = journal.read(tmp_path)
    assert sorted(account.files) == [3, 4, 5] and account.bad == 1  # the torn line stays apart


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


def _slice(first: int, version: str, until: str) -> dict[str, object]:
    return {"slice": first, "key": f"agency/D/chain/{first:08d}-{first + 9:08d}.jsonl",
            "version_id": version, "size": 10, "sha256": "cd" * 32, "retain_until": until}


def test_chain_slice_entries_are_no_sealed_file_and_their_longest_retention_is_known(
        tmp_path: Path) -> None:
    journal.append(tmp_path, _entry(3), _slice(1, "s1", "2028-01-01T00:00:00Z"))
    journal.append(tmp_path, _slice(1, "s1", "2028-02-01T00:00:00Z"),
                   _slice(1, "s1-other", "2027-01-01T00:00:00Z"))
    journal.append(tmp_path, _slice(1, "s1", "2028-01-15T00:00:00Z"))  # read back out of order
    with (tmp_path / journal.JOURNAL).open("ab") as f:
        f.write(b'{"slice": 11, "key": "k", "version_id": "v", "retain_until": "soon"}\n')

    account = journal.read(tmp_path)
    assert sorted(account.files) == [3] and account.bad == 1  # the damaged slice line
    key = "agency/D/chain/00000001-00000010.jsonl"
    assert account.slices == {(key, "s1"): datetime(2028, 2, 1, tzinfo=UTC),
                              (key, "s1-other"): datetime(2027, 1, 1, tzinfo=UTC)}
