"""Testing a lab without its hardware, its management system or the wall clock.

::

    from labrt.testing import run_lab

    async def test_light_is_safe_after_the_slot():
        async with run_lab("lab.toml") as lab:
            student = await lab.new_student(seconds=60)
            r = await student.post("/api/light", json={"on": True})
            assert r.status == 200
            assert lab.hardware["light"].is_active
            await lab.advance(61)
            assert not lab.hardware["light"].is_active

What a test exercises is what runs on the Pi: the lab's own ``lab.toml`` and module, the real
aiohttp application on a real loopback socket, the real session manager, tasks, push and
drivers. Only three things are swapped, each because the real one cannot be in a test:

- the pins are gpiozero's mock pins, whatever ``[hardware] pins`` says, so that a test run on
  a Raspberry Pi never moves the bench's motor;
- the store is a fresh SQLite file in a temporary directory, never ``[store] path``, so that
  tests neither read the lab's real history nor leave anything behind;
- time is a :class:`~labrt.clock.FakeClock` that moves only on :meth:`LabUnderTest.advance`,
  so that an hour-long slot ends in no time and at exactly the instant the test says.

The management system is played over HTTP with the credentials of ``[rlms]``, and a student
is an HTTP client that holds the cookie the callback link sets, as a browser does. docs/testing.md
is the guide for lab authors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy
from yarl import URL

from .client import basic_auth
from .clock import FakeClock
from .config import Config, load_config
from .loader import load_lab
from .model import Dialect, StartRequest
from .protocol import start_body
from .runtime import Runtime

__all__ = [
    "LabUnderTest",
    "Message",
    "NotAdmitted",
    "Page",
    "PageClosed",
    "Response",
    "Student",
    "run_lab",
]

# Seconds a page waits for a message before the test fails: pushes travel over a real socket,
# so they take real (if tiny) time, and a lab that never sends must not hang the test run.
RECEIVE_TIMEOUT = 5.0
# What the start request says the student goes back to; ".invalid" can never resolve, so a
# test that followed it by mistake fails at once instead of reaching the internet.
BACK_URL = "https://rlms.invalid/back"


class NotAdmitted(Exception):
    """The lab refused to start a student's session, or its callback link did not admit them.

    Carries the lab's answer, since the reason (the lab is full, ``on_start`` raised, the
    hardware is unsafe) is what the failing test needs to show.
    """

    def __init__(self, status: int, answer: Any) -> None:
        self.status = status
        self.answer = answer
        message = answer.get("message", answer) if isinstance(answer, dict) else answer
        super().__init__(f"the lab did not admit the student (HTTP {status}): {message}")


class PageClosed(Exception):
    """The lab closed the page's WebSocket while the test waited for a message."""

    def __init__(self, code: int | None) -> None:
        self.code = code
        super().__init__(f"the lab closed the WebSocket (close code {code})")


@dataclasses.dataclass(frozen=True)
class Response:
    """An answer already read to its end, so that a test neither needs ``async with`` nor can
    leak a connection by forgetting one."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    @property
    def text(self) -> str:
        # Replacement, not an exception: a test asserting on a binary answer's text should
        # fail on its assertion, not on decoding.
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON, whatever the ``Content-Type`` (as ``fetch``'s ``json()``)."""
        return json.loads(self.body)


class Message(NamedTuple):
    """One frame the lab pushed: ``{"event": ..., "data": ...}`` as labrt.js reads it."""

    event: str
    data: Any


class Page:
    """The student's page as far as its WebSocket goes: what labrt.js would send and receive.

    The raw :class:`aiohttp.ClientWebSocketResponse` is ``ws``, for frames labrt.js would
    never send. Each wait fails after ``timeout`` seconds (real ones: pushes cross a real
    socket), so that a push the lab never sends fails the test instead of hanging it.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        self.ws: Final = ws
        self.timeout = timeout
        self._closed_with: int | None = None

    @property
    def close_code(self) -> int | None:
        """The code the lab closed the socket with; None while it is open."""
        if self._closed_with is not None:
            return self._closed_with
        return self.ws.close_code

    async def send(self, event: str, data: Any = None) -> None:
        """What ``labrt.send(event, data)`` sends: reaches ``@lab.on_message(event)``."""
        await self.ws.send_json({"event": event, "data": data})

    async def receive(self) -> Message:
        """The next message, whatever its event; :class:`PageClosed` if the socket closes."""
        frame = await self.ws.receive(self.timeout)
        if frame.type is aiohttp.WSMsgType.TEXT:
            message = json.loads(frame.data)
            return Message(message["event"], message.get("data"))
        if frame.type is aiohttp.WSMsgType.CLOSE:
            # The lab's code is in the frame: aiohttp's close_code ends up 1006 when the lab
            # drops the connection right after its close frame, as it may.
            self._closed_with = int(frame.data)
        if frame.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            raise PageClosed(self.close_code)
        if frame.type is aiohttp.WSMsgType.ERROR:
            raise PageClosed(self.close_code) from self.ws.exception()
        raise AssertionError(f"labrt sends JSON text frames only, got {frame.type.name}")

    async def expect(self, event: str) -> Any:
        """The data of the next message of ``event``, skipping others (the ``session`` event
        every page gets first, keepalive answers, other pushes) as a handler registered with
        ``labrt.on(event, ...)`` would."""
        async with asyncio.timeout(self.timeout):
            while True:
                message = await self.receive()
                if message.event == event:
                    return message.data

    async def wait_closed(self) -> int | None:
        """Read until the lab closes the socket; its close code (4000 when the slot ended)."""
        async with asyncio.timeout(self.timeout):
            while True:
                try:
                    await self.receive()
                except PageClosed as closed:
                    return closed.code


# Methods a browser's fetch() sends an Origin with when the page and the lab are one origin.
_ORIGIN_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Student:
    """One student's browser, admitted as the management system hands students over.

    Requests carry the session cookie the callback link set and, like a browser on the lab's
    own page, an ``Origin`` of the lab on state-changing requests, so the cross-site checks
    pass as they do for a real page. Redirects are not followed: the one a student most often
    gets is back to the management system, which is not there.
    """

    def __init__(
        self, lab: LabUnderTest, session_id: str, username: str, http: aiohttp.ClientSession
    ) -> None:
        self.lab: Final = lab
        self.session_id: Final = session_id
        self.username: Final = username
        self.http: Final = http

    def __repr__(self) -> str:
        return f"<Student {self.username} session={self.session_id}>"

    async def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """Any request, with :meth:`aiohttp.ClientSession.request`'s keyword arguments
        (``json``, ``data``, ``params``, ``headers``...); a ``headers`` ``Origin`` replaces
        the lab's, to test what another site's page may do."""
        method = method.upper()
        headers = dict(kwargs.pop("headers", None) or {})
        if method in _ORIGIN_METHODS and not any(k.lower() == "origin" for k in headers):
            headers["Origin"] = self.lab.origin
        kwargs.setdefault("allow_redirects", False)
        async with self.http.request(method, self.lab.url(path), headers=headers, **kwargs) as r:
            body = await r.read()
            return Response(status=r.status, headers=r.headers, body=body, url=str(r.url))

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)

    async def status(self) -> dict[str, Any]:
        """``/labrt/status`` as the page reads it (``state``, ``reason``, ``time_left``...).

        Like any request with the cookie, it counts as the page polling: a student who sends
        nothing for ``[session] timeout`` seconds has left, here as in production.
        """
        answer = await self.get("/labrt/status")
        found: dict[str, Any] = answer.json()
        return found

    def websocket(self, *, timeout: float = RECEIVE_TIMEOUT) -> AbstractAsyncContextManager[Page]:
        """The page's WebSocket, opened as labrt.js opens it: a token from ``/labrt/status``
        offered as the ``labrt.token.<token>`` subprotocol next to ``labrt``, and the lab's
        ``Origin``. A student whose session is over gets no token: the cookie alone opens the
        socket, to hear ``ended`` and be closed, as a page reloaded after the end would.
        A refused handshake raises :class:`aiohttp.WSServerHandshakeError`. ``timeout``: see
        :class:`Page`."""
        return self._websocket(wait=timeout)

    @asynccontextmanager
    async def _websocket(self, wait: float) -> AsyncIterator[Page]:
        answer = await self.get("/labrt/status")
        token = answer.json().get("ws_token") if answer.status == 200 else None
        protocols = ("labrt", f"labrt.token.{token}") if token else ("labrt",)
        ws = await self.http.ws_connect(
            self.lab.url("/labrt/ws"), protocols=protocols, origin=self.lab.origin
        )
        try:
            yield Page(ws, wait)
        finally:
            await ws.close()


class LabUnderTest:
    """The lab as :func:`run_lab` serves it, with what a test drives and what it inspects.

    The engine's objects are the runtime's own (``sessions``, ``tasks``, ``push``,
    ``hardware``), not copies: assertions see the state the next request will see.
    """

    def __init__(
        self,
        runtime: Runtime,
        server: TestServer,
        clock: FakeClock,
        dialect: Dialect,
        rlms: aiohttp.ClientSession,
        cleanup: AsyncExitStack,
    ) -> None:
        self.runtime: Final = runtime
        self.config: Final[Config] = runtime.config
        self.clock: Final = clock
        self.sessions: Final = runtime.sessions
        self.tasks: Final = runtime.tasks
        self.push: Final = runtime.push
        # Filled when the runtime opens the drivers, which run_lab has waited for.
        self.hardware: Final = runtime.hardware.devices
        self.dialect: Final = dialect
        self._server = server
        self._rlms = rlms
        self._cleanup = cleanup
        self._students = 0
        # The origin of the lab's page, which a browser names in Origin.
        self.origin: Final = _page_origin(runtime.config, server)

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` (as the lab routes it, without a proxy's prefix)."""
        if not path.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {path!r}")
        return str(self._server.make_url(path))

    def _rlms_url(self, path: str = "") -> str:
        base = self.config.server.base_url
        return self.url(f"{base}/{self.dialect.value}/sessions/{path}")

    async def new_student(self, seconds: float = 300.0, **client_data: Any) -> Student:
        """Book a student into a slot of ``seconds`` starting now and open their link.

        ``client_data`` reaches ``on_start`` as the management system's client data. Each
        student has a name of their own (``student1``, ``student2``...), so that labs which
        treat a returning user differently see different people.
        """
        self._students += 1
        number = self._students
        username = f"student{number}"
        now = self.clock.now()
        request = StartRequest(
            dialect=self.dialect,
            username=username,
            username_unique=f"{username}@labrt.testing",
            full_name=f"Student {number}",
            locale="en",
            back=BACK_URL,
            experiment_name=self.config.lab.name,
            category_name=None,
            experiment_id=self.config.lab.name,
            client_data=client_data,
            server_data={},
            start_date=now,
            max_date=now + seconds,
        )
        async with self._rlms.post(
            self._rlms_url(), json=start_body(self.dialect, request)
        ) as answer:
            started = await answer.json(content_type=None)
            if answer.status != 200 or not isinstance(started, dict) or "session_id" not in started:
                raise NotAdmitted(answer.status, started)
        session_id = str(started["session_id"])
        http = await self._browser()
        callback = self.url(f"{self.config.server.callback_url}/{session_id}")
        async with http.get(callback, allow_redirects=False) as visit:
            if visit.status != 302:
                raise NotAdmitted(visit.status, await visit.text())
            cookie = visit.cookies.get(self.config.server.cookie_name)
        if cookie is None:
            raise NotAdmitted(visit.status, "the callback link set no session cookie")
        # Stored again for the test server's own root: a lab.toml made for production marks
        # it Secure (https public_url) or scopes it to the proxy's path (cookie_path), and the
        # test's plain http requests, without that prefix, must still carry it.
        http.cookie_jar.update_cookies(
            {cookie.key: cookie.value}, URL(self.url("/")).with_path("/")
        )
        return Student(self, session_id, username, http)

    async def _browser(self) -> aiohttp.ClientSession:
        # unsafe: keep cookies for 127.0.0.1, which browsers do and aiohttp does not by default.
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.url("/")])
        http = aiohttp.ClientSession(cookie_jar=jar)
        self._cleanup.push_async_callback(http.close)
        return http

    async def dispose(self, student: Student) -> None:
        """End the student's session as the management system does when it ends a slot
        early, and wait for ``on_dispose`` to finish."""
        sid = student.session_id
        if self.dialect is Dialect.NEW:
            call = self._rlms.delete(self._rlms_url(sid))
        else:
            call = self._rlms.post(self._rlms_url(sid), json={"action": "delete"})
        async with call as answer:
            body = await answer.json(content_type=None)
            if answer.status != 200:
                raise AssertionError(f"the lab refused the dispose (HTTP {answer.status}): {body}")
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move the fake clock ``seconds`` on and wait for what that sets off (slot ends,
        poll timeouts, their ``on_dispose`` and the safe state) to finish. Author tasks in
        flight are not waited for: ``join()`` them."""
        if seconds < 0:
            raise ValueError(f"time only moves forward, got {seconds}")
        self.clock.advance(seconds)
        await self.settle()

    async def settle(self) -> None:
        """Wait until no dispose or store write is in flight."""
        await asyncio.sleep(0)  # let callbacks the clock fired start what they schedule
        await self.sessions.settle()


@asynccontextmanager
async def run_lab(
    path: str | os.PathLike[str],
    *,
    dialect: str | Dialect = Dialect.NEW,
    start: float | None = None,
    dev: bool = False,
) -> AsyncIterator[LabUnderTest]:
    """Serve the lab of ``path`` (its ``lab.toml``) in this process for one test.

    ``dialect`` is how the management system talks (``"ldl"``: LabDiscoveryEngine,
    ``"weblab"``: WebLab-Deusto). ``start`` is the fake clock's first instant (default: now,
    in whole seconds). ``dev`` serves the dev pages, as ``labrt run --dev``.

    The well-known example passwords are accepted whatever ``dev`` says: the lab listens on
    loopback for the test's duration only, and refusing them would make the example lab
    untestable. Everything is stopped on the way out, also when the test fails inside the
    block: sessions disposed, the hardware made safe and closed, the server closed, the
    temporary store deleted.
    """
    chosen = Dialect(dialect)
    async with AsyncExitStack() as cleanup:
        directory = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="labrt-test-")))
        config = _for_tests(load_config(Path(path), dev=True), directory, dev=dev)
        lab = load_lab(config)
        clock = FakeClock(float(int(time.time())) if start is None else start)
        runtime = Runtime(config, lab, clock=clock)
        server = TestServer(runtime.app, host="127.0.0.1")
        cleanup.push_async_callback(server.close)  # stops the runtime (the app's cleanup_ctx)
        await server.start_server()
        rlms = await cleanup.enter_async_context(
            aiohttp.ClientSession(headers=basic_auth(config.rlms.username, config.rlms.password))
        )
        yield LabUnderTest(runtime, server, clock, chosen, rlms, cleanup)


def _page_origin(config: Config, server: TestServer) -> str:
    if config.server.public_url:
        # Behind a proxy the page is on the public address, and so is its Origin.
        parts = urlsplit(config.server.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    return f"{config.server.scheme or 'http'}://{server.host}:{server.port}"


def _for_tests(config: Config, directory: Path, *, dev: bool) -> Config:
    """``config`` with the pins, the store and dev mode a test needs (see the module doc)."""
    return dataclasses.replace(
        config,
        hardware=dataclasses.replace(config.hardware, pins="mock"),
        store=dataclasses.replace(config.store, path=directory / "labrt.sqlite"),
        dev=dev,
    )
