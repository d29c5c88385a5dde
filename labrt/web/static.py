"""The lab's own web files (``[lab] static``), served from one folder and nothing outside it.

Paths are refused before touching the disk if they hold ``..``, hidden names or odd characters,
and checked again after resolving, so a symlink cannot lead out of the folder either.
"""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath

from aiohttp import web

from .responses import json_error


class _Refused(Exception):
    pass


def _locate(root: Path, tail: str) -> Path | None:
    """The file to serve for ``tail``; None if there is none. Touches the disk: run in a thread."""
    parts = PurePosixPath(tail).parts
    if any(p in ("..", ".") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        raise _Refused
    path = (root / tail).resolve()
    if not path.is_relative_to(root):
        raise _Refused
    if path.is_dir():
        path = path / "index.html"
    return path if path.is_file() else None


async def _methods_elsewhere(request: web.Request, own: web.AbstractResource | None) -> set[str]:
    """The methods other routes accept on this path.

    This catch-all GET matches every path, so aiohttp never answers 405 for a GET on a route
    that takes only POST (``/labrt/logout``, ``…/sessions/``): without this, the caller would
    be told "Not found" about an endpoint that exists.
    """
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            _, methods = await resource.resolve(request)
            allowed |= methods
    return allowed


def add_routes(router: web.UrlDispatcher, root: Path) -> None:
    root = root.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(None, _locate, root, request.match_info["tail"])
        except _Refused:
            return json_error(400, f"Invalid path: {request.path}")
        if path is None:
            allowed = await _methods_elsewhere(request, route.resource)
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            return json_error(404, f"Not found: {request.path}")
        return web.FileResponse(path)

    route = router.add_get("/{tail:.*}", serve)
