"""Encryption at rest: the device writes only age ciphertext that off-the-shelf `age` opens,
the chain holds both hashes, a cut segment decrypts to where it was cut, and the
device's identity is enrolled, rotated and retired in the chain."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.device.state import State
from agent.evidence.chain import read_bodies
from agent.evidence.keys import KeyMaterialError, load_or_create_device_key
from agent.evidence.verify import verify_store
from tests.support.device import (
    BODYCAM,
    record_segments,
    running_daemon,
    spawn_daemon,
    trigger_start,
    wait_for,
    write_device_config,
)
from tests.support.dockside import docked_device
from tests.support.pki import make_pki


@pytest.fixture(scope="module")
def agency(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The agency's age identity, made by age-keygen; and its recipient."""
    key = tmp_path_factory.mktemp("agency") / "agency.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = re.search(r"public key: (age1\w+)", key.read_text()).group(1)
    return key, recipient


def encrypted_config(write_config, recipient: str, **values: object) -> Path:
    return write_config(extra=f'[encryption]\nenabled = true\nrecipients = ["{recipient}"]',
                        **values)


def sealed(store: Path, kind: str = "segment_sealed") -> list[dict]:
    return [r for r in read_bodies(store / "chain.jsonl") if r["type"] == kind]


def video_frames(path: Path) -> int | None:
    """Frames ffprobe reads from `path`, None when it cannot read it at all."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return None
    return int(json.loads(out.stdout)["streams"][0]["nb_read_packets"])


def bodycam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BODYCAM, *args], capture_output=True, text=True, timeout=120)


def test_sealed_segments_open_with_age_and_match_the_chain(write_config, tmp_path: Path,
                                                           agency: tuple[Path, str]) -> None:
    key, recipient = agency
    config = encrypted_config(write_config, recipient)
    record_segments(config, 3)
    store = tmp_path / "store"
    report = verify_store(store)
    assert report.ok, report.summary()
    for record in sealed(store):
        payload = record["payload"]
        stored = store / payload["file"]
        assert stored.name.endswith(".ts.age")
        assert video_frames(stored) is None, "ffprobe must not read a stored segment"
        plain = subprocess.run(["age", "-d", "-i", str(key), str(stored)], check=True,
                               capture_output=True).stdout
        assert hashlib.sha256(plain).hexdigest() == payload["plaintext"]["sha256"]
        assert len(plain) == payload["plaintext"]["size"]
        clear = tmp_path / f"{record['seq']}.ts"
        clear.write_bytes(plain)
        assert video_frames(clear) == payload["video"]["packets"]
        assert payload["encryption"]["format"] == "age-v1"


def scan_for_plaintext_media(root: Path) -> list[str]:
    """Files holding MPEG-TS packets, a WAV header or H.264 parameter sets in the clear."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.name == "control.sock":
            continue
        data = path.read_bytes()
        ts_run = any(all(data[i + k * 188: i + k * 188 + 1] == b"\x47" for k in range(8))
                     for i in range(min(188, len(data))) if len(data) >= i + 8 * 188)
        if ts_run or b"RIFF" in data[:4] or b"\x00\x00\x00\x01\x67" in data:
            found.append(str(path.relative_to(root)))
    return found


def test_no_plaintext_media_reaches_the_store(write_config, tmp_path: Path,
                                              agency: tuple[Path, str]) -> None:
    _, recipient = agency
    config = encrypted_config(write_config, recipient, note_max=1)
    store = tmp_path / "store"
    with running_daemon(config) as daemon:
        daemon.controls.press()
        wait_for(lambda: len(sealed(store)) >= 2, what="two segments")
        daemon.controls.press(long=True)  # stop, then start again: a voice note is taken
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="the stop")
        daemon.controls.press()
        wait_for(lambda: sealed(store, "voice_note"), timeout=30, what="the voice note")
    [note] = [r["payload"] for r in sealed(store, "voice_note")]
    assert note["file"].endswith(".wav.age") and note["plaintext"]["size"] > 44
    assert scan_for_plaintext_media(store) == []
    control = tmp_path / "control.ts"  # the scan does find media in the clear
    control.write_bytes(subprocess.run(["age", "-d", "-i", str(agency[0]),
                                        str(store / sealed(store)[0]["payload"]["file"])],
                                       check=True, capture_output=True).stdout)
    assert scan_for_plaintext_media(tmp_path) == ["control.ts"]


def frames_on_disk(store: Path) -> int:
    """Video packets an open encrypted segment's progress file says are durable."""
    for progress in (store / "open").glob("*.ts.age.progress"):
        try:
            return json.loads(progress.read_bytes())["video"]["packets"]
        except (OSError, ValueError):
            return 0  # being rewritten; look again
    return 0


def test_decrypt_recovers_a_segment_cut_by_sigkill(write_config, tmp_path: Path,
                                                   agency: tuple[Path, str]) -> None:
    key, recipient = agency
    config = encrypted_config(write_config, recipient, realtime="true", segment_seconds=5.0,
                              pre_event_seconds=0.0)
    store = tmp_path / "store"
    daemon = spawn_daemon(config, store)
    try:
        trigger_start(config)
        wait_for(lambda: frames_on_disk(store) > 30, timeout=30, what="a second on disk")
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    daemon = spawn_daemon(config, store)  # recovers, resumes
    try:
        wait_for(lambda: list((store / "open").glob("*.ts.age")), what="the resumed recording")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)

    [recovered] = [r for r in sealed(store) if r["payload"].get("recovered")]
    payload = recovered["payload"]
    assert payload["plaintext"] is None and payload["cut_bytes"] == 0
    assert payload["video"]["packets"] > 30, "the times come from the progress file"
    out = tmp_path / "recovered.ts"
    result = bodycam("decrypt", str(store / payload["file"]), "-i", str(key), "-o", str(out))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "cut: the file ends without its final chunk" in result.stdout
    assert video_frames(out) >= payload["video"]["packets"], "all the sealed times decrypt"
    report = verify_store(store)
    assert report.ok, report.summary()

    clean = sealed(store)[-1]["payload"]
    result = bodycam("decrypt", str(store / clean["file"]), "-i", str(key), "-o",
                     str(tmp_path / "clean.ts"))
    assert result.returncode == 0 and "matches record" in result.stdout, result.stdout


def test_encryption_on_without_a_recipient_is_refused(write_config) -> None:
    config = write_config(extra="[encryption]\nenabled = true")
    result = bodycam("run", "--config", str(config))
    assert result.returncode == 2
    assert "no agency recipient is known" in result.stderr


def test_keys_open_to_others_stop_the_daemon(write_config, tmp_path: Path) -> None:
    config = write_config()
    keys = tmp_path / "store" / "keys"
    keys.mkdir(parents=True, mode=0o755)
    keys.chmod(0o755)
    result = bodycam("run", "--config", str(config))
    assert result.returncode == 2
    assert f"{keys} is open to others (mode 0755)" in result.stderr
    assert "chmod 700" in result.stderr


def certificate_for(csr_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The agency CA signs the device's request."""
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Agency device CA")])
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now, "not_valid_after": now + datetime.timedelta(days=365)}
    ca = (x509.CertificateBuilder(issuer_name=name, subject_name=name,
                                  public_key=ca_key.public_key(), serial_number=1, **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = x509.CertificateBuilder(issuer_name=name, subject_name=csr.subject,
                                   public_key=csr.public_key(), serial_number=2,
                                   **valid).sign(ca_key, hashes.SHA256())
    paths = tmp_path / "device.crt", tmp_path / "ca.pem"
    for path, item in zip(paths, (cert, ca), strict=True):
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    return paths


def test_enrollment_rotation_and_retirement_verify_in_the_chain(
        write_config, tmp_path: Path, agency: tuple[Path, str]) -> None:
    _, recipient = agency
    config = write_config(extra="[encryption]\nenabled = true")  # recipients from enrollment
    store = tmp_path / "store"
    keys = store / "keys"
    assert bodycam("keys", "request", "--config", str(config)).returncode == 0
    cert, ca = certificate_for(keys / "device.csr", tmp_path)
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the agency\n{recipient}\n")
    enroll = ["keys", "enroll", "--config", str(config), "--cert", str(cert), "--dock-ca",
              str(ca), "--recipients", str(recipients)]
    assert bodycam(*enroll).returncode == 0, "enrolled"
    record_segments(config, 1)  # encrypted to the recipient installed at enrollment

    result = bodycam("keys", "rotate", "--config", str(config), "--reason", "yearly")
    assert result.returncode == 0, result.stderr
    record_segments(config, 1)  # signed by the new key
    report = verify_store(store)
    assert report.ok, report.summary()
    assert any("signing key was rotated" in note for note in report.notes)
    # Under the agency's CA the first key is anchored; the new one is not, until enrolled.
    under_ca = bodycam("verify", str(store), "--ca", str(ca))
    assert under_ca.returncode == 1 and under_ca.stdout.startswith("FAIL: key "), under_ca.stdout
    assert "is certified by no enrollment record under" in under_ca.stdout
    assert under_ca.stdout.count("is certified by no enrollment record") == 1
    kinds = [r["type"] for r in read_bodies(store / "chain.jsonl")]
    assert kinds.index("enrollment") < kinds.index("key_rotation") < len(kinds) - 1
    assert bodycam(*enroll).returncode == 2, "the old certificate is not for the new key"

    rotated_key = (keys / "device.key").read_bytes()
    result = bodycam("keys", "retire", "--config", str(config), "--reason", "device lost")
    assert result.returncode == 0, result.stderr
    assert not (keys / "device.key").exists(), "the signing key is destroyed"
    assert verify_store(store).ok
    with pytest.raises(KeyMaterialError, match="this device is retired"):
        load_or_create_device_key(keys)
    assert "this device is retired" in bodycam("run", "--config", str(config)).stderr

    # A record forged after retirement with a copy of the key is caught.
    (keys / "device.key").write_bytes(rotated_key)
    (keys / "device.key").chmod(0o600)
    (keys / "RETIRED").rename(tmp_path / "RETIRED")
    record_segments(config, 1)
    report = verify_store(store)
    assert not report.ok
    assert "was signed after the device was retired" in str(report.findings[0])


def test_dock_pull_and_verify_end_to_end_with_encryption(write_config, tmp_path: Path,
                                                         agency: tuple[Path, str]) -> None:
    """The dock verifies and takes custody of encrypted files without any key; the agency
    decrypts its copy and the plaintext is the one the chain names."""
    key, recipient = agency
    encryption = f'[encryption]\nenabled = true\nrecipients = ["{recipient}"]'
    recorded = tmp_path / "recorded"
    record_segments(write_device_config(tmp_path / "rec.toml", recorded, extra=encryption), 3)
    pki = make_pki(tmp_path / "pki")
    with docked_device(tmp_path, recorded, pki, device={"extra": encryption}) as device:
        result = device.pull(tmp_path / "evidence")
        assert result.ok, result.problem or result.verify.summary()
        assert device.records("custody"), "the device sealed the custody"
    copy = result.folder
    segments = [r["payload"] for r in read_bodies(copy / "chain.jsonl")
                if r["type"] == "segment_sealed"]
    assert len(segments) >= 3 and all(p["file"].endswith(".ts.age") for p in segments)
    for payload in segments:
        plain = subprocess.run(["age", "-d", "-i", str(key), str(copy / payload["file"])],
                               check=True, capture_output=True).stdout
        assert hashlib.sha256(plain).hexdigest() == payload["plaintext"]["sha256"]
    assert verify_store(copy).ok
