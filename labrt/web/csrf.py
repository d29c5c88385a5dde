"""Refusing cross-site requests that would change state.

A page on another site can make the student's browser send a POST to the lab with the
student's cookie. Browsers say where such a request comes from (``Origin``, else ``Referer``);
a request that names another origin is refused. A request naming none comes from a script or a
tool, not from a page on another site, and is let through.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from .keys import RUNTIME
from .responses import json_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``; "" (no one's origin) for a URL urllib refuses."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[" from a hostile Origin or Referer: refused, not a 500
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origins(request: web.Request) -> set[str]:
    server = request.app[RUNTIME].config.server
    origins = {f"{server.scheme or request.scheme}://{request.host}".lower()}
    if server.public_url:
        origins.add(origin_of(server.public_url))
    return origins


def is_cross_site(request: web.Request) -> bool:
    if request.method in SAFE_METHODS:
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer is None:
            return False
        origin = origin_of(referer)
    return origin.lower() not in own_origins(request)


def refuse_cross_site(request: web.Request) -> web.Response | None:
    if not is_cross_site(request):
        return None
    return json_error(403, "Cross-site request refused: it did not come from the lab's own pages.")
