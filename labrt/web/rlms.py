"""The RLMS's routes, under both prefixes (``/weblab/sessions`` and ``/ldl/sessions``).

Shapes are protocol.md's, exactly: real RLMS code reads them. The dialect is known from the
prefix; :mod:`labrt.protocol` turns either body into one request type.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from ..model import Dialect
from ..protocol import (
    ProtocolError,
    check_session_id,
    is_delete,
    parse_json,
    parse_start,
    parse_status_multiple,
)
from ..sessions import StartRefused
from .keys import RUNTIME
from .responses import json_error

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("labrt.rlms")

_REALM = {"WWW-Authenticate": 'Basic realm="Login Required"'}
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:
        # Not base64 (binascii.Error), not UTF-8 (UnicodeDecodeError) or not even ASCII text
        # (a plain ValueError): all ValueErrors, all simply "no credentials", never a 500.
        return None
    username, _, password = decoded.partition(":")
    return username, password


def rlms_credentials(request: web.Request) -> bool:
    """Whether the request carries the RLMS's credentials.

    Compared as digests in constant time: neither content nor length leaks through timing.
    """
    expected = _runtime(request).config.rlms
    given = _credentials(request) or ("", "")
    ok = hmac.compare_digest(_digest(given[0]), _digest(expected.username))
    ok &= hmac.compare_digest(_digest(given[1]), _digest(expected.password))
    return ok


def _check_auth(request: web.Request) -> web.Response | None:
    """None if the RLMS's credentials are right, else the 401 to send."""
    if rlms_credentials(request):
        return None
    given = _credentials(request) or ("", "")
    log.warning("rejected RLMS request from %s: bad credentials", request.remote)
    if request.path.endswith("/sessions/test"):
        reason = "wrong username or password" if given[0] else "no username provided"
        return web.json_response(
            {"valid": False, "error_messages": [f"Invalid credentials: {reason}"]},
            status=401,
            headers=_REALM,
        )
    response = json_error(401, "Invalid RLMS credentials")
    response.headers.update(_REALM)
    return response


async def _body(request: web.Request) -> object:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = _runtime(request).config.server.max_body_size
        raise ProtocolError("body", f"larger than the limit of {limit} bytes", status=413) from None
    return parse_json(raw)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _rlms_only(handler: Handler) -> Handler:
    """Authenticate first, then turn protocol mistakes into 400s naming the field."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        denied = _check_auth(request)
        if denied is not None:
            return denied
        try:
            return await handler(request)
        except ProtocolError as exc:
            return json_error(exc.status, str(exc), field=exc.field)

    return guarded


def _callback_base(request: web.Request) -> str:
    """The callback URL without the sid; checked before a session starts, so that a bad Host
    header is refused with nothing stored rather than after admitting an unreachable student."""
    server = _runtime(request).config.server
    if server.public_url:
        base = server.public_url
    else:
        host = request.host
        if not _HOST.fullmatch(host):
            raise ProtocolError("Host", "expected a host name or address in the Host header")
        base = f"{server.scheme or request.scheme}://{host}"
    return f"{base}{server.callback_url}"


async def api_version(request: web.Request) -> web.Response:
    return web.json_response({"api_version": "1"})


async def test(request: web.Request) -> web.Response:
    return web.json_response({"valid": True})


async def start(dialect: Dialect, request: web.Request) -> web.Response:
    start_request = parse_start(dialect, await _body(request))
    callback = _callback_base(request)
    try:
        session = await _runtime(request).sessions.start(start_request)
    except StartRefused as exc:
        return json_error(exc.status, f"Session not started: {exc}")
    if session is None:
        return web.json_response({"error": True, "message": "Error initializing laboratory"})
    return web.json_response({"url": f"{callback}/{session.sid}", "session_id": session.sid})


async def status(request: web.Request) -> web.Response:
    sid = check_session_id(request.match_info["sid"])
    return web.json_response({"should_finish": _runtime(request).sessions.should_finish(sid)})


async def status_multiple(request: web.Request) -> web.Response:
    parsed = parse_status_multiple(await _body(request))
    if parsed is None:
        return web.json_response(
            {
                "success": False,
                "error_code": "missing-parameters",
                "error_human": "session_ids expected in POST JSON",
            }
        )
    ids, timeout = parsed
    sessions = _runtime(request).sessions
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    answers: dict[str, int] = {}
    for sid in ids:
        answers[sid] = sessions.should_finish(sid)
        if deadline is not None and loop.time() >= deadline:
            break  # the caller asks again for the ids left out
    return web.json_response({"status": answers})


async def dispose(request: web.Request) -> web.Response:
    sid = check_session_id(request.match_info["sid"])
    if request.method == "POST" and not is_delete(await _body(request)):
        return web.json_response({"message": "Unknown op"})
    found = await _runtime(request).sessions.dispose(sid)
    return web.json_response({"message": "Deleted" if found else "Not found"})


def _counted(endpoint: str, handler: Handler) -> Handler:
    """Count each answer in /metrics, by endpoint and status."""

    async def counted(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        _runtime(request).metrics.count(
            "labrt_rlms_requests_total", endpoint=endpoint, status=str(response.status)
        )
        return response

    return counted


def add_routes(router: web.UrlDispatcher, base_url: str) -> None:
    for dialect in Dialect:
        prefix = f"{base_url}/{dialect.value}/sessions"
        begin = _counted("start", _rlms_only(partial(start, dialect)))
        router.add_get(f"{prefix}/api", _counted("api", api_version))
        router.add_get(f"{prefix}/test", _counted("test", _rlms_only(test)))
        router.add_post(f"{prefix}/", begin)
        router.add_post(prefix, begin)
        multiple = _counted("status_multiple", _rlms_only(status_multiple))
        router.add_post(f"{prefix}/status/multiple", multiple)
        router.add_get(f"{prefix}/{{sid}}/status", _counted("status", _rlms_only(status)))
        router.add_post(f"{prefix}/{{sid}}", _counted("dispose", _rlms_only(dispose)))
        router.add_delete(f"{prefix}/{{sid}}", _counted("dispose", _rlms_only(dispose)))
