"""Every kind of damage to the store fails verification, naming what is wrong and where."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import RecorderConfig, load_config
from agent.device.recording.recorder import Recorder
from agent.evidence.chain import Chain, split_line
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from hal.camera.sim import SimulatedCamera
from hal.clock import SimulatedClock
from tests.support.device import wait_for


def lines(store: Path) -> list[bytes]:
    return (store / "chain.jsonl").read_bytes().splitlines(keepends=True)


def write_lines(store: Path, new: list[bytes]) -> None:
    (store / "chain.jsonl").write_bytes(b"".join(new))


def segment_files(store: Path) -> list[Path]:
    return sorted((store / "sealed").glob("*.ts"))


def seq_of(line: bytes) -> int:
    return json.loads(split_line(line.rstrip(b"\n"))[0])["seq"]


def flip_segment_byte(store: Path) -> None:
    path = segment_files(store)[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def delete_segment(store: Path) -> None:
    segment_files(store)[2].unlink()


def truncate_segment(store: Path) -> None:
    path = segment_files(store)[1]
    path.write_bytes(path.read_bytes()[:-188])


def swap_segments(store: Path) -> None:
    first, second = segment_files(store)[:2]
    tmp = first.with_suffix(".swap")
    first.rename(tmp)
    second.rename(first)
    tmp.rename(second)


def insert_segment(store: Path) -> None:
    shutil.copy(segment_files(store)[0], store / "sealed" / "99999999.ts")


def delete_record(store: Path) -> None:
    chain = lines(store)
    del chain[3]
    write_lines(store, chain)


def reorder_records(store: Path) -> None:
    chain = lines(store)
    chain[3], chain[4] = chain[4], chain[3]
    write_lines(store, chain)


def insert_record(store: Path) -> None:
    chain = lines(store)
    chain.insert(4, chain[2])
    write_lines(store, chain)


def truncate_record(store: Path) -> None:
    chain = lines(store)
    chain[3] = chain[3][: len(chain[3]) // 2] + b"\n"
    write_lines(store, chain)


def truncate_chain_tail(store: Path) -> None:
    chain = lines(store)
    chain[-1] = chain[-1][:40]
    write_lines(store, chain)


def edit_record(store: Path) -> None:
    chain = lines(store)
    index = next(i for i, line in enumerate(chain) if b'"segment_sealed"' in line)
    body = json.loads(split_line(chain[index].rstrip(b"\n"))[0])
    old = str(body["payload"]["size"]).encode()
    chain[index] = chain[index].replace(b'"size":' + old, b'"size":' + str(int(old) + 1).encode())
    write_lines(store, chain)


def respell_signature(store: Path) -> None:
    """Base64's spare bits: the same 64 signature bytes spelled differently."""
    chain = lines(store)
    head, sig = chain[2].rsplit(b'"sig":"', 1)
    last = sig.index(b"=")  # the character before the padding carries spare bits
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = alphabet.index(sig[last - 1 : last])
    respelled = sig[: last - 1] + alphabet[value ^ 1 : (value ^ 1) + 1] + sig[last:]
    chain[2] = head + b'"sig":"' + respelled
    write_lines(store, chain)


def resign_with_another_key(store: Path) -> None:
    (store / "keys" / "device.key").unlink()
    (store / "keys" / "device.pub").unlink()
    load_or_create_device_key(store / "keys")


DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "segment byte flipped": (flip_segment_byte, "changed", "SHA-256 differs from the sealed hash"),
    "segment deleted": (delete_segment, "missing", "is missing (deleted)"),
    "segment truncated": (truncate_segment, "truncated", "(truncated)"),
    "segments swapped": (swap_segments, "reordered", "segments were swapped or renamed"),
    "segment inserted": (insert_segment, "inserted", "sealed/99999999.ts: is not in the chain"),
    "record deleted": (delete_record, "missing", "record 4 is missing (deleted)"),
    "records reordered": (reorder_records, "reordered", "records were reordered"),
    "record inserted": (insert_record, "inserted", "a record was inserted or reordered"),
    "record truncated": (truncate_record, "truncated", "line 4: is not a whole signed record "
                         "(truncated)"),
    "chain tail torn": (truncate_chain_tail, "truncated", "is not a whole signed record"),
    "record edited": (edit_record, "changed", "signature does not verify"),
    "signature re-spelled": (respell_signature, "changed", "line 3: is not a whole signed "
                             "record (changed): signature is not in standard base64"),
    "key replaced": (resign_with_another_key, "changed", "record 1 (line 1): signature does not"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damage_fails_verification_with_the_right_message(store_copy: Path, name: str) -> None:
    damage, kind, message = DAMAGE[name]
    assert verify_store(store_copy).ok
    damage(store_copy)
    report = verify_store(store_copy)
    assert not report.ok
    first = report.findings[0]
    assert first.kind == kind, report.summary()
    assert message in str(first), report.summary()


def test_cli_names_the_first_bad_segment_and_exits_1(store_copy: Path) -> None:
    flip_segment_byte(store_copy)
    result = subprocess.run([sys.executable, "-m", "agent", "verify", str(store_copy)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    name = segment_files(store_copy)[1].name
    assert result.stdout.startswith(f"FAIL: segment sealed/{name}")
    as_json = subprocess.run([sys.executable, "-m", "agent", "verify", "--json", str(store_copy)],
                             capture_output=True, text=True)
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["ok"] is False
    assert report["findings"][0]["kind"] == "changed"


def test_cli_exits_0_on_a_good_store(store_copy: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agent", "verify", str(store_copy)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("OK: ")


def test_a_frame_lost_at_a_boundary_is_a_gap_in_time(tmp_path: Path) -> None:
    """A recorder that misses one packet at a cut seals a gap the verifier must name."""
    store, chain, recorder, packets = _recording(tmp_path, frames=90)
    second_keyframe = [i for i, p in enumerate(packets.video) if p[1]][2]
    for i, (data, keyframe, pts) in enumerate(packets.video):
        if i != second_keyframe - 1:  # the last frame before the second cut is lost
            recorder.outputframe(data, keyframe, pts)
    recorder.stop("test")
    recorder.close()
    chain.close()
    report = verify_store(store.root)
    assert [f.kind for f in report.findings] == ["gap"], report.summary()
    assert "gap in time: video jumps 66.7 ms" in str(report.findings[0])
    assert "about 1 packets missing" in str(report.findings[0])


def test_a_frame_the_camera_dropped_inside_a_segment_is_noted(tmp_path: Path) -> None:
    store, chain, recorder, packets = _recording(tmp_path, frames=60)
    for i, (data, keyframe, pts) in enumerate(packets.video):
        if i != 20:  # mid-segment: the camera never delivered it
            recorder.outputframe(data, keyframe, pts)
    recorder.stop("test")
    recorder.close()
    chain.close()
    report = verify_store(store.root)
    assert report.ok, report.summary()
    assert any("video has 29 packets over a span of 30: 1 never reached the recorder" in note
               for note in report.notes), report.notes


def test_a_packet_the_writer_cannot_take_is_counted_and_shows_as_a_gap(tmp_path: Path) -> None:
    """One bad packet must not end the recording; its loss must be visible to the verifier."""
    store, chain, recorder, packets = _recording(tmp_path, frames=90)
    for i, (data, keyframe, pts) in enumerate(packets.video):
        recorder.outputframe(data, keyframe, None if i == 40 else pts)
    stop = recorder.stop("test")
    recorder.close()
    chain.close()
    assert recorder.stats.packets_lost == 1
    assert stop["payload"]["video_frames"] == 89
    report = verify_store(store.root)
    assert [f.kind for f in report.findings] == ["gap"], report.summary()
    assert "about 1 packets missing" in str(report.findings[0])


def _recording(tmp_path: Path, frames: int) -> tuple[Store, Chain, Recorder, _Packets]:
    """A recorder on a fresh store, started, and pre-encoded video to feed it by hand."""
    store = Store(tmp_path / "store").prepare()
    chain = Chain(store.chain, load_or_create_device_key(store.keys), lambda: ("T", "O"),
                  SimulatedClock().state, "boot")
    packets = _encoded_packets(tmp_path, frames)
    recorder = Recorder(packets.layout, store, chain,
                        RecorderConfig(segment_seconds=1.0, pre_event_seconds=0.0))
    recorder.start("test")
    return store, chain, recorder, packets


class _Packets:
    def __init__(self) -> None:
        self.video: list[tuple[bytes, bool, int]] = []
        self.layout = None

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        if not audio:
            self.video.append((frame, keyframe, timestamp))


def _encoded_packets(tmp_path: Path, frames: int) -> _Packets:
    config, _ = load_config(None, tmp_path / "unused-store")
    config = config.model_copy(update={
        "camera": config.camera.model_copy(update={"width": 160, "height": 120, "realtime": False,
                                                   "keyframe_interval": 15}),
        "audio": config.audio.model_copy(update={"enabled": False})})
    camera = SimulatedCamera(config)
    sink = _Packets()
    camera.start(sink)
    wait_for(lambda: len(sink.video) >= frames, what="encoded frames")
    camera.stop()
    sink.video = sink.video[:frames]
    sink.layout = camera.layout
    return sink


def test_two_sealed_files_with_the_same_bytes_both_verify(store_copy: Path) -> None:
    """Two files may hold the same bytes (two silent voice notes; two segments recovered after
    cuts that each kept only the stream headers): each is in the chain by its own record."""
    store = Store(store_copy)
    chain = Chain(store.chain, load_or_create_device_key(store.keys), lambda: ("TEST", "OFC"),
                  SimulatedClock().state, "test")
    silent = b"RIFF$\x00\x00\x00WAVEfmt "  # the same bytes twice
    for n in range(2):
        path = store.open / f"exemption-{n}.wav"
        path.write_bytes(silent)
        path.chmod(0o444)
        chain.append("exemption", {"size": len(silent),
                                   "sha256": hashlib.sha256(silent).hexdigest(),
                                   "duration_ms": 0, "sample_rate": 16000,
                                   "ended_by": "no_speech", "explained": False},
                     name_for_seq=store.move_to_sealed(path))
    chain.close()
    report = verify_store(store_copy)
    assert report.ok, report.summary()
