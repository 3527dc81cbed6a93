"""CPU time of other processes, for benchmarks that time a daemon or a server from outside."""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds the running processes `pids` have used, from /proc."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
