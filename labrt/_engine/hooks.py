"""Running the author's code for a session, and knowing which of it is still running.

The author's functions are ``async def`` (run on the loop) or plain ``def`` (run in a thread,
with the caller's context variables, so ``user`` works there too). A session's code must never
outlive its slot, so every call made for a session is a :class:`Call`, kept here until it has
really returned: at the dispose, :meth:`HookRunner.stop` cancels the session's coroutines and
the calls still waiting for a thread, and waits, for a bounded time, for its running threads,
before ``on_dispose`` runs and the hardware is made safe. A thread cannot be cancelled, and a
coroutine may swallow its cancellation: one that outlasts the wait stays listed here, and the
session manager makes the next start wait for it.

Each kind of call has a pool of its own, so that none waits behind another: the lifecycle
hooks (``on_start``, ``on_dispose``, ``initial_url``) run in a small pool that forty slow
routes cannot fill; routes and message handlers of running sessions in another; those of
nobody (anonymous visitors) or of sessions that are over in a third, so that no flood from
outside a slot delays the student in it; tasks in the task manager's. And while a lab runs,
the loop's default executor (``asyncio.to_thread``, ``run_in_executor(None, ...)``) counts
what a session's code sends there as that session's too (:class:`SessionExecutor`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..model import LIVE, Session, State
from . import context as session_context
from .context import SessionOver

HOOK_THREADS = 4
HANDLER_THREADS = 8  # routes and message handlers of running sessions
PUBLIC_THREADS = 4  # those of anonymous visitors and of sessions that are over


@dataclass(eq=False)
class Call:
    """One call of the author's code for a session, from submission until it has returned."""

    sid: str
    what: str  # "route POST /lamp", "on_dispose", "task program_board": for logs and /healthz
    # Made for a session already over (an expired user's page): nothing a dispose waits for.
    after_end: bool
    # Cancelled by the dispose at once (routes, handlers, hooks); a task's coroutine is not:
    # it is asked to stop first, and cancelled by the task manager at the bound.
    stoppable: bool = True
    since: float = field(default_factory=time.monotonic)
    thread: str | None = None  # the thread running it, once one does
    task: asyncio.Task[Any] | None = None  # the task awaiting it, for a coroutine
    future: Future[Any] | None = None  # for a thread: pending until a thread picks it up
    cancelled: bool = False  # by the dispose
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # Coroutines its thread waits for on the loop (a plain def's ``board.readline()``): the
    # dispose cancels them, so that the thread is not left waiting past the slot.
    children: set[asyncio.Task[Any]] = field(default_factory=set)

    def describe(self) -> str:
        where = f" in thread {self.thread}" if self.thread else ""
        return f"{self.what}{where}, running for {time.monotonic() - self.since:.1f} s"


class HookRunner:
    def __init__(self) -> None:
        self._hook_pool = ThreadPoolExecutor(HOOK_THREADS, thread_name_prefix="labrt-hook")
        self._handler_pool = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="labrt-route")
        self._public_pool = ThreadPoolExecutor(PUBLIC_THREADS, thread_name_prefix="labrt-public")
        self._calls: dict[str, set[Call]] = {}
        self._returned: list[Callable[[Call], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._default: SessionExecutor | None = None
        self._previous_factory: Any = None
        self._factory: Any = None

    def start(self) -> None:
        """Become the loop's default executor's bookkeeper (see :class:`SessionExecutor`), and
        its task factory's: a task made for a session's thread is that call's child."""
        self._loop = asyncio.get_running_loop()
        self._default = SessionExecutor(self)
        self._loop.set_default_executor(self._default)
        self._previous_factory = self._loop.get_task_factory()
        self._factory = functools.partial(_task_factory, self._previous_factory)
        self._loop.set_task_factory(self._factory)

    # -- calling -----------------------------------------------------------------------------

    async def hook(self, session: Session, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        """A lifecycle hook of ``session``: it runs whatever the session's state."""
        call = Call(session.sid, what, after_end=session.state is State.ENDED)
        return await self._call(self._hook_pool, call, None, fn, args)

    async def handler(
        self, session: Session | None, fn: Callable[..., Any], *args: Any, what: str
    ) -> Any:
        """A route or message handler, for ``session`` if one is being served. One made while
        the session was running is stopped by its dispose, and one still waiting for a
        thread then never starts (:class:`SessionOver`)."""
        if session is None or session.state not in LIVE:
            # Nobody's, an expired user's page, or one arriving during the dispose: nothing
            # the dispose stops or a start waits for, and nothing that may delay a slot.
            return await self._call(self._public_pool, None, None, fn, args)

        def wanted() -> bool:
            return session.state in LIVE

        call = Call(session.sid, what, after_end=False)
        return await self._call(self._handler_pool, call, wanted, fn, args)

    async def in_thread(
        self,
        pool: Executor,
        sid: str,
        context: contextvars.Context,
        fn: Callable[..., Any],
        *args: Any,
        what: str,
    ) -> Any:
        """A task's blocking function in ``pool`` (the task manager's), in ``context``."""
        return await self._thread(pool, Call(sid, what, after_end=False), context, None, fn, args)

    async def in_task(self, sid: str, awaitable: Awaitable[Any], *, what: str) -> Any:
        """A task's coroutine: the task manager stops it, but it is the session's until it
        has returned (a coroutine may swallow its cancellation)."""
        return await self._coroutine(Call(sid, what, after_end=False, stoppable=False), awaitable)

    async def _call(
        self,
        pool: Executor,
        call: Call | None,
        wanted: Callable[[], bool] | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await self._coroutine(call, fn(*args))
        result = await self._thread(pool, call, contextvars.copy_context(), wanted, fn, args)
        if inspect.isawaitable(result):  # a plain def that hands back a coroutine
            follow = None if call is None else Call(call.sid, call.what, after_end=call.after_end)
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
        future = pool.submit(context.run, _enter, call, wanted, fn, args)
        if call is not None:
            self._watch(call, future)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if call is not None and call.cancelled and future.cancelled():
                raise SessionOver(f"{call.what}: not run, the session ended") from None
            raise

    def _watch(self, call: Call, future: Future[Any]) -> None:
        """Keep ``call`` until its thread has really returned (or never started): not until
        its caller stops waiting, which a timeout or a cancellation can make earlier."""
        loop = self._loop or asyncio.get_running_loop()
        call.future = future
        self._add(call)

        def returned(_: Future[Any]) -> None:
            # RuntimeError: the loop has closed; the lab has stopped, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._remove, call)

        future.add_done_callback(returned)

    def _add(self, call: Call) -> None:
        self._calls.setdefault(call.sid, set()).add(call)

    def _remove(self, call: Call) -> None:
        calls = self._calls.get(call.sid)
        if calls is not None:
            calls.discard(call)
            if not calls:
                del self._calls[call.sid]
        call.finished.set()
        for listener in self._returned:
            listener(call)

    # -- what is running -----------------------------------------------------------------------

    def on_returned(self, listener: Callable[[Call], None]) -> None:
        """Call ``listener(call)`` on the loop whenever a call of a session has returned."""
        self._returned.append(listener)

    def of_session(self, sid: str) -> list[Call]:
        return list(self._calls.get(sid, ()))

    def running(self) -> list[Call]:
        """Every call of a session that has not returned, but those made after its end."""
        return [c for calls in self._calls.values() for c in calls if not c.after_end]

    async def stop(self, sid: str, limit: float) -> list[Call]:
        """Cancel the session's coroutines and its calls still waiting for a thread, and wait,
        at most ``limit`` s, until every call of the session has returned; the ones still
        running after that."""
        calls = [c for c in self.of_session(sid) if not c.after_end]
        for call in calls:
            if call.children:
                call.cancelled = True  # the thread's wait ends: SessionOver there (_enter)
                for child in list(call.children):
                    child.cancel()
            if call.cancelled:
                continue
            if call.task is not None and call.stoppable:
                call.cancelled = True
                call.task.cancel()
            elif call.future is not None and call.future.cancel():
                call.cancelled = True  # it was still waiting for a thread: it never starts
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
        for pool in (self._hook_pool, self._handler_pool, self._public_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None and self._loop.get_task_factory() is self._factory:
            self._loop.set_task_factory(self._previous_factory)
        if self._loop is not None and self._default is not None:
            # The loop may outlive the lab (a test's): hand it a plain executor again.
            self._loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))
            self._default.shutdown(wait=False)
            self._default = None


class SessionExecutor(ThreadPoolExecutor):
    """The loop's default executor while a lab runs.

    ``await asyncio.to_thread(board.open)`` in a route sends work here, not to the runner's
    pools; submitted from a session's running code (the context still holds the session),
    it is that session's call, like any other, so that a dispose waits for it and the next
    start does too.
    """

    def __init__(self, runner: HookRunner) -> None:
        super().__init__(thread_name_prefix="labrt-default")
        self._runner = runner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        bound = session_context.current_session()
        on_loop = self._runner._loop is not None and _on(self._runner._loop)
        if bound is None or bound[1].state not in LIVE or not on_loop:
            return super().submit(fn, *args, **kwargs)
        call = Call(bound[1].sid, f"thread {_name(fn, args)}", after_end=False)
        work = functools.partial(fn, *args, **kwargs)
        future = super().submit(_enter, call, None, work, ())
        self._runner._watch(call, future)
        return future


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _name(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """What a thread runs, for /healthz: ``to_thread`` hands over ``context.run, fn, ...``."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    inner = fn.args if isinstance(fn, functools.partial) else args
    if getattr(target, "__name__", "") == "run" and inner and callable(inner[0]):
        target = inner[0]
    return getattr(target, "__qualname__", type(target).__name__)


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
        _calling.set(call)  # this thread's context only (it runs in a copy)
    try:
        return fn(*args)
    except concurrent.futures.CancelledError:
        # What it waited for on the loop was cancelled by the dispose.
        if call is not None and call.cancelled:
            raise SessionOver(f"{call.what}: stopped, the session ended") from None
        raise


# The call a thread is running, seen by the tasks it has the loop create for it.
_calling: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "labrt_calling", default=None
)


def _task_factory(
    previous: Any, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
) -> asyncio.Task[Any]:
    """The loop's tasks, as usual; one created from a session's thread (one spelling's
    ``run_coroutine_threadsafe``, run in a copy of the thread's context) is kept as a child
    of that thread's call, for the dispose to cancel."""
    if previous is not None:  # a factory the loop had before the lab: still used
        task: asyncio.Task[Any] = previous(loop, coro, **kwargs)
    else:
        task = asyncio.Task(coro, loop=loop, **kwargs)
    call = _calling.get()
    if call is not None and not call.finished.is_set():
        call.children.add(task)
        task.add_done_callback(call.children.discard)
    return task
