"""The signed session cookie: the student's session id plus an HMAC of it.

The session id alone is already an unguessable secret; the signature (keyed by a secret kept in
the store, and by the cookie name so that two labs on one host never accept each other's
cookies) means a cookie that was not issued here is recognised as forged without a lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from .keys import RUNTIME

if TYPE_CHECKING:
    from ..model import Session

MAX_COOKIE = 256


class CookieSigner:
    def __init__(self, secret: bytes, name: str) -> None:
        self._key = hmac.new(secret, name.encode(), hashlib.sha256).digest()

    def _mac(self, sid: str) -> str:
        # hmac.digest: the same HMAC-SHA256 in one C call; hmac.new builds a Python HMAC
        # object per request, a visible share of every student request in bench/profile.py.
        digest = hmac.digest(self._key, sid.encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, sid: str) -> str:
        return f"{sid}.{self._mac(sid)}"

    def verify(self, value: str) -> str | None:
        """The session id in a cookie issued by this lab, else None."""
        if len(value) > MAX_COOKIE:
            return None
        sid, dot, mac = value.rpartition(".")
        if not dot or not sid:
            return None
        return sid if hmac.compare_digest(mac.encode(), self._mac(sid).encode()) else None


def session_of(request: web.Request) -> Session | None:
    """The session named by a valid cookie of this lab, if it is still remembered."""
    runtime = request.app[RUNTIME]
    value = request.cookies.get(runtime.config.server.cookie_name)
    if not value:
        return None
    sid = runtime.signer.verify(value)
    return None if sid is None else runtime.sessions.get(sid)


def set_session_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    server = request.app[RUNTIME].config.server
    secure = server.scheme == "https" or server.public_url.startswith("https:") or request.secure
    response.set_cookie(
        server.cookie_name,
        request.app[RUNTIME].signer.sign(sid),
        path=server.cookie_path,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
