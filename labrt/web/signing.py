"""The signed session cookie: the student's session id plus an HMAC of it.

The session id alone is already an unguessable secret; the signature (keyed by a secret kept in
the store, and by the cookie name so that two labs on one host never accept each other's
cookies) means a cookie that was not issued here is recognised as forged without a lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MAX_COOKIE = 256


class CookieSigner:
    """Signs session ids with a key made from the store's secret and the cookie name.

    Built with the application, keyed when the store opens (:meth:`use`): until then no
    cookie is accepted, and none can be issued.
    """

    def __init__(self, name: str) -> None:
        self._name = name.encode()
        self._key: bytes | None = None

    def use(self, secret: bytes) -> None:
        self._key = hmac.new(secret, self._name, hashlib.sha256).digest()

    def _mac(self, sid: str) -> str:
        # hmac.digest: the same HMAC-SHA256 in one C call; hmac.new builds a Python HMAC
        # object per request, a visible share of every student request in bench/profile.py.
        if self._key is None:
            raise RuntimeError("the cookie key is not loaded: the lab has not started")
        digest = hmac.digest(self._key, sid.encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, sid: str) -> str:
        return f"{sid}.{self._mac(sid)}"

    def verify(self, value: str) -> str | None:
        """The session id in a cookie issued by this lab, else None."""
        if len(value) > MAX_COOKIE or self._key is None:
            return None
        sid, dot, mac = value.rpartition(".")
        if not dot or not sid:
            return None
        return sid if hmac.compare_digest(mac.encode(), self._mac(sid).encode()) else None
