"""Telling systemd how the service is: ready, alive, stopping (``Type=notify``).

sd_notify is one datagram to the socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract
name written with a leading ``@``); no libsystemd needed. Without ``$NOTIFY_SOCKET`` (not
under systemd) nothing is sent. The watchdog pings come from a task on the event loop itself,
so a loop that stalls stops pinging and systemd restarts the service: exactly the hang it is
there to catch. The same task measures how late the loop wakes up (the loop lag).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("labrt.notify")

# Without a watchdog the loop lag is still measured this often (for /healthz and /metrics).
LAG_INTERVAL = 1.0


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # Linux abstract socket name
        self._address = address or None
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at twice the rate systemd asks for, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if wanted else None
        self.loop_lag = 0.0
        self.ready = False  # pings start once READY=1 is sent, so systemd sees them in order
        self._warned = False

    def send(self, *fields: str) -> None:
        """One notification (``READY=1``, ``STATUS=...``); a failure is logged once."""
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self._address, exc)

    async def keep_alive(self, status: Callable[[], str]) -> None:
        """Run until cancelled: ping the watchdog, refresh STATUS, measure the loop lag."""
        interval = self.watchdog_interval or LAG_INTERVAL
        while True:
            expected = time.monotonic() + interval
            await asyncio.sleep(interval)
            self.loop_lag = max(0.0, time.monotonic() - expected)
            if not self.ready:
                continue
            fields = [f"STATUS={status()}"]
            if self.watchdog_interval is not None:
                fields.insert(0, "WATCHDOG=1")
            self.send(*fields)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
