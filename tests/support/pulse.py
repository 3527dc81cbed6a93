"""A private PulseAudio whose null sink is a real loopback: what a test plays, it records.

PortAudio reaches it through ALSA's pulse plugin. The environment is set before
any backend opens a device, and PortAudio is re-initialised if sounddevice was
imported earlier, because PortAudio reads its device list only when initialised.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
START_TIMEOUT_S = 10.0

DEFAULT_PA = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=nullsink rate=48000 channels=2
set-default-sink nullsink
set-default-source nullsink.monitor
"""

ASOUNDRC = """\
pcm.!default { type pulse }
ctl.!default { type pulse }
"""


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PULSE_SERVER of a PulseAudio with a null sink as default sink, its monitor as source."""
    missing = [tool for tool in ("pulseaudio", "pactl", "parec", "pacat")
               if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed "
                    "(apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    if not ALSA_CONF.is_file():
        pytest.skip(f"{ALSA_CONF} not found: ALSA's pulse plugin cannot be configured")
    with private_pulse(tmp_path_factory.mktemp("pulse")) as server:
        yield server


@contextmanager
def private_pulse(root: Path) -> Iterator[str]:
    """Start the server in `root`, point this process's PortAudio at it, undo both after."""
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    home.mkdir(exist_ok=True)
    (home / ".asoundrc").write_text(ASOUNDRC)
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    (root / "default.pa").write_text(DEFAULT_PA.format(socket=root / "native"))
    server = f"unix:{root / 'native'}"
    # The daemon keeps its cookie and state in the temporary HOME, not the user's.
    daemon_env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    client_env = {"PULSE_SERVER": server,
                  "ALSA_CONFIG_PATH": f"{ALSA_CONF}:{home / '.asoundrc'}"}
    with open(root / "pulseaudio.log", "wb") as log:
        daemon = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(root / "default.pa"), "--exit-idle-time=-1",
             "--daemonize=no", "--disallow-exit", "--use-pid-file=no"],
            env=daemon_env, stdout=log, stderr=subprocess.STDOUT)
    keepalive = None
    saved = {name: os.environ.get(name) for name in client_env}
    try:
        _wait_until_answering(daemon, server, root / "pulseaudio.log")
        # An idle null sink wakes every 2 s, so a new recording would wait that long for
        # its first block; a low-latency reader keeps the sink ticking every few ms.
        keepalive = subprocess.Popen(
            ["parec", "--latency-msec=10", "--raw", "-d", "nullsink.monitor"],
            env={**os.environ, **client_env}, stdout=subprocess.DEVNULL)
        # The first playback stream after start stalls the server for about 1.5 s: pay it here.
        subprocess.run(["pacat", "--raw", "--latency-msec=10"], input=bytes(44100),
                       env={**os.environ, **client_env}, check=True, timeout=10)
        os.environ.update(client_env)
        _reinitialise_portaudio()
        yield server
    finally:
        for process in (keepalive, daemon):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reinitialise_portaudio()


def _wait_until_answering(daemon: subprocess.Popen[bytes], server: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"pulseaudio exited with {daemon.returncode}:\n{log.read_text()}")
        answer = subprocess.run(["pactl", "info"], env={**os.environ, "PULSE_SERVER": server},
                                capture_output=True, check=False)
        if answer.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"pulseaudio did not answer within {START_TIMEOUT_S:g} s:\n"
                       f"{log.read_text()}")


def _reinitialise_portaudio() -> None:
    """Make an already imported sounddevice read the device list again."""
    if "sounddevice" in sys.modules:
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()
