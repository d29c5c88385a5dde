"""The operator's endpoints: ``/healthz`` and ``/labrt/hardware``.

They say how the lab is and let a technician test the wiring, so they answer only requests
from the machine itself or carrying the RLMS's credentials (``labrt hardware`` sends them).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from drivers import DriverError

from ..model import State
from ..protocol import ProtocolError, parse_json
from .csrf import refuse_cross_site
from .keys import RUNTIME
from .local import is_local
from .responses import json_error
from .rlms import rlms_credentials

# A loop this late has blocking work on it: the lab answers, but slowly.
LAG_LIMIT = 1.0


def _allowed(request: web.Request) -> bool:
    """From this machine itself, or with the RLMS's credentials.

    "Itself" is :func:`.local.is_local`: a loopback peer is not enough, since a page rebound to
    127.0.0.1 and a proxy on the machine both connect from loopback.
    """
    return is_local(request) or rlms_credentials(request)


def _may_watch(request: web.Request) -> bool:
    """``/healthz`` and ``/metrics``: as ``[server] operator_access`` says."""
    access = request.app[RUNTIME].config.server.operator_access
    if access == "open":
        return True
    if access == "credentials":
        return rlms_credentials(request)
    return _allowed(request)


def _refused() -> web.Response:
    """403, with no ``WWW-Authenticate``: a challenge would make a browser ask for the RLMS's
    password and then send it with every later request to the lab, cross-site ones included.
    (A 401 must carry a challenge, RFC 9110; the tools that have the credentials send them
    unasked.)"""
    return json_error(403, "Only from the lab's own machine or with the RLMS credentials.")


def _count(request: web.Request, *states: State) -> int:
    return sum(s.state in states for s in request.app[RUNTIME].sessions.sessions())


async def healthz(request: web.Request) -> web.Response:
    """200 when the lab can admit a student, else 503; the body says why."""
    if not _may_watch(request):
        return _refused()
    runtime = request.app[RUNTIME]
    hardware = runtime.hardware
    problems: list[str] = [f"{name}: {p}" for name, p in hardware.unsafe.items()]
    try:
        await runtime.store.ping()
        store = "ok"
    except Exception as exc:  # any failure of the file is the answer here
        store = f"failing: {exc}"
        problems.append(f"store: {exc}")
    lag = runtime.notifier.loop_lag
    if lag > LAG_LIMIT:
        problems.append(f"event loop: {lag:.2f} s late")
    # No student is admitted until these return (labrt/sessions.py).
    strays = runtime.sessions.describe_strays()
    problems += [f"still running after its session ended: {stray}" for stray in strays]
    body: dict[str, Any] = {
        "ok": not problems,
        "problems": problems,
        "store": store,
        "loop_lag": round(lag, 4),
        "hardware": {"mode": hardware.mode, "faults": hardware.faults, "unsafe": hardware.unsafe},
        "sessions": {"active": _count(request, State.STARTING, State.ACTIVE)},
        "tasks": {"overdue": sorted(runtime.tasks.overdue.values())},
        "stray_calls": strays,
        "last_dispose_problems": list(runtime.sessions.dispose_problems),
    }
    return web.json_response(body, status=200 if body["ok"] else 503)


async def metrics(request: web.Request) -> web.Response:
    if not _may_watch(request):
        return _refused()
    text = request.app[RUNTIME].metrics.render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def hardware_state(request: web.Request) -> web.Response:
    if not _allowed(request):
        return _refused()
    hardware = request.app[RUNTIME].hardware
    return web.json_response(
        {
            "mode": hardware.mode,
            "available": hardware.available,
            "devices": hardware.states(),
        }
    )


async def hardware_set(request: web.Request) -> web.Response:
    """Bench control: set one device, while no student is using the lab."""
    refused = refuse_cross_site(request)  # switches a device: never for another site's page
    if refused is not None:
        return refused
    if not _allowed(request):
        return _refused()
    try:
        body = parse_json(await request.read())
    except ProtocolError as exc:
        return json_error(400, str(exc), field=exc.field)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or "value" not in body:
        return json_error(400, 'expected {"name": "<device>", "value": ...}')
    hardware = request.app[RUNTIME].hardware
    if body["name"] not in hardware.devices:
        return json_error(404, f"no device named {body['name']!r}")
    # Refused from a session's start to the end of its dispose (which resets the devices).
    active = _count(request, State.STARTING, State.ACTIVE, State.DISPOSING)
    if active:
        return json_error(409, f"refused: {active} student session(s) in progress")
    try:
        state = hardware.set(body["name"], body["value"])
    except (DriverError, ValueError, TypeError) as exc:
        return json_error(400, str(exc))
    return web.json_response({"name": body["name"], "state": state})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
    router.add_get("/metrics", metrics)
    router.add_get("/labrt/hardware", hardware_state)
    router.add_post("/labrt/hardware", hardware_set)
