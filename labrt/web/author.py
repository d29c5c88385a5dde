"""The lab author's routes: run with ``user`` set, as the session's code (which its dispose
stops), guarded against cross-site writes, and followed by saving ``user.data`` if the handler
changed it."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from .._engine import context as session_context
from .._engine.context import NoSession, SessionOver
from .._engine.registry import Route
from .._engine.tasks import TooManyTasks
from .csrf import refuse_cross_site
from .keys import CONFIG, HOOKS, SESSIONS
from .responses import forbidden, json_error, session_over

log = logging.getLogger("labrt.lab")


def to_response(result: Any, route: Route) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, Mapping | list):  # a Mapping: an expired user's read-only user.data
        return web.json_response(result, dumps=_dumps)
    raise TypeError(
        f"route {route.method} {route.path} returned {type(result).__name__}; "
        "return an aiohttp response, a dict or a list"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _bad_body(exc: BaseException) -> web.Response | None:
    """The answer for a request body that ``await request.json()`` could not read: the
    client's mistake (400), not the lab's (500). Told apart from the author's own JSON
    troubles by where it was raised: inside aiohttp's ``Request.json``."""
    if not isinstance(exc, ValueError | RecursionError):
        return None
    frames = traceback.walk_tb(exc.__traceback__)
    if not any(frame.f_code is _REQUEST_JSON for frame, _ in frames):
        return None
    if isinstance(exc, RecursionError):
        return json_error(400, "The request body is JSON nested too deeply.")
    return json_error(400, f"The request body is not valid JSON: {exc}")


_REQUEST_JSON = web.BaseRequest.json.__code__


def _handler(route: Route) -> Any:
    what = f"route {route.method} {route.path}"

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = None if route.cross_site else refuse_cross_site(request)
        if refused is not None:
            return refused
        bound = session_context.current_session()
        session = None if bound is None else bound[1]
        try:
            result = await request.app[HOOKS].handler(session, route.handler, request, what=what)
        except NoSession:
            return forbidden(request, request.app[CONFIG].lab.unauthorized_link)
        except SessionOver:
            assert session is not None
            return session_over(request, session.request.back)
        except TooManyTasks as exc:
            return json_error(429, str(exc))
        except (ValueError, RecursionError) as exc:
            answer = _bad_body(exc)
            if answer is None:
                raise
            return answer
        if session is not None:
            try:
                await request.app[SESSIONS].save_data(session)
            except (TypeError, ValueError) as exc:
                log.error("%s %s left user.data not JSON: %s", route.method, route.path, exc)
                return json_error(500, "The lab could not save the session's data.")
        return to_response(result, route)

    handle.__name__ = getattr(route.handler, "__name__", "handler")
    return handle


def add_routes(router: web.UrlDispatcher, routes: Iterable[Route]) -> None:
    for route in routes:
        router.add_route(route.method, route.path, _handler(route), name=route.name)
