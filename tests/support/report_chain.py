"""A constructed chain with known minutes, for the report's figures and its picture: two
shifts, the first with two incidents (one of three recordings joined by two interruptions,
one explained and one not; a mark, a photo, an audio-only recording), an exemption, a
restart after a crash, a battery alarm and a custody; the second another officer's, on an
unsynchronised clock. The records are bodies as the device writes them (the new types
`mark`, `photo` and record_start's `mode` as the issue 22 contract has them), unsigned:
the analysis reads records, the verifier is not its business."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

DAY = datetime(2026, 12, 3, tzinfo=UTC)
SYNCED = {"est_error_us": 500, "max_error_us": 20_000, "source": "kernel", "synced": True}
UNSYNCED = {"est_error_us": -1, "max_error_us": 16_000_000, "source": "kernel",
            "synced": False}
FPS = 30

# What the chain below must add up to, in seconds.
RECORDED_S = 602 + 420 + 240 + 300  # incident A (three recordings) and B, shift 1
PRE_EVENT_S = 2
AUDIO_ONLY_S = 240
INTERRUPTED_S = 180 + 60  # camera fault (unexplained), officer's stop and restart (explained)
UNEXPLAINED_S = 180
CUSTODY_DELAY_S = 65 * 60  # incident A ends 08:35, custody 09:40


def at(hours: int, minutes: int, seconds: int = 0) -> datetime:
    return DAY + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def wall(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class Writer:
    """Bodies in seq order, each as the device writes it, at the time given."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.officer = "OFC-7"
        self.clock = SYNCED

    def add(self, moment: datetime, type_: str, **payload: Any) -> int:
        seq = len(self.records) + 1
        self.records.append({"seq": seq, "prev": "0" * 64, "type": type_, "wall": wall(moment),
                             "mono_ns": us(moment) * 1000, "boot_id": "b", "clock": self.clock,
                             "device": "TEST-0001", "officer": self.officer,
                             "payload": payload})
        return seq

    def segment(self, moment: datetime, recording: int, seconds: int, mode: str = "video",
                pre_event_s: int = 0) -> int:
        """A segment holding `seconds` of media (video at 30 fps, or audio only)."""
        frame = 1_000_000 // FPS
        video = {"first_pts_us": 0, "last_pts_us": seconds * 1_000_000 - frame, "fps": FPS,
                 "packets": seconds * FPS, "width": 320, "height": 240}
        audio = {"codec": "aac", "first_pts_us": 0, "packets": seconds * 48_000 // 1024,
                 "last_pts_us": seconds * 1_000_000 - 1_000_000 * 1024 // 48_000,
                 "sample_rate": 48_000, "samples_per_packet": 1024, "samples": 0}
        if mode == "audio":
            video = {**video, "first_pts_us": None, "last_pts_us": None, "packets": 0}
        extra = {"pre_event": {"duration_us": pre_event_s * 1_000_000, "video_packets": 0,
                               "audio_packets": 0, "first_pts_us": 0}} if pre_event_s else {}
        seq = len(self.records) + 1
        return self.add(moment, "segment_sealed", recording=recording, index=0,
                        file=f"sealed/{seq:08d}.ts", size=1000, sha256="0" * 64,
                        video=video, audio=audio, **extra)


def shift_records() -> list[dict[str, Any]]:
    w = Writer()
    w.add(at(8, 0), "boot", version="0.1.0")
    w.add(at(8, 0, 5), "self_check", overall="pass", items=[])
    # Incident A: recording 1 (video, 2 s of pre-event), stopped by a camera fault.
    r1 = w.add(at(8, 10), "record_start", trigger="button", pre_event_ms=2000)
    w.add(at(8, 12), "mark", recording=r1, source="button")
    photo = w.add(at(8, 13), "photo", recording=r1, width=640, height=480,
                  file=f"sealed/{len(w.records) + 1:08d}.jpg", sha256="0" * 64, size=10)
    s1 = w.segment(at(8, 19, 59), r1, 602, pre_event_s=2)
    w.add(at(8, 20), "record_stop", recording=r1, reason="camera_fault", segments=1)
    # ... resumed by itself 3 minutes later: an interruption no voice note explains.
    r2 = w.add(at(8, 23), "record_start", trigger="resume_after_camera_fault",
               pre_event_ms=2000)
    w.add(at(8, 23, 0), "interruption", cause="camera_fault", detail="no frame for 3 s",
          recording_before=r1, recording_after=r2, start=wall(at(8, 20)),
          end=wall(at(8, 23)), explained=False)
    s2 = w.segment(at(8, 29, 59), r2, 420)
    w.add(at(8, 30), "record_stop", recording=r2, reason="button_hold", segments=1)
    # ... and the officer starts again (audio only) a minute later, and explains why.
    r3 = w.add(at(8, 31), "record_start", trigger="button", pre_event_ms=2000, mode="audio")
    gap = w.add(at(8, 31, 0), "interruption", cause="officer_stop_restart", detail="",
                recording_before=r2, recording_after=r3, start=wall(at(8, 30)),
                end=wall(at(8, 31)), explained=False)
    w.add(at(8, 31, 30), "voice_note", interruption=gap, explained=True, duration_ms=9000)
    s3 = w.segment(at(8, 34, 59), r3, 240, mode="audio")
    w.add(at(8, 35), "record_stop", recording=r3, reason="button_hold", segments=1)
    w.add(at(8, 50), "boot", version="0.1.0")  # a crash: no shutdown before it
    w.add(at(9, 0), "exemption", explained=True, duration_ms=5000)
    # Incident B: one recording, never taken into custody.
    r4 = w.add(at(9, 10), "record_start", trigger="button", pre_event_ms=2000)
    w.segment(at(9, 14, 59), r4, 300)
    w.add(at(9, 15), "record_stop", recording=r4, reason="button_hold", segments=1)
    w.add(at(9, 20), "alarm", alarm="battery_low", raised=True, value="18 min left")
    w.add(at(9, 25), "alarm", alarm="battery_low", raised=False, value="charging")
    w.add(at(9, 40), "custody", dock={"name": "DOCK-1"}, operator="sgt",
          head={"seq": 1, "hash": ""},
          segments=[{"seq": seq} for seq in (s1, photo, s2, s3)])
    w.add(at(9, 45), "shutdown", reason="SIGTERM")
    # Shift 2: another officer, the clock not synchronised.
    w.officer, w.clock = "OFC-9", UNSYNCED
    w.add(at(10, 0), "boot", version="0.1.0")
    r5 = w.add(at(10, 5), "record_start", trigger="button", pre_event_ms=0)
    w.segment(at(10, 5, 59), r5, 60)
    w.add(at(10, 6), "record_stop", recording=r5, reason="button_hold", segments=1)
    w.add(at(10, 30), "shutdown", reason="SIGTERM")
    return w.records
