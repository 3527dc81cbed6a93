"""Power cuts that lose the page cache too: `bodycam run` with its store on the power-cut file
system (tests/support/powercut_fs.py), cut at random moments and at the worst ones, and started
again on what survived (issue 19)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.device import wait_for
from tests.support.power_cuts import BOUND_S, POLL_S, CutRecorder, percentile
from tests.support.powercut_disk import fuse_unavailable

pytestmark = pytest.mark.skipif(fuse_unavailable() is not None,
                                reason=f"the power-cut file system: {fuse_unavailable()}")

RANDOM_CUTS = 21
# The worst moments: a segment renamed into sealed/ (the rename not yet durable), the rename
# durable in sealed/ but not yet in open/ (both names on disk) and its record not written, and
# a record written but not yet fsync'd.
WORST = (r"after:rename:^sealed/\d+\.ts$", r"after:fsync:^sealed$", r"before:fsync:^chain\.jsonl$")
WORST_EACH = 3


class Campaign(NamedTuple):
    recorder: CutRecorder
    wall_s: float


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    """One recording cut 30 times (21 at random, 3 at each worst moment), each cut followed by
    a restart on what survived; then a clean shutdown."""
    recorder = CutRecorder(tmp_path_factory.mktemp("power-cut-fs"))
    rng = random.Random(20261203)
    schedule = ["random"] * RANDOM_CUTS + list(WORST) * WORST_EACH
    rng.shuffle(schedule)
    started = time.monotonic()
    try:
        recorder.campaign(schedule, rng)
        time.sleep(1.0)
        recorder.stop()
        yield Campaign(recorder, time.monotonic() - started)
    finally:
        recorder.close()


@pytest.mark.timeout(900)
def test_nothing_sealed_is_lost_and_every_cut_is_one_interruption(campaign: Campaign) -> None:
    recorder, wall_s = campaign
    cuts = recorder.cuts
    assert len(cuts) == RANDOM_CUTS + len(WORST) * WORST_EACH
    for n, cut in enumerate(cuts, 1):
        assert not cut.damaged, f"cut {n} ({cut.how}): sealed files not intact at the cut: " \
                                f"{cut.damaged}"
    assert not recorder.findings, recorder.findings
    verified = recorder.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    interruptions = recorder.interruptions()
    assert len(interruptions) == len(cuts), "each cut is exactly one interruption"
    assert all(i["cause"] == "power_loss_or_crash" and i["recording_after"] is not None
               for i in interruptions), interruptions
    lost = [cut.lost_s for cut in cuts if cut.lost_s is not None]
    print(f"\n{len(cuts)} power cuts in {wall_s:.0f} s: media lost p50 "
          f"{percentile(lost, 50) * 1000:.0f} ms, p99 {percentile(lost, 99) * 1000:.0f} ms, "
          f"max {max(lost) * 1000:.0f} ms (bound {BOUND_S * 1000:.0f} ms); "
          f"{sum(cut.nothing_survived for cut in cuts)} cut(s) left no packet of the recording")


def test_media_lost_per_cut_is_within_the_documented_bound(campaign: Campaign) -> None:
    over = [(cut.how, cut.lost_s and round(cut.lost_s * 1000), cut.nothing_survived)
            for cut in campaign.recorder.cuts if cut.lost_s is None or cut.lost_s > BOUND_S]
    assert not over, f"cuts that lost more than {BOUND_S * 1000:.0f} ms " \
                     f"(trigger, ms, no packet survived): {over}"


@pytest.mark.parametrize("after_s", [0.5, 1.5, 3.0])
def test_a_cut_in_a_new_stores_first_seconds_keeps_its_keys(tmp_path: Path,
                                                            after_s: float) -> None:
    recorder = CutRecorder(tmp_path)
    try:
        recorder.start()
        recorder.cut(after_s=after_s)
        recorder.start(press=False)
        time.sleep(1.0)
        recorder.stop()
        public = recorder.store / "keys" / "device.pub"
        assert public.exists() and public.stat().st_size > 0, "keys/device.pub is missing or empty"
        verified = recorder.verify()
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        recorder.close()


def test_a_voice_note_cut_at_its_seal_is_recovered_into_the_chain(tmp_path: Path) -> None:
    """The note is renamed into sealed/ and both folders are durable, its record not yet."""
    recorder = CutRecorder(tmp_path)
    try:
        recorder.start()
        wait_for(recorder.recording, timeout=30, what="recording", interval=POLL_S)
        recorder.disk.sync()
        recorder.cut(after_s=0.5)  # an interruption, for which the device asks a voice note
        recorder.resume()
        recorder.cut(r"after:fsync:^open$&rename:^sealed/\d+\.wav$", timeout=60)
        recorder.resume()
        recorder.stop()
        named = {json.loads(line)["payload"].get("file") for line in recorder.chain_lines()}
        unnamed = sorted(f"sealed/{p.name}" for p in (recorder.store / "sealed").iterdir()
                         if f"sealed/{p.name}" not in named)
        assert not unnamed, f"sealed files no record names: {unnamed}"
        verified = recorder.verify()
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        recorder.close()
