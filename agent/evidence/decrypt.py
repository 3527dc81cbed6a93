"""`bodycam decrypt`: a sealed file back to its media, checked against the chain.

Runs where the agency's identity is (the evidence system), never on the device.
A file sealed cleanly must decrypt whole and match the plaintext hash its record
holds; a file recovered after a power cut decrypts up to its last whole chunk, and
the report says where it was cut.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.durable import fsync_dir, write_all
from agent.evidence.age import AgeError, Decrypted, decrypt_stream, parse_identity
from agent.evidence.chain import read_bodies
from agent.evidence.keys import KeyMaterialError

_IDENTITY_LIMIT = 16 << 20  # age's own limit on an identity file


@dataclass
class Outcome:
    decrypted: Decrypted
    sha256: str
    record: dict[str, Any] | None  # the chain record that sealed the file, when found

    @property
    def matches(self) -> bool | None:
        """Whether the plaintext is the one sealed; None when the chain holds no hash."""
        expected = (self.record or {}).get("payload", {}).get("plaintext")
        if not expected:
            return None
        return bool(expected["sha256"] == self.sha256
                    and expected["size"] == self.decrypted.plaintext_bytes)

    def describe(self) -> str:
        lines = [self.decrypted.describe()]
        if self.record is None:
            lines.append("no chain record found for this file (give the store's sealed/ "
                         "file to check it against the chain)")
        elif self.matches is None:
            lines.append(f"record {self.record['seq']} holds no plaintext hash"
                         + (" (recovered after a cut)" if self.record["payload"].get(
                             "recovered") else ""))
        else:
            lines.append(f"plaintext SHA-256 {self.sha256} "
                         + ("matches" if self.matches else "DOES NOT MATCH")
                         + f" record {self.record['seq']}")
        return "\n".join(lines)


class OutputRefused(Exception):
    """The output name is one decrypt must not write to; says which and why."""


def default_output(sealed: Path) -> Path:
    """Where the media goes without `-o`, in the current folder: the name without `.age`,
    or with `.decrypted` added; never the input's own name."""
    name = sealed.name
    return Path(name[:-4] if name.endswith(".age") and len(name) > 4 else f"{name}.decrypted")


def load_identity(path: Path) -> X25519PrivateKey:
    """The agency's identity file, read within age's own 16 MiB bound (so that `-i /dev/zero`
    ends); whatever is wrong with it is the caller's input, not the sealed file."""
    try:
        with path.open("rb") as f:
            data = f.read(_IDENTITY_LIMIT + 1)
    except OSError as exc:
        raise KeyMaterialError(f"cannot read the identity {path}: {exc.strerror}") from None
    try:
        if len(data) > _IDENTITY_LIMIT:
            raise AgeError(f"longer than {_IDENTITY_LIMIT} bytes")
        # comments may be in any encoding, as age allows; the key line is ASCII or refused
        return parse_identity(data.decode("utf-8", errors="replace"))
    except AgeError as exc:
        raise KeyMaterialError(f"the identity {path} is not an age identity file: "
                               f"{exc}") from None


def decrypt_file(sealed: Path, identity_file: Path, out: Path) -> Outcome:
    """Decrypt `sealed` to `out` (owner-only), hashing as it goes. The sealed file is
    evidence: it is only ever read. The media is written to a new file beside `out` and
    renamed onto it once whole, so a failure leaves `out` as it was, and `out` may be
    neither the input (by any name or link) nor a symbolic link."""
    identity = load_identity(identity_file)
    report = Decrypted()
    digest = hashlib.sha256()
    with sealed.open("rb") as source:
        _check_output(out, os.fstat(source.fileno()))
        fd, temporary = _new_file_beside(out)
        try:
            for chunk in decrypt_stream(source, identity, report):
                digest.update(chunk)
                write_all(fd, chunk)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            _check_output(out, os.fstat(source.fileno()))  # planted while decrypting?
            os.replace(temporary, out)
        finally:
            if fd != -1:
                os.close(fd)
            temporary.unlink(missing_ok=True)
    fsync_dir(out.absolute().parent)
    return Outcome(report, digest.hexdigest(), _record_for(sealed))


def _check_output(out: Path, source: os.stat_result) -> None:
    try:
        held = out.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(held.st_mode):
        raise OutputRefused(f"output {out} is a symbolic link: decrypt writes no file "
                            "through a link; name another output (-o)")
    if (held.st_dev, held.st_ino) == (source.st_dev, source.st_ino):
        raise OutputRefused(f"output {out} is the sealed file itself: decrypt never writes "
                            "over its input; name another output (-o)")
    if not stat.S_ISREG(held.st_mode):
        raise OutputRefused(f"output {out} exists and is not a regular file; name another "
                            "output (-o)")


def _new_file_beside(out: Path) -> tuple[int, Path]:
    """A new owner-only file in `out`'s folder (O_EXCL: nothing there is followed)."""
    for _ in range(100):
        temporary = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                           os.O_CLOEXEC, 0o600), temporary
        except FileExistsError:
            continue
    raise OutputRefused(f"no new temporary file could be made beside {out}")


def _record_for(sealed: Path) -> dict[str, Any] | None:
    chain = sealed.resolve().parent.parent / "chain.jsonl"
    if sealed.resolve().parent.name != "sealed" or not chain.is_file():
        return None
    name = f"sealed/{sealed.name}"
    try:  # an unreadable chain is `bodycam verify`'s to report
        bodies = read_bodies(chain)
    except OSError:
        return None
    return next((r for r in bodies if isinstance(r.get("payload"), dict)
                 and r["payload"].get("file") == name), None)
