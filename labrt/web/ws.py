"""``/labrt/ws``: the WebSocket a lab's page keeps open to receive pushes and send messages.

A page is let in by its session cookie, or by the single-use token ``/labrt/status`` hands
out (for a lab embedded in another site, where the browser drops the cookie); without either
it may only watch, and only when ``[lab] spectators = true``.

The token travels as a WebSocket subprotocol, ``Sec-WebSocket-Protocol: labrt,
labrt.token.<token>`` (``new WebSocket(url, ["labrt", "labrt.token." + token])``), never in
the URL: proxies write URLs to their access logs. labrt answers with the ``labrt``
subprotocol, which it must whenever the page offered any (a browser fails the connection
otherwise).
"""

from __future__ import annotations

from aiohttp import web

from .._engine.push import CLOSE_WAIT, SPECTATOR_MAX_MESSAGE
from .cookies import session_of
from .csrf import origin_of, own_origins
from .keys import CONFIG, PUSH
from .responses import json_error

# aiohttp pings every so often and drops a page that stops answering.
HEARTBEAT = 20.0
SUBPROTOCOL = "labrt"
TOKEN_PREFIX = "labrt.token."


def offered_token(request: web.Request) -> tuple[bool, str | None]:
    """Whether the page offered the ``labrt`` subprotocol, and the token it offered if any."""
    offered = [
        name.strip()
        for header in request.headers.getall("Sec-WebSocket-Protocol", [])
        for name in header.split(",")
    ]
    tokens = [name[len(TOKEN_PREFIX) :] for name in offered if name.startswith(TOKEN_PREFIX)]
    return SUBPROTOCOL in offered, tokens[0] if tokens else None


async def websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[PUSH]
    origin = request.headers.get("Origin")
    if origin is not None and origin_of(origin) not in own_origins(request):
        # Another site's page must not talk to the lab as the student.
        return json_error(403, "Cross-site WebSocket refused: open it from the lab's own pages.")
    if "token" in request.query:
        # It is in a URL now, so in some access log: burn it, and say where it goes.
        hub.session_of_token(request.query["token"])
        return json_error(
            400,
            "Put the token in the Sec-WebSocket-Protocol header (labrt, labrt.token.<token>), "
            "not in the URL: URLs end up in logs.",
        )
    labrt_offered, token = offered_token(request)
    if token is not None:
        if not labrt_offered:
            # aiohttp would log the offered names, token included, on finding none it knows.
            hub.session_of_token(token)
            return json_error(400, 'Offer the "labrt" subprotocol along with the token.')
        session = hub.session_of_token(token)
        if session is None:
            return json_error(401, "Invalid or expired token: get a fresh one from /labrt/status.")
    else:
        session = await session_of(request)
    if session is None and not hub.spectators_allowed:
        return json_error(401, "No session: open the laboratory from the link of your booking.")
    if session is None and not hub.take_seat():
        return json_error(
            503,
            "Too many spectators: the lab takes at most "
            f"{request.app[CONFIG].push.max_spectators}; try again later.",
        )
    seated = session is None  # a spectator holds a seat from here on
    try:
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            heartbeat=HEARTBEAT,
            # A spectator sends keepalives only: a bigger frame is refused from its header.
            max_msg_size=(
                SPECTATOR_MAX_MESSAGE
                if session is None
                else request.app[CONFIG].push.max_message_size
            ),
            timeout=CLOSE_WAIT,
        )
        if not ws.can_prepare(request).ok:
            return json_error(400, "Expected a WebSocket upgrade request.")
        await ws.prepare(request)
        seated = False  # the hub gives the seat back the moment the page leaves
        await hub.serve(ws, session)
        return ws
    finally:
        if seated:
            hub.leave_seat()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/labrt/ws", websocket)
