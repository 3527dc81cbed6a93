#!/usr/bin/env python3
"""Encryption at rest: what does age encryption add to the agent's CPU per recorded second?

Run from the repository root:

    python benchmarks/encryption.py [--rotations 12] [--segment-seconds 10] [--repeats 5]
                                    [--agent-seconds 20] [--agent-repeats 3]

1. The whole agent: `bodycam run` on the simulated device at 1280x720 30 fps, 4 Mbit/s,
   with AAC, in real time, 10 s segments, recording `--agent-seconds` after a 3 s
   warm-up; its process CPU (/proc) per recorded second, encryption off and on,
   alternating `--agent-repeats` times, medians. The simulated camera encodes H.264
   in software inside the agent, as a Pi 5 does (it has no H.264 block); on a Pi 4
   the encoder is hardware and the agent's own work is the overlay, the audio and
   the packet path.
2. The packet path alone, the strictest measure: the same pre-encoded stream
   (1280x720 30 fps H.264 with AAC, from the simulated camera, as in
   benchmarks/rotations.py) is replayed into a real Recorder, Store and signed Chain,
   once writing plaintext MPEG-TS and once encrypting every segment to an age X25519
   recipient as it is written (agent/evidence/age.py). Runs alternate `--repeats` times; the
   figures are medians of the CPU seconds (`time.process_time`) per recorded second.
   Encrypted segments are then decrypted with the project's decryptor and their
   plaintext checked against the chain.

Target: encryption adds at most 25 %.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.evidence.age import Decrypted, decrypt_stream, recipient_string
from agent.evidence.verify import verify_store
from benchmarks.cpu import process_cpu_seconds
from benchmarks.rotations import GOP, capture, replay_schedule, run_agent, sealed_segments
from tests.support.device import spawn_daemon, trigger_start, write_device_config

WARM_UP_S = 3.0


def whole_agent(root: Path, recipient: str | None, seconds: float) -> float:
    """CPU seconds per recorded second of `bodycam run` recording for `seconds`."""
    root.mkdir(parents=True)
    store = root / "store"
    extra = f'[encryption]\nenabled = true\nrecipients = ["{recipient}"]' if recipient else ""
    config = write_device_config(root / "device.toml", store, width=1280, height=720,
                                 bitrate=4_000_000, gop=30, realtime="true",
                                 segment_seconds=10.0, pre_event_seconds=0.0, extra=extra)
    daemon = spawn_daemon(config, store)
    try:
        trigger_start(config)
        time.sleep(WARM_UP_S)
        cpu0, wall0 = process_cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = process_cpu_seconds(daemon.pid), time.monotonic()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    report = verify_store(store)
    if not report.ok:
        sys.exit(f"encryption benchmark: the agent's store does not verify: {report.summary()}")
    encrypted = [p for p in (store / "sealed").iterdir() if p.suffix == ".age"]
    if bool(encrypted) != bool(recipient):
        sys.exit(f"encryption benchmark: {len(encrypted)} encrypted files with "
                 f"encryption {'on' if recipient else 'off'}")
    return (cpu1 - cpu0) / (wall1 - wall0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=12)
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--agent-seconds", type=float, default=20.0)
    parser.add_argument("--agent-repeats", type=int, default=3)
    args = parser.parse_args()
    agency = X25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as tmp:
        root = Path(tmp)
        agent: dict[str, list[float]] = {"plaintext": [], "encrypted": []}
        for repeat in range(args.agent_repeats):
            for mode, recipient in (("plaintext", None),
                                    ("encrypted", recipient_string(agency.public_key()))):
                agent[mode].append(whole_agent(root / f"agent-{mode}-{repeat}", recipient,
                                               args.agent_seconds))
        whole_plain = statistics.median(agent["plaintext"])
        whole_encrypted = statistics.median(agent["encrypted"])
        print(f"whole agent (bodycam run, simulated 720p30 + AAC, {args.agent_seconds:.0f} s "
              f"recorded, {args.agent_repeats} runs each), medians:")
        print(f"  plaintext MPEG-TS: {whole_plain * 1000:.1f} ms CPU per recorded second")
        print(f"  age-encrypted:     {whole_encrypted * 1000:.1f} ms CPU per recorded second")
        print(f"  encryption adds {100 * (whole_encrypted / whole_plain - 1):+.1f} % "
              "(target at most +25 %)")
        loop = capture(root, GOP * 10)
        schedule = replay_schedule(loop, args.rotations, int(args.segment_seconds * 1e6))
        per_second: dict[str, list[float]] = {"plaintext": [], "encrypted": []}
        for repeat in range(args.repeats):
            for mode, recipients in (("plaintext", None), ("encrypted", [agency.public_key()])):
                run = run_agent(loop, schedule, root / f"{mode}-{repeat}", args.segment_seconds,
                                max_lead_s=2.0, recipients=recipients)
                per_second[mode].append(run.cpu_s / run.media_s)
                report = verify_store(run.store)
                if not report.ok:
                    print(report.summary())
                    return 1
                if mode == "encrypted" and repeat == 0:
                    check_plaintext(run.store, agency)
        media_s = run.media_s
    plain = statistics.median(per_second["plaintext"])
    encrypted = statistics.median(per_second["encrypted"])
    print(f"packet path alone (the same pre-encoded stream into a Recorder, Store and "
          f"Chain), {args.rotations + 1} segments, {media_s:.0f} s of 720p30 + AAC per run, "
          f"{args.repeats} runs each, medians:")
    print(f"  plaintext MPEG-TS: {plain * 1000:.2f} ms CPU per recorded second")
    print(f"  age-encrypted:     {encrypted * 1000:.2f} ms CPU per recorded second")
    print(f"  encryption adds {100 * (encrypted / plain - 1):+.1f} % "
          f"({(encrypted - plain) * 1000:+.2f} ms per recorded second)")
    return 0


def check_plaintext(store: Path, agency: X25519PrivateKey) -> None:
    """Every encrypted segment decrypts whole to the plaintext its record names."""
    for payload in sealed_segments(store):
        report = Decrypted()
        with (store / payload["file"]).open("rb") as f:
            plaintext = b"".join(decrypt_stream(f, agency, report))
        assert report.complete, payload["file"]
        assert hashlib.sha256(plaintext).hexdigest() == payload["plaintext"]["sha256"]
        assert plaintext[:1] == b"\x47", "an MPEG-TS inside"
    print("  every encrypted segment decrypts to the plaintext hash in its record")


if __name__ == "__main__":
    sys.exit(main())
