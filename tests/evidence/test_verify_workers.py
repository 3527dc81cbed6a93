"""The per-line checks in worker processes give the report one process gives, across a key
rotation that falls inside a batch (the lines after it verify with the new key only if
the batches after it wait for it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.evidence import lines
from agent.evidence.verify import Report, verify_store
from tests.evidence.test_anchor import alarm, rotate


def _report(report: Report) -> dict[str, Any]:
    found = report.as_dict()
    found.pop("store")
    return found


@pytest.fixture
def rotated(recorded_store: Path, tmp_path: Path) -> Path:
    """The recorded store, a few records more, the key rotated, more records after."""
    store = tmp_path / "rotated"
    shutil.copytree(recorded_store, store, ignore=shutil.ignore_patterns("control.sock"))
    for _ in range(5):
        alarm(store)
    rotate(store)
    for _ in range(9):
        alarm(store)
    return store


def test_workers_give_the_report_of_one_process(rotated: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "BATCH", 3)  # the rotation inside a batch, many batches after
    alone = verify_store(rotated, workers=0)
    assert alone.ok and any("rotated" in note for note in alone.notes), alone.summary()
    assert _report(verify_store(rotated, workers=2)) == _report(alone)
    chain = rotated / "chain.jsonl"
    changed = chain.read_bytes().splitlines(keepends=True)
    changed[-2] = changed[-2].replace(b'"hot"', b'"HOT"')  # signed by the new key
    chain.write_bytes(b"".join(changed))
    alone = verify_store(rotated, workers=0)
    assert not alone.ok
    assert _report(verify_store(rotated, workers=2)) == _report(alone)
