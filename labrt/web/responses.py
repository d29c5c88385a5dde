"""Answers shared by every route: JSON errors and the two "you may not" answers."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from .keys import CONFIG


def json_error(status: int, message: str, **fields: Any) -> web.Response:
    """A 4xx/5xx answer whose JSON body says what is wrong (``error`` is what LDE reads)."""
    return web.json_response({"error": True, "message": message, **fields}, status=status)


def wants_html(request: web.Request) -> bool:
    """A browser navigating (not a script fetching) asks for HTML first."""
    return "text/html" in request.headers.get("Accept", "")


def forbidden(request: web.Request, unauthorized_link: str | None) -> web.StreamResponse:
    """The answer for someone without a session: the configured link, else a 403."""
    if unauthorized_link:
        raise web.HTTPFound(request.app[CONFIG].server.link(unauthorized_link))
    message = "Access forbidden: open the laboratory from the link of your booking."
    if wants_html(request):
        body = (
            "<!doctype html><meta charset=utf-8><title>Access forbidden</title>"
            f"<h1>Access forbidden</h1><p>{html.escape(message)}</p>"
        )
        return web.Response(status=403, text=body, content_type="text/html")
    return json_error(403, message)


def session_over(request: web.Request, back: str) -> web.StreamResponse:
    """The answer for a student whose slot is over: back to the RLMS, or a JSON 401."""
    if wants_html(request):
        raise web.HTTPFound(back)
    return json_error(401, "Your session is over.", back=back)
