"""The dock's incremental verification: going on from a saved state gives the report a
full verification gives, and a state the chain or sealed/ disagrees with, or that is
missing, damaged or of another version, is never trusted: the chain is verified whole,
and a change in the part verified before is found."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.verify import Report, verify_copy, verify_store

STATE = "verified.json"


def _report(report: Report) -> dict[str, Any]:
    found = report.as_dict()
    found.pop("store")
    return found


def _docked_day_before(store: Path, folder: Path) -> list[bytes]:
    """`folder`: `store` as a dock held it before its last records (the chain's first half,
    the files of those records); returns the lines still to come."""
    shutil.copytree(store, folder, ignore=shutil.ignore_patterns("control.sock", "open"))
    lines = (store / "chain.jsonl").read_bytes().splitlines(keepends=True)
    cut = len(lines) // 2
    (folder / "chain.jsonl").write_bytes(b"".join(lines[:cut]))
    for path in (folder / "sealed").iterdir():
        if int(path.name[:8]) > cut:
            path.unlink()
    return lines[cut:]


def _append_the_day(store: Path, folder: Path, rest: list[bytes]) -> None:
    """The records to come, and their files."""
    held = (folder / "chain.jsonl").read_bytes().count(b"\n")
    with (folder / "chain.jsonl").open("ab") as f:
        f.write(b"".join(rest))
    for path in (store / "sealed").iterdir():
        if int(path.name[:8]) > held:
            shutil.copy(path, folder / "sealed" / path.name)


def test_a_resumed_verification_gives_the_full_one(recorded_store: Path,
                                                   tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    rest = _docked_day_before(recorded_store, folder)
    first, copy = verify_copy(folder, {}, folder / STATE)
    assert first.ok and copy.resumed_from is None and (folder / STATE).is_file()
    _append_the_day(recorded_store, folder, rest)
    resumed, copy = verify_copy(folder, {}, folder / STATE)
    assert copy.resumed_from == first.head_seq
    assert _report(resumed) == _report(verify_store(folder))
    assert resumed.ok and resumed.head == verify_store(recorded_store).head


def _state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE).read_bytes())


def _sealed_again(folder: Path, state: dict[str, Any]) -> None:
    """A state whose checksum holds: what a dock of another version would have written."""
    body = json.dumps(state["state"], sort_keys=True, separators=(",", ":"))
    state["sha256"] = hashlib.sha256(body.encode()).hexdigest()
    (folder / STATE).write_text(json.dumps(state))


def _deleted(folder: Path) -> None:
    (folder / STATE).unlink()


def _cut_short(folder: Path) -> None:
    data = (folder / STATE).read_bytes()
    (folder / STATE).write_bytes(data[: len(data) // 2])


def _a_count_changed(folder: Path) -> None:
    state = _state(folder)
    state["state"]["records"] += 1
    (folder / STATE).write_text(json.dumps(state))


def _another_version(folder: Path) -> None:
    state = _state(folder)
    state["state"]["version"] = 0
    _sealed_again(folder, state)


def _another_head(folder: Path) -> None:
    """The state says it verified up to a record the chain holds with another hash."""
    state = _state(folder)
    state["state"]["head"]["hash"] = "0" * 64
    _sealed_again(folder, state)


def _a_file_of_the_verified_part_deleted(folder: Path) -> None:
    next(p for p in sorted((folder / "sealed").iterdir()) if p.name != "00000002.ts").unlink()


STALE: list[Callable[[Path], None]] = [
    _deleted, _cut_short, _a_count_changed, _another_version, _another_head,
    _a_file_of_the_verified_part_deleted]


@pytest.mark.parametrize("stale", STALE, ids=lambda f: f.__name__.strip("_"))
def test_a_state_that_is_not_the_chains_is_never_trusted(recorded_store: Path,
                                                         tmp_path: Path,
                                                         stale: Callable[[Path], None]) -> None:
    """The verified part is changed after the state was saved (a character of record 2's
    signature, the line's length kept: only a whole verification sees it), and the state
    is made stale: the verification must start over, and find the change."""
    folder = tmp_path / "copy"
    rest = _docked_day_before(recorded_store, folder)
    assert verify_copy(folder, {}, folder / STATE)[0].ok
    chain = folder / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    start = lines[1].index(b'"sig":"') + 7
    lines[1] = lines[1][:start] + (b"B" if lines[1][start:start + 1] == b"A" else b"A") + \
        lines[1][start + 1:]
    chain.write_bytes(b"".join(lines))
    stale(folder)
    _append_the_day(recorded_store, folder, rest)
    report, copy = verify_copy(folder, {}, folder / STATE)
    assert copy.resumed_from is None
    assert not report.ok and any(f.where.startswith("record 2 ") for f in report.findings)
    assert _report(report) == _report(verify_store(folder))
    assert not (folder / STATE).exists(), "a state is kept only after a clean verification"
