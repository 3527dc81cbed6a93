"""docs/chain-format.md is true: its shell procedure verifies a real store with standard tools only.

The procedure is not copied here: the test runs the ```bash blocks of the document
itself (tests/support/shell_procedure.py), with PATH cut down to the standard tools it
promises (so a step that needed this project's Python, or any other tool, would fail
here). Python only picks records out of the journal to say what the output must contain,
and damages copies of genuine stores: each damage must fail both the shell procedure and
`bodycam verify`, and each genuine store (plain, encrypted, after a key rotation, with
voice notes and photos) must pass both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.device.state import PhotoPressed, State
from agent.evidence.chain import (
    Chain,
    canonical,
    current_boot_id,
    encode_line,
    record_hash,
    split_line,
)
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.verify import verify_store
from hal.clock import SimulatedClock
from tests.support.device import (
    BODYCAM,
    record_segments,
    running_daemon,
    wait_for,
    write_device_config,
)
from tests.support.shell_procedure import run_procedure, standard_tools


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATH holding only the standard tools (ffprobe only where installed)."""
    return standard_tools(tmp_path_factory.mktemp("standard-tools"))


@pytest.fixture(scope="module")
def tools_without_ffprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same without the optional ffprobe (one process per segment): for damage that is
    not about times."""
    return standard_tools(tmp_path_factory.mktemp("standard-tools"), ffprobe=False)


def records(store: Path) -> list[dict]:
    """The journal's whole records, parsed only to know what the shell output must say (a
    last line without its newline is being written by a running daemon)."""
    lines = (store / "chain.jsonl").read_bytes().split(b"\n")[:-1]
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
        assert f"record {n}: seq {n}, prev {record['prev']} links it to record {n - 1}\n" in out
    # One key, so one signature authenticates the chain: the head's, with the links.
    key = chain[0]["payload"]["key_fingerprint"]
    assert out.count("Signature Verified Successfully") == 1
    assert f"record {len(chain)}: Signature Verified Successfully (key {key})\n" in out
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


def test_every_signature_is_checked_when_asked(recorded_store: Path,
                                              tools_without_ffprobe: Path,
                                              tmp_path: Path) -> None:
    result = run_procedure(recorded_store, tools_without_ffprobe, tmp_path / "work",
                           every_signature=True)
    assert result.returncode == 0, result.stdout + result.stderr
    chain = records(recorded_store)
    key = chain[0]["payload"]["key_fingerprint"]
    for record in chain:
        assert (f"record {record['seq']}: Signature Verified Successfully (key {key})\n"
                in result.stdout)
    assert (f"\nOK: {len(chain)} records verify, every signature checked; head seq "
            f"{len(chain)}, hash ") in result.stdout


def test_each_step_can_be_run_by_hand(recorded_store: Path, tools: Path,
                                      tmp_path: Path) -> None:
    first = segment_records(recorded_store)[0]
    result = run_procedure(recorded_store, tools, tmp_path / "work",
                           "check_key && split_chain && check_signatures && check_links "
                           "&& check_files && check_every_signature")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(f"record {first['seq']}: ") == 3
    assert f"record {first['seq']}: {first['payload']['file']} matches" in result.stdout


def _flip_body_byte(store: Path, n: int) -> None:
    """One bit of one byte of record n's signed body: still valid JSON."""
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    line = bytearray(lines[n - 1])
    line[line.index(b'"officer":"') + len(b'"officer":"')] ^= 0x01
    lines[n - 1] = bytes(line)
    chain.write_bytes(b"".join(lines))


def test_a_flipped_byte_in_a_record_breaks_the_next_link_and_its_own_signature(
        store_copy: Path, tools_without_ffprobe: Path, tmp_path: Path) -> None:
    n = segment_records(store_copy)[0]["seq"]
    _flip_body_byte(store_copy, n)

    # By default its hash no longer links to the next record (whose signature, and the
    # head's, vouch for the record as it was signed).
    whole = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert whole.returncode == 1
    assert f"FAIL: record {n + 1}: prev and seq" in whole.stdout
    assert whole.stdout.count("FAIL") == 2, whole.stdout
    assert whole.stdout.endswith("FAIL: the store does not verify\n")

    # Step 6 finds its own signature broken too.
    by_hand = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work",
                            "split_chain && check_signatures && check_every_signature")
    assert by_hand.returncode == 1
    assert f"FAIL: record {n}: Signature Verification Failure (key " in by_hand.stdout
    assert f"record {n - 1}: Signature Verified Successfully (key " in by_hand.stdout
    assert by_hand.stdout.count("FAIL") == 1


def _replace_signature(store: Path, n: int, key: Ed25519PrivateKey | None = None) -> None:
    """Record n's stored signature replaced, its body untouched: by a signature of another
    key over the same body, or (without `key`) by one of its bytes changed."""
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    body, signature = split_line(lines[n - 1].rstrip(b"\n"))
    signature = key.sign(body) if key else bytes([signature[0] ^ 0x01]) + signature[1:]
    lines[n - 1] = encode_line(body, signature)
    chain.write_bytes(b"".join(lines))


@pytest.mark.parametrize("key", [None, Ed25519PrivateKey.generate()],
                         ids=["a byte changed", "another key"])
def test_a_signature_changed_on_an_intact_record_is_found_by_the_full_step_only(
        store_copy: Path, tools_without_ffprobe: Path, tmp_path: Path,
        key: Ed25519PrivateKey | None) -> None:
    """No evidence changed (the body is what the head's signature vouches for through the
    links): the default passes, as the document says; step 6 names the record."""
    n = segment_records(store_copy)[1]["seq"]
    _replace_signature(store_copy, n, key)

    fast = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert fast.returncode == 0, fast.stdout
    full = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work",
                         every_signature=True)
    assert full.returncode == 1
    assert f"FAIL: record {n}: Signature Verification Failure (key " in full.stdout
    assert full.stdout.count("FAIL") == 2  # the record, and the verdict
    assert not verify_store(store_copy).ok


def test_the_heads_signature_is_always_checked(store_copy: Path, tools_without_ffprobe: Path,
                                               tmp_path: Path) -> None:
    n = len(records(store_copy))
    _replace_signature(store_copy, n)
    result = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 1
    assert f"FAIL: record {n}: Signature Verification Failure (key " in result.stdout


def test_a_witnessed_head_must_be_in_the_chain(store_copy: Path, tools_without_ffprobe: Path,
                                               tmp_path: Path) -> None:
    """The newest records removed with their files: the shorter chain verifies alone, and
    fails against the head a witness saw."""
    head = verify_store(store_copy).head
    witness = f"{head['seq']}:{head['hash']}"
    ok = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work", witness=witness)
    assert ok.returncode == 0, ok.stdout
    assert f"witness: record {head['seq']} has hash {head['hash']}, as witnessed\n" in ok.stdout

    chain = store_copy / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    last = records(store_copy)[-2:]
    chain.write_bytes(b"".join(lines[:-2]))
    for record in last:
        if record["type"] == "segment_sealed":
            (store_copy / record["payload"]["file"]).unlink()
    alone = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert alone.returncode == 0, alone.stdout
    rolled_back = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work",
                                witness=witness)
    assert rolled_back.returncode == 1
    assert (f"FAIL: witness {witness}: the chain does not hold record {head['seq']} with that "
            "hash") in rolled_back.stdout


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
    chain = records(recorded_store)
    boot = chain[0]
    # The head's signature fails in step 2; with step 6, every record's (the head's again).
    for every_signature, failures in ((False, 1), (True, len(chain) + 1)):
        result = run_procedure(recorded_store, tools, tmp_path / "work", public_key=public,
                               every_signature=every_signature)
        assert result.returncode == 1
        assert f"FAIL: record 1: states key {boot['payload']['key_fingerprint']}, but key " \
            in result.stdout
        assert f"FAIL: record {len(chain)}: Signature Verification Failure" in result.stdout
        assert result.stdout.count("Signature Verification Failure") == failures


# Genuine stores beyond the plain recording, each made once for this module.

def record_with_a_voice_note(config: Path) -> None:
    """Record, stop and start again at once: the interruption asks for a voice note (a WAV);
    then a photo (a JPEG) during the recording."""
    store = config.parent / "store"
    with running_daemon(config) as daemon:
        daemon.controls.press()
        wait_for(lambda: len(records_of(store, "segment_sealed")) >= 2, what="two segments")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="the stop")
        daemon.controls.press()
        wait_for(lambda: bool(records_of(store, "voice_note")), timeout=30, what="the voice note")
        daemon.post(PhotoPressed("control"))
        wait_for(lambda: bool(records_of(store, "photo")), timeout=10, what="the photo")


def records_of(store: Path, kind: str) -> list[dict]:
    return [r for r in records(store) if r["type"] == kind] if (store / "chain.jsonl").exists() \
        else []


@pytest.fixture(scope="module")
def rotated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Segments and a voice note; the key rotated with the daemon stopped (`bodycam keys
    rotate`); then a second start, signed by the new key, and more segments."""
    root = tmp_path_factory.mktemp("rotated")
    config = write_device_config(root / "device.toml", root / "store", note_max=1)
    record_with_a_voice_note(config)
    subprocess.run([*BODYCAM, "keys", "rotate", "--config", str(config), "--reason", "test"],
                   check=True, capture_output=True, timeout=60)
    record_segments(config, 2)
    return root / "store"


@pytest.fixture(scope="module")
def encrypted_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Segments and a voice note encrypted to an agency's age recipient (.ts.age, .wav.age)."""
    root = tmp_path_factory.mktemp("encrypted")
    key = root / "agency.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    found = re.search(r"public key: (age1\w+)", key.read_text())
    assert found is not None
    recipient = found.group(1)
    config = write_device_config(
        root / "device.toml", root / "store", note_max=1,
        extra=f'[encryption]\nenabled = true\nrecipients = ["{recipient}"]')
    record_with_a_voice_note(config)
    return root / "store"


def copy_of(store: Path, to: Path) -> Path:
    shutil.copytree(store, to, ignore=shutil.ignore_patterns("control.sock"))
    for path in to.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return to


def test_a_store_with_a_key_rotation_and_voice_notes_verifies(
        rotated_store: Path, tools: Path, tmp_path: Path) -> None:
    chain = records(rotated_store)
    [rotation] = [r for r in chain if r["type"] == "key_rotation"]
    boots = [r for r in chain if r["type"] == "boot"]
    assert boots[-1]["seq"] > rotation["seq"]  # a start signed by the new key
    assert boots[-1]["payload"]["key_fingerprint"] == rotation["payload"]["new_fingerprint"]
    [note] = [r for r in chain if r["type"] == "voice_note"]
    assert note["payload"]["file"].endswith(".wav")
    [photo] = [r for r in chain if r["type"] == "photo"]
    assert photo["payload"]["file"].endswith(".jpg")

    result = run_procedure(rotated_store, tools, tmp_path / "work")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    old, new = rotation["payload"]["old_fingerprint"], rotation["payload"]["new_fingerprint"]
    assert (f"record {rotation['seq']}: key rotation: the records after it are signed by key "
            f"{new}\n") in out
    # Each key's epoch closed by a checked signature: the rotation by the old key, the head
    # by the new one.
    assert out.count("Signature Verified Successfully") == 2
    assert f"record {rotation['seq']}: Signature Verified Successfully (key {old})\n" in out
    assert f"record {len(chain)}: Signature Verified Successfully (key {new})\n" in out
    for sealed in (note, photo):
        assert (f"record {sealed['seq']}: {sealed['payload']['file']} matches: "
                f"{sealed['payload']['size']} bytes, sha256 {sealed['payload']['sha256']}\n") \
            in out
    head = verify_store(rotated_store).head
    assert out.endswith(f"OK: {len(chain)} records verify; head seq {head['seq']}, "
                        f"hash {head['hash']}\n")


def test_an_untouched_encrypted_store_verifies_without_a_key(
        encrypted_store: Path, tools: Path, tmp_path: Path) -> None:
    """Stored bytes are checked by their hashes; ffprobe is not asked to read ciphertext."""
    sealed = [r for r in records(encrypted_store)
              if r["type"] in ("segment_sealed", "voice_note", "photo")]
    assert {Path(r["payload"]["file"]).suffixes[-1] for r in sealed} == {".age"}
    assert {r["type"] for r in sealed} == {"segment_sealed", "voice_note", "photo"}

    result = run_procedure(encrypted_store, tools, tmp_path / "work")
    assert result.returncode == 0, result.stdout + result.stderr
    for record in sealed:
        p = record["payload"]
        assert (f"record {record['seq']}: {p['file']} matches: {p['size']} bytes, "
                f"sha256 {p['sha256']}\n") in result.stdout
    if (tools / "ffprobe").exists():
        segments = [r for r in sealed if r["type"] == "segment_sealed"]
        assert result.stdout.count(" is encrypted: decrypt it to compare its times") \
            == len(segments)
        assert " video PTS " not in result.stdout


# Tampered copies: each must fail the shell procedure, naming what is wrong, and
# `bodycam verify` too. A damage returns what the shell's output must contain.

def _sealed(store: Path, kind: str) -> dict:
    return next(r for r in records(store) if r["type"] == kind)


def _flip_wav_byte(store: Path) -> str:
    note = _sealed(store, "voice_note")["payload"]
    path = store / note["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last sample: the header still says it is a WAV
    path.write_bytes(bytes(data))
    return f"{note['file']} is {note['size']} bytes with SHA-256 "


def _delete_wav(store: Path) -> str:
    note = _sealed(store, "voice_note")
    (store / note["payload"]["file"]).unlink()
    return f"FAIL: record {note['seq']}: {note['payload']['file']} is missing (deleted)"


def _flip_jpg_byte(store: Path) -> str:
    photo = _sealed(store, "photo")["payload"]
    path = store / photo["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the picture: still a JPEG
    path.write_bytes(bytes(data))
    return f"{photo['file']} is {photo['size']} bytes with SHA-256 "


def _delete_jpg(store: Path) -> str:
    photo = _sealed(store, "photo")
    (store / photo["payload"]["file"]).unlink()
    return f"FAIL: record {photo['seq']}: {photo['payload']['file']} is missing (deleted)"


def _plant_hidden_file(store: Path) -> str:
    shutil.copy(store / _sealed(store, "segment_sealed")["payload"]["file"],
                store / "sealed" / ".00000003.ts")
    return "FAIL: sealed/.00000003.ts is not named by any record"


def _resign_after_rotation(store: Path) -> str:
    """Every record after the rotation re-signed and relinked, by a key it did not hand over
    to (what a thief of the old key, or of a key file, could write)."""
    rotation = _sealed(store, "key_rotation")["seq"]
    resign(store, rotation + 1, Ed25519PrivateKey.generate())
    return f"FAIL: record {len(records(store))}: Signature Verification Failure (key "


def _hand_over_to_another_key(store: Path) -> str:
    """The rotation made to name a key of one's own, and everything from it on re-signed by
    that key: the rotation's own signature, by the old key, is the one that breaks."""
    rotation = _sealed(store, "key_rotation")
    other = Ed25519PrivateKey.generate()
    raw = other.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    body = json.loads(split_line(lines[rotation["seq"] - 1].rstrip(b"\n"))[0])
    body["payload"]["new_public_key"] = base64.b64encode(raw).decode()
    body["payload"]["new_fingerprint"] = hashlib.sha256(raw).hexdigest()
    signed = canonical(body)
    lines[rotation["seq"] - 1] = encode_line(signed, split_line(
        lines[rotation["seq"] - 1].rstrip(b"\n"))[1])  # the old key's signature kept
    chain.write_bytes(b"".join(lines))
    resign(store, rotation["seq"] + 1, other)
    return f"FAIL: record {rotation['seq']}: Signature Verification Failure (key "


def _change_record_after_rotation(store: Path) -> str:
    """One bit of a record the new key signed: still valid JSON, no longer what was signed,
    and no longer what the next record links to."""
    n = _sealed(store, "key_rotation")["seq"] + 2
    _flip_body_byte(store, n)
    return f"FAIL: record {n + 1}: prev and seq"


def _delete_segment(store: Path) -> str:
    segment = _sealed(store, "segment_sealed")
    (store / segment["payload"]["file"]).unlink()
    return f"FAIL: record {segment['seq']}: {segment['payload']['file']} is missing (deleted)"


def resign(store: Path, first: int, key: Ed25519PrivateKey) -> None:
    """Re-sign records `first` on with `key`, each linked to the (re-signed) one before."""
    chain = store / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    prev = record_hash(split_line(lines[first - 2].rstrip(b"\n"))[0])
    for i in range(first - 1, len(lines)):
        body = json.loads(split_line(lines[i].rstrip(b"\n"))[0])
        body["prev"] = prev
        body_bytes = canonical(body)
        lines[i] = encode_line(body_bytes, key.sign(body_bytes))
        prev = record_hash(body_bytes)
    chain.write_bytes(b"".join(lines))


@pytest.mark.parametrize("damage", [_flip_wav_byte, _delete_wav, _plant_hidden_file,
                                    _resign_after_rotation, _hand_over_to_another_key,
                                    _change_record_after_rotation, _delete_segment,
                                    _flip_jpg_byte, _delete_jpg])
def test_the_procedure_reports_damage_to_a_rotated_store(
        rotated_store: Path, tools_without_ffprobe: Path, tmp_path: Path,
        damage: Callable[[Path], str]) -> None:
    store = copy_of(rotated_store, tmp_path / "copy")
    expected = damage(store)
    result = run_procedure(store, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout
    assert result.stdout.endswith("FAIL: the store does not verify\n")
    assert not verify_store(store).ok


@pytest.mark.parametrize("damage", [_flip_wav_byte, _delete_wav, _plant_hidden_file,
                                    _delete_segment, _flip_jpg_byte, _delete_jpg])
def test_the_procedure_reports_damage_to_an_encrypted_store(
        encrypted_store: Path, tools_without_ffprobe: Path, tmp_path: Path,
        damage: Callable[[Path], str]) -> None:
    store = copy_of(encrypted_store, tmp_path / "copy")
    expected = damage(store)
    result = run_procedure(store, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout
    assert not verify_store(store).ok


# Purges: a file may be gone when a custody record and then a purge record name it.

def seal(store: Path, kind: str, payload: dict, key: Ed25519PrivateKey | None = None) -> dict:
    """A record signed by the store's own key (or `key`), as the device seals it."""
    key = key or load_or_create_device_key(store / "keys", store / "chain.jsonl")
    chain = Chain(store / "chain.jsonl", key, lambda: ("TEST-0001", "OFC-7"),
                  SimulatedClock().state, current_boot_id())
    try:
        return chain.append(kind, payload)
    finally:
        chain.close()


def purge(store: Path, segment: dict, custody: int | None) -> None:
    """Seal a purge of `segment` (held by record `custody`), then delete its file."""
    item = {k: segment["payload"][k] for k in ("file", "sha256", "size")}
    seal(store, "purge", {"reason": "policy", "free_bytes": 1 << 30,
                          "files": [{**item, "seq": segment["seq"], "custody": custody}]})
    (store / segment["payload"]["file"]).unlink()


def test_a_file_purged_after_custody_may_be_gone(store_copy: Path, tools_without_ffprobe: Path,
                                                 tmp_path: Path) -> None:
    segments = segment_records(store_copy)
    custody = seal(store_copy, "custody", {
        "report_id": "r-1", "operator": "test", "head": verify_store(store_copy).head,
        "dock": {"name": "DOCK-1", "certificate_sha256": "0" * 64},
        "segments": [{"seq": r["seq"], **{k: r["payload"][k] for k in ("file", "sha256", "size")}}
                     for r in segments]})
    purge(store_copy, segments[0], custody["seq"])

    result = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"record {segments[0]['seq']}: {segments[0]['payload']['file']} was purged after "
            f"custody (held by record {custody['seq']}, purged by record {custody['seq'] + 1})"
            ) in result.stdout
    assert verify_store(store_copy).ok


def test_a_purge_without_custody_fails(store_copy: Path, tools_without_ffprobe: Path,
                                       tmp_path: Path) -> None:
    segment = segment_records(store_copy)[0]
    purge(store_copy, segment, None)

    result = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 1, result.stdout
    file = segment["payload"]["file"]
    purge_seq = len(records(store_copy))
    assert (f"FAIL: record {purge_seq}: purges {file}, which no custody record before it holds "
            "with that hash\n") in result.stdout
    assert f"FAIL: record {segment['seq']}: {file} is missing (deleted)" in result.stdout
    assert not verify_store(store_copy).ok


def test_a_retired_store_verifies_and_nothing_may_follow_its_retirement(
        store_copy: Path, tools_without_ffprobe: Path, tmp_path: Path) -> None:
    """`bodycam keys retire` with the daemon stopped: the retirement follows the shutdown,
    with no boot before it. A record signed after it, by a copy of the destroyed key, fails."""
    kept = serialization.load_pem_private_key((store_copy / "keys" / "device.key").read_bytes(),
                                              None)
    assert isinstance(kept, Ed25519PrivateKey)
    config = write_device_config(tmp_path / "device.toml", store_copy)
    subprocess.run([*BODYCAM, "keys", "retire", "--config", str(config), "--reason", "test"],
                   check=True, capture_output=True, timeout=60)
    chain = records(store_copy)
    assert [r["type"] for r in chain[-2:]] == ["shutdown", "retirement"]

    result = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 0, result.stdout + result.stderr
    assert verify_store(store_copy).ok

    seal(store_copy, "shutdown", {"reason": "SIGTERM"}, kept)
    result = run_procedure(store_copy, tools_without_ffprobe, tmp_path / "work")
    assert result.returncode == 1, result.stdout
    assert (f"FAIL: record {len(chain) + 1}: signed after the device was retired by record "
            f"{len(chain)} (inserted)\n") in result.stdout
    assert not verify_store(store_copy).ok
