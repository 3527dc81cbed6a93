"""A device whose chain holds a record nested 100,000 deep (signed with its own key, as a
malicious or buggy device would send it): the dock refuses the pull in one line naming
the line and why, writes its manifest, and acknowledges nothing; never a traceback
(issue 18). Before the fix the daemon did not start on such a journal (RecursionError
reading its own chain), and the dock's own reading of the chain, before the verifier,
ended in a RecursionError traceback, leaving the chain copied and no manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent.evidence.chain import canonical, encode_line, read_bodies, record_hash, split_line
from agent.evidence.keys import load_or_create_device_key
from tests.support.dockside import docked_device
from tests.support.fuzz import run_cli
from tests.support.pki import Pki

SEGMENTS = 2
DEPTH = 100_000


def with_a_deeply_nested_record(recorded: Path, store: Path) -> int:
    """A copy of `recorded` whose chain goes on with a signed record nested DEPTH deep and
    a signed record linked after it; returns the nested record's line number."""
    shutil.copytree(recorded, store, ignore=shutil.ignore_patterns("control.sock"))
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines()
    head = json.loads(split_line(lines[-1])[0])
    key = load_or_create_device_key(store / "keys")
    seq, prev = head["seq"] + 1, record_hash(split_line(lines[-1])[0])
    nested = (b'{"payload":{"x":' + b"[" * DEPTH + b"]" * DEPTH +
              f'}},"prev":"{prev}","seq":{seq},"type":"note"}}'.encode())
    after = canonical({"payload": {}, "prev": record_hash(nested), "seq": seq + 1,
                       "type": "note"})
    with chain.open("ab") as f:
        f.write(encode_line(nested, key.sign(nested)) + encode_line(after, key.sign(after)))
    return len(lines) + 1


def test_a_chain_nested_too_deeply_is_refused_in_one_line(tmp_path: Path, recorded: Path,
                                                          dock_pki: Pki) -> None:
    hostile = tmp_path / "hostile"
    line = with_a_deeply_nested_record(recorded, hostile)
    with docked_device(tmp_path, hostile, dock_pki) as device:
        tls = ["--device", device.url, "--cert", str(dock_pki.pem("dock.crt")),
               "--key", str(dock_pki.pem("dock.key")), "--ca", str(dock_pki.pem("device-ca.pem")),
               "--operator", "Li"]
        ended = run_cli(["dock", "pull", "--out", str(tmp_path / "evidence"), *tls], 60)
        assert ended.problem({1}) is None, ended
        assert ended.stderr == (f"REFUSED, nothing acknowledged: the device's chain does not "
                                f"verify: line {line}: is not a whole signed record (changed): "
                                "nested too deeply to be a record\n")
        assert device.records("custody") == []
    folder = tmp_path / "evidence" / "TEST-0001"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "refused" and f"line {line}:" in manifest["problem"]
    assert manifest["custody_seq"] is None
    assert not list((folder / "partial").iterdir()), "no download left half done"
    held = {r["payload"]["file"] for r in read_bodies(folder / "chain.jsonl")
            if r["type"] == "segment_sealed"}
    assert held == {f"sealed/{p.name}" for p in (folder / "sealed").iterdir()}
