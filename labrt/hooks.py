"""Running the author's code for a session, and knowing which of it is still running.

The author's functions are ``async def`` (run on the loop) or plain ``def`` (run in a thread,
with the caller's context variables, so ``user`` works there too). A session's code must never
outlive its slot, so every call made for a session is a :class:`Call`, kept here until it has
really returned: at the dispose, :meth:`HookRunner.stop` cancels the session's coroutines and
waits, for a bounded time, for its threads, before ``on_dispose`` runs and the hardware is
made safe. A thread cannot be cancelled; one that outlasts the wait stays listed here, and the
session manager makes the next start wait for it.

Each kind of call has a pool of its own, so that none waits behind another: the lifecycle
hooks (``on_start``, ``on_dispose``, ``initial_url``) run in a small pool that forty slow
routes cannot fill, routes and message handlers in another, and tasks in the task manager's.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .model import Session, State

HOOK_THREADS = 4
HANDLER_THREADS = 8
_LIVE = (State.STARTING, State.ACTIVE)


class SessionOver(Exception):
    """The session ended before or while this call of its code ran: the call was cancelled,
    or it never started. Answered like any request that comes after the slot."""


@dataclass(eq=False)
class Call:
    """One call of the author's code for a session, from submission until it has returned."""

    sid: str
    what: str  # "route POST /lamp", "on_dispose", "task program_board": for logs and /healthz
    # Made for a session already over (an expired user's page): nothing a dispose waits for.
    after_end: bool
    since: float = field(default_factory=time.monotonic)
    thread: str | None = None  # the thread running it, once one does
    task: asyncio.Task[Any] | None = None  # the task awaiting it, for a coroutine
    cancelled: bool = False  # by a dispose
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> str:
        where = f" in thread {self.thread}" if self.thread else ""
        return f"{self.what}{where}, running for {time.monotonic() - self.since:.1f} s"


class HookRunner:
    def __init__(self) -> None:
        self._hook_pool = ThreadPoolExecutor(HOOK_THREADS, thread_name_prefix="labrt-hook")
        self._handler_pool = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="labrt-route")
        self._calls: dict[str, set[Call]] = {}
        self._returned: list[Callable[[Call], None]] = []

    # -- calling -----------------------------------------------------------------------------

    async def hook(self, session: Session, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        """A lifecycle hook of ``session``: it runs whatever the session's state."""
        return await self._call(self._hook_pool, session, None, fn, args, what)

    async def handler(
        self, session: Session | None, fn: Callable[..., Any], *args: Any, what: str
    ) -> Any:
        """A route or message handler, for ``session`` if one is being served. One that was
        made while the session was running and is still waiting for a thread when it ends
        never starts (:class:`SessionOver`)."""
        wanted = None
        if session is not None and session.state in _LIVE:

            def wanted() -> bool:
                return session.state in _LIVE

        return await self._call(self._handler_pool, session, wanted, fn, args, what)

    async def in_thread(
        self,
        pool: Executor,
        sid: str,
        context: contextvars.Context,
        fn: Callable[..., Any],
        *args: Any,
        what: str,
    ) -> Any:
        """A blocking function of a running session in ``pool`` (the task manager's), in
        ``context``; kept as one of the session's calls until the thread returns."""
        call = Call(sid, what, after_end=False)
        return await self._thread(pool, call, context, None, fn, args)

    async def _call(
        self,
        pool: Executor,
        session: Session | None,
        wanted: Callable[[], bool] | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        what: str,
    ) -> Any:
        call = None
        if session is not None:
            call = Call(session.sid, what, after_end=session.state is State.ENDED)
        if inspect.iscoroutinefunction(fn):
            return await self._coroutine(call, fn(*args))
        result = await self._thread(pool, call, contextvars.copy_context(), wanted, fn, args)
        if inspect.isawaitable(result):  # a plain def that hands back a coroutine
            follow = None if call is None else Call(call.sid, what, after_end=call.after_end)
            result = await self._coroutine(follow, result)
        return result

    async def _coroutine(self, call: Call | None, awaitable: Awaitable[Any]) -> Any:
        if call is None:
            return await awaitable
        task = call.task = asyncio.current_task()
        assert task is not None
        self._add(call)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            # Cancelled by the dispose (and by nothing else): the caller answers "over".
            if call.cancelled and task.uncancel() == 0:
                raise SessionOver(f"{call.what}: cancelled, the session ended") from None
            raise
        finally:
            self._remove(call)
        if call.cancelled:
            task.uncancel()  # the author's code swallowed the cancellation and returned
        return result

    async def _thread(
        self,
        pool: Executor,
        call: Call | None,
        context: contextvars.Context,
        wanted: Callable[[], bool] | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> Any:
        loop = asyncio.get_running_loop()
        future = pool.submit(context.run, _enter, call, wanted, fn, args)
        if call is not None:
            self._add(call)
            # When the thread has really returned (or never started): not when the caller
            # stops waiting for it, which a timeout or a cancellation can make earlier.
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._thread_done, call))
        return await asyncio.wrap_future(future)

    def _thread_done(self, call: Call) -> None:
        self._remove(call)
        for listener in self._returned:
            listener(call)

    def _add(self, call: Call) -> None:
        self._calls.setdefault(call.sid, set()).add(call)

    def _remove(self, call: Call) -> None:
        calls = self._calls.get(call.sid)
        if calls is not None:
            calls.discard(call)
            if not calls:
                del self._calls[call.sid]
        call.finished.set()

    # -- what is running -----------------------------------------------------------------------

    def on_thread_returned(self, listener: Callable[[Call], None]) -> None:
        """Call ``listener(call)`` on the loop whenever a session's thread has returned."""
        self._returned.append(listener)

    def of_session(self, sid: str) -> list[Call]:
        return list(self._calls.get(sid, ()))

    def threads(self) -> list[Call]:
        """Every call of a session now in a thread, or waiting for one."""
        return [c for calls in self._calls.values() for c in calls if c.task is None]

    async def stop(self, sid: str, limit: float) -> list[Call]:
        """Cancel the session's coroutines and wait, at most ``limit`` s, until every call of
        the session has returned; the ones still running after that."""
        calls = [c for c in self.of_session(sid) if not c.after_end]
        for call in calls:
            if call.task is not None and not call.cancelled:
                call.cancelled = True
                call.task.cancel()
        return await self.wait(calls, limit)

    @staticmethod
    async def wait(calls: list[Call], limit: float) -> list[Call]:
        """Wait, at most ``limit`` s, until ``calls`` have returned; those still running."""
        waits = [asyncio.ensure_future(c.finished.wait()) for c in calls if not c.finished.is_set()]
        if waits:
            _, late = await asyncio.wait(waits, timeout=limit)
            for wait in late:
                wait.cancel()
        return [c for c in calls if not c.finished.is_set()]

    def close(self) -> None:
        # A call stuck in a thread must not hold the shutdown hostage; it is reported by the
        # caller that gave up waiting for it.
        for pool in (self._hook_pool, self._handler_pool):
            pool.shutdown(wait=False, cancel_futures=True)


def _enter(
    call: Call | None,
    wanted: Callable[[], bool] | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    """First thing in the thread: a call its session no longer wants does not start."""
    if wanted is not None and not wanted():
        assert call is not None
        raise SessionOver(f"{call.what}: not run, the session ended while it waited")
    if call is not None:
        call.thread = threading.current_thread().name
    return fn(*args)
