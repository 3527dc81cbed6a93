"""A synthetic year-old store: the chain a device writes in a year, signed, verifying.

Days of 10 hours: the device boots, self-checks, is issued to an officer, records in
recordings of 50 one-minute segments (each record as docs/chain-format.md has it: video
and audio spans running on across segments, a GNSS fix), now and then stops for an
interruption that the officer explains in a voice note, is docked (one `custody`
record naming every file sealed since the last, one `purge` record deleting them),
returned and shut down. The last day is not docked: its segments (a few hundred) are
still held, as small files whose size and SHA-256 their records state. Every other
file was purged after custody, as the chain says, so `bodycam verify` passes.

Lines are signed with the store's own key and written in one pass, without the
per-record fsync of a running device: a quarter of a million records take about a
minute here. `build` caches the store under ~/.cache/bodycam-bench, keyed by
GENERATOR and the record count.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from agent.evidence.chain import GENESIS_PREV, canonical, encode_line, record_hash, utc_iso
from agent.evidence.keys import fingerprint, load_or_create_device_key
from agent.evidence.store import Store
from agent.pki import write_dock_pki

GENERATOR = 1  # change it whenever what is generated changes: the cache is keyed by it
DEVICE = "BENCH-0001"
OFFICER = "BENCH-OFFICER"
SEGMENT_US = 60_000_000
SEGMENTS_PER_RECORDING = 50
RECORDINGS_PER_DAY = 12         # 600 one-minute segments: 10 hours
FPS, AUDIO_RATE, AUDIO_SPP = 30, 48_000, 1024
HELD_SEGMENTS = 300             # the last day, not yet docked
HELD_BYTES = 4096               # a held segment's file (its record says so)
DAY_NS = 86_400 * 10**9
START_NS = 1_764_547_200 * 10**9  # 2025-12-01T00:00:00Z


def cached(records: int) -> Path:
    """The store of about `records` records, built once and kept under ~/.cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bodycam-bench"
    folder = cache / f"year-store-g{GENERATOR}-{records}"
    if not (folder / "chain.jsonl").exists():
        partial = cache / f"{folder.name}.partial-{os.getpid()}"
        build(partial, records)
        try:
            partial.rename(folder)
        except OSError:  # another run built it meanwhile
            shutil.rmtree(partial)
    return folder


def build(root: Path, records: int) -> Store:
    store = Store(root).prepare()
    key = load_or_create_device_key(store.keys)
    write_dock_pki(store.keys, key, root / "dock", DEVICE, "bench-dock")
    writer = _Writer(store, key)
    with (root / "chain.jsonl").open("wb") as out:
        writer.out = out
        day = 0
        while writer.seq < records - 700:
            writer.day(day, docked=True)
            day += 1
        writer.day(day, docked=False)
    return store


class _Writer:
    """Signs and writes records in order, keeping what the next ones refer to."""

    def __init__(self, store: Store, key: Any) -> None:
        self.store, self.key = store, key
        self.fingerprint = fingerprint(key.public_key())
        self.seq, self.prev = 0, GENESIS_PREV
        self.out: Any = None
        self.wall_ns = START_NS
        self.officer = ""
        self.held = False  # the files of this day stay on the device
        self.outstanding: list[dict[str, Any]] = []  # sealed files since the last custody
        self.video_frame = self.audio_packet = 0

    def append(self, type_: str, payload: dict[str, Any], step_ns: int = 1_000_000) -> int:
        self.seq += 1
        self.wall_ns += step_ns
        seconds = self.wall_ns // 10**9
        body = {
            "seq": self.seq, "prev": self.prev, "type": type_,
            "wall": _iso(self.wall_ns), "mono_ns": (self.wall_ns - START_NS) % DAY_NS,
            "boot_id": f"boot-{seconds // 86_400:05d}",
            "clock": {"est_error_us": 500, "max_error_us": 1000, "source": "kernel",
                      "synced": True, "time_source": "chrony", "time_server": "ntp.agency",
                      "stratum": 2},
            "device": DEVICE, "officer": self.officer, "payload": payload,
        }
        body_bytes = canonical(body)
        self.out.write(encode_line(body_bytes, self.key.sign(body_bytes)))
        self.prev = record_hash(body_bytes)
        return self.seq

    def day(self, day: int, docked: bool) -> None:
        self.wall_ns = START_NS + day * DAY_NS + 7 * 3600 * 10**9
        self.held = not docked
        self.append("boot", {"version": "0.1.0", "config": "/etc/bodycam/config.toml",
                             "config_sha256": "c" * 64, "key_fingerprint": self.fingerprint,
                             "camera": "picamera2", "encryption": None, "tail_repair": None})
        self.append("self_check", {"overall": "pass", "items": [
            {"name": name, "status": "pass", "value": "ok", "threshold": "as configured"}
            for name in ("camera", "microphone", "speaker", "battery", "storage", "clock",
                         "device key", "chain tail", "export deadline")]})
        self.officer = f"OFC-{day % 40:03d}"
        self.append("officer_assigned", {"action": "issue", "officer": self.officer,
                                         "previous": "", "operator": "armoury",
                                         "dock": _DOCK})
        recordings = RECORDINGS_PER_DAY if docked else HELD_SEGMENTS // SEGMENTS_PER_RECORDING
        for n in range(recordings):
            self.recording(interrupted=docked and n == 5 and day % 7 == 0)
        if docked:
            self.dock()
            self.officer_return()
        self.append("shutdown", {"reason": "SIGTERM"})

    def officer_return(self) -> None:
        previous, self.officer = self.officer, ""
        self.append("officer_assigned", {"action": "return", "officer": "",
                                         "previous": previous, "operator": "armoury",
                                         "dock": _DOCK})

    def recording(self, interrupted: bool) -> None:
        start = self.append("record_start", {"trigger": "button", "pre_event_ms": 30_000,
                                             "pre_event_audio": False,
                                             "media_origin_mono_ns": 1_000_000_000},
                            step_ns=600 * 10**9)
        self.append("notice_played", {"recording": start, "parts": [
            {"language": language, "text": "notice", "file": f"voice/{language}/notice.wav",
             "sha256": "a" * 64, "started": _iso(self.wall_ns), "ended": _iso(self.wall_ns),
             "started_mono_ns": 1, "ended_mono_ns": 2} for language in ("zh", "en")]})
        frames = packets = 0
        for index in range(SEGMENTS_PER_RECORDING):
            payload = self.segment(start, index)
            frames += payload["video"]["packets"]
            packets += payload["audio"]["packets"]
        last = f"sealed/{self.seq:08d}.ts"
        self.append("record_stop", {"recording": start, "reason": "button_hold",
                                    "last_segment": last,
                                    "segments": SEGMENTS_PER_RECORDING,
                                    "video_frames": frames, "audio_packets": packets})
        if interrupted:
            gap = self.append("interruption", {
                "cause": "camera_fault", "detail": "no frame for 3 s", "recording_before": start,
                "last_segment": last, "start": _iso(self.wall_ns),
                "start_mono_ns": 1, "start_boot_id": "boot", "end": _iso(self.wall_ns),
                "end_mono_ns": 2, "recording_after": None, "ended_by": "button_hold",
                "explained": False})
            self.sealed_file("voice_note", {"interruption": gap, "duration_ms": 12_000,
                                            "sample_rate": 16_000, "ended_by": "silence",
                                            "explained": True}, 384_044)

    def segment(self, recording: int, index: int) -> dict[str, Any]:
        video_next = self.video_frame + SEGMENT_US * FPS // 1_000_000
        audio_step = AUDIO_SPP * 1_000_000 / AUDIO_RATE
        audio_next = round((self.audio_packet * audio_step + SEGMENT_US) / audio_step)
        payload: dict[str, Any] = {
            "recording": recording, "index": index, "container": "mpegts",
            "opened": _iso(self.wall_ns),
            "video": {"first_pts_us": self.video_frame * 1_000_000 // FPS,
                      "last_pts_us": (video_next - 1) * 1_000_000 // FPS,
                      "packets": video_next - self.video_frame, "fps": FPS,
                      "width": 1280, "height": 720},
            "audio": {"first_pts_us": round(self.audio_packet * audio_step),
                      "last_pts_us": round((audio_next - 1) * audio_step),
                      "packets": audio_next - self.audio_packet,
                      "samples": (audio_next - self.audio_packet) * AUDIO_SPP, "codec": "aac",
                      "sample_rate": AUDIO_RATE, "samples_per_packet": AUDIO_SPP},
            "location": {"mode": 3, "lat_e7": 399_042_000, "lon_e7": 1_164_074_000,
                         "alt_mm": 44_000, "error_mm": 3_500, "time": _iso(self.wall_ns),
                         "age_ms": 420, "source": "gpsd:127.0.0.1:2947"},
        }
        if index == 0:
            payload["pre_event"] = {"video_packets": 900, "audio_packets": 0,
                                    "first_pts_us": 0, "duration_us": 30_000_000}
        self.video_frame, self.audio_packet = video_next, audio_next
        self.sealed_file("segment_sealed", payload, HELD_BYTES if self.held else 31_457_280,
                         step_ns=SEGMENT_US * 1000)
        return payload

    def sealed_file(self, type_: str, payload: dict[str, Any], size: int,
                    step_ns: int = 1_000_000) -> None:
        """A segment or voice note: held ones are written to sealed/, the others only named
        (a dock took them into custody and they were purged)."""
        held, seq = self.held, self.seq + 1
        suffix = ".ts" if type_ == "segment_sealed" else ".wav"
        name = f"sealed/{seq:08d}{suffix}"
        data = seq.to_bytes(8, "big") * (size // 8) if held else b""
        digest = hashlib.sha256(data).hexdigest() if held else \
            hashlib.sha256(name.encode()).hexdigest()
        if held:
            path = self.store.root / name
            path.write_bytes(data)
            path.chmod(0o444)
        payload.update({"file": name, "size": size, "sha256": digest})
        self.append(type_, payload, step_ns)
        self.outstanding.append({"seq": seq, "file": name, "sha256": digest, "size": size})

    def dock(self) -> None:
        head = {"seq": self.seq, "hash": self.prev}
        custody = self.append("custody", {"report_id": f"report-{self.seq:012d}", "dock": _DOCK,
                                          "operator": "armoury", "head": head,
                                          "segments": self.outstanding}, step_ns=3600 * 10**9)
        self.append("purge", {"reason": "policy", "free_bytes": 20 * 10**9, "files": [
            {**item, "custody": custody} for item in self.outstanding]})
        self.outstanding = []


_DOCK = {"name": "bench-dock", "certificate_sha256": "d" * 64}

_iso = utc_iso
