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

Anyone on the link can open a connection; only a dock can finish a handshake.
So the two are kept apart (docs/docking.md, "Limits"): a handshake runs against
one deadline from accept, however slowly its bytes trickle in; handshakes in
progress are bounded in all and per address, and when they are all taken one of
the address holding the most is cut to make room; and a session slot is taken only
once TLS has verified the client's certificate, so no peer without one ever holds
a slot a dock needs. What such peers cause in the log is counted, not written
line by line (`RefusalLog`). After the handshake the timeouts are the socket's
own (SO_RCVTIMEO, SO_SNDTIMEO) on a socket left blocking, so OpenSSL asking to
retry a read or a write means the time ran out.

Requests are parsed by the standard library's `http.server`, and only after the
TLS handshake has verified the client's certificate, in the connection's thread.
Routes are regular expressions over the decoded path, each with the largest body
it takes: a larger Content-Length is answered 413 before a byte of the body is
read, and only `BODY_READERS` requests read and handle a body at once, so request
load stays small beside the recorder's. A handler takes a `Request` and returns a
`Reply` or a `FileReply`, or raises `Refused` with the status and a message that
names what was wrong. Every request is logged with the client's CN.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import select
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

MAX_CONNECTIONS = 16        # sessions: connections whose client certificate TLS verified
MAX_HANDSHAKES = 32         # handshakes in progress, from anyone
HANDSHAKES_PER_ADDRESS = 8  # of them from one address: a dock opens a few at once
HANDSHAKE_S = 10            # from accept to a verified certificate, however the bytes come
REFUSAL_LOG_S = 60.0        # refused peers: one line, then one summary, per window
BODY_READERS = 2            # requests reading and handling a body at once
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
    """A file (or the `span` of it asked for, as the chain from a line on) served whole (200)
    or as the one byte range asked for (206), streamed: opened by the handler, which
    checked what it opened; sending it closes it."""

    file: BinaryIO
    name: str                        # for the log
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    span: tuple[int, int] | None = None  # [start, end) of the file served; None: all of it


def json_reply(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(json.dumps(value, ensure_ascii=False).encode("utf-8"), status=status,
                 headers=headers or {})


Handler = Callable[[Request], "Reply | FileReply"]


@dataclass(frozen=True)
class Route:
    """`max_body`: the most bytes of body the handler needs, or a function that says so
    for the device's state now (a custody report grows with the files it names)."""

    method: str
    path: re.Pattern[str]
    handler: Handler
    max_body: int | Callable[[], int] = 0

    def body_limit(self) -> int:
        return self.max_body() if callable(self.max_body) else self.max_body


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


class RefusalLog:
    """Connections refused before a dock was identified, logged so that no flood from the
    link can fill the log: the first refusal of a window is logged whole, the rest are
    counted by reason and address and summed up in one line when the window ends. At most
    two lines per REFUSAL_LOG_S, whatever the peers do."""

    MAX_REASONS = 8              # distinct reasons kept per window; the rest are "other"
    MAX_ADDRESSES = 1024         # distinct addresses kept per window; more are counted

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._window_end: float | None = None
        self._reasons: dict[str, int] = {}
        self._addresses: set[str] = set()
        self._more_addresses = False

    def refused(self, address: str, reason: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._flush(now)
            if self._window_end is None:
                self._window_end = now + REFUSAL_LOG_S
                self._log.warning("%s: %s (until %g s from now, further refusals are counted "
                                  "and summed up in one line)", address, reason[:200],
                                  REFUSAL_LOG_S)
                return
            key = reason if reason in self._reasons or \
                len(self._reasons) < self.MAX_REASONS else "other"
            self._reasons[key] = self._reasons.get(key, 0) + 1
            if len(self._addresses) < self.MAX_ADDRESSES:
                self._addresses.add(address)
            else:
                self._more_addresses = address not in self._addresses

    def flush(self) -> None:
        """Called often (the listener's idle loop): a window that has ended is summed up."""
        with self._lock:
            self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        if self._window_end is None or now < self._window_end:
            return
        total = sum(self._reasons.values())
        if total:
            addresses = f"{len(self._addresses)}{'+' if self._more_addresses else ''}"
            reasons = "; ".join(f"{count} x {reason[:120]}" for reason, count in
                                sorted(self._reasons.items(), key=lambda item: -item[1]))
            self._log.warning("%d more connection(s) refused in %g s from %s address(es): %s",
                              total, REFUSAL_LOG_S, addresses, reasons)
        self._window_end = None
        self._reasons, self._addresses, self._more_addresses = {}, set(), False


@dataclass
class _Pending:
    address: str
    started: float


class HttpsServer:
    """`routes` on `address`:`port` (0: any free port), each connection verified by TLS
    with whatever `context()` returns at its handshake, so a new certificate serves new
    connections at once. Before a request's body is read, `guard` may refuse it."""

    def __init__(self, address: str, port: int, context: Callable[[], SSL.Context],
                 routes: list[Route], access_log: logging.Logger,
                 guard: Callable[[Request], None] = lambda _request: None) -> None:
        self.context = context
        self.routes = routes
        self.access_log = access_log
        self.guard = guard
        self.refusals = RefusalLog(log)
        self.bodies = threading.BoundedSemaphore(BODY_READERS)
        self._sessions = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._handshaking: dict[socket.socket, _Pending] = {}
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

    def route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            match = route.path.fullmatch(path)
            if match and route.method == method:
                return route, match.groupdict()
            if match:
                allowed.append(route.method)
        if allowed:
            raise Refused(405, f"{method} {path}: not allowed (allowed: {', '.join(allowed)})",
                          {"Allow": ", ".join(allowed)})
        raise Refused(404, f"{path}: no such resource")

    def admit(self, raw: socket.socket, address: str) -> bool:
        """Whether a connection just accepted may start its handshake: within the limit
        per address, and within the limit in all, or else by cutting the oldest handshake
        of the address that holds the most, when it holds at least two more than this
        address would. Peers that stall handshakes from a few addresses thus keep their
        fair share and no more, and a dock arriving later still gets its handshakes."""
        with self._open_lock:
            held: dict[str, int] = {}
            for pending in self._handshaking.values():
                held[pending.address] = held.get(pending.address, 0) + 1
            mine = held.get(address, 0)
            if mine >= HANDSHAKES_PER_ADDRESS:
                reason = f"{HANDSHAKES_PER_ADDRESS} handshakes from this address in progress"
            elif len(self._handshaking) < MAX_HANDSHAKES:
                reason = ""
            elif (most := max(held, key=held.__getitem__)) and held[most] > mine + 1:
                oldest = min((s for s, p in self._handshaking.items() if p.address == most),
                             key=lambda s: self._handshaking[s].started)
                del self._handshaking[oldest]  # its thread sees the end and gives up
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
                reason = ""
            else:
                reason = f"{MAX_HANDSHAKES} handshakes in progress"
            if not reason:
                self._handshaking[raw] = _Pending(address, time.monotonic())
                self._open.add(raw)
                return True
        self.refusals.refused(address, f"refused: {reason}")
        return False

    def connection(self, raw: socket.socket, client: tuple[str, int]) -> None:
        """One connection, on its own thread: the handshake, then its requests."""
        # A reply's headers and body are two writes: without this the body of a small
        # reply waits for the client's delayed ACK of the headers, 40 ms on Linux.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self._handshake(raw, client[0])
            if tls is None:
                return
            if not self._sessions.acquire(blocking=False):
                self.refusals.refused(client[0], f"refused after the handshake: all "
                                      f"{MAX_CONNECTIONS} sessions in use")
                return
            try:
                _set_timeouts(raw, IDLE_S)
                _Connection(tls, client, self._listener)
                with contextlib.suppress(SSL.Error, OSError):
                    tls.shutdown()  # close_notify: the client sees the end was meant
            finally:
                self._sessions.release()
        finally:
            with self._open_lock:
                self._handshaking.pop(raw, None)
                self._open.discard(raw)

    def _handshake(self, raw: socket.socket, address: str) -> SSL.Connection | None:
        """The TLS handshake, against one deadline from now: the socket is non-blocking
        until it ends, and each wait for the peer gets only the time that is left. The
        verified connection, its socket blocking again; None once refused (counted)."""
        deadline = time.monotonic() + HANDSHAKE_S
        raw.setblocking(False)
        tls = SSL.Connection(self.context(), raw)
        tls.set_accept_state()
        waiting = select.poll()
        while True:
            try:
                tls.do_handshake()
                break
            except SSL.WantReadError:
                events = select.POLLIN
            except SSL.WantWriteError:
                events = select.POLLOUT
            except (SSL.Error, OSError) as exc:
                self.refusals.refused(address, f"TLS handshake refused: {exc}")
                return None
            left = deadline - time.monotonic()
            waiting.register(raw, events)
            if left <= 0 or not waiting.poll(left * 1000):
                self.refusals.refused(address, f"TLS handshake: no verified certificate "
                                      f"within {HANDSHAKE_S} s")
                return None
            with self._open_lock:
                if raw not in self._handshaking:  # cut to make room for a newer one
                    self.refusals.refused(address, "TLS handshake cut to make room")
                    return None
        with self._open_lock:
            self._handshaking.pop(raw, None)
        raw.setblocking(True)
        return tls


_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h
_IPV6_FREEBIND = 78  # linux/in6.h; Python does not name it


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], https: HttpsServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.https = https
        super().__init__(address, _Connection)

    def server_bind(self) -> None:
        """Bind even before the address exists: the dock link (a USB gadget) may get its
        address after the daemon starts, and then the server serves from that moment, as
        systemd's FreeBind= does for its sockets. Only that address is ever served."""
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        else:
            self.socket.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.https.admit(request, client_address[0]):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def service_actions(self) -> None:
        self.https.refusals.flush()

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
    _body_read = False

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
                request = self._head()
                reply = self._answer(request)
            except Refused as exc:
                if self._body_unread():
                    self.close_connection = True  # the rest of the stream is that body
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
        """Route, guard and size first, from the request line and headers alone; only then
        is the body read, within the route's limit and one of BODY_READERS slots."""
        server = self.server.https
        route, params = server.route(request.method, request.path)
        request = replace(request, params=params)
        server.guard(request)
        length = self._body_length(route.body_limit())
        with self._body_slot(length):
            if length:
                request = replace(request, body=self._body(length))
            try:
                return route.handler(request)
            except Refused:
                raise
            except Exception as exc:  # a defect: answer 500, log it whole, keep serving
                log.exception("%s %s failed", request.method, request.path)
                raise Refused(500, f"{request.method} {request.path}: internal error "
                              f"({type(exc).__name__}); see the device log") from exc

    def _head(self) -> Request:
        """The request as its line and headers give it, the body not yet read."""
        self._body_read = False
        split = urlsplit(self.path)
        query: dict[str, str] = {}
        for name, value in parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(name, value)
        content_type = self.headers.get_content_type() if "Content-Type" in self.headers \
            else None
        method = "GET" if self.command == "HEAD" else self.command
        return Request(method, unquote(split.path), {}, query, content_type, b"",
                       self._peer_name, self._certificate)

    def _body_unread(self) -> bool:
        return not self._body_read and (self.headers.get("Content-Length", "0") != "0" or
                                        "Transfer-Encoding" in self.headers)

    def _body_length(self, limit: int) -> int:
        """The body's size from Content-Length, refused at once (nothing read) when the
        route takes no body that large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise Refused(411, "Transfer-Encoding chunked: send the body with Content-Length")
        length_header = self.headers.get("Content-Length", "0")
        if not length_header.isdigit():
            raise Refused(400, f"Content-Length {length_header[:40]!r} is not a byte count")
        length = int(length_header)
        if length > limit:
            raise Refused(413, f"a body of {length} bytes; {self.command} {self.path[:80]} "
                          f"takes at most {limit}")
        return length

    @contextlib.contextmanager
    def _body_slot(self, length: int) -> Iterator[None]:
        """One of BODY_READERS slots for a request with a body, held while it is read and
        handled: parsing and checking bodies stays a small share of the CPU and memory."""
        if not length:
            yield
            return
        if not self.server.https.bodies.acquire(timeout=IDLE_S):
            raise Refused(503, f"{BODY_READERS} requests with a body are being handled; "
                          "try again", {"Retry-After": "1"})
        try:
            yield
        finally:
            self.server.https.bodies.release()

    def _body(self, length: int) -> bytes:
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) < length:
            self.close_connection = True
            raise ConnectionError(f"the body ended after {len(body)} of {length} bytes")
        return body

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
            base, size = (0, f.seek(0, 2)) if reply.span is None else \
                (reply.span[0], reply.span[1] - reply.span[0])
            try:
                start, stop = byte_range(self.headers.get("Range"), size)
            except Refused as exc:
                return exc.status, self._send_reply(exc.reply())
            status = 200 if (start, stop) == (0, size) else 206
            self.send_response(status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(stop - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return status, 0
            f.seek(base + start)
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
