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
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from ._engine.cameras import Cameras
from ._engine.hardware import Hardware
from ._engine.hooks import HookRunner
from ._engine.metrics import Metrics
from ._engine.notify import Notifier
from ._engine.push import Hub
from ._engine.retention import Retention
from ._engine.sessions import SessionManager
from ._engine.tasks import Task, TaskManager
from ._engine.templates import Templates, Translations
from .clock import Clock, SystemClock
from .config import Config
from .lab import Lab, Serving
from .model import Session, State
from .store import Store
from .users import user
from .web import build_app
from .web.limits import server_options
from .web.signing import CookieSigner

log = logging.getLogger("labrt")

# Handlers still running when the server stops get this long before their connections close.
SHUTDOWN_GRACE = 5.0


class Runtime:
    """Every part of a lab, built here at once; :meth:`start` opens them, :meth:`stop` closes
    them. The engine is handed the lab's registry, never the ``Lab``; the web layer each
    service it uses."""

    def __init__(self, config: Config, lab: Lab[Any], *, clock: Clock | None = None) -> None:
        self.config = config
        self.lab = lab
        lab._settings = config.settings  # also for a Lab handed over without the loader
        self.clock: Clock = clock or SystemClock()
        self.hooks = HookRunner()
        self.hardware = Hardware(config.hardware, lab.registry.devices)
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.store = Store(config.store.path)
        self.signer = CookieSigner(config.server.cookie_name)
        self.tasks = TaskManager(
            store=self.store, clock=self.clock, settings=config.tasks, runner=self.hooks
        )
        self.retention = Retention(self.store, self.clock, config.store.keep_days)
        self.sessions = SessionManager(
            store=self.store,
            clock=self.clock,
            settings=config.session,
            registry=lab.registry,
            hooks=self.hooks,
            tasks=self.tasks,
            hardware=self.hardware,
            max_concurrent=config.lab.max_concurrent_sessions,
        )
        self.push = Hub(
            sessions=self.sessions,
            registry=lab.registry,
            hooks=self.hooks,
            clock=self.clock,
            settings=config.push,
            spectators=config.lab.spectators,
        )
        self.tasks.on_change(self.push.task_changed)
        self.cameras = Cameras(
            sessions=self.sessions,
            hardware=self.hardware,
            spectators=config.lab.spectators,
            max_spectators=config.push.max_spectators,
        )
        self.hardware.idle = self.sessions.nobody_in_lab
        self._count_events()
        self._dispose_on_stop = True
        self._alive: asyncio.Task[None] | None = None
        self.app = build_app(
            config=config,
            clock=self.clock,
            registry=lab.registry,
            store=self.store,
            sessions=self.sessions,
            tasks=self.tasks,
            push=self.push,
            hardware=self.hardware,
            hooks=self.hooks,
            metrics=self.metrics,
            notifier=self.notifier,
            signer=self.signer,
            cameras=self.cameras,
        )
        self.app.on_shutdown.append(self._tell_pages)
        # Checked by load_lab ([lab] translations); templates need the labrt[templates] extra.
        translations = Translations.load(config.lab.translations)
        self.templates = Templates(config.lab.templates, translations, user)
        self.templates.register(self.app)  # for aiohttp_jinja2.render_template too
        self.app.cleanup_ctx.append(self._lifespan)

    async def _tell_pages(self, app: web.Application) -> None:
        # Before aiohttp waits for open connections: pages hear why, then their sockets close;
        # camera streams end.
        self.cameras.shutdown()
        await self.push.shutdown()

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        self.hooks.start()
        self.push.start()
        try:
            await self.store.connect()
            self.signer.use(await self.store.secret("cookie-secret"))
            self._alive = asyncio.ensure_future(self.notifier.keep_alive(self.status_line))
            await self.tasks.start()
            # Safe before anyone is admitted, and before recovery ends the slots that a
            # crash left open (their disposes make it safe again).
            await self.hardware.open()
            if not await self.hardware.make_safe("start"):
                log.error("the lab is unavailable until its hardware is safe; see /healthz")
            self.lab._serve(
                Serving(
                    tasks=self.tasks,
                    push=self.push,
                    hardware=self.hardware,
                    templates=self.templates,
                )
            )
            await self.sessions.recover()
            await self.retention.start()
        except BaseException:
            self.lab._serve(None)
            await self._stop_keep_alive()
            await self.hardware.close()
            await self.store.close()
            self.hooks.close()
            raise

    def _count_events(self) -> None:
        metrics = self.metrics

        def session_changed(s: Session) -> None:
            if s.state is State.ACTIVE:
                metrics.count("labrt_sessions_started_total", dialect=s.request.dialect.value)
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
        cameras = self.cameras.all
        metrics.labelled_gauge(
            "labrt_camera_streaming",
            "camera",
            lambda: {n: float(c.status == "streaming") for n, c in cameras().items()},
        )
        metrics.labelled_gauge(
            "labrt_camera_fps", "camera", lambda: {n: c.fps() for n, c in cameras().items()}
        )
        metrics.labelled_gauge(
            "labrt_camera_viewers", "camera", lambda: {n: c.viewers for n, c in cameras().items()}
        )
        metrics.gauge("labrt_loop_lag_seconds", lambda: self.notifier.loop_lag)
        metrics.labelled_gauge("labrt_stray_calls", "what", self._stray_calls)

    def _stray_calls(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for call in self.sessions.strays():
            counts[call.what] = counts.get(call.what, 0) + 1
        return counts

    def active_sessions(self) -> int:
        return self.sessions.live_count()

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


async def serve(
    runtime: Runtime, host: str, port: int, sockets: Sequence[socket.socket] = ()
) -> None:
    """Run until SIGTERM or SIGINT, then stop in order (see the module docstring).

    ``sockets``: listening sockets passed by systemd (``labrt._engine.activation``), served
    instead of binding ``host`` and ``port``.
    """
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
        sites: list[web.BaseSite] = [
            web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_GRACE) for sock in sockets
        ] or [web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_GRACE)]
        try:
            for site in sites:
                await site.start()
        except OSError:
            runtime.keep_sessions()
            raise
        how = "socket from systemd" if sockets else "bound by labrt"
        for address in runner.addresses:
            shown_host, shown_port = address[0], address[1]
            if ":" in shown_host:
                shown_host = f"[{shown_host}]"
            log.info(
                "lab %r listening on http://%s:%d (%s)",
                runtime.config.lab.name,
                shown_host,
                shown_port,
                how,
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
