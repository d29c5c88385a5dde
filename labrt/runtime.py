"""The runtime: builds every part from the config and the lab, and starts and stops them in
order.

Start: open the store, recover what a crash or a stop left behind, then listen. Stop: stop
listening, dispose the sessions still running, close the store. Tests use the same path through
the aiohttp application's ``cleanup_ctx``, so what they exercise is what runs on the Pi.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from .clock import Clock, SystemClock
from .config import Config
from .hardware import Hardware
from .hooks import HookRunner
from .lab import Lab
from .metrics import Metrics
from .model import Session, State
from .notify import Notifier
from .push import Hub
from .retention import Retention
from .sessions import SessionManager
from .store import Store
from .tasks import Task, TaskManager
from .web import build_app
from .web.cookies import CookieSigner
from .web.limits import server_options

log = logging.getLogger("labrt")

# Handlers still running when the server stops get this long before their connections close.
SHUTDOWN_GRACE = 5.0


class Runtime:
    store: Store
    tasks: TaskManager
    push: Hub
    sessions: SessionManager
    signer: CookieSigner
    retention: Retention

    def __init__(self, config: Config, lab: Lab, *, clock: Clock | None = None) -> None:
        self.config = config
        self.lab = lab
        self.clock = clock or SystemClock()
        self.hooks = HookRunner()
        self.hardware = Hardware(config.hardware)
        self.notifier = Notifier()
        self.metrics = Metrics()
        self._dispose_on_stop = True
        self._alive: asyncio.Task[None] | None = None
        self.app = build_app(self)
        self.app.on_shutdown.append(self._tell_pages)
        self.app.cleanup_ctx.append(self._lifespan)

    async def _tell_pages(self, app: web.Application) -> None:
        # Before aiohttp waits for open connections: pages hear why, then their sockets close.
        await self.push.shutdown()

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        self.hooks.start()
        self.store = await Store.open(self.config.store.path)
        try:
            secret = await self.store.secret("cookie-secret")
            self.signer = CookieSigner(secret, self.config.server.cookie_name)
            self.tasks = TaskManager(
                store=self.store, clock=self.clock, settings=self.config.tasks, runner=self.hooks
            )
            self.retention = Retention(self.store, self.clock, self.config.store.keep_days)
            self.sessions = SessionManager(
                store=self.store,
                clock=self.clock,
                settings=self.config.session,
                lab=self.lab,
                hooks=self.hooks,
                tasks=self.tasks,
                hardware=self.hardware,
                max_concurrent=self.config.lab.max_concurrent_sessions,
            )
            self.push = Hub(
                sessions=self.sessions,
                lab=self.lab,
                hooks=self.hooks,
                clock=self.clock,
                settings=self.config.push,
                spectators=self.config.lab.spectators,
            )
            self.tasks.on_change(self.push.task_changed)
            self.hardware.idle = self.sessions.nobody_in_lab
            self._count_events()
            self._alive = asyncio.ensure_future(self.notifier.keep_alive(self.status_line))
            await self.tasks.start()
            # Safe before anyone is admitted, and before recovery ends the slots that a
            # crash left open (their disposes make it safe again).
            await self.hardware.open()
            if not await self.hardware.make_safe("start"):
                log.error("the lab is unavailable until its hardware is safe; see /healthz")
            self.lab._serve(self)
            await self.sessions.recover()
            await self.retention.start()
        except BaseException:
            self.lab._serve(None)
            await self._stop_keep_alive()
            await self.hardware.close()
            await self.store.close()
            raise

    def _count_events(self) -> None:
        metrics = self.metrics

        def session_changed(s: Session) -> None:
            if s.state is State.ACTIVE:
                metrics.count("labrt_sessions_started_total", dialect=s.dialect.value)
            elif s.state is State.ENDED and s.end_reason is not None:
                metrics.count("labrt_sessions_ended_total", reason=s.end_reason.value)

        def task_changed(task: Task) -> None:
            if task.finished and task.started_at is not None and task.finished_at is not None:
                metrics.observe_task(task.finished_at - task.started_at, task.name)

        self.sessions.on_change(session_changed)
        self.tasks.on_change(task_changed)
        self.hardware.on_error = lambda name: metrics.count(
            "labrt_driver_errors_total", device=name
        )
        metrics.gauge("labrt_sessions_active", lambda: self.active_sessions())
        metrics.gauge("labrt_websocket_pages", lambda: self.push.count())
        metrics.gauge("labrt_loop_lag_seconds", lambda: self.notifier.loop_lag)
        metrics.labelled_gauge("labrt_stray_calls", "what", self._stray_calls)

    def _stray_calls(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for call in self.sessions.strays():
            counts[call.what] = counts.get(call.what, 0) + 1
        return counts

    def active_sessions(self) -> int:
        return sum(s.state in (State.STARTING, State.ACTIVE) for s in self.sessions.sessions())

    def status_line(self) -> str:
        """What ``systemctl status`` shows next to the service."""
        running = sum(not t.finished for t in self.tasks.all())
        return (
            f"{self.active_sessions()} session(s) active, {running} task(s) running, "
            f"{self.push.count()} page(s) connected"
        )

    async def _stop_keep_alive(self) -> None:
        if self._alive is not None:
            self._alive.cancel()
            await asyncio.gather(self._alive, return_exceptions=True)
            self._alive = None

    def keep_sessions(self) -> None:
        """The server never listened: leave running slots to the next start to recover,
        rather than end them for a reason no student could have caused."""
        self._dispose_on_stop = False

    async def stop(self) -> None:
        try:
            await self.sessions.shutdown(dispose=self._dispose_on_stop)
            await self.tasks.close()
            await self.hardware.make_safe("shutdown")
        finally:
            await self.retention.stop()
            self.lab._serve(None)
            await self._stop_keep_alive()
            await self.hardware.close()
            await self.store.close()
            self.hooks.close()


async def serve(runtime: Runtime, host: str, port: int) -> None:
    """Run until SIGTERM or SIGINT, then stop in order (see the module docstring)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        runtime.app,
        handle_signals=False,
        access_log=None,
        **server_options(runtime.config.server),  # slow clients: see labrt/web/limits.py
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_GRACE)
        try:
            await site.start()
        except OSError:
            runtime.keep_sessions()
            raise
        for address in runner.addresses:
            shown_host, shown_port = address[0], address[1]
            if ":" in shown_host:
                shown_host = f"[{shown_host}]"
            log.info(
                "lab %r listening on http://%s:%d", runtime.config.lab.name, shown_host, shown_port
            )
        # Recovered, safe and listening: only now may systemd start what depends on the lab.
        runtime.notifier.send("READY=1", f"STATUS={runtime.status_line()}")
        runtime.notifier.ready = True
        await stop.wait()
        log.info("stopping")
        runtime.notifier.send("STOPPING=1", "STATUS=stopping: ending sessions")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
        runtime.notifier.close()
    log.info("stopped")
