"""The mutation test: `bodycam verify --json` on a few hundred tampered copies of a recorded
store (tests/support/mutants.py), each reaching the verdict it must and, when it fails,
naming the record, file or witness that was changed. Run in-process through the CLI's own
entry point, so the JSON an investigator's tools read is what is checked."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.evidence.keys import fingerprint, load_public_key
from tests.support.mutants import FAIL, OK, SIGNATURE, Mutant, mutants
from tests.support.shell_procedure import run_procedure, standard_tools


def verdict_of(mutant: Mutant) -> str | None:
    """None when `bodycam verify --json` judges the mutant as it must, else what went wrong."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["verify", "--json", str(mutant.path), *mutant.args])
    try:
        report = json.loads(out.getvalue())
    except ValueError:
        return f"exit {code}, no JSON report: {err.getvalue()[-300:]!r}"
    said = "\n".join(f"{f['where']}: {f['problem']}" for f in report["findings"])
    if mutant.verdict == OK:
        return None if code == 0 and report["ok"] else f"failed: {said[:400]}"
    if code != 1 or report["ok"]:
        return f"passed (exit {code}): {report.get('notes')}"
    if not any(re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w/])", said)
               for name in mutant.names):
        return f"failed without naming any of {mutant.names}: {said[:400]}"
    return None


def test_every_mutant_gets_its_verdict_and_names_what_changed(recorded_store: Path,
                                                              tmp_path: Path) -> None:
    """Splicing from another store needs a second recording, a daemon run: it is in
    tests/system/test_mutants_dock.py, with the dock's folder."""
    failures, verdicts = [], {OK: 0, FAIL: 0}
    for mutant in mutants(recorded_store, tmp_path / "work"):
        problem = verdict_of(mutant)
        verdicts[mutant.verdict] += 1
        if problem:
            failures.append(f"{mutant.name} (expected {mutant.verdict}): {problem}")
    assert verdicts[FAIL] >= 220 and verdicts[OK] >= 10, verdicts
    assert not failures, f"{len(failures)} of {sum(verdicts.values())}:\n" + "\n".join(failures)


def shell_verdict_of(mutant: Mutant, tools: Path, work: Path) -> str | None:
    """None when the shell procedure of docs/chain-format.md judges the mutant as it must,
    by default and, where that differs, with its step 6 (every record's own signature); else
    what went wrong. It is given what `bodycam verify` is given, as far as it takes it: the
    key (`PUB`) and a witnessed head (`WITNESS`)."""
    given = dict(zip(mutant.args[::2], mutant.args[1::2], strict=True))
    assert set(given) <= {"--key", "--head"}, mutant.args
    key = Path(given["--key"]) if "--key" in given else None
    problems = []
    runs = [(False, OK if mutant.shell in (OK, SIGNATURE) else FAIL)]
    if mutant.shell != FAIL:  # where step 6 could change the verdict
        runs.append((True, OK if mutant.shell == OK else FAIL))
    for every_signature, expected in runs:
        result = run_procedure(mutant.path, tools, work, public_key=key,
                               witness=given.get("--head"), every_signature=every_signature)
        got = OK if result.returncode == 0 else FAIL
        last = result.stdout.rstrip("\n").rsplit("\n", 1)[-1]
        if got != expected or result.returncode not in (0, 1) or result.stderr:
            problems.append(f"{'with' if every_signature else 'without'} step 6: {got} "
                            f"(exit {result.returncode}): {last[:200]} {result.stderr[-200:]}")
    shutil.rmtree(work, ignore_errors=True)
    return "; ".join(problems) or None


def test_the_shell_procedure_gets_its_verdict_on_every_mutant(
        recorded_store: Path, tmp_path: Path) -> None:
    """The documented procedure, run as written, on the same mutants: everything that
    changes evidence fails it by default (bodies, files, WAVs, rollback against a witness,
    a swapped key, re-signing with another key); a stored signature changed on an intact
    record passes by default and fails its step 6; what only `bodycam verify` checks
    passes, as the document says."""
    tools = standard_tools(tmp_path / "tools", ffprobe=False)
    failures, verdicts = [], dict.fromkeys((OK, FAIL, SIGNATURE), 0)
    for mutant in mutants(recorded_store, tmp_path / "work"):
        verdicts[mutant.shell] += 1
        problem = shell_verdict_of(mutant, tools, tmp_path / "shell-work")
        if problem:
            failures.append(f"{mutant.name} (expected {mutant.shell}): {problem}")
    assert verdicts[FAIL] >= 180 and verdicts[SIGNATURE] >= 3 and verdicts[OK] >= 30, verdicts
    assert not failures, f"{len(failures)} of {sum(verdicts.values())}:\n" + "\n".join(failures)


def test_two_byte_identical_sealed_files_verify(recorded_store: Path, tmp_path: Path) -> None:
    """Two silent notes are the same bytes, each sealed by its own record: both are in the
    chain (issue 20, item 3; they were once taken for one file and the other "inserted")."""
    case = next(m for m in mutants(recorded_store, tmp_path / "work")
                if m.name.startswith("two byte-identical"))
    assert verdict_of(case) is None
    shutil.rmtree(tmp_path / "work")


@pytest.mark.parametrize("wanted", ["size = '", "nesting 100000 deep in the body",
                                    "a float in the payload", "the final newline dropped"])
def test_a_hostile_store_gets_a_json_report_from_a_real_process(
        recorded_store: Path, tmp_path: Path, wanted: str) -> None:
    """What an investigator's tools read: one JSON report on stdout, nothing on stderr, exit
    1 (issue 20, item 7: deep nesting and a size given as a string once ended in a
    traceback)."""
    mutant = next(m for m in mutants(recorded_store, tmp_path / "work") if wanted in m.name)
    result = subprocess.run([sys.executable, "-m", "agent", "verify", "--json",
                             str(mutant.path)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (1, ""), result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["first_problem"]


@pytest.mark.parametrize("args, message", [
    (["--head", "12"], "--head '12': not SEQ:HASH"),
    (["--head", "0:" + "0" * 64], "--head '0:000"),
    (["--receipt", "/nonexistent"], "--receipt /nonexistent: cannot be read"),
    (["--receipt", "/dev/null"], "--receipt /dev/null: cannot be read (not a regular file)"),
    (["--receipt", __file__], f"--receipt {__file__}: ")])  # a Python file: many lines
def test_a_witness_that_cannot_be_used_is_one_line_and_exit_2(
        recorded_store: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "agent", "verify", str(recorded_store),
                             *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"bodycam: {message}") and result.stderr.count("\n") == 1


def test_an_evidence_folder_of_several_devices_is_one_json_document(
        recorded_store: Path, tmp_path: Path) -> None:
    """A dock's folder holds a store per device: `--json` prints one document a tool can
    parse, each device's report in it."""
    evidence = tmp_path / "evidence"
    for device in ("BWC-0001", "BWC-0002"):
        shutil.copytree(recorded_store, evidence / device)
        key = fingerprint(load_public_key(evidence / device / "keys" / "device.pub"))
        (evidence / device / "manifest.json").write_text(json.dumps(
            {"key_fingerprint": key, "head": None}))
    (evidence / "BWC-0002" / "chain.jsonl").write_bytes(
        (evidence / "BWC-0002" / "chain.jsonl").read_bytes()[:-1])  # the final newline gone
    result = subprocess.run([sys.executable, "-m", "agent", "verify", "--json", str(evidence)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert [store["ok"] for store in document["stores"]] == [True, False]
