"""The mutation test on a dock's evidence folder: receipts and the manifest witness the head
the dock verified, so a copy rolled back, or a witness edited, fails naming the witness;
with both gone nothing can tell, and the verifier says there is no witness (issue 20,
item 1). The device's own store, with its custody record, gets the store's whole corpus
with splicing from another store, and a receipt given with --receipt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.evidence.test_mutants import shell_verdict_of, verdict_of
from tests.support.dockside import docked_device
from tests.support.mutants import FAIL, OK, SIGNATURE, Base, Mutant, mutants
from tests.support.pki import Pki
from tests.support.shell_procedure import standard_tools


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory, recorded: Path,
           dock_pki: Pki) -> Iterator[tuple[Path, Path]]:
    """(the dock's device folder, the device's store after the custody), made once."""
    folder = tmp_path_factory.mktemp("docked")
    with docked_device(folder, recorded, dock_pki) as device:
        result = device.pull(folder / "evidence")
        assert result.ok, result.problem or result.verify.summary()
    assert sorted(p.name for p in (result.folder / "receipts").iterdir()), "a receipt is kept"
    yield result.folder, device.store


def test_every_dock_and_device_mutant_gets_its_verdict(pulled: tuple[Path, Path],
                                                       recorded_store: Path,
                                                       tmp_path: Path) -> None:
    """The device's store after custody, with files and lines spliced from another recording
    (the session's recorded store), then the dock's folder."""
    dock, store = pulled
    failures, verdicts = [], {OK: 0, FAIL: 0}
    for mutant in mutants(store, tmp_path / "work", other=recorded_store, dock=dock):
        problem = verdict_of(mutant)
        verdicts[mutant.verdict] += 1
        if problem:
            failures.append(f"{mutant.name} (expected {mutant.verdict}): {problem}")
    assert verdicts[FAIL] >= 280, verdicts
    assert not failures, f"{len(failures)} of {sum(verdicts.values())}:\n" + "\n".join(failures)


def test_the_shell_procedure_gets_its_verdict_on_the_device_store_and_splices(
        pulled: tuple[Path, Path], recorded_store: Path, tmp_path: Path) -> None:
    """The documented procedure on the device's store after custody, with files and lines
    spliced from another recording. It reads no receipt or manifest, so the dock's folder is
    `bodycam verify`'s alone."""
    _, store = pulled
    tools = standard_tools(tmp_path / "tools", ffprobe=False)
    failures, verdicts = [], dict.fromkeys((OK, FAIL, SIGNATURE), 0)
    for mutant in mutants(store, tmp_path / "work", other=recorded_store):
        verdicts[mutant.shell] += 1
        problem = shell_verdict_of(mutant, tools, tmp_path / "shell-work")
        if problem:
            failures.append(f"{mutant.name} (expected {mutant.shell}): {problem}")
    assert verdicts[FAIL] >= 200, verdicts
    assert not failures, f"{len(failures)} of {sum(verdicts.values())}:\n" + "\n".join(failures)


def test_a_receipt_given_outside_witnesses_the_device_store(pulled: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    """The device's chain holds the custody record it signed: rolled back to before it (to
    the very head the receipt names), it fails against the receipt."""
    dock, store = pulled
    receipt = next((dock / "receipts").iterdir())
    custody = int(receipt.name[:8])
    args = ("--receipt", str(receipt))
    assert verdict_of(Mutant("as it is", store, OK, (), args)) is None
    base = Base(store)
    rolled = tmp_path / "rolled"
    rolled.mkdir()
    for name in ("keys", "sealed"):
        (rolled / name).symlink_to(store / name)
    (rolled / "chain.jsonl").write_bytes(b"".join(base.lines[: custody - 1]))
    assert verdict_of(Mutant("rolled back", rolled, FAIL, (f"--receipt {receipt}",), args)) \
        is None
