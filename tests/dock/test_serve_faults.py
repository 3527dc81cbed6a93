"""A fault of the dock's own during a pull reaches `dock status`, not only the log.

A bug in the pull (the KeyError a pull raised on a device that had purged, found by
tests/system/test_dock_fleet.py) used to leave the bay `waiting` forever in the state the
supervisor reads, with the error logged as its bare message ("3"). Here the device's
answer and the pull are stand-ins: what is under test is the service's bookkeeping.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.dock import serve
from agent.dock.service_config import load_service_config
from tests.dock.test_service_config import GOOD

BAY = "https://10.0.0.2:8443"


def test_an_unexpected_error_in_a_pull_shows_the_bay_failed_with_its_type(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("dock.crt", "dock.key", "device-ca.pem"):
        (tmp_path / name).write_text("PEM")
    (tmp_path / "dock.toml").write_text(GOOD)
    config = load_service_config(tmp_path / "dock.toml")

    async def identify(_self: Any, _bay: str, _device: str | None = None) -> dict[str, Any]:
        return {"device": "TEST-0001", "officer": "OFC-7", "head": {"seq": 5, "hash": "ab"}}

    async def pull(*_args: Any, **_kwargs: Any) -> None:
        raise KeyError(3)

    monkeypatch.setattr(serve.Service, "_identify", identify)
    monkeypatch.setattr(serve, "pull", pull)

    async def one_visit() -> serve.Service:
        service = serve.Service(config)
        task = asyncio.create_task(service._visit(BAY), name=BAY)
        task.add_done_callback(service._visited)
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback
        return service

    service = asyncio.run(one_visit())
    state = serve.State.load(config.state)  # what `dock status` reads
    assert state.bays[BAY]["status"] == "failed"
    assert state.bays[BAY]["device"] == "TEST-0001"
    assert state.bays[BAY]["error"] == "KeyError: 3"
    assert state.devices["TEST-0001"]["ok"] is False
    assert "TEST-0001" not in service._pulling  # tried again at the next poll
