"""A threaded HTTP/1.1 server on blocking TLS sockets: the offload API's transport.

Why threads and not an event loop: under asyncio (or uvloop) every byte a TLS
server sends is encrypted into a memory BIO and copied out again on the loop's
one thread. Here each connection has a thread of its own that reads a file into
one buffer and hands it to OpenSSL, which encrypts it and writes straight to the
socket with the GIL released. The device serves one dock at a time over a few
connections, so a thread each is cheap; at most `MAX_CONNECTIONS` are open.

Why pyOpenSSL and not the standard library's `ssl`: it runs on the OpenSSL that
the `cryptography` wheel ships and keeps current, where `ssl` runs on the
operating system's (3.0 on Debian 12 and the Raspberry Pi OS built on it).
Encrypting the stream is much of what serving a file costs, and newer OpenSSL
does it faster on the same CPU: AES-256-GCM at 7.2 GB/s against 2.2 on the build
machine; see docs/performance.md for the pull as a whole.

Timeouts are the socket's own (SO_RCVTIMEO, SO_SNDTIMEO) on a socket left
blocking, so OpenSSL asking to retry a read or a write means the time ran out.

Requests are parsed by the standard library's `http.server`, and only after the
TLS handshake has verified the client's certificate, in the connection's thread:
a client that stalls its handshake holds up no one else. Routes are regular
expressions over the decoded path; a handler takes a `Request` and returns a
`Reply` or a `FileReply`, or raises `Refused` with the status and a message
that names what was wrong. Every request is logged with the client's CN.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
HANDSHAKE_S = 30
IDLE_S = 60                 # a request, or the client reading a reply, stalled this long
BLOCK = 1024 * 1024         # a file is read and encrypted in blocks this large
TLS_RECORD = 16 * 1024      # the most one TLS record carries: what one read returns
# The server's order of preference, in TLS 1.3 and (for a client on it) TLS 1.2: forward
# secrecy and AEAD only; AES-GCM first where the CPU has AES instructions, else ChaCha20.
AES_FIRST = (b"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
             b"ECDHE+AESGCM:ECDHE+CHACHA20")
CHACHA_FIRST = (b"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
                b"ECDHE+CHACHA20:ECDHE+AESGCM")
_PARTIAL_WRITE = 0x1        # SSL_MODE_ENABLE_PARTIAL_WRITE in OpenSSL's ssl.h
_RANGE = re.compile(r"bytes=(\d{1,19})-(\d{0,19})|bytes=-(\d{1,19})")


class Refused(Exception):
    """A request answered with an error status and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def reply(self) -> Reply:
        return json_reply({"error": self.message}, self.status, self.headers)


@dataclass(frozen=True)
class Request:
    """One request, its body read, from a client whose certificate TLS verified."""

    method: str
    path: str                        # percent-decoded
    params: dict[str, str]           # the route's named groups
    query: dict[str, str]            # the first value of each name
    content_type: str | None
    body: bytes
    peer_name: str                   # the CN of the client's certificate
    certificate: bytes               # the client's certificate, DER


@dataclass(frozen=True)
class Reply:
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileReply:
    """A file served whole (200) or as the one byte range asked for (206): opened by the
    handler, which checked what it opened; sending it closes it."""

    file: BinaryIO
    name: str                        # for the log
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(json.dumps(value, ensure_ascii=False).encode("utf-8"), status=status,
                 headers=headers or {})


Handler = Callable[[Request], "Reply | FileReply"]


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern[str]
    handler: Handler


def cpu_has_aes(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's text shows AES instructions: x86's `aes` flag, ARM's `aes`
    feature (a Pi 5 has it; a Pi 4 and a Pi Zero 2 W do not). Unknown: assume so."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return "aes" in value.split()
    return True


@functools.cache
def _this_cpu_has_aes() -> bool:
    try:
        return cpu_has_aes(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return True


def mutual_tls_context(certificate: Path, private_key: Path, client_ca: Path,
                       has_aes: bool | None = None) -> SSL.Context:
    """A server context that requires a client certificate chaining to `client_ca` alone.
    A file OpenSSL will not load: ValueError naming it.

    Without AES instructions (`has_aes`, by default this CPU's), OpenSSL's AES-GCM runs
    in plain code at a fraction of ChaCha20-Poly1305's speed, so the server picks
    ChaCha20 whenever the client offers it, as every dock does."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION |
                        SSL.OP_CIPHER_SERVER_PREFERENCE)
    has_aes = _this_cpu_has_aes() if has_aes is None else has_aes
    suites, ciphers = AES_FIRST if has_aes else CHACHA_FIRST
    context.set_tls13_ciphersuites(suites)
    context.set_cipher_list(ciphers)
    context.set_session_id(b"bodycam-offload")
    # pyOpenSSL turns partial writes on, and its sendall then loops in Python once per
    # 16 KiB record; off, one SSL_write sends a whole block.
    context.clear_mode(_PARTIAL_WRITE)
    for what, load, path in (("certificate", context.use_certificate_chain_file, certificate),
                             ("private key", context.use_privatekey_file, private_key),
                             ("client CA", context.load_verify_locations, client_ca)):
        try:
            load(str(path))
        except SSL.Error as exc:
            raise ValueError(f"{what} {path}: OpenSSL will not load it: {exc}") from exc
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return context


class HttpsServer:
    """`routes` on `address`:`port` (0: any free port), each connection verified by TLS
    with whatever `context()` returns at its handshake, so a new certificate serves new
    connections at once. Before every handler runs, `guard` may refuse the request."""

    def __init__(self, address: str, port: int, context: Callable[[], SSL.Context],
                 routes: list[Route], max_body: int, access_log: logging.Logger,
                 guard: Callable[[Request], None] = lambda _request: None) -> None:
        self.context = context
        self.routes = routes
        self.max_body = max_body
        self.access_log = access_log
        self.guard = guard
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._listener = _Listener((address, port), self)
        self._thread = threading.Thread(target=self._listener.serve_forever, name="offload",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._listener.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop listening and cut every open connection: a transfer in flight ends now,
        and the dock resumes it with Range next time."""
        if self._thread.is_alive():
            self._listener.shutdown()
        self._listener.server_close()
        with self._open_lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = []
        for route in self.routes:
            match = route.path.fullmatch(path)
            if match and route.method == method:
                return route.handler, match.groupdict()
            if match:
                allowed.append(route.method)
        if allowed:
            raise Refused(405, f"{method} {path}: not allowed (allowed: {', '.join(allowed)})",
                          {"Allow": ", ".join(allowed)})
        raise Refused(404, f"{path}: no such resource")

    def connection(self, raw: socket.socket, client: tuple[str, int]) -> None:
        """One connection, on its own thread: the handshake, then its requests."""
        _set_timeouts(raw, HANDSHAKE_S)
        # A reply's headers and body are two writes: without this the body of a small
        # reply waits for the client's delayed ACK of the headers, 40 ms on Linux.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = SSL.Connection(self.context(), raw)
        tls.set_accept_state()
        with self._tracked(raw):
            try:
                tls.do_handshake()
            except (SSL.WantReadError, SSL.WantWriteError):
                log.warning("TLS handshake with %s: no answer for %d s", client[0], HANDSHAKE_S)
                return
            except (SSL.Error, OSError) as exc:
                log.warning("TLS handshake with %s refused: %s", client[0], exc)
                return
            _set_timeouts(raw, IDLE_S)
            _Connection(tls, client, self._listener)
            with contextlib.suppress(SSL.Error, OSError):
                tls.shutdown()  # close_notify: the client sees the end was meant

    @contextlib.contextmanager
    def _tracked(self, connection: socket.socket) -> Iterator[None]:
        with self._open_lock:
            self._open.add(connection)
        try:
            yield
        finally:
            with self._open_lock:
                self._open.discard(connection)


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], https: HttpsServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.https = https
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Connection)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("%s: refused, %d connections already open", client_address[0],
                        MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.https.connection(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection from %s failed", client_address[0])


def _set_timeouts(raw: socket.socket, seconds: int) -> None:
    """Reads and writes on `raw` fail after `seconds` without progress. A struct timeval's
    size differs between ABIs (32-bit time_t or 64-bit): the kernel's answer tells which."""
    layout = "@qq" if len(raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) == 16 \
        else "@ii"
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        raw.setsockopt(socket.SOL_SOCKET, option, struct.pack(layout, seconds, 0))


class _TlsStream(io.RawIOBase):
    """A TLS connection as the file `http.server` reads and writes, with pyOpenSSL's
    errors as the socket errors the handler expects."""

    def __init__(self, tls: SSL.Connection) -> None:
        super().__init__()
        self._tls = tls

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._tls.recv_into(buffer, min(len(buffer), TLS_RECORD))
        except SSL.ZeroReturnError:  # close_notify
            return 0
        except SSL.SysCallError as exc:
            if exc.args[0] == -1:  # the client closed TCP without close_notify
                return 0
            raise _socket_error(exc) from exc
        except SSL.Error as exc:
            raise _socket_error(exc) from exc

    def write(self, data: Any) -> int:
        try:
            return self._tls.sendall(data)
        except SSL.Error as exc:
            raise _socket_error(exc) from exc


def _socket_error(exc: SSL.Error) -> OSError:
    if isinstance(exc, (SSL.WantReadError, SSL.WantWriteError)):
        return TimeoutError(f"no progress for {IDLE_S} s")
    if isinstance(exc, SSL.SysCallError) and exc.args[0] > 0:
        return OSError(*exc.args)  # ECONNRESET, EPIPE: the matching ConnectionError
    return ConnectionAbortedError(f"TLS: {exc}")


class _Connection(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive on one verified TLS connection."""

    protocol_version = "HTTP/1.1"
    server_version = "bodycam-offload"
    sys_version = ""
    server: _Listener  # type: ignore[assignment]
    request: SSL.Connection

    def setup(self) -> None:
        """Streams over TLS (http.server's own need a socket's makefile), and the client's
        certificate, verified at the handshake: read once per connection."""
        self.connection = self.request
        stream = _TlsStream(self.request)
        self.rfile = io.BufferedReader(stream)
        self.wfile = stream
        peer = self.request.get_peer_certificate(as_cryptography=True)
        self._certificate = peer.public_bytes(Encoding.DER) if peer else b""
        names = peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if peer else []
        self._peer_name = str(names[0].value) if names else ""

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = \
        do_GET  # routed, so a known path answers 405 with Allow; an unknown method gets 501

    def _serve(self) -> None:
        started, status, sent = time.monotonic(), 500, 0
        request: Request | None = None
        try:
            try:
                request = self._read()
                reply = self._answer(request)
            except Refused as exc:
                reply = exc.reply()
            status, sent = self._send(reply)
        except (ConnectionError, TimeoutError) as exc:
            log.info("%s %s: connection lost after %d bytes: %s", self.command, self.path[:80],
                     sent, exc)
            self.close_connection = True
        finally:
            name = request.peer_name if request else "-"
            self.server.https.access_log.info("%s: %s %s %d %d bytes %.3f s", name,
                                               self.command, self.path[:200], status, sent,
                                               time.monotonic() - started)

    def _answer(self, request: Request) -> Reply | FileReply:
        server = self.server.https
        handler, params = server.route(request.method, request.path)
        request = replace(request, params=params)
        server.guard(request)
        try:
            return handler(request)
        except Refused:
            raise
        except Exception as exc:  # a defect: answer 500, log it whole, keep serving
            log.exception("%s %s failed", request.method, request.path)
            raise Refused(500, f"{request.method} {request.path}: internal error "
                          f"({type(exc).__name__}); see the device log") from exc

    def _read(self) -> Request:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise Refused(411, "Transfer-Encoding chunked: send the body with Content-Length")
        length_header = self.headers.get("Content-Length", "0")
        if not length_header.isdigit():
            self.close_connection = True
            raise Refused(400, f"Content-Length {length_header[:40]!r} is not a byte count")
        length = int(length_header)
        if length > self.server.https.max_body:
            self.close_connection = True
            raise Refused(413, f"a body of {length} bytes; at most "
                          f"{self.server.https.max_body} are read")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            raise ConnectionError(f"the body ended after {len(body)} of {length} bytes")
        split = urlsplit(self.path)
        query: dict[str, str] = {}
        for name, value in parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(name, value)
        content_type = self.headers.get_content_type() if "Content-Type" in self.headers \
            else None
        method = "GET" if self.command == "HEAD" else self.command
        return Request(method, unquote(split.path), {}, query, content_type, body,
                       self._peer_name, self._certificate)

    def _send(self, reply: Reply | FileReply) -> tuple[int, int]:
        if isinstance(reply, FileReply):
            return self._send_file(reply)
        return reply.status, self._send_reply(reply)

    def _send_reply(self, reply: Reply) -> int:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return 0
        self.wfile.write(reply.body)
        return len(reply.body)

    def _send_file(self, reply: FileReply) -> tuple[int, int]:
        with reply.file as f:
            size = f.seek(0, 2)
            try:
                start, stop = byte_range(self.headers.get("Range"), size)
            except Refused as exc:
                return exc.status, self._send_reply(exc.reply())
            status = 200 if (start, stop) == (0, size) else 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(stop - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return status, 0
            f.seek(start)
            buffer = bytearray(min(BLOCK, max(stop - start, 1)))
            view, sent = memoryview(buffer), 0
            while sent < stop - start:
                got = f.readinto(view[: min(len(buffer), stop - start - sent)])
                if not got:
                    self.close_connection = True
                    raise ConnectionResetError(f"{reply.name} ended {stop - start - sent} "
                                               "bytes early")
                self.wfile.write(view[:got])
                sent += got
            return status, sent

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, headers too
        long, an unknown method) in the API's JSON form, with a status line even when the
        request line was too broken to name its HTTP version."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = self.protocol_version
        text = f"{message or self.responses.get(code, ('',))[0]}" + \
            (f": {explain}" if explain else "")
        self._send_reply(json_reply({"error": text}, code))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # every request is logged once, by _serve, with the client's name

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("%s: " + format, self.client_address[0], *args)


def byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, stop) of the one range in a Range header; the whole file without one.
    A malformed header, several ranges or a range past the end: 416."""
    if header is None:
        return 0, size
    match = _RANGE.fullmatch(header.strip())
    if match:
        first, last, suffix = match.groups()
        if suffix is not None:
            start, stop = max(size - int(suffix), 0), size
        else:
            start, stop = int(first), size if not last else min(int(last) + 1, size)
        if start < stop:
            return start, stop
    raise Refused(416, f"Range {header[:60]!r} is not one satisfiable byte range of a "
                  f"{size}-byte file", {"Content-Range": f"bytes */{size}"})
