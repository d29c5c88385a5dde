"""``user``: the student behind the current request, WebSocket message, hook or task.

A context variable holds the session being served; ``user`` reads through it on every attribute
access, so it is never a stale copy: ``user.active`` turns False at the deadline instant, even in
the middle of a long handler.
"""

from __future__ import annotations

import datetime as dt
from types import MappingProxyType
from typing import Any, Literal, cast

from ._engine.context import Steward, current_session
from .model import Session, State

_NOTHING: MappingProxyType[str, Any] = MappingProxyType({})


class AnonymousUser:
    """Nobody: no cookie, a forged cookie, or a session long forgotten.

    It has every attribute a student has, so that a public page or template reads them without
    a try: ``locale`` None as in weblablib (a locale selector falls back to its default),
    ``data`` an empty read-only mapping (weblablib's refuses even reads), the rest None (where
    weblablib has no attribute at all). A name no user has raises AttributeError.
    """

    __slots__ = ()
    # Literal: `if user.is_anonymous: return ...` narrows `user` to a SessionUser for a type
    # checker, after which `user.username` is a str.
    is_anonymous: Literal[True] = True
    active: Literal[False] = False
    session_id: None = None
    time_left = 0.0
    user: None = None
    username: None = None
    username_unique: None = None
    full_name: None = None
    locale: None = None
    back: None = None
    experiment_name: None = None
    category_name: None = None
    experiment_id: None = None
    start_date: None = None
    max_date: None = None

    @property
    def data(self) -> MappingProxyType[str, Any]:
        """Empty and read-only (``TypeError`` on change): nobody has no session to keep it."""
        return _NOTHING

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        raise TypeError("user.data cannot be set: the anonymous user has no session")

    @property
    def request_client_data(self) -> MappingProxyType[str, Any]:
        return _NOTHING

    @property
    def request_server_data(self) -> MappingProxyType[str, Any]:
        return _NOTHING

    def __repr__(self) -> str:
        return "<AnonymousUser>"


ANONYMOUS = AnonymousUser()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


class SessionUser:
    """A student with a session: active now, or expired (slot over, timed out, logged out)."""

    # Slots: ``user.activ = True`` (a typo, or a wish) raises instead of being lost.
    __slots__ = ("_manager", "_session")
    is_anonymous: Literal[False] = False

    def __init__(self, manager: Steward, session: Session) -> None:
        self._manager = manager
        self._session = session

    @property
    def session_id(self) -> str:
        return self._session.sid

    @property
    def active(self) -> bool:
        return self._manager.is_active(self._session)

    @property
    def time_left(self) -> float:
        """Seconds until the slot ends (0.0 once the session is over)."""
        return self._manager.time_left(self._session)

    @property
    def data(self) -> dict[str, Any] | MappingProxyType[str, Any]:
        """The session's JSON data: mutable while the session runs, read-only once it ended.

        Changes made in a route handler or a hook are saved when it returns.
        """
        s = self._session
        if s.state in (State.STARTING, State.ACTIVE, State.DISPOSING):
            return s.data
        return MappingProxyType(s.data)

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"user.data must be a dict, not {type(value).__name__}")
        if self._session.state is State.ENDED:
            raise TypeError("user.data is read-only once the session has ended")
        self._session.data = value

    @property
    def user(self) -> Any:
        """What ``@lab.user_loader`` returns for ``username_unique`` (None without a loader)."""
        loader = self._manager.registry.hooks.user_loader
        return None if loader is None else loader(self._session.request.username_unique)

    @property
    def username(self) -> str:
        return self._session.request.username

    @property
    def username_unique(self) -> str:
        return self._session.request.username_unique

    @property
    def full_name(self) -> str | None:
        return self._session.request.full_name

    @property
    def locale(self) -> str | None:
        return self._session.request.locale

    @property
    def back(self) -> str:
        return self._session.request.back

    @property
    def experiment_name(self) -> str:
        return self._session.request.experiment_name

    @property
    def category_name(self) -> str | None:
        return self._session.request.category_name

    @property
    def experiment_id(self) -> str:
        return self._session.request.experiment_id

    @property
    def request_client_data(self) -> Any:
        return self._session.request.client_data

    @property
    def request_server_data(self) -> Any:
        return self._session.request.server_data

    @property
    def start_date(self) -> dt.datetime:
        return _utc(self._session.request.start_date)

    @property
    def max_date(self) -> dt.datetime:
        return _utc(self._session.request.max_date)

    def __repr__(self) -> str:
        state = "active" if self.active else "expired"
        return f"<SessionUser {self.username_unique!r} {state}, {self.time_left:.0f} s left>"


def current_user() -> AnonymousUser | SessionUser:
    bound = current_session()
    if bound is None:
        return ANONYMOUS
    return SessionUser(*bound)


class _UserProxy:
    """The module-level ``user``: every attribute is read from the current user, now."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(current_user(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(current_user(), name, value)

    def __repr__(self) -> str:
        return repr(current_user())


# Typed as what it reads through to: an editor completes ``user.username``, and a type
# checker sees that outside a session it is the anonymous user (check ``user.is_anonymous``).
user: AnonymousUser | SessionUser = cast("AnonymousUser | SessionUser", _UserProxy())
