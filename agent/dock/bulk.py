"""Sealed files off the device through libcurl (pycurl): the bulk of a pull.

A pull's API calls are few and small and stay on aiohttp (agent/dock/pull.py); the
sealed files are nearly all of its bytes. libcurl reads TLS straight off the
socket in C, and each transfer runs on a thread of its own with the GIL released,
where Python's TLS under an event loop copies every byte through memory BIOs on
one thread: on the build machine the pull went from about 3,400 to 3,700-5,000
Mbit/s (docs/performance.md). Each transfer thread keeps its handle, and so its
connection and TLS session, from file to file, as `curl --parallel` does: one
handshake per thread, not per file.

The device answering is the one the API session verified: the dock's client
certificate, the device CA as the only trust anchor, no host name (a device
certificate names the device, not an address), and the device's TLS key pinned to
the key of the certificate whose CN the session checked.
"""

from __future__ import annotations

import base64
import hashlib
import mmap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycurl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.dock.direct_file import DirectFile, ForeignFile, aligned_buffer

BUFFER = 512 * 1024         # libcurl's receive buffer: fewer, larger callbacks
CONNECT_TIMEOUT_S = 30
STALL_S = 60                # no byte for this long: the connection is taken as cut
_ERROR_BODY_MAX = 4096


@dataclass(frozen=True)
class BulkLink:
    """The TLS material of one pull's transfers."""

    cert: Path
    key: Path
    device_ca: Path
    pinned_key: str  # libcurl's form: sha256//<base64 of the SHA-256 of the DER public key>

    @staticmethod
    def pin(device_certificate: bytes) -> str:
        """The pin of the device's key, from its certificate (DER) as the session saw it."""
        public = x509.load_der_x509_certificate(device_certificate).public_key()
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


class Throttle:
    """A bay's bandwidth cap: a token bucket shared by every transfer of one pull.

    Each read takes its length in tokens, going into debt if need be, and the reader
    sleeps until the debt is paid: the transfer thread stops reading, TCP's window
    closes and the device slows down. The bucket starts empty and holds at most a
    quarter second of tokens, so a pull of N bytes takes at least N / `rate` seconds.
    """

    def __init__(self, bytes_per_s: float) -> None:
        if bytes_per_s <= 0:
            raise ValueError(f"a cap of {bytes_per_s} bytes/s")
        self.rate = bytes_per_s
        self._burst = bytes_per_s / 4
        self._tokens = 0.0
        self._at = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def mbit(cls, mbit: float) -> Throttle | None:
        """The cap of `mbit` Mbit/s; None for 0, uncapped."""
        return cls(mbit * 1e6 / 8) if mbit else None

    def take(self, size: int) -> None:
        """Account for `size` bytes read; returns once the cap allows them."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self.rate) - size
            self._at = now
            wait = -self._tokens / self.rate
        if wait > 0:
            time.sleep(wait)


class Connections:
    """For each thread that calls `fetch`: a libcurl handle, kept open between files, and
    the aligned buffer its files are gathered in, kept too (see agent/dock/direct_file.py);
    every transfer under the one `throttle`, when the bay is capped."""

    def __init__(self, link: BulkLink, throttle: Throttle | None = None) -> None:
        self._link = link
        self._throttle = throttle
        self._local = threading.local()
        self._opened: list[tuple[pycurl.Curl, mmap.mmap]] = []
        self._lock = threading.Lock()

    def fetch(self, download: Download, url: str) -> None:
        """`download.run` on this thread's connection, opened on first use."""
        opened = getattr(self._local, "opened", None)
        if opened is None:
            curl = pycurl.Curl()
            _configure(curl, self._link)
            opened = self._local.opened = (curl, aligned_buffer())
            with self._lock:
                self._opened.append(opened)
        curl, buffer = opened
        download.throttle = self._throttle
        download.run(curl, url, buffer)

    def close(self) -> None:
        """Once no thread fetches any more."""
        with self._lock:
            for curl, buffer in self._opened:
                curl.close()
                buffer.close()
            self._opened.clear()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class Download:
    """One transfer of a sealed file into its part file, from `offset` on.

    `digest` holds the hash of the part's first `offset` bytes and takes every byte
    received; if the device answers a Range with the whole file (200), the part and
    the hash start again from zero.
    """

    part: Path
    offset: int
    digest: Any
    status: int = 0
    received: int = 0
    error: bytearray = field(default_factory=bytearray)
    throttle: Throttle | None = None
    _file: DirectFile | None = None
    _refused: ForeignFile | None = None
    _buffer: mmap.mmap | None = None

    def run(self, curl: pycurl.Curl, url: str, buffer: mmap.mmap) -> None:
        """Transfer on `curl`, gathering in `buffer` (see `Connections`); raises
        ConnectionError when the connection fails (what arrived is on disk, so a retry
        resumes after it)."""
        self._buffer = buffer
        try:
            curl.setopt(pycurl.URL, url)
            if self.offset:
                curl.setopt(pycurl.RANGE, f"{self.offset}-")
            else:
                curl.unsetopt(pycurl.RANGE)
            curl.setopt(pycurl.HEADERFUNCTION, self._header)
            curl.setopt(pycurl.WRITEFUNCTION, self._write)
            curl.perform()
            if self.status in (200, 206) and self._file is None:  # an empty file
                self._open()
        except pycurl.error as exc:
            if self._refused is not None:
                raise self._refused from None
            code, message = exc.args
            raise ConnectionError(f"{url}: libcurl error {code}: {message}") from exc
        finally:
            if self._file is not None:
                self.received = self._file.length - self.offset
                self._file.close()

    @property
    def held(self) -> int:
        """The file's bytes in hand now, from offset 0: read by another thread for the
        pull's progress, where a call per network read would cost the transfer."""
        return self._file.length if self._file is not None else self.offset

    def _header(self, line: bytes) -> None:
        if line.startswith(b"HTTP/"):
            self.status = int(line.split()[1])

    def _write(self, data: bytes) -> int | None:
        if self.throttle is not None:
            self.throttle.take(len(data))
        if self._file is None and self.status in (200, 206):  # the first read of the file
            try:
                self._open()
            except ForeignFile as exc:  # kept to raise on this thread, not in libcurl's
                self._refused = exc
                return 0  # stops the transfer
        if self._file is not None:  # every read: 65,536 calls per GiB
            self._file.write(data)
        else:  # the device's JSON error, not the file
            self.error += data[: _ERROR_BODY_MAX - len(self.error)]
        return None

    def _open(self) -> None:
        if self.status == 200 and self.offset:  # the device ignored Range: start again
            self.offset, self.digest = 0, hashlib.sha256()
        self._file = DirectFile(self.part, self.offset, self.digest, self._buffer)


def _configure(curl: pycurl.Curl, link: BulkLink) -> None:
    curl.setopt(pycurl.SSLCERT, str(link.cert))
    curl.setopt(pycurl.SSLKEY, str(link.key))
    curl.setopt(pycurl.CAINFO, str(link.device_ca))
    curl.unsetopt(pycurl.CAPATH)  # the device CA only, never the system's anchors
    curl.setopt(pycurl.SSL_VERIFYPEER, 1)
    curl.setopt(pycurl.SSL_VERIFYHOST, 0)  # checked by the pinned key instead of a name
    curl.setopt(pycurl.PINNEDPUBLICKEY, link.pinned_key)
    curl.setopt(pycurl.SSLVERSION, pycurl.SSLVERSION_TLSv1_2)
    curl.setopt(pycurl.BUFFERSIZE, BUFFER)
    curl.setopt(pycurl.CONNECTTIMEOUT, CONNECT_TIMEOUT_S)
    curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
    curl.setopt(pycurl.LOW_SPEED_TIME, STALL_S)
    curl.setopt(pycurl.NOSIGNAL, 1)  # on threads: no SIGALRM for timeouts
