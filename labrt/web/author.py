"""The lab author's routes: run with ``user`` set, as the session's code (which its dispose
stops), guarded against cross-site writes, and followed by saving ``user.data`` if the handler
changed it."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp.multipart
from aiohttp import web

from .._engine import context as session_context
from .._engine.context import NoSession, SessionOver
from .._engine.registry import Route
from .._engine.tasks import TooManyTasks
from .csrf import refuse_cross_site
from .keys import CONFIG, HOOKS, SESSIONS
from .limits import too_large
from .responses import forbidden, json_error, session_over

log = logging.getLogger("labrt.lab")


def to_response(result: Any, route: Route) -> web.StreamResponse:
    """The answer for what a route returned: an aiohttp response as it is; a dict or list as
    JSON, a str as text; or, as in Flask, ``(body, status)`` or ``(body, status, headers)``
    with such a body."""
    if isinstance(result, web.StreamResponse):
        return result
    what = f"route {route.method} {route.path}"
    if not isinstance(result, tuple):
        return _body(result, 200, None, what)
    if len(result) not in (2, 3):
        raise TypeError(
            f"{what} returned a tuple of {len(result)}; return (body, status) or "
            "(body, status, headers)"
        )
    body, status, *rest = result
    if isinstance(body, web.StreamResponse):
        raise TypeError(
            f"{what} returned an aiohttp response in a tuple; an aiohttp response goes alone "
            "(give it its status and headers: web.Response(..., status=400, headers=...))"
        )
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(
            f"{what} returned ({type(body).__name__}, {status!r}): the status must be an int"
        )
    headers = rest[0] if rest else None
    if headers is not None and not isinstance(headers, Mapping | list):
        raise TypeError(f"{what} returned headers of type {type(headers).__name__}; give a dict")
    return _body(body, status, headers, what)


def _body(body: Any, status: int, headers: Any, what: str) -> web.StreamResponse:
    if isinstance(body, Mapping | list):  # a Mapping: an expired user's read-only user.data
        return web.json_response(body, status=status, headers=headers, dumps=_dumps)
    if isinstance(body, str):
        return web.Response(text=body, status=status, headers=headers)
    raise TypeError(
        f"{what} returned {type(body).__name__}; return an aiohttp response, a dict or a "
        "list (JSON), a str (text), or (body, status) or (body, status, headers)"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _bad_body(exc: BaseException) -> web.Response | None:
    """The answer for a request body that ``await request.json()``, ``await request.post()``
    or ``request.multipart()`` could not read: the client's mistake (400), not the lab's
    (500). Told apart from the author's own troubles by where it was raised: inside aiohttp's
    ``Request.json`` or ``Request.post``, or its multipart reader."""
    if not isinstance(exc, ValueError | RecursionError | AssertionError):
        return None
    codes = [frame.f_code for frame, _ in traceback.walk_tb(exc.__traceback__)]
    if any(code is _REQUEST_JSON for code in codes) and not isinstance(exc, AssertionError):
        if isinstance(exc, RecursionError):
            return json_error(400, "The request body is JSON nested too deeply.")
        return json_error(400, f"The request body is not valid JSON: {exc}")
    if any(code is _REQUEST_POST or code.co_filename == _MULTIPART for code in codes):
        return json_error(400, f"The request body is not a valid form: {exc}")
    return None


_REQUEST_JSON = web.BaseRequest.json.__code__
_REQUEST_POST = web.BaseRequest.post.__code__
_MULTIPART = aiohttp.multipart.__file__


def _handler(route: Route) -> Any:
    what = f"route {route.method} {route.path}"

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = None if route.cross_site else refuse_cross_site(request)
        if refused is not None:
            return refused
        if route.max_body_size is not None:
            # This route's own limit, for this request only: every other route keeps the
            # application's (``[server] max_body_size``).
            request = request.clone(client_max_size=route.max_body_size)
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
        except web.HTTPRequestEntityTooLarge:
            if route.max_body_size is None:
                raise  # the lab's limit: json_errors names it
            return too_large(
                request, route.max_body_size, f"max_body_size={route.max_body_size} of {what}"
            )
        except (ValueError, RecursionError, AssertionError) as exc:
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
