"""Sealing a file made whole in memory (a voice note, a photo): one way to reach sealed/.

The bytes are encrypted to the agency when the store encrypts at rest (media is never on
disk in the clear), written read-only to open/ and synced, then renamed into sealed/ under
the seq of the record that names them, with their size and SHA-256 (of the stored bytes;
the plaintext's too when encrypted). A cut before the rename leaves the file in open/ for
recovery to seal as found (agent/device/recording/recovery.py).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.device.recording.segment import AGE_SUFFIX
from agent.durable import fsync_dir, write_all
from agent.evidence.age import encrypt, encryption_record
from agent.evidence.chain import Chain
from agent.evidence.store import Store


def seal_file(store: Store, chain: Chain, kind: str, suffix: str, plaintext: bytes,
              recipients: list[X25519PublicKey], payload: dict[str, Any]) -> dict[str, Any]:
    """Seal `plaintext` as sealed/<seq><suffix>[.age] by a `kind` record carrying `payload`
    and the file's fields; returns the record."""
    extra: dict[str, Any] = {}
    if recipients:
        data = encrypt(plaintext, recipients)
        extra = {"encryption": encryption_record(recipients),
                 "plaintext": {"sha256": hashlib.sha256(plaintext).hexdigest(),
                               "size": len(plaintext)}}
    else:
        data = plaintext
    path = store.open / f"{kind}-{time.monotonic_ns()}{suffix}" \
        f"{AGE_SUFFIX if recipients else ''}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)  # a cut before the rename leaves it for recovery to seal
    return chain.append(kind, {
        **payload,
        **extra,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }, name_for_seq=store.move_to_sealed(path))
