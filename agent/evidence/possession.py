"""Proof of possession: what a dock sends with a custody report to show it holds each file.

A sealed file's SHA-256 is public (the chain, `GET /v1/chain`, the MQTT events), so a
report that only repeats it proves nothing. The proof is HMAC-SHA256 keyed with the
one-time nonce the device handed that dock for this report, over the file's every
byte: it needs the bytes, and the nonce did not exist before the report was begun, so
it cannot be computed ahead from the hash or reused from another report. One rule, used
by the device that checks and the dock that proves; a third party reproduces it with
`openssl dgst -sha256 -hmac NONCE FILE`. See docs/docking.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Protocol

CHUNK = 1024 * 1024


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def new_proof(nonce: str) -> hmac.HMAC:
    """The running proof for one file under `nonce` (its ASCII text is the key)."""
    return hmac.new(nonce.encode("ascii"), digestmod=hashlib.sha256)


def digest_file(path: Path, *digests: Digest) -> None:
    """Feed every byte of `path` to each digest in one read. A link is refused (the file
    must be the one in the folder, not what a planted link names), and the pages read are
    dropped from the cache after: proving a day's footage must not evict what the
    recorder and the server use."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
            while chunk := f.read(CHUNK):
                for digest in digests:
                    digest.update(chunk)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def file_proof(path: Path, nonce: str) -> str:
    """The proof of `path` under `nonce`, hex."""
    proof = new_proof(nonce)
    digest_file(path, proof)
    return proof.hexdigest()
