"""The age file format (age-encryption.org/v1), streaming, to X25519 recipients.

Media is encrypted while it is written, so that no plaintext reaches the store's
disk and the device cannot read back what it recorded. The format is age's, so
off-the-shelf tools (`age -d -i key`, rage) decrypt a sealed file; the primitives
(X25519, HKDF-SHA-256, ChaCha20-Poly1305, HMAC-SHA-256) are the `cryptography`
package's. No Python library streams age output to a file as it is produced, so
the framing, which is small and fully specified, is here; its interoperability is
tested against Debian's `age`.

Layout of a file: the text header (one `X25519` stanza per recipient, then the
header MAC), a 16-byte nonce, then the payload in chunks of 64 KiB of plaintext
plus a 16-byte tag, the last chunk flagged in its nonce. Only whole chunks are
written, so a file cut by a power loss decrypts up to its last whole chunk (with
`decrypt(..., allow_truncated=True)`), which says where it was cut.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import bech32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
TAG = 16
NONCE = 16
HEADER_LIMIT = 1 << 20  # bytes; age itself has no limit (see _read_header)
_BODY_LINE = 48  # bytes in a full stanza body line (64 base64 columns)
_X25519_INFO = b"age-encryption.org/v1/X25519"
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class AgeError(Exception):
    """A key, recipient or file that is not valid age."""


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    """age's strict unpadded base64: anything that does not re-encode to itself is refused."""
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        raw = None
    if raw is None or b"=" in text or _b64(raw) != text:
        raise AgeError(f"not canonical unpadded base64: {text[:16]!r}")
    return raw


def _bech32_decode(text: str, hrp: str) -> bytes:
    found, data = bech32.bech32_decode(text)
    if found != hrp or data is None:
        raise AgeError(f"not an age {'identity' if '-' in hrp else 'recipient'}: "
                       f"{text[:8]}… (expected bech32 with prefix {hrp!r})")
    raw = bech32.convertbits(data, 5, 8, False)
    if raw is None or len(raw) != 32:
        raise AgeError(f"{text[:8]}…: a key must be 32 bytes")
    return bytes(raw)


def parse_recipient(text: str) -> X25519PublicKey:
    """An `age1…` recipient (the agency's public key)."""
    return X25519PublicKey.from_public_bytes(_bech32_decode(text.strip(), "age"))


def parse_identity(text: str) -> X25519PrivateKey:
    """An `AGE-SECRET-KEY-1…` identity; lines starting with # are comments, as age-keygen
    writes them."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            secret = _bech32_decode(line.lower(), "age-secret-key-")
            return X25519PrivateKey.from_private_bytes(secret)
    raise AgeError("no AGE-SECRET-KEY-1… line found")


def _bech32_words(raw: bytes) -> list[int]:
    """Bytes as bech32's 5-bit words: convertbits gives None only for values over 8 bits,
    which bytes cannot hold."""
    words = bech32.convertbits(raw, 8, 5)
    assert words is not None
    return words


def recipient_string(public_key: X25519PublicKey) -> str:
    raw = public_key.public_bytes(*_RAW)
    return bech32.bech32_encode("age", _bech32_words(raw))


def identity_string(private_key: X25519PrivateKey) -> str:
    raw = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
    return bech32.bech32_encode("age-secret-key-", _bech32_words(raw)).upper()


def recipient_fingerprint(public_key: X25519PublicKey) -> str:
    """SHA-256 of the raw key, hex: names a recipient in the chain without the key itself."""
    return hashlib.sha256(public_key.public_bytes(*_RAW)).hexdigest()


AGE_FORMAT = "age-v1"  # the chain's name for this format, in a record's `encryption`


def encryption_record(recipients: list[X25519PublicKey]) -> dict[str, object]:
    """How a sealed file was encrypted, for its chain record: the recipients by
    fingerprint (their keys are the agency's to publish, not the chain's)."""
    return {"format": AGE_FORMAT,
            "recipients": sorted(recipient_fingerprint(r) for r in recipients)}


def _header(file_key: bytes, recipients: Iterable[X25519PublicKey]) -> bytes:
    lines = [VERSION_LINE]
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes(*_RAW)
        recipient_raw = recipient.public_bytes(*_RAW)
        wrap_key = _hkdf(ephemeral.exchange(recipient), share + recipient_raw, _X25519_INFO)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        lines += [b"-> X25519 " + _b64(share), _b64(body)]  # 32 bytes: one short line
    header = b"\n".join(lines) + b"\n---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    return header + b" " + _b64(mac) + b"\n"


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class AgeEncryptor:
    """Plaintext in, age bytes out; holds back at most one chunk (in memory) until it is
    known whether it is the last. Hashes the plaintext a chunk at a time on the way
    (`plaintext_sha256`), which costs far less than hashing every small write."""

    def __init__(self, recipients: list[X25519PublicKey]) -> None:
        if not recipients:
            raise AgeError("encryption needs at least one recipient")
        file_key = os.urandom(16)
        nonce = os.urandom(NONCE)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._pending = bytearray(_header(file_key, recipients) + nonce)
        self._chunk = bytearray(CHUNK)  # filled in place: no copies beyond the one in
        self._filled = 0
        self._counter = 0
        self._plaintext_out = 0
        self.plaintext_sha256 = hashlib.sha256()

    def update(self, plaintext: bytes) -> bytes:
        """The age bytes that can be written now: the header, then each whole chunk that
        has more plaintext after it."""
        filled, size = self._filled, len(plaintext)
        if filled + size <= CHUNK and not self._pending:  # the common case: it fits
            self._chunk[filled:filled + size] = plaintext
            self._filled = filled + size
            return b""
        out, self._pending = self._pending, bytearray()
        view = memoryview(plaintext)
        while view:
            if self._filled == CHUNK:  # full, and more follows: not the last
                out += self._seal(self._chunk, last=False)
                self._filled = 0
            take = min(CHUNK - self._filled, len(view))
            self._chunk[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
        return bytes(out)

    @property
    def plaintext_written(self) -> int:
        """Plaintext bytes inside the chunks handed out so far."""
        return self._plaintext_out

    def finalize(self) -> bytes:
        out = bytes(self._pending) + self._seal(memoryview(self._chunk)[:self._filled],
                                                last=True)
        self._pending, self._filled = bytearray(), 0
        return out

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> bytes:
        sealed = self._aead.encrypt(_chunk_nonce(self._counter, last), chunk, None)
        self.plaintext_sha256.update(chunk)
        self._counter += 1
        self._plaintext_out += len(chunk)
        return sealed


def encrypt(plaintext: bytes, recipients: list[X25519PublicKey]) -> bytes:
    encryptor = AgeEncryptor(recipients)
    return encryptor.update(plaintext) + encryptor.finalize()


@dataclass
class Decrypted:
    """What `decrypt` found: complete when the flagged last chunk was read."""

    plaintext_bytes: int = 0
    chunks: int = 0
    complete: bool = False
    stored_bytes_used: int = 0  # of the file: header and the chunks that decrypted
    trailing_bytes: int = 0     # after the last whole chunk: a torn write, not decryptable

    def describe(self) -> str:
        if self.complete:
            return f"complete: {self.plaintext_bytes} bytes in {self.chunks} chunks"
        return (f"cut: the file ends without its final chunk (a power cut or crash); "
                f"{self.plaintext_bytes} bytes in {self.chunks} whole chunks decrypted, up to "
                f"byte {self.stored_bytes_used} of the file; {self.trailing_bytes} bytes after "
                "it are an incomplete chunk")


@dataclass(frozen=True)
class _Header:
    """A parsed age header: its stanzas, its MAC, and the bytes the MAC covers."""

    stanzas: list[tuple[list[bytes], bytes]]  # (arguments, type first; body) of each stanza
    mac: bytes
    signed: bytes
    length: int  # bytes up to and including the MAC line


def _read_line(source: BinaryIO, budget: int) -> bytes:
    """One header line with its newline, within what is left of HEADER_LIMIT."""
    line = source.readline(budget + 1)
    if len(line) > budget:
        raise AgeError(f"the age header is longer than {HEADER_LIMIT} bytes: refused")
    if not line.endswith(b"\n"):
        raise AgeError("the file ends inside the age header")
    return line


def _header_string(arg: bytes) -> bool:
    """age's rule for a stanza argument: printable ASCII, no spaces, not empty."""
    return bool(arg) and all(33 <= c <= 126 for c in arg)


def _read_header(source: BinaryIO) -> _Header:
    """Parse the header as age does (line by line), reading no further than its MAC line.

    age sets no limit on a header's size; HEADER_LIMIT bounds what a hostile file can
    make us buffer while leaving room for thousands of recipients."""
    first = source.readline(len(VERSION_LINE) + 1)
    if first != VERSION_LINE + b"\n":
        raise AgeError("not an age file: no age-encryption.org/v1 header")
    length, signed = len(first), bytearray(first)
    stanzas: list[tuple[list[bytes], bytes]] = []
    lines = 1
    while True:
        line = _read_line(source, HEADER_LIMIT - length)
        length, lines = length + len(line), lines + 1
        where = f"age header line {lines}"
        if line.startswith(b"--- "):
            mac = _unb64(line[4:-1])
            if len(mac) != 32:
                raise AgeError(f"{where}: the MAC is not 32 bytes")
            return _Header(stanzas, mac, bytes(signed) + b"---", length)
        signed += line
        args = line[:-1].split(b" ")
        if args[0] != b"->" or len(args) < 2 or not all(map(_header_string, args[1:])):
            raise AgeError(f"{where}: neither a stanza nor the MAC line: {line[:32]!r}")
        body = bytearray()
        while True:  # body lines of 48 bytes, ended by a shorter one (perhaps empty)
            line = _read_line(source, HEADER_LIMIT - length)
            length, lines = length + len(line), lines + 1
            signed += line
            chunk = _unb64(line[:-1])
            if len(chunk) > _BODY_LINE:
                raise AgeError(f"{where}: a stanza body line is longer than 64 columns")
            body += chunk
            if len(chunk) < _BODY_LINE:
                break
        stanzas.append((args[1:], bytes(body)))


def _file_key(header: _Header, identity: X25519PrivateKey) -> bytes:
    own = identity.public_key().public_bytes(*_RAW)
    for args, body in header.stanzas:
        if args[0] != b"X25519":
            continue
        share = _unb64(args[1]) if len(args) == 2 else b""
        if len(share) != 32 or len(body) != 16 + TAG:
            raise AgeError("malformed X25519 stanza: a 32-byte share and a 32-byte body "
                           "are required")
        try:
            shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # a low-order share: age refuses it too
            raise AgeError("an X25519 stanza holds a low-order share: refused") from None
        wrap_key = _hkdf(shared, share + own, _X25519_INFO)
        try:
            file_key = ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        except InvalidTag:
            continue
        expected = hmac.new(_hkdf(file_key, b"", b"header"), header.signed,
                            hashlib.sha256).digest()
        if not hmac.compare_digest(header.mac, expected):
            raise AgeError("the header's MAC does not verify: the file was changed")
        return file_key
    raise AgeError("none of the file's recipients is this identity")


def decrypt_stream(source: BinaryIO, identity: X25519PrivateKey,
                   report: Decrypted) -> Iterator[bytes]:
    """Yield plaintext chunk by chunk; `report` says how far it got. A chunk that fails
    authentication raises; a file that simply ends early (power cut) stops cleanly."""
    header = _read_header(source)
    file_key = _file_key(header, identity)
    nonce = source.read(NONCE)
    if len(nonce) < NONCE:
        raise AgeError("the file ends inside the payload nonce")
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    report.stored_bytes_used = header.length + NONCE
    buffer = bytearray()
    while True:
        want = CHUNK + TAG
        while len(buffer) < want + 1 and (more := source.read(1 << 20)):
            buffer += more
        chunk, following = bytes(buffer[:want]), len(buffer) > want
        if not following:
            try:  # the last chunk, if the file is whole
                plaintext = aead.decrypt(_chunk_nonce(report.chunks, True), chunk, None)
            except InvalidTag:
                pass
            else:
                report.complete = True
                yield from _counted(report, plaintext, len(chunk))
                return
        if len(chunk) < want:
            report.trailing_bytes = len(chunk)
            return
        try:
            plaintext = aead.decrypt(_chunk_nonce(report.chunks, False), chunk, None)
        except InvalidTag:
            raise AgeError(f"chunk {report.chunks} (byte {report.stored_bytes_used} of the "
                           "file) does not authenticate: the file was changed") from None
        yield from _counted(report, plaintext, len(chunk))
        del buffer[:want]


def _counted(report: Decrypted, plaintext: bytes, stored: int) -> Iterator[bytes]:
    report.chunks += 1
    report.plaintext_bytes += len(plaintext)
    report.stored_bytes_used += stored
    yield plaintext
