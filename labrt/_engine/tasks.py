"""Tasks: the lab's long jobs (compiling, programming a board), run while the lab keeps answering.

A task function is an ``async def``, run on the event loop, or a plain ``def``, run in a
bounded pool of threads in submission order. Each submission is a :class:`TaskRecord` whose
every transition is committed to the store before anyone can see it. Uniqueness is decided at
submission, in one step on the loop, so fifty simultaneous clicks start exactly one job and
the other forty-nine are refused at once instead of waiting in a queue. A refused submission
writes nothing and is not remembered, and a session has at most ``[tasks]
max_unfinished_per_session`` unfinished tasks and ``max_results_per_session`` finished ones in
memory, so that no student can fill the store or the memory by clicking.

When a session ends, its tasks are told to stop and waited for, up to ``[session]
dispose_timeout``; then coroutine tasks are cancelled, and thread tasks (which cannot be) are
reported as overdue. A restart fails every task it finds unfinished (``interrupted``); nothing
is ever run twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from drivers.base import one_spelling

from ..clock import Clock, Timer
from ..logs import session_tag
from ..model import INTERRUPTED, LIVE, TaskRecord, TaskStatus, dump_json, task_error
from . import context as session_context
from .background import Background

if TYPE_CHECKING:
    from ..config import TasksConfig
    from ..store import Store
    from .hooks import HookRunner
    from .registry import TaskSpec

log = logging.getLogger("labrt.tasks")

_ARGS_SHOWN = 1000  # characters of a task's arguments kept in the record

_current: contextvars.ContextVar[Task | None] = contextvars.ContextVar("labrt_task", default=None)


class AlreadyRunning(Exception):
    """A unique task was called inline while another run of it is unfinished."""


class TooManyTasks(Exception):
    """The session already has ``[tasks] max_unfinished_per_session`` unfinished tasks: a
    flood, not a lab at work. A route that submits answers 429."""


class Task:
    """One submitted run of a task function, always showing its current state."""

    __slots__ = ("_manager", "_record")

    def __init__(self, manager: TaskManager, record: TaskRecord) -> None:
        self._manager = manager
        self._record = record

    @property
    def task_id(self) -> str:
        return self._record.task_id

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def session_id(self) -> str | None:
        return self._record.session_id

    @property
    def status(self) -> str:
        """``"submitted"``, ``"running"``, ``"done"`` or ``"failed"``."""
        return self._record.status.value

    @property
    def submitted(self) -> bool:
        return self._record.status is TaskStatus.SUBMITTED

    @property
    def running(self) -> bool:
        return self._record.status is TaskStatus.RUNNING

    @property
    def done(self) -> bool:
        return self._record.status is TaskStatus.DONE

    @property
    def failed(self) -> bool:
        return self._record.status is TaskStatus.FAILED

    @property
    def finished(self) -> bool:
        return self._record.finished

    @property
    def started_at(self) -> float | None:
        return self._record.started_at

    @property
    def finished_at(self) -> float | None:
        return self._record.finished_at

    @property
    def result(self) -> Any:
        """What the function returned (JSON), once ``done``."""
        return self._record.result

    @property
    def error(self) -> dict[str, Any] | None:
        """Why it failed: ``{"code", "message"}``, plus ``"class"`` when it raised."""
        return self._record.error

    @property
    def stopping(self) -> bool:
        """True once someone asked it to stop: a long task checks this and returns early."""
        return self._record.stopping

    @property
    def data(self) -> dict[str, Any] | MappingProxyType[str, Any]:
        """The task's progress as JSON: inside the task, its own dict to change; elsewhere,
        read-only, as of its last ``store()``."""
        if self._inside():
            return self._record.data
        return MappingProxyType(self._record.saved)

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        if not self._inside():
            raise RuntimeError("task.data can be replaced only from inside the task")
        if not isinstance(value, dict):
            raise TypeError(f"task.data must be a dict, not {type(value).__name__}")
        self._record.data = value

    def store(self) -> Any:
        """Save ``data`` and tell the page. In a thread task it returns once saved; in a
        coroutine task it returns an awaitable (awaiting it is optional)."""
        if not self._inside():
            raise RuntimeError("task.store() works only from inside the task")
        return self._manager.save_data(self._record)

    def stop(self) -> None:
        """Ask the task to stop; it decides when (see ``stopping``)."""
        self._manager.stop(self._record)

    def join(
        self, timeout: float | None = None, error_on_timeout: bool = False
    ) -> Coroutine[Any, Any, Task]:
        """Wait until the task has finished, at most ``timeout`` seconds; returns the task.
        ``await task.join()`` in ``async def`` code; in a plain ``def``, ``task.join()``
        blocks until then.

        After a timeout it returns the unfinished task, or raises ``TimeoutError`` if
        ``error_on_timeout``.
        """
        if self._inside():
            raise RuntimeError("a task cannot wait for itself to finish")
        return one_spelling(
            self._join(timeout, error_on_timeout), self._manager.loop, "task.join()"
        )

    async def _join(self, limit: float | None, error_on_timeout: bool) -> Task:
        if self.finished:
            return self
        try:
            await asyncio.wait_for(self._manager.finished_event(self._record).wait(), limit)
        except TimeoutError:
            if error_on_timeout:
                raise
        return self

    def retrieve(self) -> Task:
        """The state is always current; kept so that weblablib code runs unchanged."""
        return self

    def as_dict(self) -> dict[str, Any]:
        """The task as the page sees it (``/labrt/tasks/{id}``)."""
        r = self._record
        return {
            "task_id": r.task_id,
            "name": r.name,
            "status": r.status.value,
            "result": r.result,
            "error": r.error,
            "data": r.saved,
            "stopping": r.stopping,
            "submitted_at": r.submitted_at,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
        }

    def _inside(self) -> bool:
        current = _current.get()
        return current is not None and current._record is self._record

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.status}>"


class _CurrentTask:
    """``current_task``: the task being run here, read through on every access.

    Outside a task it is falsy and ``current_task.stopping`` is False, so helpers shared by
    tasks and routes can check it without caring where they run.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return _current.get() is not None

    @property
    def stopping(self) -> bool:
        task = _current.get()
        return task is not None and task.stopping

    def __getattr__(self, name: str) -> Any:
        task = _current.get()
        if task is None:
            raise RuntimeError(f"current_task.{name}: not inside a task")
        return getattr(task, name)

    def __setattr__(self, name: str, value: Any) -> None:
        task = _current.get()
        if task is None:
            raise RuntimeError(f"current_task.{name}: not inside a task")
        setattr(task, name, value)

    def __repr__(self) -> str:
        return repr(_current.get())


# Typed as the Task it reads through to, so that an editor completes ``current_task.update``;
# outside a task it is falsy (``if current_task:``) and only ``stopping`` may be read.
current_task: Task = cast(Task, _CurrentTask())


def _describe_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The arguments, for the record only: JSON where possible, else their repr, cut short."""
    try:
        text = dump_json({"args": list(args), "kwargs": kwargs})
    except (TypeError, ValueError):
        text = dump_json({"repr": repr((args, kwargs))})
    return text if len(text) <= _ARGS_SHOWN else dump_json({"repr": text[:_ARGS_SHOWN] + "…"})


class TaskManager:
    def __init__(
        self, *, store: Store, clock: Clock, settings: TasksConfig, runner: HookRunner
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self._runner = runner
        self._records: dict[str, TaskRecord] = {}
        # Each session's tasks still remembered, in submission order (unfinished and kept).
        self._by_session: dict[str | None, dict[str, TaskRecord]] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._claims: dict[tuple[Any, ...], object] = {}
        self._claims_lock = threading.Lock()  # inline calls may claim from a hook thread
        self._queue: asyncio.Queue[tuple[TaskRecord, TaskSpec, tuple[Any, ...], Any]]
        self._queued: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, Timer] = {}
        self._background = Background(log, "task bookkeeping failed")
        self._listeners: list[Callable[[Task], None]] = []
        self._pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="labrt-task")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # Tasks still running after a dispose gave up waiting for them, for /healthz.
        self.overdue: dict[str, str] = {}

    # -- life of the manager -------------------------------------------------------------

    async def start(self) -> None:
        """Fail what a previous process left unfinished, reload recent results, start workers."""
        self._loop = asyncio.get_running_loop()
        now = self.clock.now()
        interrupted = await self.store.interrupt_tasks(now)
        if interrupted:
            log.warning(
                "%d task(s) were cut by a stop or crash: failed as interrupted", interrupted
            )
        keep_since = now - self.settings.keep_results
        await self.store.prune_tasks(keep_since)
        for record in await self.store.tasks_finished_since(keep_since):
            self._remember(record)
            self._finished[record.task_id].set()
            self._arm_forget(record)
        self._queue = asyncio.Queue()
        self._workers = [
            asyncio.ensure_future(self._worker()) for _ in range(self.settings.threads)
        ]

    async def close(self) -> None:
        """After the sessions' disposes: anything still unfinished is recorded as interrupted."""
        self._closing = True
        for worker in self._workers:
            worker.cancel()
        for runner in list(self._runners.values()):
            runner.cancel()
        await asyncio.gather(*self._workers, *self._runners.values(), return_exceptions=True)
        for record in list(self._records.values()):
            if not record.finished:
                await self._finish(record, TaskStatus.FAILED, error=INTERRUPTED)
        await self.settle()
        for timer in self._timers.values():
            timer.cancel()
        # A thread task that ignores `stopping` cannot be killed; the process exits past it.
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def settle(self) -> None:
        """Wait until no background write is in flight."""
        await self._background.settle()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The lab's loop, once started: where a thread's calls are run."""
        return self._loop

    def on_change(self, listener: Callable[[Task], None]) -> None:
        """Call ``listener(task)`` after every committed change of any task (for push)."""
        self._listeners.append(listener)

    # -- queries ---------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        record = self._records.get(task_id)
        return None if record is None else Task(self, record)

    def all(self) -> list[Task]:
        """Every task still remembered (finished ones until ``[tasks] keep_results``)."""
        return [Task(self, r) for r in self._records.values()]

    def of_session(self, sid: str) -> list[Task]:
        return [Task(self, r) for r in self._by_session.get(sid, {}).values()]

    def finished_event(self, record: TaskRecord) -> asyncio.Event:
        return self._finished[record.task_id]

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, fn: TaskSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task:
        bound = session_context.current_session()
        if bound is None:
            raise RuntimeError(
                f"{fn.name}.delay(): a task belongs to a student's session; submit it while "
                "serving one (in a route, a hook or a task of that session)"
            )
        session = bound[1]
        now = self.clock.now()
        record = TaskRecord(
            task_id=secrets.token_urlsafe(16),
            session_id=session.sid,
            name=fn.name,
            args=_describe_args(args, kwargs),
            submitted_at=now,
        )
        claim = self._key(fn, session.sid)
        error = None
        if session.state not in LIVE and not session_context.in_on_dispose(session.sid):
            error = task_error("session-over", "the session has ended: no new tasks")
        elif self._unfinished(session.sid) >= self.settings.max_unfinished_per_session:
            raise TooManyTasks(
                f"{fn.name}.delay(): this session already has "
                f"{self.settings.max_unfinished_per_session} unfinished tasks "
                "([tasks] max_unfinished_per_session); wait for one to finish"
            )
        elif claim is not None and not self._claim(claim, record.task_id):
            error = task_error("already-running", f"{fn.name} is already running")
        if error is not None:
            # Refused: a failed task to the caller, and nothing more. It is not stored, nor
            # remembered, nor pushed, so a thousand clicks cost nothing.
            record.status, record.error, record.finished_at = TaskStatus.FAILED, error, now
            return Task(self, record)
        try:
            await self.store.insert_task(record)
        except BaseException:
            if claim is not None:
                self._release(claim, record.task_id)
            raise
        self._remember(record)
        context = contextvars.copy_context()
        if fn.is_async:
            self._runners[record.task_id] = asyncio.create_task(
                self._run(record, fn, args, kwargs, context), context=context
            )
        else:
            self._queued.add(record.task_id)
            self._queue.put_nowait((record, fn, (args, kwargs), context))
        self._notify(record)
        return Task(self, record)

    def _remember(self, record: TaskRecord) -> None:
        self._records[record.task_id] = record
        self._by_session.setdefault(record.session_id, {})[record.task_id] = record
        self._finished[record.task_id] = asyncio.Event()

    def _unfinished(self, sid: str) -> int:
        return sum(not r.finished for r in self._by_session.get(sid, {}).values())

    def _key(self, fn: TaskSpec, sid: str | None) -> tuple[Any, ...] | None:
        if fn.unique == "global":
            return (fn.name,)
        if fn.unique == "user":
            return (fn.name, sid)
        return None

    def _claim(self, key: tuple[Any, ...], owner: object) -> bool:
        with self._claims_lock:
            if key in self._claims:
                return False
            self._claims[key] = owner
            return True

    def _release(self, key: tuple[Any, ...], owner: object) -> None:
        with self._claims_lock:
            if self._claims.get(key) is owner:
                del self._claims[key]

    def _release_for(self, record: TaskRecord) -> None:
        with self._claims_lock:
            for key in [k for k, owner in self._claims.items() if owner == record.task_id]:
                del self._claims[key]

    # -- inline calls ----------------------------------------------------------------------

    def _inline_claim(self, fn: TaskSpec) -> tuple[tuple[Any, ...] | None, object]:
        bound = session_context.current_session()
        key = self._key(fn, bound[1].sid if bound else None)
        owner = object()
        if key is not None and not self._claim(key, owner):
            raise AlreadyRunning(f"{fn.name} is already running")
        return key, owner

    def run_inline(self, fn: TaskSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key, owner = self._inline_claim(fn)
        try:
            return fn.fn(*args, **kwargs)
        finally:
            if key is not None:
                self._release(key, owner)

    async def run_inline_async(
        self, fn: TaskSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        key, owner = self._inline_claim(fn)
        try:
            return await fn.fn(*args, **kwargs)
        finally:
            if key is not None:
                self._release(key, owner)

    # -- running ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        """One of ``[tasks] threads`` lanes: takes thread tasks in submission order."""
        while not self._closing:
            record, fn, (args, kwargs), context = await self._queue.get()
            if record.task_id not in self._queued:
                continue  # stopped while waiting in the queue
            self._queued.discard(record.task_id)
            await self._run(record, fn, args, kwargs, context)

    async def _run(
        self,
        record: TaskRecord,
        fn: TaskSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context,
    ) -> None:
        handle = Task(self, record)
        status, result, error = TaskStatus.FAILED, None, None
        try:
            if record.stopping:
                error = _STOPPED_BEFORE
            else:
                await self._transition(
                    record,
                    {"status": TaskStatus.RUNNING, "started_at": self.clock.now()},
                )
                assert record.session_id is not None
                if fn.is_async:
                    _current.set(handle)
                    result = await self._runner.in_task(
                        record.session_id, fn.fn(*args, **kwargs), what=f"task {fn.name}"
                    )
                else:
                    result = await self._runner.in_thread(
                        self._pool,
                        record.session_id,
                        context,
                        _in_thread,
                        handle,
                        fn.fn,
                        args,
                        kwargs,
                        what=f"task {fn.name}",
                    )
                try:
                    dump_json(result)
                except (TypeError, ValueError) as exc:
                    result, error = (
                        None,
                        task_error(
                            "result-not-json",
                            f"{fn.name} returned something that is not JSON: {exc}",
                        ),
                    )
                else:
                    status = TaskStatus.DONE
        except asyncio.CancelledError:
            # Cancelled at a dispose's bound, or cut by the lab stopping.
            error = INTERRUPTED if self._closing else _CANCELLED
        except Exception as exc:
            log.exception("task %s of session %s raised", fn.name, _tag(record))
            error = task_error("exception", str(exc) or type(exc).__name__, exc)
        finally:
            self._runners.pop(record.task_id, None)
        await self._finish(record, status, result=result, error=error)

    async def _transition(self, record: TaskRecord, changes: dict[str, Any]) -> None:
        await self.store.update_task(record.task_id, changes)
        for column, value in changes.items():
            # The data column holds the stored snapshot; the task keeps changing its own dict.
            setattr(record, "saved" if column == "data" else column, value)
        self._notify(record)

    async def _finish(
        self,
        record: TaskRecord,
        status: TaskStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        if record.finished:
            return
        changes: dict[str, Any] = {
            "status": status,
            "result": result,
            "error": error,
            "finished_at": self.clock.now(),
        }
        try:
            changes["data"] = json.loads(dump_json(record.data))
        except (TypeError, ValueError) as exc:
            log.error(
                "task %s left data that is not JSON (%s); keeping its last store()",
                record.name,
                exc,
            )
        await self._transition(record, changes)
        self._after_finish(record)

    def _after_finish(self, record: TaskRecord) -> None:
        self._release_for(record)
        self.overdue.pop(record.task_id, None)
        self._finished[record.task_id].set()
        self._arm_forget(record)
        # A session keeps its latest results only: the oldest go before their time.
        kept = [r for r in self._by_session.get(record.session_id, {}).values() if r.finished]
        for old in kept[: max(0, len(kept) - self.settings.max_results_per_session)]:
            self._forget(old)

    # -- data, stop, wind-down -------------------------------------------------------------

    def save_data(self, record: TaskRecord) -> Any:
        snapshot = json.loads(dump_json(record.data))  # TypeError/ValueError: the author's
        coro = self._transition(record, {"data": snapshot})
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a thread task: wait until it is saved
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        return self._background.spawn(coro)

    def stop(self, record: TaskRecord) -> None:
        """Ask a task to stop (from any thread); one still waiting for a thread never starts."""
        if record.finished or record.stopping:
            return
        record.stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped, record)

    def _stopped(self, record: TaskRecord) -> None:
        if record.task_id in self._queued:
            self._queued.discard(record.task_id)
            self._background.spawn(self._finish(record, TaskStatus.FAILED, error=_STOPPED_BEFORE))
        else:
            self._notify(record)

    async def wait_for_session(self, sid: str, limit: float) -> None:
        """Wait, at most ``limit`` s, until the session's tasks have finished on their own."""
        pending = [r for r in self._by_session.get(sid, {}).values() if not r.finished]
        if not pending:
            return
        waits = [asyncio.ensure_future(self._finished[r.task_id].wait()) for r in pending]
        _, late = await asyncio.wait(waits, timeout=limit)
        for wait in late:
            wait.cancel()

    async def wind_down(self, sid: str, limit: float) -> None:
        """Stop the session's unfinished tasks and wait for them, at most ``limit`` s.

        Tasks still waiting for a thread never start. At the bound, coroutine tasks are
        cancelled; thread tasks cannot be, and are reported as overdue.
        """
        pending = [r for r in self._by_session.get(sid, {}).values() if not r.finished]
        if not pending:
            return
        for record in pending:
            record.stopping = True
            if record.task_id in self._queued:
                self._queued.discard(record.task_id)
                await self._finish(record, TaskStatus.FAILED, error=_STOPPED_BEFORE)
            else:
                self._notify(record)
        waits = [asyncio.ensure_future(self._finished[r.task_id].wait()) for r in pending]
        _, late = await asyncio.wait(waits, timeout=limit)
        for wait in late:
            wait.cancel()
        stuck = [r for r in pending if not r.finished]
        runners = [self._runners[r.task_id] for r in stuck if r.task_id in self._runners]
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.wait(runners, timeout=min(limit, 1.0))
        for record in stuck:
            if not record.finished:
                self.overdue[record.task_id] = record.name
                log.error(
                    "session %s: task %s ignored the stop for %g s; the session ends anyway",
                    _tag(record),
                    record.name,
                    limit,
                )

    # -- forgetting ------------------------------------------------------------------------

    def _arm_forget(self, record: TaskRecord) -> None:
        assert record.finished_at is not None
        when = record.finished_at + self.settings.keep_results
        self._timers[record.task_id] = self.clock.call_at(when, lambda: self._forget(record))

    def _forget(self, record: TaskRecord) -> None:
        timer = self._timers.pop(record.task_id, None)
        if timer is not None:
            timer.cancel()
        self._records.pop(record.task_id, None)
        self._finished.pop(record.task_id, None)
        session = self._by_session.get(record.session_id)
        if session is not None:
            session.pop(record.task_id, None)
            if not session:
                del self._by_session[record.session_id]
        self._background.spawn(self.store.forget_task(record.task_id))

    def _notify(self, record: TaskRecord) -> None:
        handle = Task(self, record)
        for listener in self._listeners:
            try:
                listener(handle)
            except Exception:
                log.exception("task listener failed")


_STOPPED_BEFORE = task_error("stopped", "stopped before it started")
_CANCELLED = task_error("stopped", "cancelled: it did not stop in time when asked to")


def _in_thread(handle: Task, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
    _current.set(handle)
    return fn(*args, **kwargs)


def _tag(record: TaskRecord) -> str:
    return session_tag(record.session_id) if record.session_id else "-"
