from pathlib import Path

from agent.verify import verify_store


def test_recorded_store_verifies(recorded_store: Path) -> None:
    report = verify_store(recorded_store)
    assert report.ok, report.summary()
    assert report.segments >= 5
