"""Sessions: admitting students, keeping each slot's time, and ending every slot exactly once.

A session moves ``starting → active → disposing → ended`` and never back. Each move is committed
to the store before memory changes and before anyone is told. Expiry is not found by scanning:
each active session has one timer at its next deadline (slot end or poll timeout), re-checked
when it fires because polls move the poll deadline without re-arming the timer. Every path that
ends a session (the RLMS, expiry, logout, a failed start, shutdown, recovery) goes through
:meth:`SessionManager._dispose`, which runs ``on_dispose`` once and only once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..clock import Clock, Timer
from ..logs import lifecycle, session_tag
from ..model import LIVE, EndReason, Session, StartRequest, State, dump_json
from ..store import Store
from . import context as session_context
from .background import Background
from .context import SessionOver
from .hooks import Call, HookRunner
from .registry import create_token

if TYPE_CHECKING:
    from ..config import SessionConfig
    from .hardware import Hardware
    from .registry import Registry
    from .tasks import Task, TaskManager

log = logging.getLogger("labrt.sessions")

# A student gets at least this long to reach the callback URL after the RLMS starts the slot.
FIRST_VISIT_GRACE = 60.0
# How far in the future a slot may start: the lab's and the RLMS's clocks may differ a little.
# A slot that starts later is refused; admitted now, it would last until its distant end.
CLOCK_TOLERANCE = 300.0
# How long poll times may sit in memory before being written (they are low value: a restart
# counts as a poll anyway).
LAST_SEEN_FLUSH = 5.0


class StartRefused(Exception):
    """The start request is well formed but cannot be admitted now; the message says why."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class SessionManager:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        settings: SessionConfig,
        registry: Registry,
        hooks: HookRunner,
        tasks: TaskManager,
        hardware: Hardware,
        max_concurrent: int | None = None,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.hardware = hardware
        self._listeners: list[Callable[[Session], None]] = []
        # The last disposes that did not go cleanly, for /healthz.
        self.dispose_problems: deque[dict[str, Any]] = deque(maxlen=10)
        tasks.on_change(self._task_changed)
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None  # the lab's, from recover()
        self.settings = settings
        self.registry = registry
        self._hooks = hooks
        self._max_concurrent = max_concurrent
        self._sessions: dict[str, Session] = {}
        # Those not ended yet, and those of them disposing: what admission and the dispose
        # checks look at, so that a start costs the same however many ended students are
        # still remembered.
        self._unfinished: dict[str, Session] = {}
        self._disposing: dict[str, Session] = {}
        self._timers: dict[str, Timer] = {}
        self._disposals: dict[str, asyncio.Task[None]] = {}
        self._starts: set[asyncio.Task[Session | None]] = set()
        self._background = Background(log, "background write failed")
        self._unsaved_seen: set[Session] = set()
        self._flush_timer: Timer | None = None
        # One admission at a time: its checks, the safe state and the counting in belong
        # together, or two starts could both reset the lab under the other's on_start.
        self._admission = asyncio.Lock()
        self._resafe = False  # a safe state again is on its way (see _returned)
        hooks.on_returned(self._returned)

    # -- queries ---------------------------------------------------------------------------

    def get(self, sid: str) -> Session | None:
        """The session ``sid`` if it is in memory: live, or ended in this run and still
        remembered. See :meth:`remembered` for a student whose slot ended before a restart."""
        return self._sessions.get(sid)

    async def remembered(self, sid: str) -> Session | None:
        """The session ``sid``, live or an expired user within ``expired_users_timeout``.

        A restart loads only the sessions not yet ended (``recover``), so its cost does not
        grow with the lab's history; a student whose slot ended before the restart is read
        back from the store on their first request (an indexed lookup by id) and remembered
        until the window closes, as if the process had never stopped.
        """
        s = self._sessions.get(sid)
        if s is not None:
            return s
        found = await self.store.session(sid)
        window = self.clock.now() - self.settings.expired_users_timeout
        if (
            found is None
            or found.state is not State.ENDED
            or found.ended_at is None
            or found.ended_at <= window
        ):
            return None
        s = self._sessions.setdefault(sid, found)  # another request may have read it first
        if s is found:
            self._arm_forget(found)
        return s

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def now(self) -> float:
        return self.clock.now()

    def poll_deadline(self, s: Session) -> float:
        timeout = self.settings.timeout
        if timeout <= 0:
            return math.inf
        grace = timeout if s.visited else max(timeout, FIRST_VISIT_GRACE)
        return s.last_seen + grace

    def _expiry_reason(self, s: Session, now: float) -> EndReason | None:
        if now >= s.request.max_date:
            return EndReason.EXPIRED
        if now >= self.poll_deadline(s):
            return EndReason.TIMED_OUT
        return None

    def end_reason(self, s: Session) -> EndReason | None:
        """Why ``s`` is over, or None while it is not; right at a deadline too, before the
        dispose has been recorded."""
        if s.end_reason is not None or s.state not in LIVE:
            return s.end_reason
        return self._expiry_reason(s, self.clock.now())

    def live_count(self) -> int:
        """Sessions being admitted or admitted: the students in the lab."""
        return sum(s.state in LIVE for s in self._unfinished.values())

    def using_the_lab(self) -> int:
        """Sessions from their start to the end of their dispose (which resets the devices):
        while there is one, nobody else may move a device (bench control)."""
        return len(self._unfinished)

    def nobody_in_lab(self) -> bool:
        """No session is starting or running (one that is ending has left the lab)."""
        return not any(s.state in LIVE for s in self._unfinished.values())

    def is_active(self, s: Session) -> bool:
        """True only while the session, its slot and its poll window are all alive, right now.

        A session whose ``on_start`` is running counts as active: the hook sees the student
        it is admitting. One whose dispose has begun does not, though its state is written
        a moment later.
        """
        return (
            s.state in LIVE
            and s.sid not in self._disposals
            and self._expiry_reason(s, self.clock.now()) is None
        )

    def time_left(self, s: Session) -> float:
        if s.state not in LIVE:
            return 0.0
        return max(0.0, s.request.max_date - self.clock.now())

    def should_finish(self, sid: str) -> int:
        """The protocol's answer to "should this session finish?" (see protocol.md)."""
        s = self._sessions.get(sid)
        if s is None or s.state is State.ENDED:
            return -1
        if s.state is not State.ACTIVE or sid in self._disposals:
            return 2
        now = self.clock.now()
        reason = self._expiry_reason(s, now)
        if reason is not None:
            # The deadline passed but its timer has not run yet (busy loop, clock jump): end it
            # now rather than let the RLMS and the lab disagree.
            self._begin_dispose(s, reason)
            return -1
        interval = self.settings.poll_interval
        if interval == 0:
            return 0
        # Never 0 in the last second: LDE would wait 10 s before asking again.
        return max(1, min(interval, int(s.request.max_date - now)))

    # -- starting --------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> Session | None:
        """Admit a student; returns the active session, or None if ``on_start`` failed.

        Shielded: an RLMS that hangs up mid-start must not leave a half-started session.
        """
        task = asyncio.ensure_future(self._start(request))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)
        return await asyncio.shield(task)

    async def _start(self, request: StartRequest) -> Session | None:
        async with self._admission:
            s = await self._count_in(request)
        # Written outside the admission, so that concurrent starts share one commit (the
        # store's group commit); the session is counted in memory already, and no one hears
        # of it until this write is committed.
        await self._record_start(s)
        try:
            data = await self._run_on_start(s)
            data_json = dump_json(data)
        except SessionOver:
            return None  # disposed while on_start ran (the service is stopping)
        except Exception:
            log.exception("session %s: on_start failed; disposing it", session_tag(s.sid))
            await self._begin_dispose(s, EndReason.START_FAILED)
            return None
        if s.state is not State.STARTING:
            # Disposed while on_start ran (the service is stopping): it never became active.
            return None
        now = self.clock.now()
        await self.store.update_session(
            s.sid, {"state": State.ACTIVE, "data": data_json}, at=now, event={"kind": "started"}
        )
        s.state, s.data, s.stored_data = State.ACTIVE, data, data_json
        self._arm(s)
        self._changed(s)
        log.info(
            "session %s started: %s, %.0f s left",
            session_tag(s.sid),
            s.request.experiment_id,
            s.request.max_date - now,
            extra=lifecycle("started", s.sid, experiment=s.request.experiment_id),
        )
        return s

    async def _count_in(self, request: StartRequest) -> Session:
        """Check that ``request`` may start now, and count it in (in memory)."""
        now = self.clock.now()
        if request.max_date <= now:
            raise StartRefused(
                f"the slot ended {now - request.max_date:.0f} s ago; is the clock of the lab "
                "or of the RLMS wrong?"
            )
        if request.start_date > now + CLOCK_TOLERANCE:
            raise StartRefused(
                f"the slot starts in {request.start_date - now:.0f} s, and a lab admits only "
                "slots that have begun; is the clock of the lab or of the RLMS wrong (or, for "
                "a WebLab-Deusto date without a time zone, are they in different zones)?"
            )
        # The next student is not admitted while a previous slot is still being cleaned up,
        # nor while its code still runs, nor while the hardware cannot be made safe.
        await self._wait_for_earlier_sessions()
        unsafe = await self.hardware.ready_for_a_student(idle=self.nobody_in_lab())
        if unsafe is not None:
            raise StartRefused(f"the lab's hardware is not in a safe state: {unsafe}", status=503)
        if self._max_concurrent is not None:
            busy = self.live_count()
            if busy >= self._max_concurrent:
                raise StartRefused(
                    f"the lab already has {busy} session(s) and admits at most "
                    f"{self._max_concurrent} at a time",
                    status=503,
                )
        s = Session.from_request(create_token(), request, self.clock.now())
        self._sessions[s.sid] = self._unfinished[s.sid] = s
        return s

    async def _record_start(self, s: Session) -> None:
        """Store ``s`` as starting; uncount it if that fails."""
        try:
            await self.store.insert_session(
                s,
                {
                    "kind": "starting",
                    "dialect": s.request.dialect.value,
                    "experiment": s.request.experiment_id,
                },
            )
        except BaseException:
            del self._sessions[s.sid], self._unfinished[s.sid]
            raise

    async def _run_on_start(self, s: Session) -> dict[str, Any]:
        hook = self.registry.hooks.on_start
        if hook is None:
            return s.data
        result = await _bounded(
            self._run_hook("on_start", hook, s, s.request.client_data, s.request.server_data),
            self.settings.start_timeout,
        )
        if result is None:
            return s.data  # the hook may have filled user.data instead of returning it
        if not isinstance(result, dict):
            raise TypeError(f"on_start must return a dict or None, not {type(result).__name__}")
        return result

    async def _run_hook(self, name: str, hook: Any, s: Session, *args: Any) -> Any:
        token = session_context.bind(self, s)
        try:
            return await self._hooks.hook(s, hook, *args, what=name)
        finally:
            session_context.unbind(token)

    # -- polls and visits ------------------------------------------------------------------

    def touch(self, s: Session, *, visit: bool = False) -> bool:
        """Record that the student's page is alive; False if it is too late for that."""
        if s.state is not State.ACTIVE or s.sid in self._disposals:
            return False
        now = self.clock.now()
        reason = self._expiry_reason(s, now)
        if reason is not None:
            self._begin_dispose(s, reason)
            return False
        s.last_seen = now
        if visit and not s.visited:
            # The first visit shortens the poll window (grace → timeout): move the timer in.
            s.visited = True
            self._arm(s)
        self._unsaved_seen.add(s)
        if self._flush_timer is None:
            self._flush_timer = self.clock.call_at(now + LAST_SEEN_FLUSH, self._flush_seen_soon)
        return True

    def _flush_seen_soon(self) -> None:
        self._flush_timer = None
        self._background.spawn(self._flush_seen())

    async def _flush_seen(self) -> None:
        batch = [(s.sid, s.last_seen, s.visited) for s in self._unsaved_seen]
        self._unsaved_seen.clear()
        if batch:
            await self.store.save_last_seen(batch)

    def on_change(self, listener: Callable[[Session], None]) -> None:
        """Call ``listener(session)`` after each committed change of a session's state."""
        self._listeners.append(listener)

    def _changed(self, s: Session) -> None:
        for listener in self._listeners:
            try:
                listener(s)
            except Exception:
                log.exception("session listener failed")

    def _task_changed(self, task: Task) -> None:
        # A task may have changed user.data: save it when the task ends, as after a request.
        s = self._sessions.get(task.session_id or "")
        if task.finished and s is not None and s.state in (State.ACTIVE, State.DISPOSING):
            self._background.spawn(self._save_after_task(s, task.name))

    async def _save_after_task(self, s: Session, name: str) -> None:
        try:
            await self.save_data(s)
        except (TypeError, ValueError) as exc:
            log.error("task %s left user.data that is not JSON: %s", name, exc)

    async def save_data(self, s: Session) -> None:
        """Persist ``user.data`` if it changed; raises TypeError/ValueError if it is not JSON."""
        if s.state in (State.STARTING, State.ENDED):
            return
        data_json = dump_json(s.data)
        if data_json != s.stored_data:
            await self.store.update_session(s.sid, {"data": data_json}, at=self.clock.now())
            s.stored_data = data_json

    # -- ending ----------------------------------------------------------------------------

    async def dispose(self, sid: str, reason: EndReason = EndReason.DISPOSED_BY_RLMS) -> bool:
        """End a session and wait until it has ended; False if the sid is unknown."""
        s = await self.remembered(sid)
        if s is None:
            return False
        if s.state is not State.ENDED:
            await asyncio.shield(self._begin_dispose(s, reason))
        return True

    async def logout(self, s: Session, *, wait: bool = True) -> None:
        """End ``s`` because the student left; a no-op once it is ending (so ``on_dispose``
        may call it without waiting for itself). A task of ``s`` must not wait: the dispose
        waits for it."""
        if s.state not in LIVE:
            return
        if wait:
            await self.dispose(s.sid, EndReason.LOGGED_OUT)
        else:
            self._begin_dispose(s, EndReason.LOGGED_OUT)

    def _begin_dispose(self, s: Session, reason: EndReason) -> asyncio.Task[None]:
        """The one dispose of ``s``: started on first call, shared by every later caller."""
        task = self._disposals.get(s.sid)
        if task is None:
            task = asyncio.ensure_future(self._dispose(s, reason))
            self._disposals[s.sid] = task
            task.add_done_callback(lambda t: self._disposal_done(s.sid, t))
        return task

    def _disposal_done(self, sid: str, task: asyncio.Task[None]) -> None:
        del self._disposals[sid]
        if not task.cancelled() and task.exception() is not None:
            # The store failed mid-dispose; the session stays "disposing" and the next
            # dispose request (or the next start of labrt) resumes it.
            log.error(
                "session %s: dispose failed, will resume on the next request or restart",
                session_tag(sid),
                exc_info=task.exception(),
            )

    async def _dispose(self, s: Session, reason: EndReason) -> None:
        tag = session_tag(s.sid)
        if s.state in LIVE:
            now = self.clock.now()
            await self.store.update_session(
                s.sid,
                {"state": State.DISPOSING, "end_reason": reason, "disposing_at": now},
                at=now,
                event={"kind": "disposing", "reason": reason.value},
            )
            s.state, s.end_reason, s.disposing_at = State.DISPOSING, reason, now
            self._disposing[s.sid] = s
            self._disarm(s.sid)
            self._changed(s)
            log.info(
                "session %s ending: %s", tag, reason.value, extra=lifecycle("ending", s.sid, reason)
            )
        # The session's code stops before on_dispose (its tasks are asked to, its coroutines
        # are cancelled, its threads are waited for), so that on_dispose resets a lab nobody
        # is still driving, and the safe state after it stays.
        limit = self.settings.dispose_timeout
        _, running = await asyncio.gather(
            self.tasks.wind_down(s.sid, limit), self._hooks.stop(s.sid, limit)
        )
        for call in running:
            log.error(
                "session %s: %s did not return within %g s; on_dispose runs anyway, and the "
                "next student waits for it",
                tag,
                call.describe(),
                limit,
            )
            self._dispose_problem(s, f"{call.what} still running after {limit:g} s")
        if not s.dispose_hook_done:
            await self._run_on_dispose(s)
            changes: dict[str, Any] = {"dispose_hook_done": True}
            try:
                data_json = dump_json(s.data)
            except (TypeError, ValueError):
                log.error("session %s: user.data is not JSON after on_dispose; not saved", tag)
            else:
                if data_json != s.stored_data:
                    changes["data"] = data_json
            await self.store.update_session(
                s.sid, changes, at=self.clock.now(), event={"kind": "on-dispose-done"}
            )
            s.dispose_hook_done = True
            s.stored_data = changes.get("data", s.stored_data)
        # Safe once nobody is using the lab (another student's slot may still be running).
        if self.nobody_in_lab():
            await self.hardware.make_safe(f"session {tag} ended")
        now = self.clock.now()
        await self.store.update_session(
            s.sid,
            {"state": State.ENDED, "ended_at": now},
            at=now,
            event={"kind": "ended", "reason": s.end_reason.value if s.end_reason else None},
        )
        s.state, s.ended_at = State.ENDED, now
        del self._unfinished[s.sid], self._disposing[s.sid]
        self._unsaved_seen.discard(s)
        self._changed(s)
        self._arm_forget(s)
        reason_text = s.end_reason.value if s.end_reason else "unknown reason"
        log.info(
            "session %s ended: %s", tag, reason_text, extra=lifecycle("ended", s.sid, reason_text)
        )

    async def _run_on_dispose(self, s: Session) -> None:
        hook = self.registry.hooks.on_dispose
        if hook is None:
            return
        tag = session_tag(s.sid)
        limit = self.settings.dispose_timeout
        # What on_dispose submits (a clean-up task's run_sync) is part of the dispose.
        token = session_context.disposing(s.sid)
        try:
            await _bounded(self._run_hook("on_dispose", hook, s), limit)
        except TimeoutError:
            log.error(
                "session %s: on_dispose still running after %.0f s; ending the session anyway",
                tag,
                limit,
            )
            self._dispose_problem(s, f"on_dispose still running after {limit:g} s")
        except Exception as exc:
            log.exception("session %s: on_dispose raised; the dispose completes anyway", tag)
            self._dispose_problem(s, f"on_dispose raised {type(exc).__name__}: {exc}")
        finally:
            session_context.end_disposing(token)
        # Tasks on_dispose started without waiting for them: waited for, then stopped at the
        # bound, before the safe state.
        await self.tasks.wait_for_session(s.sid, limit)
        await self.tasks.wind_down(s.sid, limit)

    def _dispose_problem(self, s: Session, problem: str) -> None:
        self.dispose_problems.append(
            {"at": self.clock.now(), "session": session_tag(s.sid), "problem": problem}
        )

    async def _wait_for_earlier_sessions(self) -> None:
        """Until no dispose is in flight and no code of an ended session still runs; that
        code gets ``dispose_timeout`` s, then the start is refused."""
        deadline = asyncio.get_running_loop().time() + self.settings.dispose_timeout
        while True:
            await self._wait_disposals()
            strays = self.strays()
            if not strays:
                return
            log.warning("a start waits for %s", "; ".join(self._describe(c) for c in strays))
            left = deadline - asyncio.get_running_loop().time()
            still = await self._hooks.wait(strays, max(0.0, left))
            if still:
                raise StartRefused(
                    "code of an earlier session is still running ("
                    + "; ".join(self._describe(c) for c in still)
                    + "); the next student is admitted once it has returned",
                    status=503,
                )

    async def _wait_disposals(self) -> None:
        # A session left "disposing" by a failed store write is retried here, not skipped.
        for s in self._disposing.values():
            self._begin_dispose(s, s.end_reason or EndReason.INTERRUPTED)
        # Until none is in flight: a slot may begin ending while this start waits for another.
        while self._disposals:
            await asyncio.gather(
                *(asyncio.shield(t) for t in self._disposals.values()), return_exceptions=True
            )
        if self._disposing:
            raise StartRefused(
                "the previous session could not be disposed; see the lab's log", status=503
            )

    # -- code that outlived its session ------------------------------------------------------

    def _live(self, sid: str) -> bool:
        s = self._sessions.get(sid)
        return s is not None and s.state in LIVE

    def strays(self) -> list[Call]:
        """Code of a session that is over, still running after its dispose (a thread stuck
        in a blocking call, a coroutine that swallowed its cancellation): no one may start
        until it returns. During the dispose, its code is the dispose's business."""
        return [
            c
            for c in self._hooks.running()
            if not self._live(c.sid) and c.sid not in self._disposals
        ]

    def describe_strays(self) -> list[str]:
        return [self._describe(c) for c in self.strays()]

    @staticmethod
    def _describe(call: Call) -> str:
        return f"{call.describe()} (session {session_tag(call.sid)})"

    def _returned(self, call: Call) -> None:
        if call.after_end or self._live(call.sid):
            return
        s = self._sessions.get(call.sid)
        if s is not None and s.state is State.DISPOSING and not s.dispose_hook_done:
            return  # before on_dispose has run: the dispose's own safe state comes after it
        if s is None or s.state is State.ENDED:
            log.warning(
                "session %s: %s returned after its session ended",
                session_tag(call.sid),
                call.what,
            )
        if not self._resafe:  # one is enough for any number of calls returning together
            self._resafe = True
            self._background.spawn(self._safe_again(call))

    async def _safe_again(self, call: Call) -> None:
        """Code that outlived its session may have moved the hardware after the safe state:
        make it safe again (after the dispose, if one is still going on), unless someone is
        using the lab by now."""
        disposal = self._disposals.get(call.sid)
        if disposal is not None:
            await asyncio.wait({disposal})
        async with self._admission:
            self._resafe = False
            if self.nobody_in_lab():
                await self.hardware.make_safe(f"{call.what} of session {session_tag(call.sid)}")

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, s: Session) -> None:
        self._disarm(s.sid)
        deadline = min(s.request.max_date, self.poll_deadline(s))
        self._timers[s.sid] = self.clock.call_at(deadline, lambda: self._on_deadline(s))

    def _disarm(self, sid: str) -> None:
        timer = self._timers.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def _on_deadline(self, s: Session) -> None:
        self._timers.pop(s.sid, None)
        if s.state is not State.ACTIVE:
            return
        reason = self._expiry_reason(s, self.clock.now())
        if reason is None:
            self._arm(s)  # polled since the timer was set, or the wall clock moved back
        else:
            self._begin_dispose(s, reason)

    def _arm_forget(self, s: Session) -> None:
        assert s.ended_at is not None
        when = s.ended_at + self.settings.expired_users_timeout
        self._timers[s.sid] = self.clock.call_at(when, lambda: self._forget(s))

    def _forget(self, s: Session) -> None:
        self._timers.pop(s.sid, None)
        if self._sessions.get(s.sid) is s:
            del self._sessions[s.sid]

    # -- life of the manager ---------------------------------------------------------------

    async def recover(self) -> None:
        """Reload the record and finish whatever a crash or a stop left half done."""
        self.loop = asyncio.get_running_loop()
        now = self.clock.now()
        # Only what is not over: expired users come back one by one (remembered).
        found = await self.store.unfinished_sessions()
        kept = 0
        for s in found:
            self._sessions[s.sid] = self._unfinished[s.sid] = s
            if s.state is State.STARTING:
                self._begin_dispose(s, EndReason.INTERRUPTED)
            elif s.state is State.DISPOSING:
                self._disposing[s.sid] = s
                self._begin_dispose(s, s.end_reason or EndReason.INTERRUPTED)
            elif now >= s.request.max_date:
                self._begin_dispose(s, EndReason.EXPIRED)
            else:
                # The student could not poll while we were down: the restart counts as a poll.
                s.last_seen = now
                self._arm(s)
                kept += 1
        disposing = len(self._disposals)
        await asyncio.gather(*self._disposals.values(), return_exceptions=True)
        if kept or disposing:
            log.info("recovered: %d session(s) still active, %d disposed", kept, disposing)

    async def shutdown(self, *, dispose: bool = True) -> None:
        """Dispose every session still running (reason ``shutdown``) unless told to leave
        them to the next start, and save what is left."""
        if self._starts:
            await asyncio.gather(*self._starts, return_exceptions=True)
        for s in list(self._unfinished.values()):
            if s.state in LIVE and dispose:
                self._begin_dispose(s, EndReason.SHUTDOWN)
        await self.settle()
        for sid in list(self._timers):
            self._disarm(sid)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        await self._flush_seen()

    async def settle(self) -> None:
        """Wait until no dispose or background write is in flight."""
        while self._disposals or self._background:
            await asyncio.gather(
                *self._disposals.values(), *self._background.pending(), return_exceptions=True
            )


async def _bounded(awaitable: Awaitable[Any], limit: float) -> Any:
    """Await ``awaitable`` for at most ``limit`` s, then cancel it and raise TimeoutError
    without waiting for it to end (unlike ``asyncio.wait_for``): a hook that swallows its
    cancellation must not hold a dispose or a start. What it goes on doing is still the
    session's code (labrt/_engine/hooks.py), which the next start waits for."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise TimeoutError
    return task.result()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a hook given up on ended with %r", task.exception())
