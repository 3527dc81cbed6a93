"""What a store's records say happened, shift by shift and incident by incident: the
analysis behind `bodycam report` (page.py draws it).

Pure: records in, shifts and figures out; it reads no file. It trusts nothing either: a
store that failed verification is still drawn as far as its records allow, so a field of
the wrong type is left out, never a crash. The rules (what a shift is, an incident, the
clock's bands, what counts as unexplained) are in docs/report.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# `bodycam keys` seals these while the daemon is stopped: they never open a shift.
_BETWEEN_SHIFTS = frozenset({"enrollment", "key_rotation", "retirement"})
# The clock's bands, on the kernel's maximum error: docs/hardware.md's "synchronised" is
# under 16 s (NTP_PHASE_LIMIT); under 1 s is what a court reads to the second.
GOOD_CLOCK_US = 1_000_000
FAIR_CLOCK_US = 16_000_000
BATTERY_ALARMS = frozenset({"battery_low", "battery_critical"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def wall_us(value: Any) -> int | None:
    """A time in the chain's one format ("2026-11-28T05:25:56.095916Z") as µs since the
    epoch; None for anything else."""
    if not isinstance(value, str) or len(value) != 27 or value[-1] != "Z":
        return None
    try:
        moment = datetime.fromisoformat(value)  # strptime's format costs five times more
    except ValueError:
        return None
    return (moment - _EPOCH) // _MICROSECOND


def wall_text(us: int) -> str:
    """µs since the epoch in the chain's time format."""
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Span:
    """A band on the timeline: `kind` is notice, pre_event, clock:<band>, battery or
    alarm; times in µs since the epoch, UTC."""

    kind: str
    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Event:
    """A moment on the timeline: mark, photo, exemption, self_check, clock_step, boot,
    custody, purge or archive (the dock's copy holds the files)."""

    kind: str
    at: int
    label: str
    seq: int


@dataclass
class Recording:
    seq: int
    mode: str  # "video" or "audio" (audio-only)
    trigger: str
    start: int  # the record_start's wall
    end: int  # its record_stop's wall, else its last sealed segment's, else its start
    stop_reason: str | None  # None: the chain holds no record_stop for it
    pre_event_us: int = 0
    media_us: int = 0  # what its segments hold, pre-event included
    files: list[int] = field(default_factory=list)  # seqs of its segments and photos


@dataclass
class Interruption:
    seq: int
    cause: str
    detail: str
    start: int | None  # None: the gap's start is not known (a start refused by a fault)
    end: int
    recording_before: int | None
    recording_after: int | None
    explained_by: int | None = None  # seq of the voice note in which speech was heard

    @property
    def duration_us(self) -> int:
        return max(0, self.end - self.start) if self.start is not None else 0

    @property
    def explained(self) -> bool:
        return self.explained_by is not None


@dataclass
class Custody:
    at: int
    seq: int
    dock: str


@dataclass
class Incident:
    """A recording and the recordings that resumed it after interruptions (one incident)."""

    recordings: list[Recording]
    interruptions: list[Interruption] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)  # seqs of the marks made during it
    photos: list[int] = field(default_factory=list)  # seqs of the photos taken during it
    custody: Custody | None = None  # the custody that completed it: every file in custody
    purged_at: int | None = None  # the device deleted the last of its files then
    archived: bool = False  # the dock's copy read here holds every file

    @property
    def number(self) -> int:
        return self.recordings[0].seq

    @property
    def start(self) -> int:
        return min(r.start - r.pre_event_us for r in self.recordings)

    @property
    def end(self) -> int:
        return max([r.end for r in self.recordings] +
                   [i.end for i in self.interruptions if i.recording_after is None])

    @property
    def custody_delay_us(self) -> int | None:
        return self.custody.at - self.end if self.custody else None

    @property
    def files(self) -> list[int]:
        return [seq for recording in self.recordings for seq in recording.files]


@dataclass
class Figures:
    """What an auditor asks of a shift (or of all of them): µs, and counts."""

    recorded_us: int = 0
    audio_only_us: int = 0
    pre_event_us: int = 0
    interrupted_us: int = 0
    unexplained_us: int = 0
    interruptions: int = 0
    unexplained: int = 0
    incidents: int = 0
    in_custody: int = 0  # incidents whose every file is in a dock's custody
    awaiting_custody: int = 0  # incidents with a sealed file in no custody yet
    longest_custody_delay_us: int | None = None
    marks: int = 0
    photos: int = 0
    exemptions: int = 0

    def add(self, other: Figures) -> None:
        for name, value in vars(other).items():
            if name == "longest_custody_delay_us":
                if value is not None:
                    self.longest_custody_delay_us = max(self.longest_custody_delay_us or 0,
                                                        value)
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass
class Shift:
    number: int
    officer: str
    device: str
    start: int
    end: int
    began_by: str  # the record type that opened it
    ended_by: str  # "shutdown: <reason>", "officer returned", "officer changed to X", "open"
    incidents: list[Incident] = field(default_factory=list)
    interruptions: list[Interruption] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    restarts: int = 0  # boots without a shutdown before them: power loss or crash

    @property
    def recordings(self) -> list[Recording]:
        return [r for incident in self.incidents for r in incident.recordings]

    def figures(self) -> Figures:
        figures = Figures(incidents=len(self.incidents))
        for recording in self.recordings:
            figures.recorded_us += recording.media_us
            figures.pre_event_us += recording.pre_event_us
            if recording.mode == "audio":
                figures.audio_only_us += recording.media_us
        for gap in self.interruptions:
            figures.interruptions += 1
            figures.interrupted_us += gap.duration_us
            if not gap.explained:
                figures.unexplained += 1
                figures.unexplained_us += gap.duration_us
        delays = [i.custody_delay_us for i in self.incidents if i.custody_delay_us is not None]
        figures.in_custody = len(delays)
        figures.awaiting_custody = sum(1 for i in self.incidents if i.files and not i.custody)
        figures.longest_custody_delay_us = max(delays) if delays else None
        for event in self.events:
            if event.kind in ("mark", "photo", "exemption"):
                setattr(figures, f"{event.kind}s", getattr(figures, f"{event.kind}s") + 1)
        return figures


def analyse(records: Iterable[dict[str, Any]], held: set[int] | None = None,
            archived_at: int | None = None) -> list[Shift]:
    """The shifts in `records`, bodies in journal order, read once as they come (a
    year's chain need not be held); one without a seq or a time in the chain's format is
    left out. `held`: the seqs of the files a dock's copy holds, which it pulled last at
    `archived_at`."""
    reader = _Reader()
    for record in records:
        if _int(record.get("seq")) is not None and wall_us(record.get("wall")) is not None:
            reader.take(record)
    return reader.finish(held or set(), archived_at)


def select(shifts: list[Shift], officer: str | None = None, since: int | None = None,
           until: int | None = None) -> list[Shift]:
    """The shifts of `officer` that overlap [since, until], whole."""
    return [s for s in shifts if (officer is None or s.officer == officer)
            and (since is None or s.end >= since) and (until is None or s.start <= until)]


def total(shifts: list[Shift]) -> Figures:
    figures = Figures()
    for shift in shifts:
        figures.add(shift.figures())
    return figures


def clock_band(clock: Any) -> str:
    """good (synchronised, maximum error under 1 s), fair (synchronised, under 16 s) or
    poor (not synchronised, or the error not known)."""
    clock = _dict(clock)
    stratum, error = _int(clock.get("stratum")), _int(clock.get("max_error_us"))
    synced = clock.get("synced") is True or (stratum is not None and 1 <= stratum <= 15)
    if not synced or error is None or not 0 <= error < FAIR_CLOCK_US:
        return "poor"
    return "good" if error < GOOD_CLOCK_US else "fair"


class _Reader:
    """One pass over the records in seq order, then the incidents put together."""

    def __init__(self) -> None:
        self.shifts: list[Shift] = []
        self.open: Shift | None = None
        self.returned = False  # the open shift's officer returned the device
        self.shift_of: dict[int, Shift] = {}  # recording seq -> the shift it began in
        self.recordings: dict[int, Recording] = {}
        self.interruptions: list[Interruption] = []
        self.gaps: dict[int, Interruption] = {}
        self.custody: dict[int, Custody] = {}  # file seq -> the first custody holding it
        self.purged: dict[int, int] = {}  # file seq -> when its purge was sealed
        self.during: dict[int, tuple[str, int]] = {}  # mark/photo seq -> (kind, recording)
        self.alarms: dict[str, tuple[int, str]] = {}  # raised: name -> (since, value)
        self.clock: tuple[str, int] | None = None  # the band in force, since

    def take(self, record: dict[str, Any]) -> None:
        kind, seq, at = _text(record.get("type")), record["seq"], wall_us(record["wall"])
        assert at is not None
        payload = _dict(record.get("payload"))
        officer = _text(record.get("officer"))
        shift = self._shift_for(kind, officer, _text(record.get("device")), at)
        if shift is None:
            return
        shift.end = max(shift.end, at)
        self._clock(shift, clock_band(record.get("clock")), at)
        handler = getattr(self, f"_{kind}", None)
        if handler is not None:
            handler(shift, seq, at, payload)
        if kind == "shutdown" and not _text(payload.get("reason")).startswith(
                "camera_restart_failed"):  # the daemon restarts itself for a new camera
            self._close(shift, f"shutdown: {_text(payload.get('reason'), '?')}")
        elif kind == "officer_assigned":
            self.returned = payload.get("action") == "return"

    def _shift_for(self, kind: str, officer: str, device: str, at: int) -> Shift | None:
        """The open shift, or a new one: after a shutdown, when another officer's records
        begin, or when an officer's begin after a return. Records of no officer (before
        the issue, after the return) belong to the shift they fall in."""
        shift = self.open
        if shift is not None and officer and (self.returned or shift.officer not in
                                              ("", officer)):
            self._close(shift, "officer returned" if self.returned
                        else f"officer changed to {officer}")
            shift = None
        if shift is None:
            if kind in _BETWEEN_SHIFTS:
                return None
            shift = Shift(len(self.shifts) + 1, officer, device, at, at, kind, "open")
            self.shifts.append(shift)
            self.open = shift
        else:
            shift.officer = shift.officer or officer
            shift.restarts += kind == "boot"
        return shift

    def _close(self, shift: Shift, why: str) -> None:
        shift.ended_by = why
        self._clock(shift, None, shift.end)
        for name, (since, value) in self.alarms.items():
            shift.spans.append(_alarm_span(name, since, shift.end, value, open_=True))
        self.alarms.clear()
        self.open = None
        self.returned = False

    def _clock(self, shift: Shift, band: str | None, at: int) -> None:
        """Bands run from the record that showed them to the next that showed another."""
        if self.clock is not None and self.clock[0] != band:
            shift.spans.append(Span(f"clock:{self.clock[0]}", self.clock[1], at, self.clock[0]))
        if band is None:
            self.clock = None
        elif self.clock is None or self.clock[0] != band:
            self.clock = (band, at)

    def _record_start(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        mode = "audio" if payload.get("mode") == "audio" else "video"
        self.recordings[seq] = Recording(seq, mode, _text(payload.get("trigger"), "?"), at, at,
                                         None)
        self.shift_of[seq] = shift

    def _segment_sealed(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        recording = self.recordings.get(_int(payload.get("recording")) or 0)
        if recording is None:
            return
        recording.files.append(seq)
        recording.media_us += _media_us(payload)
        recording.pre_event_us += _int(_dict(payload.get("pre_event")).get("duration_us")) or 0
        if recording.stop_reason is None:
            recording.end = max(recording.end, at)

    def _record_stop(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        recording = self.recordings.get(_int(payload.get("recording")) or 0)
        if recording is not None and recording.stop_reason is None:
            recording.stop_reason = _text(payload.get("reason"), "?")
            recording.end = at

    def _notice_played(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        parts = [_dict(part) for part in _list(payload.get("parts"))]
        start = wall_us(parts[0].get("started")) if parts else None
        end = wall_us(parts[-1].get("ended")) if parts else None
        languages = ", ".join(_text(part.get("language"), "?") for part in parts)
        shift.spans.append(Span("notice", start or at, end or at, languages))

    def _interruption(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        gap = Interruption(seq, _text(payload.get("cause"), "?"), _text(payload.get("detail")),
                           wall_us(payload.get("start")), wall_us(payload.get("end")) or at,
                           _int(payload.get("recording_before")),
                           _int(payload.get("recording_after")))
        self.gaps[seq] = gap
        self.interruptions.append(gap)
        shift.interruptions.append(gap)

    def _voice_note(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        gap = self.gaps.get(_int(payload.get("interruption")) or 0)
        if gap is not None and gap.explained_by is None and payload.get("explained") is True:
            gap.explained_by = seq

    def _exemption(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        spoken = "reason spoken" if payload.get("explained") is True else "no speech heard"
        shift.events.append(Event("exemption", at, spoken, seq))

    def _mark(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        recording = _int(payload.get("recording"))
        if recording in self.recordings:
            self.during[seq] = ("marks", recording)
        shift.events.append(Event("mark", at, _text(payload.get("source"), "?"), seq))

    def _photo(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        recording = self.recordings.get(_int(payload.get("recording")) or 0)
        if recording is not None:
            recording.files.append(seq)
            self.during[seq] = ("photos", recording.seq)
        size = f"{_int(payload.get('width')) or '?'}×{_int(payload.get('height')) or '?'}"
        shift.events.append(Event("photo", at, size, seq))

    def _self_check(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        shift.events.append(Event("self_check", at, _text(payload.get("overall"), "?"), seq))

    def _clock_step(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        step = _int(payload.get("step_ns"))
        label = f"{step / 1e9:+.3f} s" if step is not None else "?"
        shift.events.append(Event("clock_step", at, label, seq))

    def _alarm(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        name, value = _text(payload.get("alarm"), "?"), _text(payload.get("value"))
        if payload.get("raised") is True:
            self.alarms.setdefault(name, (at, value))
        elif name in self.alarms:
            since, raised_value = self.alarms.pop(name)
            shift.spans.append(_alarm_span(name, since, at, raised_value))

    def _custody(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        dock = _text(_dict(payload.get("dock")).get("name"), "?")
        items = [_int(_dict(item).get("seq")) for item in _list(payload.get("segments"))]
        custody = Custody(at, seq, dock)
        for item in items:
            if item is not None:
                self.custody.setdefault(item, custody)
        shift.events.append(Event("custody", at, f"{dock}: {len(items)} files", seq))

    def _purge(self, shift: Shift, seq: int, at: int, payload: dict[str, Any]) -> None:
        items = [_int(_dict(item).get("seq")) for item in _list(payload.get("files"))]
        for item in items:
            if item is not None:
                self.purged.setdefault(item, at)
        shift.events.append(Event("purge", at, f"{len(items)} files", seq))

    def finish(self, held: set[int], archived_at: int | None) -> list[Shift]:
        if self.open is not None:
            self._close(self.open, "open")
        for incident in self._incidents():
            recording = incident.recordings[0]
            files = incident.files
            custody = [self.custody.get(seq) for seq in files]
            if files and None not in custody:
                incident.custody = max((c for c in custody if c), key=lambda c: c.at)
            if files and all(seq in self.purged for seq in files):
                incident.purged_at = max(self.purged[seq] for seq in files)
            incident.archived = bool(files) and set(files) <= held
            shift = self.shift_of[recording.seq]
            shift.incidents.append(incident)
            shift.start = min(shift.start, incident.start)  # its pre-event, before the boot
        if archived_at is not None and self.shifts:
            last = self.shifts[-1]
            last.events.append(Event("archive", archived_at, f"{len(held)} files", 0))
            last.end = max(last.end, archived_at)
        return self.shifts

    def _incidents(self) -> list[Incident]:
        """Recordings joined by the interruptions between them, in order of their start."""
        first: dict[int, int] = {seq: seq for seq in self.recordings}
        for gap in self.interruptions:
            before, after = gap.recording_before, gap.recording_after
            if before in first and after in first and after > before:
                first[after] = first[before]
        incidents: dict[int, Incident] = {}
        for seq in sorted(self.recordings):
            incidents.setdefault(first[seq], Incident([])).recordings.append(
                self.recordings[seq])
        for gap in self.interruptions:
            owner = gap.recording_before if gap.recording_before in first \
                else gap.recording_after
            if owner in first:
                incidents[first[owner]].interruptions.append(gap)
        for seq, (kind, recording) in sorted(self.during.items()):
            getattr(incidents[first[recording]], kind).append(seq)
        return list(incidents.values())


def _alarm_span(name: str, since: int, until: int, value: str, open_: bool = False) -> Span:
    kind = "battery" if name in BATTERY_ALARMS else "alarm"
    return Span(kind, since, until, f"{name}: {value}" + (" (not cleared)" if open_ else ""))


def _media_us(payload: dict[str, Any]) -> int:
    """The time a segment holds: its video's first to last frame and one frame more, or,
    without video (an audio-only recording), its audio's."""
    video, audio = _dict(payload.get("video")), _dict(payload.get("audio"))
    first, last, fps = (_int(video.get(k)) for k in ("first_pts_us", "last_pts_us", "fps"))
    if first is not None and last is not None and fps and fps > 0 and last >= first:
        return last - first + 1_000_000 // fps
    first, last = _int(audio.get("first_pts_us")), _int(audio.get("last_pts_us"))
    rate, per_packet = _int(audio.get("sample_rate")), _int(audio.get("samples_per_packet"))
    if first is not None and last is not None and rate and rate > 0 and last >= first:
        return last - first + (per_packet or 0) * 1_000_000 // rate
    return 0
