"""Live push: the lab's pages connected over WebSocket, and what goes to and comes from them.

Messages are JSON text frames ``{"event": name, "data": value}`` both ways. Each connected
page is a :class:`Page` with a bounded send queue drained by its own sender, so a page that
stops reading never delays the others: when its queue is full it is closed. Messages from a
page are handled one after another by a worker of its own, so a slow handler delays only that
page, and its socket keeps answering heartbeats meanwhile.

Close codes (also in docs/push.md):

========  ===============================================================================
4000      the session ended (an ``ended`` event with the reason and back URL came first)
4008      too many messages (more than ``[push] messages_per_second``, bursts of twice that)
4009      the page did not read its messages fast enough (``[push] send_queue`` overflowed)
1001      the lab is stopping (spectators; session pages get ``ended`` and 4000)
1009      a message larger than ``[push] max_message_size`` (aiohttp closes with it)
========  ===============================================================================
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import user as user_context
from .model import Session, State, dump_json

if TYPE_CHECKING:
    from .clock import Clock
    from .config import PushConfig
    from .hooks import HookRunner
    from .lab import Lab
    from .sessions import SessionManager
    from .tasks import Task

log = logging.getLogger("labrt.push")

ENDED = 4000
TOO_MANY_MESSAGES = 4008
TOO_SLOW = 4009
GOING_AWAY = 1001
TOKEN_LIFETIME = 120.0  # seconds a WebSocket token from /labrt/status stays valid
CLOSE_WAIT = 1.0  # seconds a closing page has to answer before its connection is dropped
_CLOSE = object()  # in a send queue: close after what came before it


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
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []

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

    def within_rate(self) -> bool:
        """Token bucket: refilled at ``messages_per_second``, holding at most a burst."""
        now = time.monotonic()
        self._allowance = min(2 * self._rate, self._allowance + (now - self._last) * self._rate)
        self._last = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
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
        lab: Lab,
        hooks: HookRunner,
        clock: Clock,
        settings: PushConfig,
        spectators: bool,
        secret: bytes,
    ) -> None:
        self.sessions = sessions
        self.lab = lab
        self.hooks = hooks
        self.clock = clock
        self.settings = settings
        self.spectators_allowed = spectators
        self._key = hmac.new(secret, b"labrt websocket token", hashlib.sha256).digest()
        self._pages: dict[str | None, set[Page]] = {}  # sid → pages; None → spectators
        self._loop = asyncio.get_running_loop()
        sessions.on_change(self._session_changed)

    # -- who is connected ------------------------------------------------------------------

    def count(self) -> int:
        return sum(len(pages) for pages in self._pages.values())

    def pages_of(self, sid: str | None) -> set[Page]:
        return self._pages.get(sid, set())

    def token(self, session: Session) -> str:
        """A short-lived credential for ``/labrt/ws?token=...`` where cookies do not reach."""
        expires = int(self.clock.now() + TOKEN_LIFETIME)
        body = f"{session.sid}.{expires}"
        return f"{body}.{self._mac(body)}"

    def session_of_token(self, token: str) -> Session | None:
        sid, _, rest = token.partition(".")
        expires, _, mac = rest.partition(".")
        if not (sid and expires.isdigit() and mac) or len(token) > 256:
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(f"{sid}.{expires}").encode()):
            return None
        if int(expires) < self.clock.now():
            return None
        return self.sessions.get(sid)

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    # -- a page's life ---------------------------------------------------------------------

    async def serve(self, ws: web.WebSocketResponse, session: Session | None) -> None:
        """Run one connected page until it closes: greet it, then read its messages."""
        page = Page(ws, session, self.settings)
        sid = None if session is None else session.sid
        self._pages.setdefault(sid, set()).add(page)
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
                if not page.within_rate():
                    page.close(TOO_MANY_MESSAGES, "too many messages")
                    break
                if session is not None:
                    # Any message proves the page is open, even while a slow handler of this
                    # page keeps its queue waiting.
                    self.sessions.touch(session)
                if frame.type is web.WSMsgType.BINARY:
                    self._error(page, "bad-message", "messages are JSON text frames")
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
            incoming = json.loads(text)
        except ValueError:
            self._error(page, "bad-message", "expected JSON")
            return
        if (
            not isinstance(incoming, dict)
            or not isinstance(incoming.get("event"), str)
            or set(incoming) - {"event", "data"}
        ):
            self._error(page, "bad-message", 'expected {"event": name, "data": value}')
            return
        event, data = incoming["event"], incoming.get("data")
        session = page.session
        if session is None:
            if event != "keepalive":  # labrt.js sends those from every page
                self._error(page, "read-only", "spectators may watch, not send")
            return
        # The session is checked at this very instant: a message after the slot is refused.
        if not self.sessions.touch(session):
            self._end_page(page, session)
            return
        if event == "keepalive":
            return
        handler = self.lab.message_handlers.get(event)
        if handler is None:
            self._error(page, "unknown-event", f"the lab has no handler for {event!r}")
            return
        token = user_context.bind(self.sessions, session)
        try:
            await self.hooks.call(handler, data)
        finally:
            user_context.unbind(token)
        try:
            await self.sessions.save_data(session)
        except (TypeError, ValueError) as exc:
            log.error("on_message(%r) left user.data not JSON: %s", event, exc)

    def _error(self, page: Page, code: str, text: str) -> None:
        page.send(message("error", {"code": code, "message": text}))

    # -- sending ---------------------------------------------------------------------------

    def deliver(self, text: str, *, sid: str | None = None, everyone: bool = False) -> Any:
        """Queue an encoded message for one session's pages (``sid``), every student's
        (no ``sid``), or every page (``everyone``), from the loop or from any thread.

        On the loop: an already-done future (so ``await`` works); from a thread: a
        ``concurrent.futures.Future``. Both give how many pages it was queued for.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            done: concurrent.futures.Future[int] = concurrent.futures.Future()

            def deliver_now() -> None:
                done.set_result(self._send(text, sid, everyone))

            self._loop.call_soon_threadsafe(deliver_now)
            return done
        future = loop.create_future()
        future.set_result(self._send(text, sid, everyone))
        return future

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
            "max_date": session.max_date,
            "back": session.back,
        }

    def _session_changed(self, session: Session) -> None:
        if session.state in (State.DISPOSING, State.ENDED):
            for page in list(self.pages_of(session.sid)):
                self._end_page(page, session)

    def _end_page(self, page: Page, session: Session, reason: str | None = None) -> None:
        ended = self.sessions.end_reason(session)
        page.send(
            message(
                "ended",
                {"reason": reason or (ended.value if ended else "expired"), "back": session.back},
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
