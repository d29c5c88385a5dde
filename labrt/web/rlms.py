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
from functools import cache, partial

from aiohttp import web

from .._engine.sessions import StartRefused
from ..model import Dialect
from ..protocol import (
    ProtocolError,
    check_session_id,
    is_delete,
    parse_json,
    parse_start,
    parse_status_multiple,
)
from .csrf import refuse_cross_site
from .keys import CONFIG, METRICS, SESSIONS
from .responses import json_error

log = logging.getLogger("labrt.rlms")

_REALM = {"WWW-Authenticate": 'Basic realm="Login Required"'}
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


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


@cache
def _expected(username: str, password: str) -> tuple[bytes, bytes, bytes]:
    """Digests of the header every RLMS sends, and of each credential: computed once."""
    token = base64.b64encode(f"{username}:{password}".encode("utf-8", "surrogatepass"))
    return _digest(f"Basic {token.decode()}"), _digest(username), _digest(password)


def rlms_credentials(request: web.Request) -> bool:
    """Whether the request carries the RLMS's credentials.

    Compared as digests in constant time: neither content nor length leaks through timing.
    The usual header is checked with one digest (this runs on every status poll); other
    spellings of the same credentials ("basic", extra spaces) take the long way.
    """
    rlms = request.app[CONFIG].rlms
    header, username, password = _expected(rlms.username, rlms.password)
    if hmac.compare_digest(_digest(request.headers.get("Authorization", "")), header):
        return True
    given = _credentials(request) or ("", "")
    ok = hmac.compare_digest(_digest(given[0]), username)
    ok &= hmac.compare_digest(_digest(given[1]), password)
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
        limit = request.app[CONFIG].server.max_body_size
        raise ProtocolError("body", f"larger than the limit of {limit} bytes", status=413) from None
    return parse_json(raw)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(name: str, handler: Handler, *, auth: bool = True) -> Handler:
    """One RLMS endpoint: unless ``auth`` is false, refuse a request from a browser page of
    another origin, then authenticate; turn protocol mistakes into 400s naming the field, and
    count the answer in /metrics by endpoint and status. One wrapper, not three: it is on every
    status poll.

    Cross-site comes before the credentials: a browser that has cached the RLMS's Basic
    credentials would otherwise let any site's page start or dispose sessions. ``/api`` takes
    no credentials and changes nothing, so it stays open to anyone.
    """

    async def endpoint(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        if auth:
            response = refuse_cross_site(request, every_method=True, referer=False)
            if response is None:
                response = _check_auth(request)
        if response is None:
            try:
                response = await handler(request)
            except ProtocolError as exc:
                response = json_error(exc.status, str(exc), field=exc.field)
        request.app[METRICS].count(
            "labrt_rlms_requests_total", endpoint=name, status=str(response.status)
        )
        return response

    return endpoint


def _callback_base(request: web.Request) -> str:
    """The callback URL without the sid; checked before a session starts, so that a bad Host
    header is refused with nothing stored rather than after admitting an unreachable student."""
    server = request.app[CONFIG].server
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
        session = await request.app[SESSIONS].start(start_request)
    except StartRefused as exc:
        return json_error(exc.status, f"Session not started: {exc}")
    if session is None:
        return web.json_response({"error": True, "message": "Error initializing laboratory"})
    return web.json_response({"url": f"{callback}/{session.sid}", "session_id": session.sid})


async def status(request: web.Request) -> web.Response:
    sid = check_session_id(request.match_info["sid"])
    return web.json_response({"should_finish": request.app[SESSIONS].should_finish(sid)})


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
    sessions = request.app[SESSIONS]
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
    found = await request.app[SESSIONS].dispose(sid)
    return web.json_response({"message": "Deleted" if found else "Not found"})


def add_routes(router: web.UrlDispatcher, base_url: str) -> None:
    for dialect in Dialect:
        prefix = f"{base_url}/{dialect.value}/sessions"
        begin = _endpoint("start", partial(start, dialect))
        router.add_get(f"{prefix}/api", _endpoint("api", api_version, auth=False))
        router.add_get(f"{prefix}/test", _endpoint("test", test))
        router.add_post(f"{prefix}/", begin)
        router.add_post(prefix, begin)
        multiple = _endpoint("status_multiple", status_multiple)
        router.add_post(f"{prefix}/status/multiple", multiple)
        router.add_get(f"{prefix}/{{sid}}/status", _endpoint("status", status))
        router.add_post(f"{prefix}/{{sid}}", _endpoint("dispose", dispose))
        router.add_delete(f"{prefix}/{{sid}}", _endpoint("dispose", dispose))
