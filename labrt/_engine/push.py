"""Live push: the lab's pages connected over WebSocket, and what goes to and comes from them.

Messages are JSON text frames ``{"event": name, "data": value}`` both ways. Each connected
page is a :class:`Page` with a bounded send queue drained by its own sender, so a page that
stops reading never delays the others: when its queue is full it is closed. Messages from a
page are handled one after another by a worker of its own, so a slow handler delays only that
page, and its socket keeps answering heartbeats meanwhile.

Anonymous spectators cost the loop nothing but their connection: their socket refuses any
frame over ``SPECTATOR_MAX_MESSAGE`` bytes from its header (aiohttp, before buffering it),
and their frames are never parsed (only labrt.js's keepalive text is accepted); at most
``[push] max_spectators`` are connected. A session's frames are parsed with a depth limit
(``parse_json``), so nesting is a ``bad-message`` like any other, logged once per page. A
session has at most ``[push] max_sockets_per_session`` pages: a newer one closes the oldest.

Close codes (also in docs/push.md):

========  ===============================================================================
4000      the session ended (an ``ended`` event with the reason and back URL came first)
4008      a flood: more than twice ``[push] messages_per_second``, kept up (a page over the
          rate, past a burst of twice that, has its excess dropped, told by ``error`` events)
4009      the page did not read its messages fast enough (``[push] send_queue`` overflowed)
4029      replaced by a newer page (``[push] max_sockets_per_session``); no reconnecting
1001      the lab is stopping (spectators; session pages get ``ended`` and 4000)
1009      a message larger than ``[push] max_message_size``, or than ``SPECTATOR_MAX_MESSAGE``
          from a spectator (aiohttp closes with it)
========  ===============================================================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from ..model import Session, State, dump_json
from ..protocol import ProtocolError, parse_json
from . import context as session_context
from .context import SessionOver
from .tasks import TooManyTasks

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import PushConfig
    from .hooks import HookRunner
    from .registry import Registry
    from .sessions import SessionManager
    from .tasks import Task

log = logging.getLogger("labrt.push")

ENDED = 4000
TOO_MANY_MESSAGES = 4008
TOO_SLOW = 4009
GOING_AWAY = 1001
REPLACED = 4029
# A spectator may only send keepalives: a few dozen bytes. Anything at this size or over is
# refused from the frame's header, before its payload is read.
SPECTATOR_MAX_MESSAGE = 256
# The keepalives a spectator may send, compared as text, never parsed: labrt.js's
# JSON.stringify, and json.dumps's spellings of the same (scripts such as docs/push.md's).
KEEPALIVES = frozenset(
    {
        '{"event":"keepalive","data":null}',
        '{"event": "keepalive", "data": null}',
        '{"event":"keepalive"}',
        '{"event": "keepalive"}',
    }
)
TOKEN_LIFETIME = 120.0  # seconds a WebSocket token from /labrt/status stays valid
TOKENS_PER_SESSION = 4  # outstanding tokens a session may hold; a fifth drops the oldest
MAX_TOKEN_LENGTH = 128  # anything longer is no token of ours: refused unread
CLOSE_WAIT = 1.0  # seconds a closing page has to answer before its connection is dropped
DROP_NOTICE_EVERY = 1.0  # seconds between two errors telling a page its messages were dropped
Admission = Literal["handle", "drop", "flood"]
_CLOSE = object()  # in a send queue: close after what came before it
_opened = itertools.count()  # the order pages connected in, to find a session's oldest


class Queued:
    """How many pages a message was queued for. On the loop it is known at once and
    ``await`` gives it; from a thread the message is on its way to the loop, and
    :meth:`result` waits for the count."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[int] | concurrent.futures.Future[int]) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, int]:
        if isinstance(self._future, concurrent.futures.Future):
            raise RuntimeError("a message sent from a thread is not awaited: call .result()")
        return self._future.__await__()

    def result(self, timeout: float | None = None) -> int:
        if isinstance(self._future, concurrent.futures.Future):
            return self._future.result(timeout)
        return self._future.result()


class Page:
    """One connected WebSocket: a student's tab, or a spectator's."""

    def __init__(
        self, ws: web.WebSocketResponse, session: Session | None, settings: PushConfig
    ) -> None:
        self.ws = ws
        self.session = session
        self._outbox: asyncio.Queue[Any] = asyncio.Queue(settings.send_queue)
        # Waiting for this page's handlers: a few seconds' worth at the allowed rate.
        self._inbox: asyncio.Queue[str] = asyncio.Queue(4 * settings.messages_per_second)
        self._rate = float(settings.messages_per_second)
        self._allowance = 2 * self._rate  # a burst of twice the rate is let through
        self._last = time.monotonic()
        self._dropped = 0.0  # messages dropped, forgiven at the rate: past a burst, a flood
        self._told = float("-inf")  # when the page last heard of a dropped message
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.opened = next(_opened)
        self.bad_logged = False  # a page's bad messages are logged once, not once each

    @property
    def spectator(self) -> bool:
        return self.session is None

    def send(self, text: str) -> bool:
        """Queue a message; False (and the page is closed) if its queue is full."""
        if self._closing:
            return False
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.close(TOO_SLOW, "too slow: messages were not read in time")
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """Close once what is already queued has been sent (or at once if the queue is full)."""
        if self._closing:
            return
        self._closing = True
        try:
            self._outbox.put_nowait((_CLOSE, code, reason))
        except asyncio.QueueFull:
            # The page is not reading: its sender may be stuck on a full socket. Give up on
            # it, and on a polite close if that takes more than a moment.
            for task in self.tasks[:1]:
                task.cancel()
            self._closer = asyncio.ensure_future(self._close_now(code, reason))

    async def _close_now(self, code: int, reason: str) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode(), drain=False), CLOSE_WAIT
            )

    def admit(self) -> Admission:
        """Token bucket: refilled at ``messages_per_second``, holding at most a burst (twice
        that). A message past it is dropped; the dropped ones are forgiven at the same rate,
        so only a page that keeps sending more than twice the rate piles up a burst's worth
        of them: a flood."""
        now = time.monotonic()
        elapsed = now - self._last
        self._last = now
        self._allowance = min(2 * self._rate, self._allowance + elapsed * self._rate)
        self._dropped = max(0.0, self._dropped - elapsed * self._rate)
        if self._allowance >= 1:
            self._allowance -= 1
            return "handle"
        self._dropped += 1
        return "flood" if self._dropped > 2 * self._rate else "drop"

    def tell_dropped(self) -> bool:
        """Whether to tell the page of a dropped message now: once a second at most."""
        now = time.monotonic()
        if now - self._told < DROP_NOTICE_EVERY:
            return False
        self._told = now
        return True

    async def sender(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, tuple) and item[0] is _CLOSE:
                await self.ws.close(code=item[1], message=item[2].encode())
                return
            try:
                await self.ws.send_str(item)
            except ConnectionError:
                return


def message(event: str, data: Any) -> str:
    return dump_json({"event": event, "data": data})


class Hub:
    def __init__(
        self,
        *,
        sessions: SessionManager,
        registry: Registry,
        hooks: HookRunner,
        clock: Clock,
        settings: PushConfig,
        spectators: bool,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.hooks = hooks
        self.clock = clock
        self.settings = settings
        self.spectators_allowed = spectators
        self._pages: dict[str | None, set[Page]] = {}  # sid → pages; None → spectators
        # WebSocket tokens: token → (sid, expiry), in the order issued, so expiry order too;
        # and sid → its outstanding tokens, oldest first.
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_of: dict[str, list[str]] = {}
        self._seats = 0  # spectators connected or connecting
        self._loop: asyncio.AbstractEventLoop | None = None  # the lab's, from start()
        sessions.on_change(self._session_changed)

    def start(self) -> None:
        """Remember the lab's loop, where threads send their messages."""
        self._loop = asyncio.get_running_loop()

    # -- who is connected ------------------------------------------------------------------

    def count(self) -> int:
        return sum(len(pages) for pages in self._pages.values())

    def pages_of(self, sid: str | None) -> set[Page]:
        return self._pages.get(sid, set())

    def take_seat(self) -> bool:
        """Count a spectator in before its upgrade; False when ``max_spectators`` are in.

        Held from before the handshake (so that concurrent handshakes cannot overshoot) until
        :meth:`serve` ends, or the handshake fails (``leave_seat``)."""
        if self._seats >= self.settings.max_spectators:
            return False
        self._seats += 1
        return True

    def leave_seat(self) -> None:
        self._seats -= 1

    def token(self, session: Session) -> str:
        """A single-use credential to open one WebSocket where the cookie does not reach.

        It is opaque random, not derived from the session id: page script can read it (from
        ``/labrt/status``), so it must not open ``/callback/<sid>`` nor last the slot. It is
        kept here only, valid ``TOKEN_LIFETIME`` seconds, consumed by the socket it opens,
        at most ``TOKENS_PER_SESSION`` per session, and forgotten when the session ends.
        """
        now = self.clock.now()
        self._prune_tokens(now)
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (session.sid, now + TOKEN_LIFETIME)
        mine = self._tokens_of.setdefault(session.sid, [])
        mine.append(token)
        while len(mine) > TOKENS_PER_SESSION:
            self._tokens.pop(mine.pop(0), None)
        return token

    def session_of_token(self, token: str) -> Session | None:
        """The session a token was issued to, or None; the token is used up either way."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        now = self.clock.now()
        self._prune_tokens(now)
        found = self._tokens.pop(token, None)
        if found is None:
            return None
        sid, expires = found
        mine = self._tokens_of[sid]
        mine.remove(token)
        if not mine:
            del self._tokens_of[sid]
        return self.sessions.get(sid) if expires >= now else None

    def _prune_tokens(self, now: float) -> None:
        """Drop expired tokens from the front: issued in order, they expire in order (a wall
        clock stepped back only delays this; the per-session cap still bounds them)."""
        while self._tokens:
            token, (sid, expires) = next(iter(self._tokens.items()))
            if expires >= now:
                return
            del self._tokens[token]
            mine = self._tokens_of[sid]
            mine.remove(token)
            if not mine:
                del self._tokens_of[sid]

    def _forget_tokens(self, sid: str) -> None:
        for token in self._tokens_of.pop(sid, []):
            self._tokens.pop(token, None)

    # -- a page's life ---------------------------------------------------------------------

    async def serve(self, ws: web.WebSocketResponse, session: Session | None) -> None:
        """Run one connected page until it closes: greet it, then read its messages."""
        page = Page(ws, session, self.settings)
        sid = None if session is None else session.sid
        pages = self._pages.setdefault(sid, set())
        pages.add(page)
        staying = [p for p in pages if not p._closing] if sid is not None else []
        if len(staying) > self.settings.max_sockets_per_session:
            # The newest page is the one the student looks at; one tab replacing another
            # closes it for good (labrt.js does not reconnect after this code).
            oldest = min(staying, key=lambda p: p.opened)
            oldest.close(REPLACED, "replaced by a newer page")
        page.tasks = [
            asyncio.ensure_future(page.sender()),
            asyncio.ensure_future(self._worker(page)),
        ]
        try:
            if session is not None:
                page.send(message("session", self._session_state(session)))
                if not self.sessions.touch(session):  # a page left open after its slot
                    self._end_page(page, session)
            async for frame in ws:
                if frame.type not in (web.WSMsgType.TEXT, web.WSMsgType.BINARY):
                    continue
                admitted = page.admit()
                if admitted == "flood":
                    page.close(TOO_MANY_MESSAGES, "too many messages")
                    break
                if admitted == "drop":
                    if page.tell_dropped():
                        self._error(
                            page,
                            "too-many-messages",
                            f"more than {self.settings.messages_per_second} messages a second: "
                            "some were dropped",
                        )
                    continue
                if session is None:
                    # Never parsed: a spectator's frame is labrt.js's keepalive or refused.
                    if frame.type is not web.WSMsgType.TEXT or frame.data not in KEEPALIVES:
                        self._error(page, "read-only", "spectators may watch, not send")
                    continue
                # Any message proves the page is open, even while a slow handler of this
                # page keeps its queue waiting.
                self.sessions.touch(session)
                if frame.type is web.WSMsgType.BINARY:
                    self._bad_message(page, "messages are JSON text frames")
                    continue
                try:
                    page._inbox.put_nowait(frame.data)
                except asyncio.QueueFull:
                    page.close(TOO_MANY_MESSAGES, "too many messages waiting for the lab")
                    break
        finally:
            self._pages[sid].discard(page)
            if not self._pages[sid]:
                del self._pages[sid]
            if session is None:
                self.leave_seat()
            page.tasks[1].cancel()
            # Let the sender finish a close it was asked for; it stops with the socket.
            await asyncio.wait([page.tasks[0]], timeout=CLOSE_WAIT)
            page.tasks[0].cancel()
            closer = [page._closer] if page._closer is not None else []
            await asyncio.gather(*page.tasks, *closer, return_exceptions=True)

    async def _worker(self, page: Page) -> None:
        while True:
            text = await page._inbox.get()
            try:
                await self._receive(page, text)
            except Exception:
                log.exception("handling a WebSocket message failed")
                self._error(page, "handler-failed", "the lab could not handle this message")

    async def _receive(self, page: Page, text: str) -> None:
        try:
            # Depth-limited: json.loads alone raises RecursionError on "[[[[...".
            incoming = parse_json(text.encode())
        except ProtocolError as exc:
            self._bad_message(page, exc.message)
            return
        if (
            not isinstance(incoming, dict)
            or not isinstance(incoming.get("event"), str)
            or set(incoming) - {"event", "data"}
        ):
            self._bad_message(page, 'expected {"event": name, "data": value}')
            return
        event, data = incoming["event"], incoming.get("data")
        session = page.session
        assert session is not None  # spectators' frames never reach the worker
        # The session is checked at this very instant: a message after the slot is refused.
        if not self.sessions.touch(session):
            self._end_page(page, session)
            return
        if event == "keepalive":
            return
        handler = self.registry.message_handlers.get(event)
        if handler is None:
            self._error(page, "unknown-event", f"the lab has no handler for {event!r}")
            return
        token = session_context.bind(self.sessions, session)
        try:
            await self.hooks.handler(session, handler, data, what=f"message {event!r}")
        except SessionOver:
            return  # cancelled by the end of the slot: the page hears "ended"
        except TooManyTasks as exc:
            self._error(page, "too-many-tasks", str(exc))
            return
        finally:
            session_context.unbind(token)
        try:
            await self.sessions.save_data(session)
        except (TypeError, ValueError) as exc:
            log.error("on_message(%r) left user.data not JSON: %s", event, exc)

    def _error(self, page: Page, code: str, text: str) -> None:
        page.send(message("error", {"code": code, "message": text}))

    def _bad_message(self, page: Page, text: str) -> None:
        """Answer ``bad-message``; log it the first time only, so that a page sending
        thousands fills no log (the page learns of each from its ``error`` events)."""
        self._error(page, "bad-message", text)
        if not page.bad_logged:
            page.bad_logged = True
            log.warning(
                "a page sent a message labrt could not take (%s); further ones "
                "from this page are answered but not logged",
                text,
            )

    # -- sending ---------------------------------------------------------------------------

    def deliver(self, text: str, *, sid: str | None = None, everyone: bool = False) -> Queued:
        """Queue an encoded message for one session's pages (``sid``), every student's
        (no ``sid``), or every page (``everyone``), from the loop or from any thread."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                raise RuntimeError("the lab is not running: nothing to push to") from None
            done: concurrent.futures.Future[int] = concurrent.futures.Future()

            def deliver_now() -> None:
                done.set_result(self._send(text, sid, everyone))

            self._loop.call_soon_threadsafe(deliver_now)
            return Queued(done)
        future = loop.create_future()
        future.set_result(self._send(text, sid, everyone))
        return Queued(future)

    def _send(self, text: str, sid: str | None, everyone: bool) -> int:
        if sid is not None:
            targets = list(self.pages_of(sid))
        else:
            targets = [p for key, ps in self._pages.items() if everyone or key for p in ps]
        return sum(page.send(text) for page in targets)

    def push(self, sid: str, event: str, data: Any) -> int:
        """Send to every page of one session; returns how many pages it was queued for."""
        return self._send(message(event, data), sid, False)

    def task_changed(self, task: Task) -> None:
        if task.session_id is not None:
            self.push(task.session_id, "task", task.as_dict())

    # -- endings ---------------------------------------------------------------------------

    def _session_state(self, session: Session) -> dict[str, Any]:
        active = self.sessions.is_active(session)
        reason = self.sessions.end_reason(session)
        return {
            "state": "active" if active else "expired",
            "reason": reason.value if reason else None,
            "time_left": round(self.sessions.time_left(session), 3) if active else 0.0,
            "max_date": session.request.max_date,
            "back": session.request.back,
        }

    def _session_changed(self, session: Session) -> None:
        if session.state in (State.DISPOSING, State.ENDED):
            self._forget_tokens(session.sid)
            for page in list(self.pages_of(session.sid)):
                self._end_page(page, session)

    def _end_page(self, page: Page, session: Session, reason: str | None = None) -> None:
        ended = self.sessions.end_reason(session)
        page.send(
            message(
                "ended",
                {
                    "reason": reason or (ended.value if ended else "expired"),
                    "back": session.request.back,
                },
            )
        )
        page.close(ENDED, "the session ended")

    async def shutdown(self, _app: Any = None) -> None:
        """Tell every page the lab is stopping, and close them."""
        for sid, pages in list(self._pages.items()):
            for page in list(pages):
                if sid is None:
                    page.send(message("ended", {"reason": "shutdown", "back": None}))
                    page.close(GOING_AWAY, "the lab is stopping")
                else:
                    assert page.session is not None
                    self._end_page(page, page.session, "shutdown")
        senders = [page.tasks[0] for pages in self._pages.values() for page in pages]
        if senders:
            await asyncio.wait(senders, timeout=2.0)
