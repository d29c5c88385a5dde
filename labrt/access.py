"""Who may use a route: ``requires_active``, ``requires_login``, and leaving with ``logout``.

Both decorators read the user when the handler starts (for a plain ``def``, when its thread
picks it up): a student whose slot or poll window ran out is refused from that instant on, not
when a cleaner next passes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import user as user_context
from .web.keys import RUNTIME
from .web.responses import forbidden, session_over

Handler = Callable[[web.Request], Any]


def _below_route(handler: Handler, decorator: str) -> None:
    registered = getattr(handler, "__labrt_route__", None)
    if registered is not None:
        raise TypeError(
            f"@{decorator} must come below @lab.route (under it, next to the function): "
            f"above it, the route {registered} was already registered unguarded"
        )


def _guard(handler: Handler, refuse: Callable[[web.Request], Any]) -> Handler:
    """``handler`` behind ``refuse``, as ``async def`` or plain ``def`` like the handler: a
    plain one keeps running in a route thread, and is checked there, when it starts."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def guarded_async(request: web.Request) -> Any:
            refused = refuse(request)
            return refused if refused is not None else await handler(request)

        return guarded_async

    @functools.wraps(handler)
    def guarded(request: web.Request) -> Any:
        refused = refuse(request)
        return refused if refused is not None else handler(request)

    return guarded


def _no_session(request: web.Request) -> web.StreamResponse | None:
    if user_context.current_session() is None:
        return forbidden(request, request.app[RUNTIME].config.lab.unauthorized_link)
    return None


def _not_active(request: web.Request) -> web.StreamResponse | None:
    bound = user_context.current_session()
    if bound is None:
        return forbidden(request, request.app[RUNTIME].config.lab.unauthorized_link)
    manager, session = bound
    if not manager.is_active(session):
        return session_over(request, session.back)
    return None


def requires_login(handler: Handler) -> Handler:
    """Let in students with a session, active or over (to show "your time is over");
    anyone else gets the forbidden answer."""
    _below_route(handler, "requires_login")
    return _guard(handler, _no_session)


def requires_active(handler: Handler) -> Handler:
    """Let in only the student whose slot is running now. Without a session: the forbidden
    answer; with a session that is over: back to the RLMS (a JSON 401 for scripts)."""
    _below_route(handler, "requires_active")
    return _guard(handler, _not_active)


async def logout() -> bool:
    """End the current student's session (``on_dispose`` runs); False if there is none.

    It does not wait for the end: the caller is the session's own code, which the dispose
    stops (a coroutine is cancelled at its next ``await``), so return soon after it.
    """
    bound = user_context.current_session()
    if bound is None:
        return False
    manager, session = bound
    await manager.logout(session, wait=False)
    return True
