"""What the code says about itself stays true: the interruption causes a gap names, the
modules and files comments point to, and the modules imported inside functions."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from agent.device.interruptions.gaps import Gap

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for top in ("agent", "hal") for p in (ROOT / top).rglob("*.py"))
# The calls that open a gap or raise the fault that opens one, and the argument with the cause.
_CAUSE_CALLS = {"report": 0, "_on_fault": 0, "gap_now": 0, "Gap": 0}


def _literals(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    return set()


def _causes_in_code() -> set[str]:
    causes: set[str] = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in _CAUSE_CALLS and len(node.args) > _CAUSE_CALLS[name]:
                causes |= _literals(node.args[_CAUSE_CALLS[name]])
    return causes


def test_gap_names_every_interruption_cause_and_no_other() -> None:
    causes = _causes_in_code()
    assert {"storage_full", "camera_fault", "officer_stop_restart", "watchdog"} <= causes
    doc = Gap.__doc__ or ""
    named = {word for word in re.findall(r"\b[a-z_]+\b", doc) if "_" in word or word in causes}
    assert named == causes, f"named but not raised: {named - causes}; raised but not named: " \
                            f"{causes - named}"


def _pointers(path: Path) -> list[tuple[int, str]]:
    """Paths (agent/…, hal/….py) and dotted modules (agent.x.y) in comments and strings."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"\s*(from|import) ", line):
            continue
        found += [(number, m) for m in re.findall(r"\b(?:agent|hal)/[\w/]+\.py\b", line)]
        found += [(number, m) for m in re.findall(r"`((?:agent|hal)(?:\.\w+)+)`", line)]
        found += [(number, "DESIGN.md") for _ in re.findall(r"\bDESIGN\.md\b", line)]
    return found


def _exists(pointer: str) -> bool:
    if pointer.endswith(".py") or pointer.endswith(".md"):
        return (ROOT / pointer).is_file()
    parts = pointer.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_comments_point_to_what_exists(path: Path) -> None:
    missing = [f"line {n}: {p}" for n, p in _pointers(path) if not _exists(p)]
    assert not missing, f"{path.relative_to(ROOT)} points to what is not there: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_resolves(path: Path) -> None:
    """Imports inside functions run only when a command needs them: check them all now."""
    broken = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] in ("agent", "hal"):
            module = importlib.import_module(node.module)
            broken += [f"line {node.lineno}: from {node.module} import {alias.name}"
                       for alias in node.names if not hasattr(module, alias.name)
                       and importlib.util.find_spec(f"{node.module}.{alias.name}") is None]
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"
