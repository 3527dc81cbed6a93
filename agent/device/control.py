"""The local control socket in the store: one JSON request line, one JSON reply line.

Owner-only (mode 0600 by umask at bind), so only the daemon's own user and root
can ask for status, fire an external trigger, or press the simulated button.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, handle: Handler) -> None:
        self._path = path
        if path.exists() or path.is_socket():
            path.unlink()
        previous = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(path), _handler(handle))
        finally:
            os.umask(previous)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="control",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._path.unlink(missing_ok=True)


def _handler(handle: Handler) -> type[socketserver.StreamRequestHandler]:
    class _Request(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            try:
                reply = handle(json.loads(line))
            except (ValueError, KeyError, RuntimeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            self.wfile.write(json.dumps(reply).encode() + b"\n")

    return _Request


def request(path: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the running daemon; ConnectionError when none is listening."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError(f"no daemon is listening on {path}") from exc
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as replies:
            return json.loads(replies.readline())
