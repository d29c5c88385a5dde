"""``/labrt/camera/NAME``: a camera's live pictures as MJPEG (``<img src>`` shows it), and
``/labrt/camera/NAME.jpg``: its newest picture.

Only the student whose slot is running may watch, and spectators when ``[lab] spectators =
true``; anyone else gets the same 401/403 JSON as a guarded route. Each picture is written as
the camera sent it, one multipart part per picture, and the part is built once per picture
for all viewers. The stream ends when the student's slot ends (labrt/_engine/cameras.py).
"""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from drivers import Frame, Viewer
from drivers.camera import NO_SIGNAL, STALL

from .._engine import context as session_context
from .._engine.cameras import Cameras, TooManyViewers, Who
from ..model import Session
from .keys import CAMERAS, CONFIG
from .responses import forbidden, json_error, session_over

BOUNDARY = "labrt-frame"
_END = f"--{BOUNDARY}--\r\n".encode()


@functools.lru_cache(maxsize=16)  # one per camera would do; a few more for stragglers
def _part(frame: Frame) -> bytes:
    """A picture as one multipart part, built once however many viewers it goes to."""
    signal = b"" if frame.signal else b"Labrt-Camera: no signal\r\n"
    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n%s\r\n" % (
        BOUNDARY.encode(),
        len(frame.jpeg),
        signal,
    )
    return head + frame.jpeg + b"\r\n"


def _admit(
    request: web.Request, cameras: Cameras
) -> tuple[Who, Session | None] | web.StreamResponse:
    bound = session_context.current_session()
    if bound is not None:
        manager, session = bound
        if manager.is_active(session):
            return "student", session
    if cameras.spectators_allowed:
        return "spectator", None
    if bound is not None:
        return session_over(request, bound[1].request.back)
    return forbidden(request, request.app[CONFIG].lab.unauthorized_link)


def _camera_of(request: web.Request) -> tuple[str, bool] | web.Response:
    """The camera a path names, and whether it asks for one picture (``NAME.jpg``)."""
    cameras = request.app[CAMERAS]
    file = request.match_info["file"]
    if cameras.find(file) is not None:
        return file, False
    stem = file.removesuffix(".jpg")
    if stem != file and cameras.find(stem) is not None:
        return stem, True
    known = ", ".join(cameras.all()) or "none"
    return json_error(404, f"No camera named {file!r} in lab.toml (cameras: {known}).")


async def camera(request: web.Request) -> web.StreamResponse:
    target = _camera_of(request)
    if isinstance(target, web.Response):
        return target
    cameras = request.app[CAMERAS]
    admitted = _admit(request, cameras)
    if isinstance(admitted, web.StreamResponse):
        return admitted
    return await _serve(request, *target, *admitted)


async def dev_camera(request: web.Request) -> web.StreamResponse:
    """The dev page's preview: no session needed (dev pages answer on loopback only)."""
    target = _camera_of(request)
    if isinstance(target, web.Response):
        return target
    return await _serve(request, *target, "dev", None)


async def _serve(
    request: web.Request, name: str, one: bool, who: Who, session: Session | None
) -> web.StreamResponse:
    transport = request.transport
    abort = transport.abort if transport is not None else (lambda: None)
    try:
        async with request.app[CAMERAS].watch(name, session, who, abort) as viewer:
            if one:
                return await _picture(viewer)
            return await _stream(request, viewer)
    except TooManyViewers:
        limit = request.app[CONFIG].push.max_spectators
        return json_error(
            503, f"Too many spectators on camera {name!r}: at most {limit}; try again later."
        )


async def _picture(viewer: Viewer) -> web.Response:
    try:
        async with asyncio.timeout(STALL):
            frame = await viewer.next()
    except TimeoutError:
        frame = None
    headers = {"Cache-Control": "no-store"}
    if frame is None or not frame.signal:
        # Still a picture, so that an <img> shows it; the status tells a script.
        headers["Labrt-Camera"] = "no signal"
        return web.Response(body=NO_SIGNAL, status=503, content_type="image/jpeg", headers=headers)
    return web.Response(body=frame.jpeg, content_type="image/jpeg", headers=headers)


async def _stream(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each picture on at once
        }
    )
    response.force_close()  # the connection ends with the stream
    await response.prepare(request)
    try:
        while (frame := await viewer.next()) is not None:
            await response.write(_part(frame))
        await response.write(_END)
        await response.write_eof()
    except ConnectionError:
        pass  # the viewer left, or was cut off at the end of its slot
    return response


def add_routes(router: web.UrlDispatcher, *, dev: bool) -> None:
    router.add_get("/labrt/camera/{file}", camera, allow_head=False)
    if dev:
        router.add_get("/labrt/dev/camera/{file}", dev_camera, allow_head=False)
