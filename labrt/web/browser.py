"""The student's side of the hand-over: the callback link, keep-alive, logout and status.

The callback link the RLMS gives the student is a bearer secret: it sets the signed cookie and
sends the browser to the lab's first page. ``/poll`` and ``/logout`` under it keep weblablib's
pages working; ``/labrt/status`` and ``/labrt/logout`` are the runtime's own.
"""

from __future__ import annotations

from aiohttp import web

from .._engine import context as session_context
from .._engine.context import SessionOver
from ..model import Session, State
from ..protocol import SESSION_ID
from .cookies import session_of, set_session_cookie
from .csrf import refuse_cross_site
from .keys import CONFIG, HOOKS, PUSH, REGISTRY, SESSIONS
from .responses import forbidden, json_error, session_over


async def _initial_url(request: web.Request, session: Session) -> str:
    hook = request.app[REGISTRY].hooks.initial_url
    if hook is None:
        return request.app[CONFIG].lab.initial_url
    token = session_context.bind(request.app[SESSIONS], session)
    try:
        url = await request.app[HOOKS].hook(session, hook, what="initial_url")
    finally:
        session_context.unbind(token)
    if not isinstance(url, str) or not url:
        raise TypeError(f"@lab.initial_url must return a URL string, not {url!r}")
    return url


async def callback(request: web.Request) -> web.StreamResponse:
    sid = request.match_info["sid"]
    session = await request.app[SESSIONS].remembered(sid) if SESSION_ID.fullmatch(sid) else None
    if session is None or session.state is State.STARTING:
        return forbidden(request, request.app[CONFIG].lab.unauthorized_link)
    request.app[SESSIONS].touch(session, visit=True)
    try:
        url = await _initial_url(request, session)
    except SessionOver:  # the slot ended while @lab.initial_url ran
        return session_over(request, session.request.back)
    redirect = web.HTTPFound(request.app[CONFIG].server.link(url))
    set_session_cookie(request, redirect, sid)
    raise redirect


async def _same_session(request: web.Request) -> Session | web.Response:
    session = await session_of(request)
    if session is None or session.sid != request.match_info["sid"]:
        return web.json_response({"success": False, "reason": "Different session identifier"})
    return session


async def poll(request: web.Request) -> web.Response:
    session = await _same_session(request)
    if isinstance(session, web.Response):
        return session
    if not request.app[SESSIONS].touch(session):
        return web.json_response({"success": False, "reason": "User inactive"})
    return web.json_response({"success": True})


async def callback_logout(request: web.Request) -> web.Response:
    refused = refuse_cross_site(request)
    if refused is not None:
        return refused
    session = await _same_session(request)
    if isinstance(session, web.Response):
        return session
    await request.app[SESSIONS].logout(session)
    return web.json_response({"success": True})


async def status(request: web.Request) -> web.Response:
    """What a page needs to show the student: state, time left, where to go back to."""
    session = await session_of(request)
    if session is None:
        return json_error(
            401, "No session: open the laboratory from the link of your booking.", state="anonymous"
        )
    sessions = request.app[SESSIONS]
    active = sessions.is_active(session)
    reason = sessions.end_reason(session)
    return web.json_response(
        {
            "state": "active" if active else "expired",
            "reason": reason.value if reason else None,
            "time_left": round(sessions.time_left(session), 3) if active else 0.0,
            "max_date": session.request.max_date,
            "back": session.request.back,
            "locale": session.request.locale,
            "username": session.request.username,
            "poll_interval": request.app[CONFIG].session.poll_interval,
            "timeout": request.app[CONFIG].session.timeout,
            "ws_token": request.app[PUSH].token(session) if active else None,
        }
    )


async def logout(request: web.Request) -> web.Response:
    refused = refuse_cross_site(request)
    if refused is not None:
        return refused
    session = await session_of(request)
    if session is None:
        return json_error(401, "No session to log out of.")
    await request.app[SESSIONS].logout(session)
    return web.json_response({"success": True, "back": session.request.back})


def add_routes(router: web.UrlDispatcher, callback_url: str) -> None:
    router.add_get("/labrt/status", status)
    router.add_post("/labrt/logout", logout)
    router.add_get(f"{callback_url}/{{sid}}", callback)
    router.add_get(f"{callback_url}/{{sid}}/poll", poll)
    router.add_get(f"{callback_url}/{{sid}}/logout", callback_logout)
    router.add_post(f"{callback_url}/{{sid}}/logout", callback_logout)
