"""Who may use a route: ``requires_active``, ``requires_login``, and leaving with ``logout``.

Both decorators read the user when the handler starts (for a plain ``def``, when its thread
picks it up): a student whose slot or poll window ran out is refused from that instant on, not
when a cleaner next passes. A refusal is an exception (``NoSession``, ``SessionOver``) that
the web layer answers, so that the author API knows nothing of HTTP answers.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from drivers.base import one_spelling

from ._engine import context as session_context
from ._engine.context import NoSession, SessionOver

Handler = TypeVar("Handler", bound=Callable[..., Any])


def _below_route(handler: Handler, decorator: str) -> None:
    registered = getattr(handler, "__labrt_route__", None)
    if registered is not None:
        raise TypeError(
            f"@{decorator} must come below @lab.route (under it, next to the function): "
            f"above it, the route {registered} was already registered unguarded"
        )


def _guard(handler: Handler, check: Callable[[], None]) -> Handler:
    """``handler`` behind ``check``, as ``async def`` or plain ``def`` like the handler: a
    plain one keeps running in a route thread, and is checked there, when it starts."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            check()
            return await handler(*args, **kwargs)

        return cast(Handler, guarded_async)

    @functools.wraps(handler)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check()
        return handler(*args, **kwargs)

    return cast(Handler, guarded)


def _logged_in() -> None:
    if session_context.current_session() is None:
        raise NoSession("this route needs a student's session")


def _active() -> None:
    bound = session_context.current_session()
    if bound is None:
        raise NoSession("this route needs a student's session")
    manager, session = bound
    if not manager.is_active(session):
        raise SessionOver("this route needs a session whose slot is running")


def requires_login(handler: Handler) -> Handler:
    """Let in students with a session, active or over (to show "your time is over");
    anyone else gets the forbidden answer."""
    _below_route(handler, "requires_login")
    return _guard(handler, _logged_in)


def requires_active(handler: Handler) -> Handler:
    """Let in only the student whose slot is running now. Without a session: the forbidden
    answer; with a session that is over: back to the RLMS (a JSON 401 for scripts)."""
    _below_route(handler, "requires_active")
    return _guard(handler, _active)


def logout() -> Coroutine[Any, Any, bool]:
    """End the current student's session (``on_dispose`` runs); False if there is none.
    ``await logout()`` in ``async def`` code, ``logout()`` in a plain ``def``.

    It does not wait for the end: the caller is the session's own code, which the dispose
    stops (a coroutine is cancelled at its next ``await``), so return soon after it.
    """
    bound = session_context.current_session()
    if bound is None and not session_context.on_the_loop():
        return False  # type: ignore[return-value]  # a thread's answer, as one_spelling's
    loop = None if bound is None else bound[0].loop
    return one_spelling(_logout(), loop, "logout()")


async def _logout() -> bool:
    bound = session_context.current_session()
    if bound is None:
        return False
    manager, session = bound
    await manager.logout(session, wait=False)
    return True
