"""The shell procedure of docs/chain-format.md, run as written: its ```bash blocks, in order,
with PATH cut down to the standard tools the document promises (so a step that needed this
project's Python, or any other tool, fails). Shared by its test and its benchmark."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "chain-format.md"

# What the document promises a third party needs (bash itself runs the script).
STANDARD_TOOLS = ("sed", "cut", "grep", "tail", "seq", "mktemp", "mkdir", "nproc",
                  "split", "truncate", "xargs", "stat", "sha256sum", "base64", "openssl")
OPTIONAL_TOOLS = ("ffprobe",)


def bash_blocks() -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) >= 3, "docs/chain-format.md lost its ```bash procedure"
    return blocks


def standard_tools(folder: Path, ffprobe: bool = True) -> Path:
    """A folder for PATH holding only the standard tools (ffprobe where installed and
    wanted)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in STANDARD_TOOLS + (OPTIONAL_TOOLS if ffprobe else ()):
        found = shutil.which(name)
        if found is None:
            assert name in OPTIONAL_TOOLS, f"{name} is not installed"
            continue
        (folder / name).symlink_to(found)
    return folder


def run_procedure(store: Path, tools: Path, work: Path, calls: str | None = None,
                  public_key: Path | None = None, every_signature: bool = False,
                  witness: str | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The document's script on `store`: all of it, or its steps followed by `calls`; with
    `every_signature`, its optional step that checks every record's own signature; with
    `witness` (SEQ:HASH), a head seen outside the device."""
    blocks = bash_blocks()
    script = "\n".join(blocks if calls is None else [*blocks[:-1], calls])
    work.mkdir(parents=True, exist_ok=True)
    env = {"PATH": str(tools), "STORE": str(store), "WORK": str(work),
           "EVERY_SIGNATURE": "yes" if every_signature else "no"}
    if public_key is not None:
        env["PUB"] = str(public_key)
    if witness is not None:
        env["WITNESS"] = witness
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
