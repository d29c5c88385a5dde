"""Dev mode (``labrt run --dev``): a landing page that plays the RLMS, and a live panel of the
mock hardware, so a lab can be tried on a laptop with nothing else.

Only with ``--dev``, which the command line allows on a loopback address alone: these pages
start sessions without the RLMS and press buttons that do not exist.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from drivers import DriverError, Input

from .._engine.sessions import StartRefused
from ..model import Dialect, StartRequest
from ..protocol import ProtocolError, parse_json, parse_start, start_body
from .csrf import refuse_cross_site
from .keys import CLOCK, CONFIG, HARDWARE, SESSIONS
from .local import loopback_host
from .responses import json_error

PAGE = Path(__file__).resolve().parent.parent / "static" / "dev.html"


@web.middleware
async def loopback_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Dev pages answer only to a loopback host name: a hostile site whose name points at
    127.0.0.1 (DNS rebinding) must not start sessions or press buttons through the browser."""
    if request.path.startswith("/labrt/dev") and not loopback_host(request):
        return json_error(403, "The dev pages answer only at 127.0.0.1 or localhost.")
    return await handler(request)


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


async def _body(request: web.Request) -> dict[str, object]:
    try:
        body = parse_json(await request.read())
    except ProtocolError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


async def new_session(request: web.Request) -> web.Response:
    """Start a session as an RLMS of the chosen dialect would, through the protocol's parser."""
    refused = refuse_cross_site(request)
    if refused is not None:
        return refused
    body = await _body(request)
    dialect_name = body.get("dialect", "ldl")
    if not isinstance(dialect_name, str) or dialect_name not in {d.value for d in Dialect}:
        return json_error(400, 'dialect: expected "ldl" or "weblab"')
    dialect = Dialect(dialect_name)
    username = body.get("username", "student")
    locale = body.get("locale", "en")
    minutes = body.get("minutes", 5)
    if not isinstance(username, str) or not username.strip():
        return json_error(400, "username: expected a non-empty string")
    if not isinstance(locale, str) or not locale:
        return json_error(400, "locale: expected a language code such as en or es")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 < minutes <= 600:
        return json_error(400, "minutes: expected a number from 0 to 600")
    now = request.app[CLOCK].now()
    server = request.app[CONFIG].server
    wanted = StartRequest(
        dialect=dialect,
        username=username,
        username_unique=f"{username}@dev",
        full_name=username.title(),
        locale=locale,
        back=str(request.url.with_path(server.link("/labrt/dev")).with_query(None)),
        experiment_name=request.app[CONFIG].lab.name,
        category_name="Dev",
        experiment_id=f"{request.app[CONFIG].lab.name}@Dev",
        client_data={},
        server_data={},
        start_date=now,
        max_date=now + minutes * 60,
    )
    start = parse_start(dialect, start_body(dialect, wanted))
    try:
        session = await request.app[SESSIONS].start(start)
    except StartRefused as exc:
        return json_error(exc.status, f"Session not started: {exc}")
    if session is None:
        return json_error(500, "on_start failed: see the lab's log")
    callback = request.app[CONFIG].server.callback_url
    return web.json_response({"url": f"{callback}/{session.sid}", "session_id": session.sid})


async def hardware(request: web.Request) -> web.Response:
    devices = request.app[HARDWARE]
    return web.json_response(
        {
            "mode": devices.mode,
            "mock": devices.mock,
            "available": devices.available,
            "devices": devices.states(),
            "sessions": request.app[SESSIONS].live_count(),
        }
    )


async def set_device(request: web.Request) -> web.Response:
    """A virtual press of a mock input, at any time; other devices only between sessions."""
    refused = refuse_cross_site(request)
    if refused is not None:
        return refused
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or name not in request.app[HARDWARE].devices:
        return json_error(404, f"no device named {name!r}")
    driver = request.app[HARDWARE].devices[name]
    busy = request.app[SESSIONS].using_the_lab() > 0
    mock = request.app[HARDWARE].mock
    if not (isinstance(driver, Input) and mock) and busy:
        why = "only mock inputs can be pressed" if mock else "wait for its end"
        return json_error(409, f"refused: a session is using the lab ({why})")
    try:
        if isinstance(driver, Input):
            driver.set(body.get("value"))  # a press is what a student could do: no reset after
            state = driver.state()
        else:
            state = request.app[HARDWARE].set(name, body.get("value"))
    except (DriverError, ValueError, TypeError) as exc:
        return json_error(400, str(exc))
    return web.json_response({"name": name, "state": state})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/labrt/dev", page)
    router.add_post("/labrt/dev/session", new_session)
    router.add_get("/labrt/dev/hardware", hardware)
    router.add_post("/labrt/dev/hardware", set_device)
