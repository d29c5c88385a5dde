"""How long a client may take to send a request: the defence against slow clients.

A slowloris client opens connections and sends its request a byte at a time, so that each
connection stays open for as long as the server is willing to wait. Waiting costs labrt little
(no thread per connection), but a Pi has a limited number of file descriptors, and aiohttp's
own default (an hour, ``keepalive_timeout=3630``) lets a single laptop hold them all. Two
deadlines bound every connection instead:

- ``[server] header_timeout``: from the moment a connection opens, or its previous answer was
  sent, to the end of the next request's headers. This is aiohttp's ``keepalive_timeout``: in
  aiohttp 3.14 its timer is armed when the connection opens and when an answer has been sent,
  and arriving bytes do not push it back, so trickling one header byte at a time does not keep
  a connection open. It also closes idle keep-alive connections.
- ``[server] body_timeout``: from the end of the headers to the end of the body. aiohttp has no
  such deadline once a handler runs, so :class:`BodyDeadline` closes the connection of a request
  whose body is still arriving when it expires (the handler reading it then sees the connection
  gone and the request is dropped, which aiohttp does quietly).

Once a request is complete no deadline applies: a long dispose, a slow task or a WebSocket
are the lab's own business.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .keys import CONFIG
from .responses import json_error

if TYPE_CHECKING:
    from ..config import ServerConfig

log = logging.getLogger("labrt.web")


def server_options(server: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner``: the part of the defence aiohttp enforces."""
    return {"keepalive_timeout": server.header_timeout}


class BodyDeadline:
    """Closes the connection of a request whose body is not in after ``[server] body_timeout``.

    Armed by the outermost middleware (``json_errors``) rather than by a middleware of its
    own: most requests (every status poll) have no body, and a middleware layer costs every
    request a few per cent of its time (bench/run.py).
    """

    def __init__(self, request: web.Request, timeout: float) -> None:
        self.request = request
        self.timeout = timeout
        self.late = False
        self._timer = asyncio.get_running_loop().call_later(timeout, self._cut)

    @classmethod
    def arm(cls, request: web.Request) -> BodyDeadline | None:
        """A deadline for a request whose body is still arriving; None for the others."""
        if not request.body_exists or request.content.is_eof():
            return None
        return cls(request, request.app[CONFIG].server.body_timeout)

    def _cut(self) -> None:
        request = self.request
        if request.content.is_eof():
            return  # all in: the handler may take as long as it needs
        self.late = True
        log.warning(
            "closed the connection of %s %s from %s: its body took longer than %g s",
            request.method,
            request.path,
            request.remote,
            self.timeout,
        )
        if request.transport is not None:
            request.transport.close()

    def answer(self) -> web.Response:
        """What a handler that failed because its connection was cut answers (to nobody): not
        logged as the lab's own failure."""
        return json_error(408, f"Request body not received within {self.timeout:g} s")

    def cancel(self) -> None:
        self._timer.cancel()


def too_large(request: web.Request, limit: int, setting: str) -> web.Response:
    """The answer for a body over ``limit`` bytes, naming the ``setting`` that set it, and a
    warning in the log: a student's upload refused is the operator's business too."""
    log.warning(
        "refused %s %s from %s: its body is larger than %s bytes (%s)",
        request.method,
        request.path,
        request.remote,
        limit,
        setting,
    )
    return json_error(413, f"Request body too large: the limit is {limit} bytes ({setting})")
