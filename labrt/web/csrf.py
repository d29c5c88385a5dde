"""Refusing cross-site requests that would change state.

A page on another site can make the student's browser send a POST to the lab with the
student's cookie, or the RLMS's Basic credentials a browser has cached. Browsers say where such
a request comes from (``Origin``, else ``Referer``; and ``Sec-Fetch-Site``, on every request,
GETs included); a request that names another origin is refused. A request naming none comes
from a script or a tool, not from a page on another site, and is let through.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from .keys import CONFIG
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
    server = request.app[CONFIG].server
    origins = {f"{server.scheme or request.scheme}://{request.host}".lower()}
    if server.public_url:
        origins.add(origin_of(server.public_url))
    return origins


# Sec-Fetch-Site values that name another origin: "same-site" is another host of the same
# site (a student's page on lms.uni.edu, the lab on lab.uni.edu), still another origin.
_OTHER_SITES = frozenset({"cross-site", "same-site"})


def cross_site(
    request: web.Request, *, every_method: bool = False, referer: bool = True
) -> str | None:
    """Why ``request`` comes from a page of another origin, or None if it does not.

    The one rule for every route that refuses cross-site requests. By default only requests
    that may change state are checked (not GET, HEAD, OPTIONS), and ``Referer`` stands in for a
    missing ``Origin`` (older browsers). The RLMS's routes pass ``every_method``, since a
    cached password makes even a GET act as the RLMS, and not ``referer``: they judge only by
    what browsers alone send (a server, which a real RLMS is, sends neither ``Origin`` nor
    ``Sec-Fetch-Site``, while tools and crawlers may send a ``Referer``).
    """
    if not every_method and request.method in SAFE_METHODS:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if fetch_site in _OTHER_SITES:
        return f"Sec-Fetch-Site says {fetch_site}"
    origin = request.headers.get("Origin")
    if origin is None and referer:
        given = request.headers.get("Referer")
        origin = None if given is None else origin_of(given)
    if origin is None or origin.lower() in own_origins(request):
        return None
    return f"it came from {origin[:100]!r}, not from the lab's own pages"


def refuse_cross_site(
    request: web.Request, *, every_method: bool = False, referer: bool = True
) -> web.Response | None:
    """The 403 for a cross-site request (see :func:`cross_site`), or None to go on."""
    reason = cross_site(request, every_method=every_method, referer=referer)
    if reason is None:
        return None
    return json_error(403, f"Cross-site request refused: {reason}.")
