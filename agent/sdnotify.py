"""systemd's notification protocol, spoken directly (sd_notify(3), sd_watchdog_enabled(3)),
by the device's daemon and the dock's service alike.

The whole protocol is one datagram per message, newline-separated `KEY=VALUE`
assignments, to the AF_UNIX socket named in $NOTIFY_SOCKET (a leading `@` names the
abstract namespace). systemd sets $WATCHDOG_USEC (and $WATCHDOG_PID, the process it
means) when the unit has WatchdogSec=. Outside systemd nothing is set and every
call is a no-op, so the daemon runs the same under a test or a terminal. The socket
is non-blocking: a reader that stops reading (the queue holds only a few datagrams)
must never stall the main loop; a message that cannot be sent is logged and dropped.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        self._address = ("\0" + path[1:]) if path.startswith("@") else path
        self._socket = (socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                      | socket.SOCK_NONBLOCK) if path else None)
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        meant_for_us = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec and meant_for_us and int(usec) > 0 else None
        self._failed = False

    def send(self, *assignments: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(assignments).encode(), self._address)
            self._failed = False
        except OSError as exc:
            if not self._failed:  # say it once, not at every watchdog beat
                log.error("cannot notify systemd at %s: %s", self._address, exc)
            self._failed = True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def starting(self, status: str, more_s: float) -> None:
        """Still starting, and why: systemd waits `more_s` longer than TimeoutStartSec
        would (a long first start must not be killed and begun again for ever)."""
        self.send(f"EXTEND_TIMEOUT_USEC={round(more_s * 1e6)}", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
