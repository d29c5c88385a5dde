"""The lab author's routes: run with ``user`` set, guarded against cross-site writes, and
followed by saving ``user.data`` if the handler changed it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .. import user as user_context
from ..lab import Route
from .csrf import refuse_cross_site
from .keys import RUNTIME
from .responses import json_error

log = logging.getLogger("labrt.lab")


def to_response(result: Any, route: Route) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, dict | list):
        return web.json_response(result)
    raise TypeError(
        f"route {route.method} {route.path} returned {type(result).__name__}; "
        "return an aiohttp response, a dict or a list"
    )


def _handler(route: Route) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        refused = None if route.cross_site else refuse_cross_site(request)
        if refused is not None:
            return refused
        runtime = request.app[RUNTIME]
        result = await runtime.hooks.call(route.handler, request)
        bound = user_context.current_session()
        if bound is not None:
            try:
                await runtime.sessions.save_data(bound[1])
            except (TypeError, ValueError) as exc:
                log.error("%s %s left user.data not JSON: %s", route.method, route.path, exc)
                return json_error(500, "The lab could not save the session's data.")
        return to_response(result, route)

    handle.__name__ = getattr(route.handler, "__name__", "handler")
    return handle


def add_routes(router: web.UrlDispatcher, routes: Iterable[Route]) -> None:
    for route in routes:
        router.add_route(route.method, route.path, _handler(route), name=route.name)
