"""Which ALSA card a system service should record from and play through, chosen at install.

ALSA's `default` is no answer for a service: on Raspberry Pi OS Lite it has no capture,
and on Desktop it leads to the logged-in user's PipeWire, which a system service cannot
reach. So the installer names a card, read from the kernel's own lists
(/proc/asound/cards and /proc/asound/pcm, the format of sound/core/init.c and pcm.c),
which need no audio library and no running sound server. The name written is the card's
short name: PortAudio names each device "<card short name>: <pcm name> (hw:C,D)", so it
matches by substring however the USB ports were plugged. HDMI outputs are never chosen: a
body-worn camera has no monitor to hear them.

Stdlib only, so that the installer can run it before anything else works:
    python -m hal.alsa_devices [--asound DIR] [--write CONFIG]
"""

from __future__ import annotations

import argparse
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.durable import write_file

ASOUND = Path("/proc/asound")
_CARD = re.compile(r"^\s*(\d+) \[(.{15})\]: (\S+) - (.*)$")
_PCM = re.compile(r"^(\d+)-(\d+): (.*)$")
_NOT_HEARD = re.compile(r"hdmi|loopback", re.IGNORECASE)  # no one in the street hears these


@dataclass(frozen=True)
class AlsaCard:
    index: int
    driver: str
    name: str          # the short name: how PortAudio's device names begin
    capture: bool
    playback: bool

    @property
    def heard(self) -> bool:
        """False for outputs and inputs that are not a microphone or speaker on the body."""
        return not (_NOT_HEARD.search(self.driver) or _NOT_HEARD.search(self.name))


@dataclass(frozen=True)
class AudioChoice:
    input_device: str | None   # None: no card can record
    output_device: str | None  # None: no card can be heard
    cards: tuple[AlsaCard, ...]


def read_cards(cards_text: str, pcm_text: str) -> list[AlsaCard]:
    """The cards of /proc/asound/cards with the streams /proc/asound/pcm gives their PCMs."""
    streams: dict[int, set[str]] = {}
    for line in pcm_text.splitlines():
        match = _PCM.match(line)
        if match:
            fields = {f.split(" ")[0] for f in match[3].split(" : ")
                      if re.fullmatch(r"(playback|capture) \d+", f)}
            streams.setdefault(int(match[1]), set()).update(fields)
    cards = []
    for line in cards_text.splitlines():
        match = _CARD.match(line)
        if match:
            index = int(match[1])
            kinds = streams.get(index, set())
            cards.append(AlsaCard(index, match[3], match[4].strip(), "capture" in kinds,
                                  "playback" in kinds))
    return cards


def choose(cards: list[AlsaCard]) -> AudioChoice:
    """The first card that records, and a card that plays: the microphone's own if it has a
    speaker (a USB speaker-microphone), else the first other."""
    microphones = [c for c in cards if c.capture and c.heard]
    speakers = [c for c in cards if c.playback and c.heard]
    mic = microphones[0] if microphones else None
    speaker = mic if mic in speakers else (speakers[0] if speakers else None)
    return AudioChoice(mic.name if mic else None, speaker.name if speaker else None,
                       tuple(cards))


def read_choice(asound: Path) -> AudioChoice:
    """The choice over a /proc/asound; none at all where the kernel has no sound."""
    try:
        cards, pcm = ((asound / name).read_text() for name in ("cards", "pcm"))
    except FileNotFoundError:
        return AudioChoice(None, None, ())
    return choose(read_cards(cards, pcm))


def write_choice(config: Path, choice: AudioChoice) -> None:
    """Name the chosen cards in the [audio] section of `config`, comments kept; a part with
    no card is switched off (enabled = false, speaker = false) rather than left on ALSA's
    default."""
    values = {
        "input_device": f'"{choice.input_device or ""}"',
        "output_device": f'"{choice.output_device or ""}"',
    }
    if choice.input_device is None:
        values["enabled"] = "false"
    if choice.output_device is None:
        values["speaker"] = "false"
    lines, section = config.read_text().splitlines(keepends=True), ""
    for i, line in enumerate(lines):
        heading = re.match(r"^\[([^\]]+)\]", line)
        section = heading[1] if heading else section
        key = re.match(r"^(\w+)(\s*=\s*)(\"[^\"]*\"|\w+)(.*)$", line, re.DOTALL)
        if section == "audio" and key and key[1] in values:
            lines[i] = f"{key[1]}{key[2]}{values.pop(key[1])}{key[4]}"
    if values:
        raise ValueError(f"{config}: [audio] has no line for {', '.join(sorted(values))}")
    write_file(config, "".join(lines).encode(), mode=stat.S_IMODE(config.stat().st_mode))


def describe(choice: AudioChoice) -> list[str]:
    """What was chosen, and what to do where nothing was, one line each."""
    found = ", ".join(f"card {c.index} {c.name!r}"
                      + "".join(f" ({k})" for k, on in (("capture", c.capture),
                                                        ("playback", c.playback)) if on)
                      for c in choice.cards) or "no sound card"
    lines = [f"ALSA cards: {found}"]
    if choice.input_device is None:
        lines.append("no card can record: [audio] enabled = false, recordings have no sound; "
                     "plug in a USB or I2S microphone, then set input_device to its name "
                     "and enabled = true")
    else:
        lines.append(f"microphone: [audio] input_device = {choice.input_device!r}")
    if choice.output_device is None:
        lines.append("no card can be heard (HDMI is not): [audio] speaker = false, prompts "
                     "are not played; add a USB or I2S speaker, then set output_device to its "
                     "name and speaker = true")
    else:
        lines.append(f"speaker: [audio] output_device = {choice.output_device!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hal.alsa_devices",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--asound", type=Path, default=ASOUND,
                        help=f"the kernel's ALSA lists (default {ASOUND})")
    parser.add_argument("--write", type=Path, metavar="CONFIG",
                        help="name the chosen cards in this TOML configuration's [audio]")
    args = parser.parse_args(argv)
    choice = read_choice(args.asound)
    for line in describe(choice):
        print(line)
    if args.write:
        try:
            write_choice(args.write, choice)
        except (OSError, ValueError) as exc:
            print(f"hal.alsa_devices: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
