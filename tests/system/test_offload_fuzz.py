"""Fuzz the offload API from its OpenAPI file: valid and invalid requests, over mutual TLS.

A bounded run (a few dozen cases per operation, well under a minute): no answer is a
5xx, the server keeps answering, no sealed file changes, the journal only grows
(officer assignments are valid requests and are sealed), and no custody is taken
(nor an enrollment: the device is enrolled, and no fuzzed certificate is its).
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from schemathesis.generation import GenerationMode

from agent.evidence.verify import verify_store
from tests.support.device import record_segments, write_device_config
from tests.support.dockside import docked_device, snapshot
from tests.support.pki import make_pki

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "offload-openapi.yaml"
EXAMPLES = 60


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-recorded")
    record_segments(write_device_config(root / "device.toml", root / "store"), 3)
    return root / "store"


class _ByChain(HTTPAdapter):
    """The device verified as the dock does: by chain to the device CA, not by host name
    (its certificate names the device, not an address; docs/docking.md)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self._context, assert_hostname=False,
                                 **kwargs)


def test_fuzz_the_offload_api(tmp_path: Path, recorded: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with docked_device(tmp_path, recorded, pki, purge_policy="after_custody") as device:
        journal = (device.store / "chain.jsonl").read_bytes()
        files = snapshot(device.store)
        session = requests.Session()
        session.mount("https://", _ByChain(device.link().context()))
        session.cert = (str(pki.pem("dock.crt")), str(pki.pem("dock.key")))
        session.verify = str(pki.pem("device-ca.pem"))
        schema = schemathesis.openapi.from_path(OPENAPI)
        started = time.monotonic()
        calls: dict[str, int] = {}
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=st.one_of(*(operation.as_strategy(generation_mode=mode)
                                    for mode in GenerationMode)))
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(base_url=device.url, session=session, timeout=10,
                                     verify=session.verify, cert=session.cert)
                calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
                assert response.status_code < 500, (case.as_curl_command(),
                                                    response.status_code, response.text)

            fuzz()
        assert time.monotonic() - started < 60
        assert len(calls) == 9, calls  # every operation; all with inputs many times
        assert all(n >= EXAMPLES // 2 for op, n in calls.items()
                   if op not in ("GET /v1/identity", "GET /v1/enrollment", "GET /v1/status"))
        assert session.get(f"{device.url}/v1/identity", timeout=10, verify=session.verify
                           ).status_code == 200  # still serving
        assert (device.store / "chain.jsonl").read_bytes().startswith(journal)
        assert snapshot(device.store) == files
        assert not device.records("custody") and not device.records("purge")
        assert not device.records("enrollment")
        assert verify_store(device.store).ok
