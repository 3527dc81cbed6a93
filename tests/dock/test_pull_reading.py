"""The dock reads a device's chain before it runs the verifier: to know which files to
fetch, and what it holds for the manifest. That reading must take whatever a device
sends (the verifier's fuzz corpus of damaged stores: cut lines, bit flips, deep nesting,
records of any shape re-signed with the device's key) without raising, and act only on
sealed-file records of the documented form; the verifier then names what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.dock.pull import _held, _wanted
from agent.evidence.chain import read_bodies
from tests.evidence.test_fuzz_verify import corpus


def test_the_docks_reading_takes_any_chain_without_raising(recorded_store: Path,
                                                           tmp_path: Path) -> None:
    failures, cases = [], 0
    for name, damage, _ in corpus(recorded_store):
        store = tmp_path / "store"
        shutil.copytree(recorded_store, store, ignore=shutil.ignore_patterns("control.sock"))
        damage(store)
        cases += 1
        try:
            records = read_bodies(store / "chain.jsonl") if (store / "chain.jsonl").is_file() \
                else []
            acted_on = [r["payload"]["file"] for r in _wanted(store / "empty", records)] + \
                [held["file"] for held in _held(store, records)]
        except Exception as exc:  # any exception here is a failure, counted
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:120]}")
        else:
            outside = [f for f in acted_on if not f.startswith("sealed/") or "/" in f[7:]]
            if outside:
                failures.append(f"{name}: acted on {outside}")
        shutil.rmtree(store)
    assert cases >= 250
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures)
