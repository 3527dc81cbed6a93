"""Recovery at start after a crash or a power cut (Art. 16: every gap is accounted for).

What a cut can leave: segments still in open/ (written up to the last flush), a file
of any kind (segment, voice note, exemption) renamed into sealed/ whose record never
reached the chain, a voice note or exemption still in open/, and a recording with no
record_stop. Each open segment is cut back to its last whole MPEG-TS packet and
sealed as recovered; the recording is closed with the reason; every other file left
over is sealed as found (`file_recovered`); and the caller resumes recording and
seals the interruption that covers the gap.

An encrypted segment (`.ts.age`) cannot be read without the agency's key: it is
sealed as it is, with the times its progress file gives (as of the last sync), and
`bodycam decrypt` recovers it up to its last whole chunk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av

from agent.device.recording.segment import AGE_SUFFIX, SUFFIX, Progress
from agent.durable import fsync_dir, make_read_only
from agent.evidence.age import AGE_FORMAT
from agent.evidence.chain import SEALED_FILE_TYPES, Chain, utc_iso
from agent.evidence.store import Store
from hal.camera.base import StreamLayout

log = logging.getLogger(__name__)

TS_PACKET = 188
TS_SYNC = 0x47
_OPEN_NAME = re.compile(r"^(\d{8})-(\d{5})(\.ts(?:\.age)?)$")
_SEALED_NAME = re.compile(r"^(\d{8})(\..+)?$")
# An orphan moved back from sealed/ is open/sealed-<its name there>: its record says so.
_FROM_SEALED = "sealed-"


@dataclass(frozen=True)
class CutRecording:
    """A recording the cut left without a record_stop."""

    id: int
    start: dict[str, Any]
    segments: int
    last_segment: dict[str, Any] | None
    last_media_wall: str | None


def move_orphans_back(store: Store, records: list[dict[str, Any]], head: int) -> None:
    """A file renamed into sealed/ whose record was never written goes back to open/.

    Runs before anything is appended: the orphan is named by a seq past the chain's last
    record, which the next record would otherwise take. A segment goes back as the next
    segment of the recording the cut left open; any other file (a voice note, an
    exemption) as open/sealed-<its name>, for `recover` to seal as found. A file named
    by a seq the chain already holds is not what a cut leaves: it stays where it is, for
    the verifier to report. `records` are the chain's bodies as found at start (at least
    those of the recordings not yet stopped and of the files in sealed/); `head` is the seq
    of its last record.
    """
    _drop_open_twins(store)
    named = {r["payload"]["file"] for r in records if r["type"] in SEALED_FILE_TYPES}
    recording = max(_open_recordings(records), default=None)
    index = len([r for r in records if r["type"] == "segment_sealed"
                 and r["payload"]["recording"] == recording])
    moved = False
    for path in sorted(store.sealed.iterdir()):
        match = _SEALED_NAME.match(path.name)
        if f"sealed/{path.name}" in named or not match or int(match.group(1)) <= head:
            continue
        suffixes = match.group(2) or ""
        if recording is not None and suffixes.startswith(SUFFIX):
            target = store.open / f"{recording:08d}-{index:05d}{suffixes}"
            index += 1
        else:
            target = store.open / f"{_FROM_SEALED}{path.name}"
        os.chmod(path, 0o644)
        os.rename(path, target)
        moved = True
        log.warning("sealed/%s had no record: back to open/%s for recovery", path.name,
                    target.name)
    if moved:
        fsync_dir(store.sealed)
        fsync_dir(store.open)


def _drop_open_twins(store: Store) -> None:
    """A cut between the seal's folder syncs (sealed/ synced, open/ not yet) can leave one
    file under both names, as POSIX allows. Its name in sealed/ is the one a record names,
    or the orphan moved back below; the name in open/ goes, or the file would be sealed
    twice (and renaming one name of a file onto its other name does nothing at all)."""
    sealed = {(st.st_dev, st.st_ino) for path in store.sealed.iterdir()
              if (st := path.lstat()).st_nlink > 1}
    twins = [path for path in store.open.iterdir()
             if (st := path.lstat()).st_nlink > 1 and (st.st_dev, st.st_ino) in sealed]
    for path in twins:
        log.warning("open/%s is also in sealed/ (a cut between the seal's folder syncs): "
                    "the name in open/ is removed", path.name)
        path.unlink()
    if twins:
        fsync_dir(store.open)


def recover(store: Store, chain: Chain, layout: StreamLayout,
            records: list[dict[str, Any]]) -> list[CutRecording]:
    """Seal what the cut left open and close the recordings it interrupted.

    `records` are the chain's bodies as found at start. `layout` is the camera's, as
    configured now: the streams' parameters are the configuration's, while times and
    counts are read from the file itself.
    """
    starts = {r["seq"]: r for r in records if r["type"] == "record_start"}
    cut = []
    for recording in sorted(_open_recordings(records)):
        sealed = [r["payload"] for r in records if r["type"] == "segment_sealed"
                  and r["payload"]["recording"] == recording]
        for path in sorted(store.open.glob(f"{recording:08d}-*{SUFFIX}*")):
            if path.name.endswith(Progress.SUFFIX):
                continue
            payload = _seal_recovered(store, chain, path, recording, layout)
            if payload is not None:
                sealed.append(payload)
        chain.append("record_stop", {
            "recording": recording,
            "reason": "interrupted",
            "segments": len(sealed),
            "video_frames": sum(s["video"]["packets"] for s in sealed),
            "audio_packets": sum(s["audio"]["packets"] for s in sealed if s["audio"]),
        })
        cut.append(CutRecording(recording, starts[recording], len(sealed),
                                sealed[-1] if sealed else None,
                                _media_wall(starts[recording], sealed)))
    for path in sorted(store.open.iterdir()):
        if path.is_file() and not path.name.endswith(Progress.SUFFIX):
            _seal_found(store, chain, path)
    return cut


def _seal_found(store: Store, chain: Chain, path: Path) -> None:
    """Seal a file the cut left outside the chain as it is, saying where it was found: a
    voice note or exemption (complete and synced before its rename, or as much of it as
    reached the disk), or a segment of a recording already closed."""
    came_from = (f"sealed/{path.name.removeprefix(_FROM_SEALED)}"
                 if path.name.startswith(_FROM_SEALED) else f"open/{path.name}")
    data = path.read_bytes()
    make_read_only(path)
    payload: dict[str, Any] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                               "recovered": True, "came_from": came_from}
    if path.name.endswith(AGE_SUFFIX):  # the recipients are not in an age file's header
        payload.update(encryption={"format": AGE_FORMAT, "recipients": None}, plaintext=None)
    record = chain.append("file_recovered", payload, name_for_seq=store.move_to_sealed(path))
    Progress.remove(path)
    log.warning("recovered %s (%d bytes) as %s", came_from, len(data), record["payload"]["file"])


def _seal_recovered(store: Store, chain: Chain, path: Path, recording: int,
                    layout: StreamLayout) -> dict[str, Any] | None:
    match = _OPEN_NAME.match(path.name)
    if not match:
        log.error("open/%s is not a segment name: sealed as a file found", path.name)
        return None
    encrypted = match.group(3).endswith(AGE_SUFFIX)
    original = path.stat().st_size
    kept = original if encrypted else _last_whole_packet(path)
    if kept == 0:
        log.warning("%s held no whole packet; removed", path.name)
        path.unlink()
        Progress.remove(path)
        fsync_dir(store.open)  # else a cut brings it back, empty, after its recording closed
        return None
    extra: dict[str, Any] = {}
    if encrypted:
        progress = Progress.read(path) or {}
        spans = {kind: progress.get(kind, _NO_SPAN) for kind in ("video", "audio")}
        extra = {"encryption": progress.get("encryption"), "plaintext": None}
    else:
        if kept < original:
            os.chmod(path, 0o644)  # closed before the cut, its seal not done: read-only
            with path.open("r+b") as f:
                f.truncate(kept)
                os.fsync(f.fileno())
        spans = _spans(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    make_read_only(path)
    payload = {
        "recording": recording, "index": int(match.group(2)), "container": "mpegts",
        "size": kept, "sha256": digest, "recovered": True, "cut_bytes": original - kept,
        **extra,
        "video": {**spans["video"], "fps": layout.fps, "width": layout.width,
                  "height": layout.height},
        "audio": None,
        "location": None,
        "no_location": "not known: sealed by recovery after the recording was cut",
    }
    if layout.audio:
        audio = layout.audio
        payload["audio"] = {**spans["audio"], "codec": audio.codec,
                            "samples": spans["audio"]["packets"] * audio.samples_per_packet,
                            "sample_rate": audio.sample_rate,
                            "samples_per_packet": audio.samples_per_packet}
    record = chain.append("segment_sealed", payload, name_for_seq=store.move_to_sealed(path))
    Progress.remove(path)
    log.warning("recovered %s as %s (%d bytes cut)", path.name, record["payload"]["file"],
                original - kept)
    return record["payload"]


def _last_whole_packet(path: Path) -> int:
    """Length up to the last 188-byte packet that starts with the sync byte."""
    data = path.read_bytes()
    end = len(data) - len(data) % TS_PACKET
    while end and data[end - TS_PACKET] != TS_SYNC:
        end -= TS_PACKET
    return end


_NO_SPAN = {"first_pts_us": None, "last_pts_us": None, "packets": 0}


def _spans(path: Path) -> dict[str, dict[str, Any]]:
    """First and last presentation time and packet count per stream type, as demuxed."""
    spans = {kind: dict(_NO_SPAN) for kind in ("video", "audio")}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or packet.size == 0 or packet.stream.type not in spans:
                continue
            span = spans[packet.stream.type]
            pts_us = round(packet.pts * packet.time_base * 1_000_000)
            if span["first_pts_us"] is None:
                span["first_pts_us"] = pts_us
            span["last_pts_us"] = pts_us
            span["packets"] += 1
    return spans


def _media_wall(start: dict[str, Any], sealed: list[dict[str, Any]]) -> str | None:
    """Wall time of the last packet on disk, from the start record's clock pair."""
    origin = start["payload"].get("media_origin_mono_ns")
    last_pts = [span["last_pts_us"] for segment in sealed
                for span in (segment["video"], segment["audio"] or {})
                if span.get("last_pts_us") is not None]
    if origin is None or not last_pts:
        return None
    mono = origin + max(last_pts) * 1000
    started = datetime.strptime(start["wall"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    moment = started + timedelta(microseconds=(mono - start["mono_ns"]) / 1000)
    return utc_iso(int(moment.timestamp() * 1e9))


def _open_recordings(records: list[dict[str, Any]]) -> set[int]:
    started = {r["seq"] for r in records if r["type"] == "record_start"}
    stopped = {r["payload"]["recording"] for r in records if r["type"] == "record_stop"}
    return started - stopped
