"""Assembling the aiohttp application: middlewares, then routes in matching order."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from .._engine import context as session_context
from .._engine.cameras import Cameras
from .._engine.hardware import Hardware
from .._engine.hooks import HookRunner
from .._engine.metrics import Metrics
from .._engine.notify import Notifier
from .._engine.push import Hub
from .._engine.registry import Registry
from .._engine.sessions import SessionManager
from .._engine.tasks import TaskManager
from ..clock import Clock
from ..config import Config
from ..store import Store
from . import author, browser, camera, dev, operator, rlms, static, ws
from . import tasks as task_routes
from .cookies import session_of
from .keys import (
    CAMERAS,
    CLOCK,
    CONFIG,
    HARDWARE,
    HOOKS,
    METRICS,
    NOTIFIER,
    PUSH,
    REGISTRY,
    SESSIONS,
    SIGNER,
    STORE,
    TASKS,
)
from .limits import BodyDeadline, too_large
from .responses import json_error
from .signing import CookieSigner

log = logging.getLogger("labrt.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error the runtime produces is JSON, whatever raised it (router, body limit).
    The outermost layer, it also holds the slow-body deadline (see labrt/web/limits.py)."""
    deadline = BodyDeadline.arm(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        if exc.status == 413:
            limit = request.app[CONFIG].server.max_body_size
            return too_large(request, limit, "[server] max_body_size")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        response = json_error(exc.status, _explain(request, exc))
        response.headers.update(headers)
        return response
    except Exception:
        if deadline is not None and deadline.late:
            return deadline.answer()
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return json_error(500, "Internal server error; the lab's log has the details.")
    finally:
        if deadline is not None:
            deadline.cancel()


def _explain(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"Not found: {request.path}"
    if exc.status == 405:
        return f"Method {request.method} is not allowed on {request.path}"
    # An author's ``raise web.HTTPBadRequest(text="...")`` keeps its words.
    if exc.text and exc.text != f"{exc.status}: {exc.reason}":
        return exc.text
    return exc.reason


def strip_prefix(prefix: str) -> Middleware:
    """A middleware that serves a request arriving with ``public_url``'s path prefix (a proxy
    that passes ``/lab1/callback/...`` on as it is, SCRIPT_NAME style) as if the proxy had
    stripped it: the prefix is removed and the request routed again. Only the whole prefix
    counts (``/lab1`` strips ``/lab1/x`` and ``/lab1``, not ``/lab10``). Installed only when
    ``public_url`` has a path, so that a lab at the root of its host pays nothing."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        url = request.rel_url
        path = url.raw_path  # as sent: "%2F" stays what it is
        if _stripped.get() or not (path == prefix or path.startswith(prefix + "/")):
            return await handler(request)
        rest = URL.build(
            path=path[len(prefix) :] or "/", query_string=url.raw_query_string, encoded=True
        )
        headers = request.headers.copy()
        headers.popall("Expect", None)  # answered (100 Continue) by the first routing
        stripped = request.clone(rel_url=rest, headers=headers)
        # Routing happens before middlewares run, so the stripped request is routed anew, by
        # the application's own entry point (aiohttp has no public one for a re-route).
        token = _stripped.set(True)  # stripped once: "/lab1/lab1/x" is the lab's "/lab1/x"
        try:
            return await request.app._handle(stripped)
        finally:
            _stripped.reset(token)

    return middleware


_stripped: contextvars.ContextVar[bool] = contextvars.ContextVar("stripped", default=False)


@web.middleware
async def bind_user(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the session cookie into ``user``; any request with it counts as a poll."""
    session = await session_of(request)
    if session is None:
        return await handler(request)
    sessions = request.app[SESSIONS]
    sessions.touch(session)
    token = session_context.bind(sessions, session)
    try:
        return await handler(request)
    finally:
        session_context.unbind(token)


LABRT_JS = Path(__file__).resolve().parent.parent / "static" / "labrt.js"


async def labrt_js(request: web.Request) -> web.StreamResponse:
    """The page's client for the WebSocket (docs/push.md)."""
    return web.FileResponse(LABRT_JS, headers={"Cache-Control": "no-cache"})


OPENAPI = LABRT_JS.with_name("openapi.json")


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI description of the RLMS and runtime endpoints, so that an RLMS integrator or
    a fuzzer can read the contract from the lab itself (tests/test_openapi.py keeps it true)."""
    return web.FileResponse(
        OPENAPI, headers={"Cache-Control": "no-cache", "Content-Type": "application/json"}
    )


def build_app(
    *,
    config: Config,
    clock: Clock,
    registry: Registry,
    store: Store,
    sessions: SessionManager,
    tasks: TaskManager,
    push: Hub,
    hardware: Hardware,
    hooks: HookRunner,
    metrics: Metrics,
    notifier: Notifier,
    signer: CookieSigner,
    cameras: Cameras,
) -> web.Application:
    """The application, given each service it serves; the runtime starts and stops them."""
    middlewares = [strip_prefix(config.server.prefix)] if config.server.prefix else []
    middlewares += [json_errors, bind_user]
    middlewares += [dev.loopback_names_only] if config.dev else []
    app = web.Application(middlewares=middlewares, client_max_size=config.server.max_body_size)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[REGISTRY] = registry
    app[STORE] = store
    app[SESSIONS] = sessions
    app[TASKS] = tasks
    app[PUSH] = push
    app[HARDWARE] = hardware
    app[HOOKS] = hooks
    app[METRICS] = metrics
    app[NOTIFIER] = notifier
    app[SIGNER] = signer
    app[CAMERAS] = cameras
    rlms.add_routes(app.router, config.server.base_url)
    browser.add_routes(app.router, config.server.callback_url)
    task_routes.add_routes(app.router)
    operator.add_routes(app.router)
    ws.add_routes(app.router)
    camera.add_routes(app.router, dev=config.dev)
    app.router.add_get("/labrt/labrt.js", labrt_js)
    app.router.add_get("/labrt/openapi.json", openapi)
    if config.dev:
        dev.add_routes(app.router)
    author.add_routes(app.router, registry.routes)
    if config.lab.static is not None:
        static.add_routes(app.router, config.lab.static)
    return app
