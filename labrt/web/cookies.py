"""The session cookie of a request: read it into a session, or set it (signing.py signs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .keys import CONFIG, SESSIONS, SIGNER

if TYPE_CHECKING:
    from ..model import Session


async def session_of(request: web.Request) -> Session | None:
    """The session named by a valid cookie of this lab, if it is still remembered."""
    value = request.cookies.get(request.app[CONFIG].server.cookie_name)
    if not value:
        return None
    sid = request.app[SIGNER].verify(value)
    return None if sid is None else await request.app[SESSIONS].remembered(sid)


def set_session_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    server = request.app[CONFIG].server
    secure = server.scheme == "https" or server.public_url.startswith("https:") or request.secure
    response.set_cookie(
        server.cookie_name,
        request.app[SIGNER].sign(sid),
        path=server.cookie_path,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
