"""Who may use a route: ``requires_active``, ``requires_login``, and leaving with ``logout``.

Both decorators read the user at the instant of the request: a student whose slot or poll
window ran out is refused from that instant on, not when a cleaner next passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import user as user_context
from .tasks import current_task
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


def requires_login(handler: Handler) -> Handler:
    """Let in students with a session, active or over (to show "your time is over");
    anyone else gets the forbidden answer."""
    _below_route(handler, "requires_login")

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> Any:
        runtime = request.app[RUNTIME]
        if user_context.current_session() is None:
            return forbidden(request, runtime.config.lab.unauthorized_link)
        return await runtime.hooks.call(handler, request)

    return guarded


def requires_active(handler: Handler) -> Handler:
    """Let in only the student whose slot is running now. Without a session: the forbidden
    answer; with a session that is over: back to the RLMS (a JSON 401 for scripts)."""
    _below_route(handler, "requires_active")

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> Any:
        runtime = request.app[RUNTIME]
        bound = user_context.current_session()
        if bound is None:
            return forbidden(request, runtime.config.lab.unauthorized_link)
        manager, session = bound
        if not manager.is_active(session):
            return session_over(request, session.back)
        return await runtime.hooks.call(handler, request)

    return guarded


async def logout() -> bool:
    """End the current student's session now (``on_dispose`` runs); False if there is none."""
    bound = user_context.current_session()
    if bound is None:
        return False
    manager, session = bound
    # Inside a task of this session, the dispose will wait for the task: do not wait for it.
    await manager.logout(session, wait=not current_task)
    return True
