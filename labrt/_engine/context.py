"""The session being served: which student a request, message, hook or task is for.

A context variable, set by whoever runs code for a session (the web layer for a request, the
push hub for a message, the session manager for a hook) and read by the author API (``user``,
``lab.push``, the access decorators) and by the engine (a task is submitted for the session
bound here). Threads running a session's code get a copy of the caller's context, so it holds
there too.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Protocol

from ..model import Session
from .registry import Registry


class SessionOver(Exception):
    """The session ended before or while this call of its code ran: the call was cancelled,
    or it never started. Answered like any request that comes after the slot."""


class NoSession(Exception):
    """Code that needs a student's session ran for nobody (no cookie, a forged one, or a
    session long forgotten). Answered with the lab's "forbidden"."""


class Steward(Protocol):
    """What code serving a session may ask of the session manager that serves it."""

    @property
    def registry(self) -> Registry: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    def is_active(self, s: Session) -> bool: ...

    def time_left(self, s: Session) -> float: ...

    async def logout(self, s: Session, *, wait: bool = True) -> None: ...


Bound = tuple[Steward, Session]

_current: contextvars.ContextVar[Bound | None] = contextvars.ContextVar("labrt_user", default=None)


def bind(manager: Steward, session: Session) -> contextvars.Token[Bound | None]:
    return _current.set((manager, session))


def unbind(token: contextvars.Token[Bound | None]) -> None:
    _current.reset(token)


def current_session() -> Bound | None:
    return _current.get()


def current_sid() -> str | None:
    bound = _current.get()
    return None if bound is None else bound[1].sid


# The session being disposed, while its on_dispose runs: what it submits (``run_sync`` of a
# clean-up task) is the dispose's own work, not a new task of a session that is over.
_disposing: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "labrt_disposing", default=None
)


def disposing(sid: str | None) -> contextvars.Token[str | None]:
    return _disposing.set(sid)


def end_disposing(token: contextvars.Token[str | None]) -> None:
    _disposing.reset(token)


def in_on_dispose(sid: str) -> bool:
    return _disposing.get() == sid


def on_the_loop() -> bool:
    """Whether this code runs on an event loop (else in a thread: a plain ``def``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
