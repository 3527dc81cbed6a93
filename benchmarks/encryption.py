#!/usr/bin/env python3
"""Encryption at rest: what does age encryption add to the agent's CPU per recorded second?

Run from the repository root:

    python benchmarks/encryption.py [--rotations 12] [--segment-seconds 10] [--repeats 5]

The same pre-encoded stream (1280x720 30 fps H.264 with AAC, from the simulated
camera, as in benchmarks/rotations.py) is replayed into a real Recorder, Store and
signed Chain, once writing plaintext MPEG-TS and once encrypting every segment to
an age X25519 recipient as it is written (agent/age.py). Runs alternate
`--repeats` times; the figures are medians of the agent's CPU seconds
(`time.process_time`) per recorded second. Encrypted segments are then decrypted
with the project's decryptor and their plaintext checked against the chain.

Target: encryption adds at most 25 %.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.age import Decrypted, decrypt_stream
from agent.verify import verify_store
from benchmarks.rotations import GOP, capture, replay_schedule, run_agent, sealed_segments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=12)
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    agency = X25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as tmp:
        root = Path(tmp)
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
    print(f"{args.rotations + 1} segments, {media_s:.0f} s of 720p30 + AAC per run, "
          f"{args.repeats} runs each, medians:")
    print(f"  plaintext MPEG-TS: {plain * 1000:.2f} ms CPU per recorded second")
    print(f"  age-encrypted:     {encrypted * 1000:.2f} ms CPU per recorded second")
    print(f"  encryption adds {100 * (encrypted / plain - 1):+.1f} % (target at most +25 %)")
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
