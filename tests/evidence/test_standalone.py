"""The evidence format stands alone: an agency verifies without the device's libraries.

`agent.evidence` must import only the standard library, cryptography (with cffi, which it
requires) and bech32, so that a verifier or an evidence system can install it with those
alone; and `bodycam verify` must work from a plain `pip install .`, with no extra.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE = ["agent.evidence.chain", "agent.evidence.store", "agent.evidence.keys",
            "agent.evidence.age", "agent.evidence.verify", "agent.evidence.decrypt"]

# Any import outside the standard library, cryptography, cffi and bech32 (and outside the
# evidence format and the shared leaves it may use) fails, naming the module.
REFUSE_OTHERS = """
import importlib.abc, sys
ALLOWED = {"cryptography", "cffi", "_cffi_backend", "bech32"}
OWN = ("agent.evidence", "agent.durable")

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if name == "agent" or name.startswith(OWN):
            return None
        if top in ("agent", "hal") or top not in sys.stdlib_module_names | ALLOWED:
            raise ImportError(f"the evidence format imports {name}")
        return None

sys.meta_path.insert(0, Refuse())
"""


def test_the_evidence_format_imports_only_cryptography_and_bech32() -> None:
    probe = REFUSE_OTHERS + "".join(f"import {module}\n" for module in EVIDENCE)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_probe_refuses_what_the_device_imports() -> None:
    """The check above can fail: the daemon's modules trip it."""
    probe = REFUSE_OTHERS + "import agent.device.daemon\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode != 0
    assert "the evidence format imports" in result.stderr


def _venv(folder: Path, *requirements: str) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements],
                   check=True, capture_output=True, timeout=600)
    return python


@pytest.mark.system
def test_verify_in_a_venv_with_only_cryptography_and_bech32(recorded_store: Path,
                                                             tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv", "cryptography", "bech32")
    probe = ("import sys; from pathlib import Path; import agent.evidence.verify as v; "
             "report = v.verify_store(Path(sys.argv[1])); "
             "print(report.ok, report.records); sys.exit(0 if report.ok else 1)")
    result = subprocess.run([str(python), "-c", probe, str(recorded_store)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("True ")


@pytest.mark.system
def test_bodycam_verify_from_a_plain_install(recorded_store: Path, tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv", str(ROOT))
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout.lower()
    assert "pycurl" not in installed and "pyaudio" not in installed  # extras, not asked for
    result = subprocess.run([str(tmp_path / "venv" / "bin" / "bodycam"), "verify",
                             str(recorded_store)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
