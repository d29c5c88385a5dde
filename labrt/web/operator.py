"""The operator's endpoints: ``/healthz`` and ``/labrt/hardware``.

They say how the lab is and let a technician test the wiring, so they answer only requests
from the machine itself or carrying the RLMS's credentials (``labrt hardware`` sends them).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from drivers import DriverError

from ..protocol import ProtocolError, parse_json
from .csrf import refuse_cross_site
from .keys import CAMERAS, CONFIG, HARDWARE, METRICS, NOTIFIER, SESSIONS, STORE, TASKS
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
    access = request.app[CONFIG].server.operator_access
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


async def healthz(request: web.Request) -> web.Response:
    """200 when the lab can admit a student, else 503; the body says why."""
    if not _may_watch(request):
        return _refused()
    hardware = request.app[HARDWARE]
    problems: list[str] = [f"{name}: {p}" for name, p in hardware.unsafe.items()]
    try:
        await request.app[STORE].ping()
        store = "ok"
    except Exception as exc:  # any failure of the file is the answer here
        store = f"failing: {exc}"
        problems.append(f"store: {exc}")
    lag = request.app[NOTIFIER].loop_lag
    if lag > LAG_LIMIT:
        problems.append(f"event loop: {lag:.2f} s late")
    # No student is admitted until these return (labrt/_engine/sessions.py).
    strays = request.app[SESSIONS].describe_strays()
    problems += [f"still running after its session ended: {stray}" for stray in strays]
    body: dict[str, Any] = {
        "ok": not problems,
        "problems": problems,
        "store": store,
        "loop_lag": round(lag, 4),
        "hardware": {"mode": hardware.mode, "faults": hardware.faults, "unsafe": hardware.unsafe},
        "cameras": {
            name: {"state": cam.status, "fps": round(cam.fps(), 1), "viewers": cam.viewers}
            for name, cam in request.app[CAMERAS].all().items()
        },
        "sessions": {"active": request.app[SESSIONS].live_count()},
        "tasks": {"overdue": sorted(request.app[TASKS].overdue.values())},
        "stray_calls": strays,
        "last_dispose_problems": list(request.app[SESSIONS].dispose_problems),
    }
    return web.json_response(body, status=200 if body["ok"] else 503)


async def metrics(request: web.Request) -> web.Response:
    if not _may_watch(request):
        return _refused()
    text = request.app[METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def hardware_state(request: web.Request) -> web.Response:
    if not _allowed(request):
        return _refused()
    hardware = request.app[HARDWARE]
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
    hardware = request.app[HARDWARE]
    if body["name"] not in hardware.devices:
        return json_error(404, f"no device named {body['name']!r}")
    active = request.app[SESSIONS].using_the_lab()
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
