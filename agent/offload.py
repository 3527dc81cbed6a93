"""The offload server: the only way footage leaves the device (Art. 20), to an agency dock.

HTTPS with mutual TLS: the client must present a certificate that chains to the
agency's dock CA, the one trust anchor loaded; TLS 1.2 or newer. The device
presents its enrolled certificate with its signing key; a device not yet enrolled
presents a self-signed one for the same key and serves only its identity and
enrollment, until a dock enrolls it (then new connections get the enrolled
certificate, without a restart). It runs on its own thread with its own event
loop, so a slow dock never holds up the recorder, and it serves only what the
chain names: a sealed file is asked for by the seq of its record, parsed
strictly, and its path comes from that record, never from the request. Every
access is logged with the dock's name. The API is specified in
docs/offload-openapi.yaml; the protocol and custody rules in docs/docking.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import uvloop
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field, ValidationError

from agent import __version__
from agent.chain import Chain, utc_iso
from agent.config import DockConfig
from agent.custody import (
    CustodyRefused,
    CustodyReport,
    DockIdentity,
    Ledger,
    Nonces,
    StrictModel,
    take_custody,
)
from agent.enrollment import (
    current_request,
    describe,
    enroll,
    enrolled_certificate,
    tls_certificate,
)
from agent.keys import PRIVATE_NAME, PUBLIC_NAME, KeyMaterialError, fingerprint
from agent.store import Store
from hal.clock import KernelClock, SimulatedClock, set_wall_clock

log = logging.getLogger(__name__)

API = "/v1"
MAX_BODY = 32 * 1024 * 1024
CHUNK = 1024 * 1024
_SEQ = re.compile(r"[1-9][0-9]{0,15}")
_PEM_MAX = 64 * 1024
_ENROLLMENT_MODE = frozenset({f"{API}/identity", f"{API}/enrollment"})
_Model = TypeVar("_Model", bound=BaseModel)
DOCK = web.RequestKey("dock", DockIdentity)


class OfficerAssignment(StrictModel):
    """Issue the device to an officer, or take it back (Art. 8-9)."""

    action: Literal["issue", "return"]
    officer: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    operator: Annotated[str, Field(min_length=1, max_length=64)]


class ClockSet(StrictModel):
    """The dock's time, for a device whose clock is not synchronised."""

    time_ns: Annotated[int, Field(ge=946_684_800 * 10**9, le=4_102_444_800 * 10**9)]
    operator: Annotated[str, Field(min_length=1, max_length=64)]


class EnrollmentRequest(StrictModel):
    """What a dock hands over to enroll the device; `dock_ca` absent keeps the one in use."""

    certificate: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)]
    dock_ca: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)] | None = None
    recipients: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)]
    operator: Annotated[str, Field(min_length=1, max_length=64)]
    replace: bool = False


@dataclass(frozen=True)
class DockedDevice:
    """What the server works on: the daemon's store, chain and clock, shared, not copied."""

    device_id: str
    key: Ed25519PrivateKey
    store: Store
    chain: Chain
    ledger: Ledger
    clock: KernelClock | SimulatedClock
    purge: Callable[[], Any]
    officer: Callable[[], str]


def server_context(config: DockConfig, store: Path, certificate: Path,
                   private_key: Path) -> ssl.SSLContext:
    """Mutual TLS: our certificate, and the dock CA as the only anchor for client certificates."""
    dock_ca = config.path(store, config.dock_ca)
    if not dock_ca.is_file():
        raise FileNotFoundError(f"[dock] dock_ca = {config.dock_ca!r}: no file {dock_ca}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(certificate, private_key)
    context.load_verify_locations(cafile=dock_ca)
    return context


class OffloadServer:
    """The aiohttp application on its own thread and loop; `start` returns once it listens."""

    def __init__(self, device: DockedDevice, config: DockConfig) -> None:
        self._device = device
        self._config = config
        self._context, self._enrolled = self._tls()
        self._live = self._context  # what new handshakes get; replaced at enrollment
        self._context.sni_callback = self._newest
        self._enrolling = asyncio.Lock()
        self._nonces = Nonces()
        self._loop = uvloop.new_event_loop()  # its TLS costs less CPU per byte than asyncio's
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="offload",
                                        daemon=True)
        self.port = 0

    @property
    def enrolled(self) -> bool:
        return self._enrolled

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self.port = future.result(30)
        log.info("offload server on %s:%d (mutual TLS, dock CA %s)%s", self._config.address,
                 self.port, self._config.dock_ca, "" if self._enrolled else
                 ": not enrolled, serving only identity and enrollment")

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def _tls(self) -> tuple[ssl.SSLContext, bool]:
        """A context for the certificate the device has now, and whether it is enrolled."""
        keys = self._device.store.keys
        certificate, enrolled = tls_certificate(keys, self._device.key, self._device.device_id)
        return server_context(self._config, self._device.store.root, certificate,
                              keys / PRIVATE_NAME), enrolled

    def _newest(self, ssl_object: ssl.SSLObject, _server_name: str | None,
                listening: ssl.SSLContext) -> None:
        """Called at every ClientHello (with or without SNI): the handshake takes the newest
        context, so an enrollment is served at once; connections already open keep theirs."""
        if self._live is not listening:
            ssl_object.context = self._live

    async def _serve(self) -> int:
        app = web.Application(client_max_size=MAX_BODY,
                              middlewares=[_name_the_dock, self._enrollment_mode])
        app.add_routes([
            web.get(f"{API}/identity", self._identity),
            web.get(f"{API}/enrollment", self._certificate_request),
            web.post(f"{API}/enrollment", self._enroll),
            web.get(f"{API}/chain", self._chain),
            web.get(API + "/sealed/{seq}", self._sealed),
            web.post(f"{API}/custody", self._custody),
            web.post(f"{API}/officer", self._officer),
            web.post(f"{API}/clock", self._clock),
        ])
        self._runner = web.AppRunner(app, access_log_class=_AccessLogger)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._config.address, self._config.port,
                           ssl_context=self._context)
        await site.start()
        return self._runner.addresses[0][1]

    @web.middleware
    async def _enrollment_mode(self, request: web.Request,
                               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                               ) -> web.StreamResponse:
        """Not enrolled: no dock can have checked the device against the agency's device
        CA, so nothing is served that custody or the officer's record would rest on."""
        if not self._enrolled and request.path not in _ENROLLMENT_MODE:
            raise _error(web.HTTPForbidden, f"{request.path}: this device is not enrolled; "
                         "until a dock enrolls it (bodycam dock enroll) it serves only "
                         f"{' and '.join(sorted(_ENROLLMENT_MODE))}")
        return await handler(request)

    # --- reading ------------------------------------------------------------------------

    async def _identity(self, request: web.Request) -> web.Response:
        device = self._device
        head = device.chain.head
        public = (device.store.keys / PUBLIC_NAME).read_text(encoding="ascii")
        return web.json_response({
            "api": 1,
            "device": device.device_id,
            "officer": device.officer(),
            "version": __version__,
            "public_key": public,
            "key_fingerprint": fingerprint(device.key.public_key()),
            "enrolled": self._enrolled,
            "head": head.as_dict(),
            "clock": device.clock.state().as_record(),
            "nonce": self._nonces.issue(),
        })

    async def _chain(self, request: web.Request) -> web.Response:
        start = _seq(request.query.get("from", "1"), "query parameter 'from'")
        body = await asyncio.to_thread(_lines_from, self._device.store.chain, start)
        return web.Response(body=body, content_type="application/x-ndjson")

    async def _sealed(self, request: web.Request) -> web.StreamResponse:
        seq = _seq(request.match_info["seq"], "path segment 'seq'")
        sealed = self._device.ledger.refresh().files.get(seq)
        if sealed is None:
            raise _error(web.HTTPNotFound, f"seq {seq} seals no file in this chain")
        path = self._device.store.root / sealed.file
        if seq in self._device.ledger.purged or not path.is_file():
            raise _error(web.HTTPGone, f"{sealed.file} (seq {seq}) was purged after custody")
        return await _send_file(request, path, sealed.sha256)

    async def _certificate_request(self, request: web.Request) -> web.Response:
        device = self._device
        pem = await asyncio.to_thread(current_request, device.store.keys, device.key,
                                      device.device_id)
        return web.json_response({"device": device.device_id,
                                  "key_fingerprint": fingerprint(device.key.public_key()),
                                  "csr": pem.decode("ascii")})

    # --- changing -----------------------------------------------------------------------

    async def _enroll(self, request: web.Request) -> web.Response:
        """Install the agency's certificate, dock CA and recipients (sealed), then serve the
        certificate to new connections. An enrolled device is enrolled again only when asked
        to replace its certificate: a dock must not change a device's identity by accident."""
        body = await _body(request, EnrollmentRequest)
        device, dock = self._device, request[DOCK]
        async with self._enrolling:
            held = await asyncio.to_thread(enrolled_certificate, device.store.keys, device.key)
            if held is not None and not body.replace:
                current = describe(held)
                raise _error(web.HTTPConflict, f"this device is already enrolled (certificate "
                             f"sha256 {current['sha256']}, {current['subject']}, issued by "
                             f"{current['issuer']}); send \"replace\": true to replace it")
            dock_ca = body.dock_ca.encode() if body.dock_ca else \
                self._config.path(device.store.root, self._config.dock_ca).read_bytes()
            context = {"dock": dock.as_record(), "operator": body.operator,
                       "replaces": describe(held) if held is not None else None}
            try:
                record = await asyncio.to_thread(
                    enroll, device.store.keys, device.chain, device.key, device.device_id,
                    body.certificate.encode(), dock_ca, body.recipients, context,
                    _client_certificate(request))
            except KeyMaterialError as exc:
                log.warning("enrollment by dock %s refused: %s", dock.name, exc)
                raise _error(web.HTTPUnprocessableEntity, f"EnrollmentRequest: {exc}") from exc
            self._live, self._enrolled = await asyncio.to_thread(self._tls)
        certificate = record["payload"]["device_certificate"]
        log.info("enrolled by dock %s, operator %s: certificate sha256 %s until %s, sealed "
                 "as record %d", dock.name, body.operator, certificate["sha256"],
                 certificate["not_after"], record["seq"])
        return web.json_response({"seq": record["seq"], "certificate": certificate})


    async def _custody(self, request: web.Request) -> web.Response:
        report = await _body(request, CustodyReport)
        try:
            receipt = await asyncio.to_thread(take_custody, self._device.chain,
                                              self._device.ledger, self._nonces, report,
                                              request[DOCK])
        except CustodyRefused as exc:
            log.warning("custody report %s from %s refused: %s", report.report_id,
                        request[DOCK].name, exc)
            return web.json_response({"error": str(exc)}, status=exc.status)
        purge = await asyncio.to_thread(self._device.purge)
        return web.json_response({
            "receipt": receipt.decode("utf-8"),
            "purged": [item["seq"] for item in purge["payload"]["files"]] if purge else [],
        })

    async def _officer(self, request: web.Request) -> web.Response:
        assignment = await _body(request, OfficerAssignment)
        previous = self._device.officer()
        if assignment.action == "issue" and assignment.officer is None:
            raise _error(web.HTTPUnprocessableEntity, "issue needs 'officer'")
        if assignment.action == "return" and assignment.officer not in (None, previous):
            raise _error(web.HTTPConflict, f"officer {assignment.officer!r} cannot return a "
                         f"device issued to {previous!r}")
        officer = assignment.officer if assignment.action == "issue" else ""
        ledger = self._device.ledger

        def assign(_seq: int) -> dict[str, Any]:
            ledger.officer = officer  # under the chain's lock: this record on names them
            return {}

        record = await asyncio.to_thread(self._device.chain.append, "officer_assigned", {
            "action": assignment.action, "officer": officer, "previous": previous,
            "operator": assignment.operator, "dock": request[DOCK].as_record()}, assign)
        return web.json_response({"seq": record["seq"], "officer": officer})

    async def _clock(self, request: web.Request) -> web.Response:
        setting = await _body(request, ClockSet)
        clock = self._device.clock
        before = clock.state()
        if before.synced:
            raise _error(web.HTTPConflict, f"the device clock is synchronised "
                         f"({before.time_source}, max error {before.max_error_us} µs): only "
                         "an unsynchronised clock is set from the dock")
        before_ns = clock.now_ns()
        try:
            step = set_wall_clock(clock, setting.time_ns)
        except PermissionError as exc:
            raise _error(web.HTTPServiceUnavailable,
                         f"cannot set the clock (needs CAP_SYS_TIME): {exc}") from exc
        record = await asyncio.to_thread(self._device.chain.append, "clock_step", {
            "source": "dock", "dock": request[DOCK].as_record(),
            "operator": setting.operator, "before": utc_iso(before_ns),
            "after": utc_iso(setting.time_ns), "step_ns": step})
        return web.json_response({"seq": record["seq"], "step_ns": step})


def _client_certificate(request: web.Request) -> bytes | None:
    """The dock's verified client certificate (DER), from the TLS session."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object else None


@web.middleware
async def _name_the_dock(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """The dock as its verified client certificate names it, for records and the access log."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    peer = ssl_object.getpeercert() if ssl_object else None
    if not peer:
        raise _error(web.HTTPForbidden, "no verified client certificate")
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn
             if key == "commonName"]
    fingerprint = hashlib.sha256(ssl_object.getpeercert(binary_form=True)).hexdigest()
    request[DOCK] = DockIdentity(names[0] if names else "", fingerprint)
    return await handler(request)


class _AccessLogger(AbstractAccessLogger):
    """Every access the device serves, with the dock that made it (Art. 23)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        dock = request.get(DOCK)
        self.logger.info("dock %s: %s %s %d %d bytes %.3f s", dock.name if dock else "-",
                         request.method, request.path_qs, response.status,
                         response.content_length or 0, time)


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}, ensure_ascii=False),
                content_type="application/json")


def _seq(text: str, where: str) -> int:
    """A chain sequence number: digits only, no sign, no leading zero, at most 16 digits."""
    if not _SEQ.fullmatch(text):
        raise _error(web.HTTPBadRequest, f"{where} = {text[:40]!r}: not a sequence number "
                     "(1 to 16 digits, no leading zero)")
    return int(text)


async def _body(request: web.Request, model: type[_Model]) -> _Model:
    """The request's JSON body as `model`, or 400/422 naming the field and the value."""
    if request.content_type != "application/json":
        raise _error(web.HTTPUnsupportedMediaType,
                     f"body is {request.content_type!r}, not application/json")
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        status = web.HTTPBadRequest if first["type"] == "json_invalid" else \
            web.HTTPUnprocessableEntity
        raise _error(status, f"{model.__name__}: {where}: {first['msg']} "
                     f"(got {str(first.get('input'))[:60]!r})") from exc


async def _send_file(request: web.Request, path: Path, sha256: str) -> web.StreamResponse:
    """The file, or the one byte range asked for (206), read in large blocks off the loop.

    Not `web.FileResponse`: on a TLS transport its sendfile falls back to asyncio's
    copy loop of 16 KiB blocks with a thread hop each, a third of the speed of this.
    Sealed files never change, so their SHA-256 is a strong ETag.
    """
    size = path.stat().st_size
    start, stop = _byte_range(request, size)
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
               "ETag": f'"{sha256}"', "X-Sha256": sha256}
    response = web.StreamResponse(status=200 if (start, stop) == (0, size) else 206,
                                  headers=headers)
    if response.status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response.content_length = stop - start
    if request.transport is not None:  # let a few blocks queue before the writer waits
        request.transport.set_write_buffer_limits(high=4 * CHUNK)
    await response.prepare(request)
    with path.open("rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            block = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not block:
                raise ConnectionResetError(f"{path} ended {left} bytes early")
            await response.write(block)
            left -= len(block)
    await response.write_eof()
    return response


def _byte_range(request: web.Request, size: int) -> tuple[int, int]:
    """[start, stop) of the one range in the Range header; the whole file without one.
    A malformed header or a range past the end is refused with 416."""
    try:
        wanted = request.http_range
    except ValueError as exc:
        raise _unsatisfiable(request, size) from exc
    start, stop = wanted.start, wanted.stop
    if start is None and stop is None:
        return 0, size
    if start is not None and start < 0:  # bytes=-N: the last N bytes
        start, stop = max(size + start, 0), size
    start, stop = start or 0, size if stop is None else min(stop, size)
    if start >= stop:
        raise _unsatisfiable(request, size)
    return start, stop


def _unsatisfiable(request: web.Request, size: int) -> web.HTTPException:
    return web.HTTPRequestRangeNotSatisfiable(
        headers={"Content-Range": f"bytes */{size}"},
        text=json.dumps({"error": f"Range {request.headers.get('Range', '')[:60]!r} is not "
                                  f"one satisfiable byte range of a {size}-byte file"}),
        content_type="application/json")


def _lines_from(chain: Path, start: int) -> bytes:
    """The journal from line `start` on, byte for byte as the device wrote it."""
    data = chain.read_bytes()
    offset = 0
    for _ in range(start - 1):
        offset = data.find(b"\n", offset) + 1
        if offset == 0:
            return b""
    return data[offset:]
