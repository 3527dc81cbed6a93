"""The offload server: the only way footage leaves the device (Art. 20), to an agency dock.

HTTPS with mutual TLS: the client must present a certificate that chains to the
agency's dock CA, the one trust anchor loaded; TLS 1.2 or newer. The device
presents its enrolled certificate with its signing key; a device not yet enrolled
presents a self-signed one for the same key and serves only its identity and
enrollment, until a dock enrolls it (then new connections get the enrolled
certificate, without a restart). It runs on threads of its own (`agent.device.offload.tls_http`:
a thread per connection, TLS written straight to the socket), so a slow dock
never holds up the recorder, and it serves only what the chain names: a sealed
file is asked for by the seq of its record, parsed strictly, and its path comes
from that record, never from the request. Every access is logged with the dock's
name. The API is specified in docs/offload-openapi.yaml; the protocol and custody
rules in docs/docking.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from OpenSSL import SSL
from pydantic import BaseModel, Field, ValidationError

from agent import __version__
from agent.config import DockConfig, RetentionConfig
from agent.device.chain_index import ChainIndex
from agent.device.enrollment import (
    Handed,
    current_request,
    describe,
    enroll,
    enrolled_certificate,
    tls_certificate,
)
from agent.device.offload.custody import (
    CustodyDesk,
    CustodyRefused,
    CustodyReport,
    DockIdentity,
    Ledger,
    StrictModel,
)
from agent.device.offload.sealed import NotServed, open_sealed
from agent.device.offload.tls_http import (
    FileReply,
    HttpsServer,
    Refused,
    Reply,
    Request,
    Route,
    json_reply,
    mutual_tls_context,
)
from agent.evidence.chain import Chain, utc_iso
from agent.evidence.keys import PRIVATE_NAME, PUBLIC_NAME, KeyMaterialError, fingerprint
from agent.evidence.store import Store
from hal.clock import KernelClock, SimulatedClock, set_wall_clock

log = logging.getLogger(__name__)
access_log = logging.getLogger(f"{__name__}.access")  # every access, with the dock (Art. 23)

API = "/v1"
_SEQ = re.compile(r"[1-9][0-9]{0,15}")
_PEM_MAX = 64 * 1024
# The largest bodies read (docs/docking.md, "Limits"): what each request needs, no more.
SMALL_BODY = 4 * 1024                        # an officer assignment, a clock setting
# Five PEM fields of _PEM_MAX characters, each at most 6 bytes as JSON writes it (\uXXXX).
ENROLLMENT_BODY = 5 * 6 * _PEM_MAX + SMALL_BODY
CUSTODY_BODY = 64 * 1024                     # a custody report naming no file...
CUSTODY_BODY_PER_FILE = 1024                 # ...and this much for each file not in custody
# (its claim, about 180 bytes, and its archived object, at most about 480)
_ENROLLMENT_MODE = frozenset({f"{API}/identity", f"{API}/enrollment"})
_Model = TypeVar("_Model", bound=BaseModel)


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
    """What a dock hands over to enroll the device; `dock_ca` absent keeps the one in use;
    `handover`: the certificates that vouch for a dock or device CA not installed now."""

    certificate: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)]
    device_ca: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)]
    dock_ca: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)] | None = None
    handover: Annotated[str, Field(min_length=1, max_length=_PEM_MAX)] | None = None
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
    index: ChainIndex
    clock: KernelClock | SimulatedClock
    purge: Callable[[], Any]
    officer: Callable[[], str]
    retention: RetentionConfig
    station_status: Callable[[], dict[str, Any]]  # battery, storage, video (GET /status)


def server_context(config: DockConfig, store: Path, certificate: Path,
                   private_key: Path) -> SSL.Context:
    """Mutual TLS: our certificate, and the dock CA as the only anchor for client certificates."""
    dock_ca = config.path(store, config.dock_ca)
    if not dock_ca.is_file():
        raise FileNotFoundError(f"[dock] dock_ca = {config.dock_ca!r}: no file {dock_ca}")
    try:
        return mutual_tls_context(certificate, private_key, dock_ca)
    except ValueError as exc:
        raise KeyMaterialError(f"[dock] offload TLS: {exc}") from exc


class OffloadServer:
    """The offload API on `tls_http`'s threads; `start` returns once it listens."""

    def __init__(self, device: DockedDevice, config: DockConfig) -> None:
        self._device = device
        self._config = config
        self._live, self._enrolled = self._tls()  # what new handshakes get
        self._enrolling = threading.Lock()
        self._custody_desk = CustodyDesk(device.chain, device.ledger, device.store.root,
                                         device.retention)
        self._http: HttpsServer | None = None
        self.port = 0

    @property
    def enrolled(self) -> bool:
        return self._enrolled

    def start(self) -> None:
        routes = [Route(method, re.compile(API + path), handler, body) for
                  method, path, handler, body in (
                      ("GET", "/identity", self._identity, 0),
                      ("GET", "/enrollment", self._certificate_request, 0),
                      ("POST", "/enrollment", self._enroll, ENROLLMENT_BODY),
                      ("GET", "/status", self._status, 0),
                      ("GET", "/chain", self._chain, 0),
                      ("GET", "/sealed/(?P<seq>[^/]*)", self._sealed, 0),
                      ("POST", "/custody", self._custody, self._custody_body),
                      ("POST", "/officer", self._officer, SMALL_BODY),
                      ("POST", "/clock", self._clock, SMALL_BODY),
                  )]
        self._http = HttpsServer(self._config.address, self._config.port, lambda: self._live,
                                 routes, access_log, self._guard)
        self._http.start()
        self.port = self._http.port
        log.info("offload server on %s:%d (mutual TLS, dock CA %s)%s", self._config.address,
                 self.port, self._config.dock_ca, "" if self._enrolled else
                 ": not enrolled, serving only identity and enrollment")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _tls(self) -> tuple[SSL.Context, bool]:
        """A context for the certificate the device has now, and whether it is enrolled."""
        keys = self._device.store.keys
        certificate, enrolled = tls_certificate(keys, self._device.key, self._device.device_id)
        return server_context(self._config, self._device.store.root, certificate,
                              keys / PRIVATE_NAME), enrolled

    def _guard(self, request: Request) -> None:
        """Every request comes from a dock whose certificate TLS verified. Not enrolled: no
        dock can have checked the device against the agency's device CA, so nothing is
        served that custody or the officer's record would rest on."""
        if not request.certificate:
            raise Refused(403, "no verified client certificate")
        if not self._enrolled and request.path not in _ENROLLMENT_MODE:
            raise Refused(403, f"{request.path}: this device is not enrolled; until a dock "
                          "enrolls it (bodycam dock enroll) it serves only "
                          f"{' and '.join(sorted(_ENROLLMENT_MODE))}")

    def _custody_body(self) -> int:
        """A custody report lists the files not yet in custody: its body grows with them."""
        return CUSTODY_BODY + CUSTODY_BODY_PER_FILE * self._device.ledger.refresh() \
            .outstanding_count()

    # --- reading ------------------------------------------------------------------------

    def _identity(self, request: Request) -> Reply:
        device = self._device
        head = device.chain.head
        public = (device.store.keys / PUBLIC_NAME).read_text(encoding="ascii")
        return json_reply({
            "api": 1,
            "device": device.device_id,
            "officer": device.officer(),
            "version": __version__,
            "public_key": public,
            "key_fingerprint": fingerprint(device.key.public_key()),
            "enrolled": self._enrolled,
            "head": head.as_dict(),
            "clock": device.clock.state().as_record(),
            # What the custody report's archive must keep each class for: the dock keeps
            # the longer of this and its own (docs/docking.md, "Retention").
            "retention_days": device.retention.as_record(),
            "nonce": self._custody_desk.nonces.issue(_dock(request).certificate_sha256),
        })

    def _status(self, request: Request) -> Reply:
        """The device's clock, battery, storage and what is recorded, read now: what a
        collection station shows."""
        device = self._device
        return json_reply({"device": device.device_id, "officer": device.officer(),
                           "time": utc_iso(device.clock.now_ns()), **device.station_status()})

    def _chain(self, request: Request) -> FileReply:
        """The journal from line `from` on, byte for byte as written, up to its last whole
        line now: streamed from that line's offset, which the chain index knows."""
        start = _seq(request.query.get("from", "1"), "query parameter 'from'")
        first, end = self._device.index.span_from(start)
        return FileReply(self._device.store.chain.open("rb", buffering=0), "chain.jsonl",
                         content_type="application/x-ndjson", span=(first, end))

    def _sealed(self, request: Request) -> FileReply:
        """The file a record seals, whole or by Range; found from the record, never from
        the request, and opened by `open_sealed` (no link is followed). Sealed files never
        change, so their SHA-256 is a strong ETag."""
        seq = _seq(request.params["seq"], "path segment 'seq'")
        sealed = self._device.ledger.refresh().files.get(seq)
        if sealed is None:
            raise Refused(404, f"seq {seq} seals no file in this chain")
        purged = Refused(410, f"{sealed.file} (seq {seq}) was purged after custody")
        if seq in self._device.ledger.purged:
            raise purged
        try:
            file = open_sealed(self._device.store.root, sealed.file)
        except NotServed as exc:
            raise purged if exc.gone else Refused(403, f"seq {seq}: {exc}") from None
        return FileReply(file, sealed.file,
                         {"ETag": f'"{sealed.sha256}"', "X-Sha256": sealed.sha256})

    def _certificate_request(self, request: Request) -> Reply:
        device = self._device
        pem = current_request(device.store.keys, device.key, device.device_id)
        return json_reply({"device": device.device_id,
                           "key_fingerprint": fingerprint(device.key.public_key()),
                           "csr": pem.decode("ascii")})

    # --- changing -----------------------------------------------------------------------

    def _enroll(self, request: Request) -> Reply:
        """Install the agency's certificate, dock CA and recipients (sealed), then serve the
        certificate to new connections. An enrolled device is enrolled again only when asked
        to replace its certificate: a dock must not change a device's identity by accident."""
        body = _body(request, EnrollmentRequest)
        device, dock = self._device, _dock(request)
        with self._enrolling:
            held = enrolled_certificate(device.store.keys, device.key)
            if held is not None and not body.replace:
                current = describe(held)
                raise Refused(409, f"this device is already enrolled (certificate sha256 "
                              f"{current['sha256']}, {current['subject']}, issued by "
                              f"{current['issuer']}); send \"replace\": true to replace it")
            context = {"dock": dock.as_record(), "operator": body.operator,
                       "replaces": describe(held) if held is not None else None}
            try:
                record = enroll(device.store.keys, device.chain, device.key, device.device_id,
                                Handed(body.certificate.encode(), body.recipients,
                                       _encoded(body.dock_ca), body.device_ca.encode(),
                                       _encoded(body.handover)),
                                self._config.path(device.store.root, self._config.dock_ca),
                                context, request.certificate)
            except KeyMaterialError as exc:
                log.warning("enrollment by dock %s refused: %s", dock.name, exc)
                raise Refused(422, f"EnrollmentRequest: {exc}") from exc
            self._live, self._enrolled = self._tls()
        certificate = record["payload"]["device_certificate"]
        log.info("enrolled by dock %s, operator %s: certificate sha256 %s until %s, sealed "
                 "as record %d", dock.name, body.operator, certificate["sha256"],
                 certificate["not_after"], record["seq"])
        return json_reply({"seq": record["seq"], "certificate": certificate})

    def _custody(self, request: Request) -> Reply:
        report = _body(request, CustodyReport)
        dock = _dock(request)
        try:
            receipt = self._custody_desk.take(report, dock)
        except CustodyRefused as exc:
            if not exc.quiet:
                log.warning("custody report %s from %s refused: %s%s", report.report_id,
                            dock.name, exc, " (further refusals in this window not logged)"
                            if exc.retry_after is not None else "")
            headers = {"Retry-After": str(math.ceil(exc.retry_after))} \
                if exc.retry_after is not None else None
            return json_reply({"error": str(exc)}, exc.status, headers)
        purge = self._device.purge()
        return json_reply({
            "receipt": receipt.decode("utf-8"),
            "purged": [item["seq"] for item in purge["payload"]["files"]] if purge else [],
        })

    def _officer(self, request: Request) -> Reply:
        assignment = _body(request, OfficerAssignment)
        previous = self._device.officer()
        if assignment.action == "issue" and assignment.officer is None:
            raise Refused(422, "issue needs 'officer'")
        if assignment.action == "return" and assignment.officer not in (None, previous):
            raise Refused(409, f"officer {assignment.officer!r} cannot return a device issued "
                          f"to {previous!r}")
        officer = assignment.officer if assignment.action == "issue" else ""
        ledger = self._device.ledger

        def assign(_seq: int) -> dict[str, Any]:
            ledger.officer = officer  # under the chain's lock: this record on names them
            return {}

        record = self._device.chain.append("officer_assigned", {
            "action": assignment.action, "officer": officer, "previous": previous,
            "operator": assignment.operator, "dock": _dock(request).as_record()}, assign)
        return json_reply({"seq": record["seq"], "officer": officer})

    def _clock(self, request: Request) -> Reply:
        setting = _body(request, ClockSet)
        clock = self._device.clock
        before = clock.state()
        if before.synced:
            raise Refused(409, f"the device clock is synchronised ({before.time_source}, max "
                          f"error {before.max_error_us} µs): only an unsynchronised clock is "
                          "set from the dock")
        before_ns = clock.now_ns()
        try:
            step = set_wall_clock(clock, setting.time_ns)
        except PermissionError as exc:
            raise Refused(503, f"cannot set the clock (needs CAP_SYS_TIME): {exc}") from exc
        record = self._device.chain.append("clock_step", {
            "source": "dock", "dock": _dock(request).as_record(),
            "operator": setting.operator, "before": utc_iso(before_ns),
            "after": utc_iso(setting.time_ns), "step_ns": step})
        return json_reply({"seq": record["seq"], "step_ns": step})


def _dock(request: Request) -> DockIdentity:
    """The dock as its verified client certificate names it, for records and the log."""
    return DockIdentity(request.peer_name, hashlib.sha256(request.certificate).hexdigest())


def _seq(text: str, where: str) -> int:
    """A chain sequence number: digits only, no sign, no leading zero, at most 16 digits."""
    if not _SEQ.fullmatch(text):
        raise Refused(400, f"{where} = {text[:40]!r}: not a sequence number "
                      "(1 to 16 digits, no leading zero)")
    return int(text)


def _body(request: Request, model: type[_Model]) -> _Model:
    """The request's JSON body as `model`, or 400/415/422 naming the field and the value."""
    if request.content_type != "application/json":
        raise Refused(415, f"body is {request.content_type!r}, not application/json")
    try:
        return model.model_validate_json(request.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        status = 400 if first["type"] == "json_invalid" else 422
        raise Refused(status, f"{model.__name__}: {where}: {first['msg']} "
                      f"(got {str(first.get('input'))[:60]!r})") from exc


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()
