"""docs/chain-format.md is true: its shell procedure verifies a real store with standard tools only.

The procedure is not copied here: the test runs the ```bash blocks of the document
itself (tests/support/shell_procedure.py), with PATH cut down to the standard tools it
promises (so a step that needed this project's Python, or any other tool, would fail
here). Python only picks records out of the journal to say what the output must contain,
and damages copies of genuine stores: each damage must fail both the shell procedure and
`bodycam verify`, and each genuine store (plain, encrypted, after a key rotation, with
voice notes) must pass both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.device.state import State
from agent.evidence.chain import canonical, encode_line, record_hash, split_line
from agent.evidence.verify import verify_store
from tests.support.device import (
    BODYCAM,
    record_segments,
    running_daemon,
    wait_for,
    write_device_config,
)
from tests.support.shell_procedure import bash_blocks, run_procedure, standard_tools


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATH holding only the standard tools (ffprobe only where installed)."""
    return standard_tools(tmp_path_factory.mktemp("standard-tools"))


def records(store: Path) -> list[dict]:
    """The journal's records, parsed only to know what the shell output must say."""
    lines = (store / "chain.jsonl").read_bytes().splitlines()
    return [json.loads(re.sub(rb',"sig":"[^"]*"}$', b"}", line)) for line in lines]


def segment_records(store: Path) -> list[dict]:
    return [r for r in records(store) if r["type"] == "segment_sealed"]


def test_the_documented_procedure_verifies_every_record_and_segment(
        recorded_store: Path, tools: Path, tmp_path: Path) -> None:
    result = run_procedure(recorded_store, tools, tmp_path / "work")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "FAIL" not in out
    assert result.stderr == ""

    chain = records(recorded_store)
    assert [r["seq"] for r in chain] == list(range(1, len(chain) + 1))
    for record in chain:
        n = record["seq"]
        assert f"record {n}: Signature Verified Successfully\n" in out
        assert f"record {n}: seq {n}, prev {record['prev']} links it to record {n - 1}\n" in out
    segments = segment_records(recorded_store)
    assert len(segments) >= 5
    for record in segments:
        p = record["payload"]
        assert (f"record {record['seq']}: {p['file']} matches: {p['size']} bytes, "
                f"sha256 {p['sha256']}\n") in out
    if (tools / "ffprobe").exists():
        assert out.count(" video PTS run from tick ") == len(segments)

    boot = next(r for r in chain if r["type"] == "boot")
    assert f"fingerprint {boot['payload']['key_fingerprint']} " in out
    # The head the shell prints is the head the project's own verifier computes.
    head = verify_store(recorded_store).head
    assert out.endswith(f"OK: {len(chain)} records verify; head seq {head['seq']}, "
                        f"hash {head['hash']}\n")


def test_each_step_can_be_run_by_hand(recorded_store: Path, tools: Path,
                                      tmp_path: Path) -> None:
    first = segment_records(recorded_store)[0]
    result = run_procedure(recorded_store, tools, tmp_path / "work",
                           "check_key && split_chain && check_signatures && check_links "
                           "&& check_files")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(f"record {first['seq']}: ") == 3
    assert f"record {first['seq']}: {first['payload']['file']} matches" in result.stdout


def test_a_flipped_byte_in_a_record_fails_openssl(store_copy: Path, tools: Path,
                                                 tmp_path: Path) -> None:
    chain = store_copy / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    n = segment_records(store_copy)[0]["seq"]
    line = bytearray(lines[n - 1])
    at = line.index(b'"officer":"') + len(b'"officer":"')
    line[at] ^= 0x01  # one bit of one byte of the signed body: still valid JSON
    lines[n - 1] = bytes(line)
    chain.write_bytes(b"".join(lines))

    by_hand = run_procedure(store_copy, tools, tmp_path / "work",
                            "split_chain && check_signatures")
    assert by_hand.returncode == 1
    assert f"FAIL: record {n}: Signature Verification Failure (key " in by_hand.stdout
    assert f"record {n - 1}: Signature Verified Successfully\n" in by_hand.stdout
    assert by_hand.stdout.count("FAIL") == 1

    whole = run_procedure(store_copy, tools, tmp_path / "work")
    assert whole.returncode == 1
    assert f"FAIL: record {n}: Signature Verification Failure" in whole.stdout
    assert f"FAIL: record {n + 1}: prev and seq" in whole.stdout  # its hash changed too
    assert whole.stdout.endswith("FAIL: the store does not verify\n")


def _flip_segment_byte(store: Path) -> str:
    record = segment_records(store)[1]
    path = store / record["payload"]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return f"FAIL: record {record['seq']}: {record['payload']['file']} is "


def _delete_record(store: Path) -> str:
    n = segment_records(store)[2]["seq"]
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    del lines[n - 1]
    chain.write_bytes(b"".join(lines))
    return f"FAIL: record {n}: prev and seq"


def _respell_signature(store: Path) -> str:
    """Same 64 signature bytes, another base64 spelling: the last character's spare bits."""
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    line = lines[1]
    assert line.endswith(b'=="}\n')
    last = line[-6:-5]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    other = alphabet[alphabet.index(last) ^ 1:][:1]
    lines[1] = line[:-6] + other + line[-5:]
    chain.write_bytes(b"".join(lines))
    return "FAIL: record 2: no signature in standard base64"


def _insert_segment(store: Path) -> str:
    shutil.copy(store / segment_records(store)[0]["payload"]["file"],
                store / "sealed" / "99999999.ts")
    return "FAIL: sealed/99999999.ts is not named by any record"


def _tear_tail(store: Path) -> str:
    with (store / "chain.jsonl").open("ab") as f:
        f.write(b'{"boot_id":"')
    return "FAIL: chain.jsonl does not end in a newline"


@pytest.mark.parametrize("damage", [_flip_segment_byte, _delete_record, _respell_signature,
                                    _insert_segment, _tear_tail])
def test_the_procedure_reports_damage(store_copy: Path, tools: Path, tmp_path: Path,
                                      damage) -> None:
    expected = damage(store_copy)
    result = run_procedure(store_copy, tools, tmp_path / "work")
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout
    assert result.stdout.endswith("FAIL: the store does not verify\n")


def test_a_key_not_the_devices_verifies_nothing(recorded_store: Path, tools: Path,
                                                tmp_path: Path) -> None:
    """The key must come from the enrolment register: another key fails every record."""
    private, public = tmp_path / "other.key", tmp_path / "other.pub"
    openssl = [str(tools / "openssl")]
    subprocess.run([*openssl, "genpkey", "-algorithm", "ed25519", "-out", str(private)],
                   check=True, capture_output=True)
    subprocess.run([*openssl, "pkey", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)
    result = run_procedure(recorded_store, tools, tmp_path / "work", public_key=public)
    assert result.returncode == 1
    boot = records(recorded_store)[0]
    assert f"FAIL: record 1: states key {boot['payload']['key_fingerprint']}, but key " \
        in result.stdout
    assert result.stdout.count("Signature Verification Failure") == len(records(recorded_store))
