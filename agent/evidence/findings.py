"""A finding: one thing wrong with a store, named where an investigator can find it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    where: str
    problem: str
    # changed, missing, reordered, inserted, truncated, gap, overlap, dangling, unanchored,
    # retention
    kind: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"
