"""The report as one self-contained HTML file: inline CSS, the timelines as inline SVG, no
script and nothing fetched, so it opens offline on any machine. Labels in Chinese and
English: supervisors read it. What is drawn comes from timeline.py; this module only draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape

from agent.evidence.report.source import StoreReport, Window
from agent.evidence.report.timeline import Event, Figures, Incident, Interruption, Shift

# The picture's colours: red for video and yellow for audio, as the device's indicators.
COLOURS = {
    "video": "#d32f2f", "audio": "#fbc02d", "pre_event": "#ef9a9a",
    "explained": "#9e9e9e", "unexplained": "#6a1b9a", "notice": "#1976d2",
    "clock:good": "#66bb6a", "clock:fair": "#c0ca33", "clock:poor": "#8d6e63",
    "battery": "#f57c00", "alarm": "#78909c",
    "mark": "#c2185b", "photo": "#0097a7", "exemption": "#5d4037", "self_check": "#455a64",
    "clock_step": "#8d6e63", "custody": "#283593", "purge": "#000000", "archive": "#283593",
}
LANE_BACKGROUND = "#eef1f4"
LABELS = {
    "video": ("视频录制", "video recording"), "audio": ("仅录音", "audio only"),
    "pre_event": ("预录", "pre-event buffer"),
    "explained": ("中断（已说明）", "interruption, explained"),
    "unexplained": ("中断（未说明）", "interruption, unexplained"),
    "notice": ("告知", "notice played"), "clock:good": ("时钟良好 <1 s", "clock good, <1 s"),
    "clock:fair": ("时钟一般 <16 s", "clock fair, <16 s"),
    "clock:poor": ("时钟未同步", "clock not synchronised"),
    "battery": ("电量告警", "battery alarm"),
    "alarm": ("其他告警", "other alarm"), "mark": ("重要标记", "important mark"),
    "photo": ("照片", "photo"), "exemption": ("免录声明", "exemption"),
    "self_check": ("自检", "self-check"), "clock_step": ("校时", "clock set"),
    "custody": ("移交", "custody"), "purge": ("设备删除", "purged on device"),
    "archive": ("已归档", "archived at dock"),
}
# The lanes of a timeline, top to bottom: (Chinese, English), what each draws.
_LANES = (("录制", "recording"), ("告知", "notice"), ("标记/照片", "marks, photos"),
          ("时钟", "clock"), ("电池", "battery"), ("告警", "alarms"), ("移交", "custody"))
_EVENT_LANE = {"mark": 2, "photo": 2, "exemption": 2, "self_check": 2, "clock_step": 3,
               "custody": 6, "purge": 6, "archive": 6}
_SPAN_LANE = {"notice": 1, "battery": 4, "alarm": 5}
_WIDTH, _LEFT, _RIGHT, _TOP, _LANE, _GAP = 1000, 150, 985, 26, 18, 5
_TICKS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
            43200, 86400)

_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:24px;
color:#212529;max-width:1040px}
h1{font-size:22px}h2{font-size:19px;margin-top:28px}h3{font-size:16px;margin-top:22px}
h4{font-size:14px;margin:14px 0 4px}
.verdict{padding:10px 14px;border-radius:4px;margin:10px 0}
.ok{background:#e8f5e9;border:1px solid #66bb6a}.fail{background:#ffebee;border:2px solid #c62828}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
td,th{border:1px solid #ced4da;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5}.bad{color:#b71c1c;font-weight:bold}.num{text-align:right}
.legend span{display:inline-block;margin:2px 10px 2px 0;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
svg{display:block;margin:6px 0}small{color:#6c757d}p{font-size:14px}
"""


@dataclass(frozen=True)
class _Scale:
    start: int
    end: int

    def x(self, at: int) -> float:
        span = max(1, self.end - self.start)
        return _LEFT + (min(max(at, self.start), self.end) - self.start) * (_RIGHT - _LEFT) / span


def render(reports: list[StoreReport], window: Window, generated_us: int,
           zone: tzinfo = UTC) -> str:
    """The whole page; `generated_us` is when it was made, `zone` the one its times are in."""
    failed = [r for r in reports if not r.verified.ok]
    top = (f'<div class="verdict fail"><strong>未通过验证 NOT VERIFIED</strong>: '
           f'{len(failed)} of {len(reports)} store(s) failed verification; what the records '
           'still show is drawn below each store\'s findings. 以下内容不可作为已验证证据。</div>'
           if failed else
           f'<div class="verdict ok"><strong>已验证 Verified</strong>: every store '
           f'({len(reports)}) verified before it was drawn.</div>')
    chosen = [f"officer {window.officer}"] if window.officer else []
    chosen += [f"from {_when(window.since, zone)}"] if window.since is not None else []
    chosen += [f"to {_when(window.until, zone)}"] if window.until is not None else []
    return "".join([
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">',
        "<title>执法记录仪报告 Body camera report</title>",
        f"<style>{_CSS}</style></head><body>\n", top,
        "<h1>执法记录仪报告 Body camera report</h1>",
        f"<p><small>生成 Generated {_when(generated_us, zone)}; "
        f"{escape(', '.join(chosen) or 'every shift 全部班次')}; times in {escape(str(zone))}"
        "</small></p>", _legend(),
        *(_store(report, zone) for report in reports), "</body></html>\n"])


def _store(report: StoreReport, zone: tzinfo) -> str:
    verified = report.verified
    if verified.ok:
        verdict = (f'<div class="verdict ok"><strong>已验证 Verified</strong>: '
                   f"{escape(verified.summary())}</div>")
    else:
        shown = verified.findings[:50]
        more = (f"<li>… and {len(verified.findings) - len(shown)} more</li>"
                if len(verified.findings) > len(shown) else "")
        verdict = ('<div class="verdict fail"><strong>未通过验证 NOT VERIFIED</strong>: '
                   f"{len(verified.findings)} finding(s); the picture below is drawn from the "
                   "records as they stand and proves nothing 以下图表仅供参考<ul>"
                   + "".join(f"<li>{escape(str(f))}</li>" for f in shown) + more + "</ul></div>")
    shifts = "".join(_shift(shift, zone) for shift in report.shifts) or (
        f"<p>没有符合条件的班次 No shift matches ({report.all_shifts} in the chain).</p>")
    figures = _figures(report.figures, f"{len(report.shifts)} shift(s) 班次")
    return (f"<section><h2>设备 Device {escape(report.device)} "
            f"<small>{escape(report.store)}</small></h2>{verdict}{figures}{shifts}</section>\n")


def _shift(shift: Shift, zone: tzinfo) -> str:
    restarts = (f"; restarted {shift.restarts}× after power loss or crash 断电/崩溃重启"
                if shift.restarts else "")
    ended = ("no shutdown: the chain ends while it runs (a copy, or still running)"
             if shift.ended_by == "open" else shift.ended_by)
    head = (f"<h3>班次 Shift {shift.number} · 警员 officer {escape(shift.officer or '—')} · "
            f"{_when(shift.start, zone)} – {_when(shift.end, zone)}</h3>"
            f"<p><small>began with {escape(shift.began_by)}, ended by "
            f"{escape(ended)}{escape(restarts)}</small></p>")
    incidents = "".join(_incident(shift, incident, zone) for incident in shift.incidents)
    gaps = _interruptions(shift.interruptions, zone)
    return (head + _figures(shift.figures(), "this shift 本班次")
            + _timeline(shift, _Scale(shift.start, shift.end), zone,
                        f"shift {shift.number} timeline")
            + gaps + incidents)


def _incident(shift: Shift, incident: Incident, zone: tzinfo) -> str:
    pad = max(1_000_000, (incident.end - incident.start) // 20)
    rows = "".join(
        f"<tr><td>{r.seq}</td><td>{_name(r.mode)}</td><td>{escape(r.trigger)}</td>"
        f"<td>{_when(r.start, zone)}</td><td>{_when(r.end, zone)}</td>"
        f"<td>{escape(r.stop_reason or 'no stop record 无停止记录')}</td>"
        f'<td class="num">{_duration(r.media_us)}</td>'
        f'<td class="num">{_duration(r.pre_event_us)}</td></tr>'
        for r in incident.recordings)
    custody = incident.custody
    delay = incident.custody_delay_us
    if custody:
        held = (f"移交 custody {_when(custody.at, zone)} by {escape(custody.dock)} (record "
                f"{custody.seq}), {_duration(delay or 0)} after the incident ended")
    elif incident.files:
        held = '<span class="bad">未移交 not yet in custody</span>'
    else:
        held = "无封存文件 no file sealed, nothing to take into custody"
    if incident.purged_at is not None:
        held += f"; 设备已删除 purged on the device {_when(incident.purged_at, zone)}"
    if incident.archived:
        held += "; 已归档 held in this dock's evidence folder"
    marked = (f" · 重要标记 marked ×{len(incident.marks)}" if incident.marks else "") + (
        f" · 照片 photos ×{len(incident.photos)}" if incident.photos else "")
    return (f"<h4>事件 Incident {incident.number}: {_when(incident.start, zone)} – "
            f"{_when(incident.end, zone)}{marked}</h4>"
            "<table><tr><th>录制 Recording</th><th>方式 Mode</th><th>触发 Trigger</th>"
            "<th>开始 Start</th><th>结束 End</th><th>停止原因 Stop</th><th>时长 Recorded</th>"
            f"<th>预录 Pre-event</th></tr>{rows}</table><p>{held}</p>"
            + _timeline(shift, _Scale(incident.start - pad, incident.end + pad), zone,
                        f"incident {incident.number} timeline"))


def _interruptions(gaps: list[Interruption], zone: tzinfo) -> str:
    if not gaps:
        return ""
    rows = "".join(
        f"<tr><td>{g.seq}</td><td>{escape(g.cause)}</td><td>{_when(g.start, zone)}</td>"
        f'<td>{_when(g.end, zone)}</td><td class="num">{_duration(g.duration_us)}</td><td>'
        + (f"是 yes (voice note {g.explained_by})" if g.explained else
           '<span class="bad">否 NO</span>') + f"</td><td>{escape(g.detail)}</td></tr>"
        for g in gaps)
    return ("<table><tr><th>中断 Interruption</th><th>原因 Cause</th><th>开始 Start</th>"
            "<th>结束 End</th><th>时长 Length</th><th>已说明 Explained</th>"
            f"<th>详情 Detail</th></tr>{rows}</table>")


def _figures(figures: Figures, of: str) -> str:
    unexplained = "bad" if figures.unexplained_us or figures.unexplained else ""
    delay = figures.longest_custody_delay_us
    rows = [
        ("录制时长", "minutes recorded", _duration(figures.recorded_us),
         f"pre-event 预录 {_duration(figures.pre_event_us)}; audio only 仅录音 "
         f"{_duration(figures.audio_only_us)}", ""),
        ("中断时长", "minutes interrupted", _duration(figures.interrupted_us),
         f"{figures.interruptions} interruption(s)", ""),
        ("未说明时长", "unexplained minutes (target 0)", _duration(figures.unexplained_us),
         f"{figures.unexplained} unexplained", unexplained),
        ("移交用时", "incident end to custody (longest)",
         _duration(delay) if delay is not None else "—",
         f"{figures.in_custody} of {figures.incidents} incident(s) in custody, "
         f"{figures.awaiting_custody} awaiting it", "bad" if figures.awaiting_custody else ""),
        ("标记/照片/免录", "marks, photos, exemptions",
         f"{figures.marks} / {figures.photos} / {figures.exemptions}", "", ""),
    ]
    body = "".join(f'<tr><th>{zh} {en}</th><td class="num {css}">{value}</td><td>{note}</td></tr>'
                   for zh, en, value, note, css in rows)
    return f"<table><caption><small>{escape(of)}</small></caption>{body}</table>"


def _legend() -> str:
    """Each colour with what it means; a moment's kind with its shape."""
    return '<p class="legend">' + "".join(
        f'<span>{_swatch(kind, colour)}{_name(kind)}</span>' for kind, colour in COLOURS.items()
    ) + "</p>"


def _swatch(kind: str, colour: str) -> str:
    if kind not in _EVENT_LANE:
        return f'<i style="background:{colour}"></i>'
    return ('<svg width="16" height="18" viewBox="-8 0 16 18" style="display:inline;'
            f'vertical-align:-4px;margin:0 3px 0 0">{_shape(kind, 0, 0)}</svg>')


def _timeline(shift: Shift, scale: _Scale, zone: tzinfo, title: str) -> str:
    """Lanes over a time axis: bars for what lasts, marks for moments, a <title> on each."""
    height = _TOP + len(_LANES) * (_LANE + _GAP) + 4
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
           f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="{escape(title)}" '
           'font-size="11">']
    for lane, (zh, en) in enumerate(_LANES):
        y = _y(lane)
        out.append(f'<text x="4" y="{y + 13}">{zh} {en}</text>'
                   f'<rect x="{_LEFT}" y="{y}" width="{_RIGHT - _LEFT}" height="{_LANE}" '
                   f'fill="{LANE_BACKGROUND}"/>')
    out += _axis(scale, zone, height)
    for recording in shift.recordings:
        start = recording.start - recording.pre_event_us
        if recording.pre_event_us:
            out.append(_bar(scale, 0, start, recording.start, "pre_event",
                            f"pre-event {_duration(recording.pre_event_us)}", zone,
                            before=True))
        out.append(_bar(scale, 0, recording.start, recording.end, recording.mode,
                        f"recording {recording.seq} ({recording.trigger}), "
                        f"{_duration(recording.media_us)}", zone))
    for gap in shift.interruptions:
        kind = "explained" if gap.explained else "unexplained"
        out.append(_bar(scale, 0, gap.start if gap.start is not None else gap.end, gap.end,
                        kind, f"interruption {gap.seq}: {gap.cause}, "
                        f"{_duration(gap.duration_us)}", zone))
    for span in shift.spans:
        lane = 3 if span.kind.startswith("clock:") else _SPAN_LANE[span.kind]
        out.append(_bar(scale, lane, span.start, span.end, span.kind, span.label, zone))
    out += [_marker(scale, event, zone) for event in shift.events]
    out.append("</svg>")
    return "".join(part for part in out if part)


def _axis(scale: _Scale, zone: tzinfo, height: int) -> list[str]:
    seconds = max(1, (scale.end - scale.start) // 1_000_000)
    step = next((s for s in _TICKS_S if seconds / s <= 8), _TICKS_S[-1])
    origin = _local(scale.start, zone)
    first = origin.replace(microsecond=0) + timedelta(seconds=1)
    into = (first.hour * 3600 + first.minute * 60 + first.second) % step
    tick = first + timedelta(seconds=(step - into) % step)
    shape = "%H:%M:%S" if step < 60 else "%H:%M"
    out = []
    while (at := scale.start + (tick - origin) // timedelta(microseconds=1)) <= scale.end:
        x = scale.x(at)
        out.append(f'<line x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{height - 2}" '
                   f'stroke="#adb5bd" stroke-width="0.5"/><text x="{x:.1f}" y="{_TOP - 9}" '
                   f'text-anchor="middle">{tick.strftime(shape)}</text>')
        tick += timedelta(seconds=step)
    return out


def _bar(scale: _Scale, lane: int, start: int, end: int, kind: str, label: str,
         zone: tzinfo, before: bool = False) -> str:
    """A bar at least 2 px wide, so that a gap of a millisecond is still seen; `before`:
    one that must end where it ends (the pre-event buffer, before its recording's bar)."""
    if end < scale.start or start > scale.end:
        return ""
    x0, x1 = scale.x(start), scale.x(end)
    width = max(2.0, x1 - x0)
    x0 = x1 - width if before else x0
    return (f'<rect x="{x0:.1f}" y="{_y(lane) + 2}" width="{width:.1f}" height="{_LANE - 4}" '
            f'fill="{COLOURS[kind]}"><title>{_name(kind)}: {escape(label)}, '
            f"{_when(start, zone)} – {_when(end, zone)}</title></rect>")


def _marker(scale: _Scale, event: Event, zone: tzinfo) -> str:
    if not scale.start <= event.at <= scale.end:
        return ""
    title = f"<title>{_name(event.kind)}: {escape(event.label)}, {_when(event.at, zone)}</title>"
    return _shape(event.kind, scale.x(event.at), _y(_EVENT_LANE[event.kind]), title)


def _shape(kind: str, x: float, y: int, title: str = "") -> str:
    """A moment's mark, centred on x in the 18 px lane from y: a flag for a mark, a circle
    for a photo, squares for custody (filled) and the dock's copy (open), else a diamond."""
    colour = COLOURS[kind]
    if kind == "photo":
        return f'<circle cx="{x:.1f}" cy="{y + 9}" r="5" fill="{colour}">{title}</circle>'
    if kind == "mark":
        return (f'<path d="M{x:.1f} {y + 17}V{y + 1}l9 4-9 4" stroke="{colour}" '
                f'stroke-width="2" fill="{colour}">{title}</path>')
    if kind in ("custody", "archive"):
        fill = colour if kind == "custody" else "none"
        return (f'<rect x="{x - 5:.1f}" y="{y + 4}" width="10" height="10" fill="{fill}" '
                f'stroke="{colour}" stroke-width="2">{title}</rect>')
    return f'<path d="M{x:.1f} {y + 3}l6 6-6 6-6-6z" fill="{colour}">{title}</path>'


def _y(lane: int) -> int:
    return _TOP + lane * (_LANE + _GAP)


def _name(kind: str) -> str:
    zh, en = LABELS.get(kind, (kind, kind))
    return f"{zh} {escape(en)}"


def _local(us: int, zone: tzinfo) -> datetime:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).astimezone(zone)


def _when(us: int | None, zone: tzinfo) -> str:
    """A moment as the court reads it: local date and time with the zone's offset."""
    if us is None:
        return "—"
    moment = _local(us, zone)
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


def _duration(us: int) -> str:
    seconds = us / 1_000_000
    if seconds < 600:
        return f"{seconds / 60:.1f} min ({seconds:.1f} s)"
    return f"{seconds / 60:.1f} min"

