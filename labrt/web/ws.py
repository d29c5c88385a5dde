"""``/labrt/ws``: the WebSocket a lab's page keeps open to receive pushes and send messages.

A page is let in by its session cookie, or by the short-lived token ``/labrt/status`` hands
out (for a lab embedded in another site, where the browser drops the cookie); without either
it may only watch, and only when ``[lab] spectators = true``.
"""

from __future__ import annotations

from aiohttp import web

from ..push import CLOSE_WAIT
from .cookies import session_of
from .csrf import origin_of, own_origins
from .keys import RUNTIME
from .responses import json_error

# aiohttp pings every so often and drops a page that stops answering.
HEARTBEAT = 20.0


async def websocket(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    hub = runtime.push
    origin = request.headers.get("Origin")
    if origin is not None and origin_of(origin) not in own_origins(request):
        # Another site's page must not talk to the lab as the student.
        return json_error(403, "Cross-site WebSocket refused: open it from the lab's own pages.")
    token = request.query.get("token")
    if token is not None:
        session = hub.session_of_token(token)
        if session is None:
            return json_error(401, "Invalid or expired token: get a fresh one from /labrt/status.")
    else:
        session = session_of(request)
    if session is None and not hub.spectators_allowed:
        return json_error(401, "No session: open the laboratory from the link of your booking.")
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT,
        max_msg_size=runtime.config.push.max_message_size,
        timeout=CLOSE_WAIT,
    )
    if not ws.can_prepare(request).ok:
        return json_error(400, "Expected a WebSocket upgrade request.")
    await ws.prepare(request)
    await hub.serve(ws, session)
    return ws


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/labrt/ws", websocket)
