"""The installer's choice of microphone and speaker, over the kernel's lists of real boards.

The card lines follow sound/core/init.c's format and the PCM lines sound/core/pcm.c's. The
Pi 4 lines are those of a Pi 4 on Raspberry Pi OS Lite reported in RPi-Distro/raspi-config
issue 197 (its HDMI cards and headphone jack), the Pi 3 report's from the ALSA information
database (alsa-project.org/db/?f=a4f3fd39d7d619119aec910385a9593a67431072); the USB devices
added to them carry the names those devices report (a C-Media "USB PnP Sound Device"
microphone, a Jabra speakerphone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from hal.alsa_devices import choose, main, read_cards, read_choice

PI4_LITE_USB_MIC = ("""\
 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 2 [vc4hdmi1       ]: vc4-hdmi - vc4-hdmi-1
                      vc4-hdmi-1
 3 [Device         ]: USB-Audio - USB PnP Sound Device
                      C-Media Electronics Inc. USB PnP Sound Device at usb-0000:01:00.0-1.3
""", """\
00-00: bcm2835 Headphones : bcm2835 Headphones : playback 8
01-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1
02-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1
03-00: USB Audio : USB Audio : capture 1
""")

# A Pi 5 has no headphone jack: HDMI only, until the speakerphone is plugged in.
PI5_USB_SPEAKERPHONE = ("""\
 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 1 [vc4hdmi1       ]: vc4-hdmi - vc4-hdmi-1
                      vc4-hdmi-1
 2 [USB            ]: USB-Audio - Jabra SPEAK 410 USB
                      Jabra Jabra SPEAK 410 USB at usb-xhci-hcd.0-1, full speed
""", """\
00-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1
01-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1
02-00: USB Audio : USB Audio : playback 1 : capture 1
""")

# Raspberry Pi OS Desktop runs PipeWire for the logged-in user; the kernel's cards are the
# same, and a card is what a system service must be given.
PI3_DESKTOP_WEBCAM_AND_CODEC = ("""\
 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones
                      bcm2835 Headphones
 1 [Webcam         ]: USB-Audio - Dynex 1.3MP Webcam
                      Dynex Dynex 1.3MP Webcam at usb-3f980000.usb-1.2.1, high speed
 2 [CODEC          ]: USB-Audio - USB Audio CODEC
                      Burr-Brown from TI USB Audio CODEC at usb-3f980000.usb-1.2.2, full speed
 3 [vc4hdmi        ]: vc4-hdmi - vc4-hdmi
                      vc4-hdmi
""", """\
00-00: bcm2835 Headphones : bcm2835 Headphones : playback 8
01-00: USB Audio : USB Audio : capture 1
02-00: USB Audio : USB Audio : playback 1 : capture 1
03-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1
""")

NO_CARDS = ("--- no soundcards ---\n", "")


def chosen(lists: tuple[str, str]) -> tuple[str | None, str | None]:
    choice = choose(read_cards(*lists))
    return choice.input_device, choice.output_device


def test_a_pi4_records_from_its_usb_microphone_and_speaks_through_the_jack() -> None:
    assert chosen(PI4_LITE_USB_MIC) == ("USB PnP Sound Device", "bcm2835 Headphones")


def test_a_pi5_uses_the_speakerphone_for_both_and_never_hdmi() -> None:
    assert chosen(PI5_USB_SPEAKERPHONE) == ("Jabra SPEAK 410 USB", "Jabra SPEAK 410 USB")
    assert chosen((PI5_USB_SPEAKERPHONE[0], PI5_USB_SPEAKERPHONE[1].replace(
        "playback 1 : capture 1", "capture 1"))) == ("Jabra SPEAK 410 USB", None)


def test_a_desktop_gets_a_card_not_the_users_sound_server() -> None:
    assert chosen(PI3_DESKTOP_WEBCAM_AND_CODEC) == ("Dynex 1.3MP Webcam", "bcm2835 Headphones")


def test_the_name_chosen_finds_the_device_among_portaudios_names() -> None:
    # PortAudio's ALSA host API names a device "<card name>: <pcm name> (hw:C,D)"; the
    # runtime matches [audio] input_device as a substring of that.
    portaudio_name = "USB PnP Sound Device: Audio (hw:3,0)"
    assert chosen(PI4_LITE_USB_MIC)[0] in portaudio_name


@pytest.mark.parametrize("lists", [NO_CARDS, (PI5_USB_SPEAKERPHONE[0].split(" 2 [")[0],
                                              PI5_USB_SPEAKERPHONE[1].split("02-00")[0])])
def test_no_card_switches_the_part_off_and_says_so(
        lists: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asound = tmp_path / "asound"
    asound.mkdir()
    (asound / "cards").write_text(lists[0])
    (asound / "pcm").write_text(lists[1])
    config = tmp_path / "config.toml"
    default = (Path(__file__).resolve().parents[2] / "config" / "default.toml").read_text()
    config.write_text(default)

    assert main(["--asound", str(asound), "--write", str(config)]) == 0

    out = capsys.readouterr().out
    assert "no card can record: [audio] enabled = false" in out
    assert "no card can be heard (HDMI is not): [audio] speaker = false" in out

    audio = load_config(config)[0].audio
    assert (audio.enabled, audio.speaker, audio.input_device) == (False, False, "")
    assert config.read_text().replace("enabled = false", "enabled = true", 1) \
        .replace("speaker = false", "speaker = true") == default


def test_the_chosen_names_go_into_the_config_with_its_comments(tmp_path: Path) -> None:
    asound = tmp_path / "asound"
    asound.mkdir()
    (asound / "cards").write_text(PI4_LITE_USB_MIC[0])
    (asound / "pcm").write_text(PI4_LITE_USB_MIC[1])
    config = tmp_path / "config.toml"
    config.write_text((Path(__file__).resolve().parents[2] / "config" / "default.toml")
                      .read_text())

    assert main(["--asound", str(asound), "--write", str(config)]) == 0


    audio = load_config(config)[0].audio
    assert (audio.input_device, audio.output_device) == ("USB PnP Sound Device",
                                                         "bcm2835 Headphones")
    assert audio.enabled and audio.speaker
    assert 'input_device = "USB PnP Sound Device"             # substring' in config.read_text()


def test_a_board_without_proc_asound_has_no_cards(tmp_path: Path) -> None:
    assert read_choice(tmp_path / "nothing").cards == ()
