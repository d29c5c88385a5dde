"""The listening sockets systemd hands over (socket activation, ``sd_listen_fds(3)``).

A socket unit (``systemd/labrt.socket``) binds the lab's port and keeps it while labrt starts,
restarts or is upgraded: a connection that arrives meanwhile waits in the kernel's queue and is
answered once labrt is up, so the RLMS never sees a refused connection. systemd passes the
sockets as file descriptors 3, 4, ... with ``LISTEN_FDS`` (how many) and ``LISTEN_PID`` (the
process they are for). No libsystemd needed.

The variables are removed from the environment whether or not they were for this process, as
``sd_listen_fds(1)`` does, so that nothing labrt or the lab starts inherits them; the sockets
are made close-on-exec for the same reason.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3
VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """systemd passed something labrt cannot listen on: a mistake in the socket unit."""


def inherited_sockets(environ: MutableMapping[str, str] = os.environ) -> list[socket.socket]:
    """The listening TCP sockets systemd passed to this process, or none; either way the
    variables are gone from ``environ`` afterwards."""
    count, pid = environ.get("LISTEN_FDS", ""), environ.get("LISTEN_PID", "")
    for name in VARIABLES:
        environ.pop(name, None)
    if not count or pid != str(os.getpid()):
        return []  # not under socket activation, or meant for another process
    if not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r}: expected a number of sockets")
    return [_listening(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))]


def _listening(fd: int) -> socket.socket:
    try:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"file descriptor {fd} from systemd: {exc.strerror or exc}") from exc
    stream = sock.type == socket.SOCK_STREAM
    tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
    if not (stream and tcp and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
        raise ActivationError(
            f"file descriptor {fd} from systemd is not a listening TCP socket: the socket unit "
            "needs ListenStream= with an IP address and port (and Accept=no)"
        )
    return sock


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port
