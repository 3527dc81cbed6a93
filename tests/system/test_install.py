"""scripts/install-pi and scripts/uninstall-pi, run into a temporary root (no apt here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hal.test_alsa_devices import PI4_LITE_USB_MIC

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "scripts" / name for name in ("install-pi", "uninstall-pi", "setup", "test")]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                                reason="the install scripts run as root with /usr/bin/python3")


def run(script: str, rootfs: Path, *args: str, arch: str | None = None,
        status: int = 0) -> str:
    """The script's output; `arch` fakes the architecture install-pi detects."""
    env = {**os.environ, **({"INSTALL_PI_ARCH": arch} if arch else {})}
    result = subprocess.run([str(ROOT / "scripts" / script), "--root", str(rootfs), *args],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == status, result.stdout + result.stderr
    return result.stdout + result.stderr


def make_rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    for name in ("passwd", "shadow", "gshadow"):
        shutil.copy(f"/etc/{name}", rootfs / "etc" / name)
    # Raspberry Pi OS has gpio and i2c groups; this machine does not.
    (rootfs / "etc" / "group").write_text(Path("/etc/group").read_text()
                                          + "gpio:x:997:\ni2c:x:998:\n")
    return rootfs


def test_install_is_idempotent_and_uninstall_keeps_the_footage(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    run("install-pi", rootfs, "--no-apt", "--no-deps")
    venv = rootfs / "opt" / "bodycam" / ".venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert "/usr/bin" in (venv / "pyvenv.cfg").read_text()  # the interpreter apt's picamera2 is for
    assert "agent.cli" in (venv / "bin" / "bodycam").read_text()
    config = rootfs / "etc" / "bodycam" / "config.toml"
    # This root has no /proc/asound: no card to name, so audio is off rather than "default".
    assert config.read_text() == (ROOT / "config" / "default.toml").read_text().replace(
        "enabled = true", "enabled = false", 1).replace("speaker = true", "speaker = false")
    unit = rootfs / "etc" / "systemd" / "system" / "bodycam.service"
    assert unit.read_text() == (ROOT / "systemd" / "bodycam.service").read_text()
    wants = unit.parent / "multi-user.target.wants" / "bodycam.service"
    assert wants.is_symlink()
    passwd = {line.split(":")[0]: line.split(":") for line in
              (rootfs / "etc" / "passwd").read_text().splitlines()}
    assert passwd["bodycam"][6] == "/usr/sbin/nologin"
    members = {line.split(":")[0]: line.split(":")[3].split(",") for line in
               (rootfs / "etc" / "group").read_text().splitlines()}
    assert all("bodycam" in members[group] for group in ("video", "audio", "gpio", "i2c"))
    store = rootfs / "var" / "lib" / "bodycam"
    assert store.stat().st_uid == int(passwd["bodycam"][2])
    assert oct(store.stat().st_mode & 0o777) == "0o750"

    # Installing again on the same board leaves an unedited config alone, without a word.
    installed = config.read_text()
    assert "kept the edited" not in run("install-pi", rootfs, "--no-apt", "--no-deps")
    assert config.read_text() == installed and not (config.parent / "config.toml.dist").exists()

    # The officer's agency edited the config and recorded; installing again keeps both.
    config.write_text(config.read_text().replace('id = "BWC-0001"', 'id = "BWC-0042"'))
    footage = store / "sealed" / "00000005.ts"
    footage.parent.mkdir()
    footage.write_bytes(b"\x47" * 188)
    out = run("install-pi", rootfs, "--no-apt", "--no-deps")
    assert "kept the edited" in out
    assert 'id = "BWC-0042"' in config.read_text()
    assert (config.parent / "config.toml.dist").read_text() == installed
    assert [line for line in (rootfs / "etc" / "passwd").read_text().splitlines()
            if line.startswith("bodycam:")] == [":".join(passwd["bodycam"])]

    run("uninstall-pi", rootfs)
    assert not (rootfs / "opt" / "bodycam").exists()
    assert not unit.exists() and not wants.exists()
    assert footage.read_bytes() == b"\x47" * 188
    assert 'id = "BWC-0042"' in config.read_text()


def apt_list(output: str) -> set[str]:
    line = next(line for line in output.splitlines() if line.startswith("install-pi: apt "))
    return set(line.split(": ")[-1].split())


def test_the_architecture_decides_what_comes_from_apt_and_what_is_refused(
        tmp_path: Path) -> None:
    """PyPI has wheels of every dependency for aarch64; for armv7l none of numpy, Pillow or
    cffi (docs/hardware.md): numpy comes from apt, the other two are built with apt's
    headers. armv6l is refused before anything is installed. The device needs no ffmpeg."""
    rootfs = make_rootfs(tmp_path)
    arm64 = apt_list(run("install-pi", rootfs, "--no-apt", "--no-deps", arch="aarch64"))
    assert {"python3-picamera2", "python3-lgpio", "libportaudio2"} <= arm64
    assert not arm64 & {"ffmpeg", "portaudio19-dev", "python3-numpy"}
    armhf = apt_list(run("install-pi", rootfs, "--no-apt", "--no-deps", arch="armv7l"))
    assert armhf - arm64 == {"python3-numpy", "libffi-dev", "libjpeg-dev", "zlib1g-dev",
                             "libfreetype-dev", "pkg-config"}

    fresh = make_rootfs(tmp_path / "armv6")
    refused = run("install-pi", fresh, "--no-apt", "--no-deps", arch="armv6l", status=2)
    assert refused.startswith("install-pi: armv6l is not supported: PyPI has no wheels"), refused
    assert len(refused.splitlines()) == 1
    assert not (fresh / "opt").exists() and not (fresh / "var").exists()


def test_install_names_the_boards_microphone_and_speaker(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    asound = rootfs / "proc" / "asound"
    asound.mkdir(parents=True)
    (asound / "cards").write_text(PI4_LITE_USB_MIC[0])
    (asound / "pcm").write_text(PI4_LITE_USB_MIC[1])

    out = run("install-pi", rootfs, "--no-apt", "--no-deps")

    assert "install-pi: audio: microphone: [audio] input_device = 'USB PnP Sound Device'" in out
    config = (rootfs / "etc" / "bodycam" / "config.toml").read_text()
    assert 'input_device = "USB PnP Sound Device"' in config
    assert 'output_device = "bcm2835 Headphones"' in config
    # Installing again, now with no microphone plugged in, leaves the config as it is.
    (asound / "pcm").write_text(PI4_LITE_USB_MIC[1].replace("03-00", "#"))
    run("install-pi", rootfs, "--no-apt", "--no-deps")
    assert (rootfs / "etc" / "bodycam" / "config.toml").read_text() == config


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_the_scripts_pass_shellcheck() -> None:
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
