"""The dock's memory of its chain slices, against a real S3 server (SeaweedFS): a slice whose
retain-until the evidence folder's journal (archived.jsonl) already knows to cover what a
pull's files need is not read again; one known too short, or not known at all (archived by
another dock, a journal lost), is read, extended when it must be, and remembered."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.dock import journal
from agent.dock.archive import (
    MODE,
    RENEWAL,
    Archive,
    Archived,
    ArchiveError,
    Location,
    archive_pull,
    renew_slices,
)
from tests.support.s3server import S3Server

DAY = timedelta(days=1)
YEAR = timedelta(days=365)
DEVICE = "D"


class Calls:
    """The chain slice keys of every HeadObject and PutObjectRetention the archive's
    client makes while counting (botocore's events: the requests as sent)."""

    def __init__(self, archive: Archive) -> None:
        self.heads: list[str] = []
        self.extended: list[str] = []
        events = archive.client.meta.events
        events.register("before-call.s3.HeadObject", self._head)
        events.register("before-call.s3.PutObjectRetention", self._extend)

    def _head(self, params: dict[str, Any], **_: Any) -> None:
        if "/chain/" in params["url_path"]:
            self.heads.append(params["url_path"].rsplit("/", 1)[1])

    def _extend(self, params: dict[str, Any], **_: Any) -> None:
        if "/chain/" in params["url_path"]:
            self.extended.append(params["url_path"].split("?")[0].rsplit("/", 1)[1])

    def clear(self) -> None:
        self.heads.clear()
        self.extended.clear()


@pytest.fixture
def archive(s3_server: S3Server) -> Iterator[Archive]:
    archive = Archive(Location(s3_server.bucket(), "agency"), s3_server.client())
    archive.probe()
    yield archive


def _name(first: int, last: int) -> str:
    return f"{first:08d}-{last:08d}.jsonl"


def _slices_of_another_dock(archive: Archive, lines: int) -> None:
    """Slices of one line each, 1 to `lines`, locked a day: written by another dock (this
    one's journal does not know them)."""
    until = datetime.now(UTC).replace(microsecond=0) + DAY
    for line in range(1, lines + 1):
        archive.client.put_object(
            Bucket=archive.location.bucket, Key=archive.location.key(
                DEVICE, "chain", _name(line, line)),
            Body=b'{"seq":%d}\n' % line, ObjectLockMode=MODE, ObjectLockRetainUntilDate=until)


def _folder(tmp_path: Path, lines: int) -> Path:
    folder = tmp_path / DEVICE
    (folder / "sealed").mkdir(parents=True)
    (folder / "keys").mkdir()
    (folder / "keys" / "device.pub").write_bytes(b"a device key\n")
    (folder / "chain.jsonl").write_bytes(b"".join(b'{"seq":%d}\n' % n
                                                  for n in range(1, lines + 1)))
    return folder


def _pull(archive: Archive, folder: Path, seq: int, retention: timedelta = YEAR) -> Archived:
    """A pull archiving one new sealed file, whose record is chain line `seq`."""
    file = f"sealed/{seq:08d}.ts"
    (folder / file).write_bytes(b"\x47" * 188 + seq.to_bytes(4, "big"))
    with (folder / "chain.jsonl").open("ab") as chain:
        chain.write(b'{"seq":%d}\n' % seq)
    record = {"seq": seq, "type": "segment_sealed",
              "wall": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}",
              "payload": {"file": file,
                          "sha256": hashlib.sha256((folder / file).read_bytes()).hexdigest()}}
    return archive_pull(archive, DEVICE, folder, [record], [seq], lambda _: retention)


def _kept(archive: Archive) -> dict[str, datetime]:
    """Each slice's retain-until as the store holds it, through a client of its own."""
    return {key.rsplit("/", 1)[1]: archive.client.head_object(
        Bucket=archive.location.bucket, Key=key)["ObjectLockRetainUntilDate"]
        for _, _, key in archive.chain_slices(DEVICE)}


def _file_until(done: Archived) -> datetime:
    (held,) = done.files.values()
    assert held.retain_until is not None
    return held.retain_until


def test_a_usual_pull_reads_no_slice_the_dock_knows_to_be_kept_long_enough(
        archive: Archive, tmp_path: Path) -> None:
    _slices_of_another_dock(archive, 3)
    folder = _folder(tmp_path, 3)
    calls = Calls(archive)

    # The first pull knows none of them: each is read and extended, then remembered.
    _pull(archive, folder, 4)
    assert sorted(calls.heads) == sorted(2 * [_name(n, n) for n in (1, 2, 3)] +
                                         [_name(4, 4)])  # read, read back; the new slice's
    assert sorted(calls.extended) == [_name(n, n) for n in (1, 2, 3)]
    calls.clear()

    # The next, whose file needs no more than the renewal gave: no slice read, and each is
    # kept as long as the file it proves, as the store says.
    done = _pull(archive, folder, 5)
    assert calls.heads == [_name(5, 5)] and calls.extended == []  # only the new slice's
    kept = _kept(archive)
    assert sorted(kept) == [_name(n, n) for n in range(1, 6)]
    assert all(until >= _file_until(done) for until in kept.values())
    assert len(journal.read(folder).slices) == 5


def test_a_slice_known_kept_too_short_is_read_and_extended_and_one_known_long_is_not(
        archive: Archive, tmp_path: Path) -> None:
    for first in (1, 4, 7):  # written by another dock
        archive.put_bytes(archive.location.key(DEVICE, "chain", _name(first, first + 2)),
                          b"line\n" * 3, datetime.now(UTC).replace(microsecond=0) + DAY)
    slice_1, slice_4, slice_7 = (_name(first, first + 2) for first in (1, 4, 7))
    needed = datetime.now(UTC).replace(microsecond=0) + 400 * DAY
    calls = Calls(archive)
    with ThreadPoolExecutor(2) as pool:
        renew_slices(archive, DEVICE, tmp_path, {8: needed}, pool)  # all three: T + 30 d
        renew_slices(archive, DEVICE, tmp_path, {5: needed + 60 * DAY}, pool)  # 1, 4: T + 90 d
        calls.clear()

        # A file at line 8 needing T + 45 d: slices 1 and 4 are known kept T + 90 d, slice 7
        # only T + 30 d: slice 7 alone is read and extended.
        renew_slices(archive, DEVICE, tmp_path, {8: needed + 45 * DAY}, pool)
        assert calls.heads == [slice_7, slice_7] and calls.extended == [slice_7]
        assert _kept(archive) == {slice_1: needed + 60 * DAY + RENEWAL,
                                  slice_4: needed + 60 * DAY + RENEWAL,
                                  slice_7: needed + 45 * DAY + RENEWAL}

        # Another dock extended slice 1 further than this one knows: read, not extended,
        # and what was read is remembered.
        archive.client.put_object_retention(
            Bucket=archive.location.bucket, Key=archive.location.key(DEVICE, "chain", slice_1),
            Retention={"Mode": MODE, "RetainUntilDate": needed + 200 * DAY})
        calls.clear()
        renew_slices(archive, DEVICE, tmp_path, {2: needed + 100 * DAY}, pool)
        assert calls.heads == [slice_1] and calls.extended == []
        calls.clear()
        renew_slices(archive, DEVICE, tmp_path, {2: needed + 150 * DAY}, pool)
        assert calls.heads == [] and calls.extended == []
    assert _kept(archive)[slice_1] == needed + 200 * DAY


def test_a_dock_without_its_journal_reads_and_extends_every_slice_and_remembers_again(
        archive: Archive, tmp_path: Path) -> None:
    _slices_of_another_dock(archive, 2)
    folder = _folder(tmp_path, 2)
    _pull(archive, folder, 3)
    (folder / journal.JOURNAL).unlink()  # lost, or another dock's pull
    calls = Calls(archive)

    # A file marked important: ten years. Every slice is read and kept past it.
    done = _pull(archive, folder, 4, retention=10 * YEAR)
    slices = [_name(n, n) for n in (1, 2, 3)]
    assert sorted(calls.extended) == slices
    kept = _kept(archive)
    assert all(kept[name] >= _file_until(done) + RENEWAL for name in slices)
    assert kept[_name(4, 4)] >= _file_until(done) + RENEWAL
    calls.clear()

    _pull(archive, folder, 5, retention=10 * YEAR)
    assert calls.heads == [_name(5, 5)] and calls.extended == []


def test_a_slice_the_dock_cannot_enter_in_its_journal_fails_the_pull(
        archive: Archive, tmp_path: Path) -> None:
    """The rule for a sealed file, for a slice too: the pull reports no custody."""
    folder = _folder(tmp_path, 2)
    (folder / journal.JOURNAL).mkdir()  # not a file the dock can append to
    with pytest.raises(ArchiveError, match=f"{_name(1, 2)} is archived, but the dock cannot "
                                           f"enter that in {folder / journal.JOURNAL}"):
        archive_pull(archive, DEVICE, folder, [], [], lambda _: YEAR)
