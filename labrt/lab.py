"""The ``Lab`` object a lab module exposes: what the author registers, nothing that runs.

Registration happens at import time, before any runtime exists; the runtime reads the
registrations when it builds the web application and the session manager.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._engine import context as session_context
from ._engine.hardware import Devices, Hardware
from ._engine.push import Hub, Queued, message
from ._engine.registry import UNIQUE_MODES, Hooks, Registry, Route, TaskSpec, create_token
from ._engine.tasks import Task, TaskManager
from .task_functions import TaskFunction

F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D", bound=Devices)
P = ParamSpec("P")
R = TypeVar("R")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
_RESERVED_EVENTS = ("keepalive",)


@dataclass(frozen=True)
class Serving:
    """What a running lab lends its author API: the engine's parts that ``lab.hardware``,
    ``lab.push`` and the task functions reach."""

    tasks: TaskManager
    push: Hub
    hardware: Hardware


class Lab(Generic[D]):
    """One laboratory: its lifecycle hooks, its HTTP routes and its tasks.

    ::

        lab = Lab()

        @lab.on_start
        async def start(client_data, server_data):
            return {"lights": 0}          # becomes user.data

        @lab.on_dispose
        def dispose():                     # plain functions run in a thread
            board.all_off()
    """

    @overload
    def __init__(self: Lab[Devices]) -> None: ...

    @overload
    def __init__(self, devices: type[D]) -> None: ...

    def __init__(self, devices: type[Devices] = Devices) -> None:
        """``devices``: a :class:`Devices` subclass naming each device with its class
        (``light: Output``), so that ``lab.hardware.light`` is typed; see docs/hardware.md."""
        devices.declared()  # a wrong annotation fails here, where the author wrote it
        # What the engine is given; the Lab itself stays with the author.
        self.registry = Registry(devices=devices)
        self.task_functions: dict[str, TaskFunction[..., Any]] = {}
        self._serving: Serving | None = None  # while a runtime serves the lab

    @property
    def hooks(self) -> Hooks:
        return self.registry.hooks

    @property
    def routes(self) -> list[Route]:
        return self.registry.routes

    @property
    def message_handlers(self) -> dict[str, Callable[..., Any]]:
        return self.registry.message_handlers

    def _serve(self, serving: Serving | None) -> None:
        """Called by the runtime once it is ready to serve, and with None when it stops."""
        self._serving = serving

    def _running(self, what: str) -> Serving:
        if self._serving is None:
            raise RuntimeError(f"the lab is not running: {what} works while `labrt run` serves it")
        return self._serving

    def _tasks_if_running(self) -> TaskManager | None:
        return None if self._serving is None else self._serving.tasks

    @property
    def hardware(self) -> D:
        """The devices declared in lab.toml, by name: ``lab.hardware["led1"]`` or
        ``lab.hardware.led1``. Available while the lab runs (in hooks, routes and tasks)."""
        devices = self._running("lab.hardware").hardware.devices
        return devices  # type: ignore[return-value]  # built from registry.devices, i.e. D

    def _task_manager(self) -> TaskManager:
        return self._running("a task").tasks

    def __repr__(self) -> str:
        hooks = [name for name, fn in vars(self.hooks).items() if fn is not None]
        return f"<Lab hooks={hooks} routes={len(self.routes)}>"

    def _register(self, name: str, fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@lab.{name} decorates a function, not {fn!r}")
        if getattr(self.hooks, name) is not None:
            raise ValueError(f"@lab.{name} is already registered ({getattr(self.hooks, name)!r})")
        setattr(self.hooks, name, fn)
        return fn

    def on_start(self, fn: F) -> F:
        """``fn(client_data, server_data)`` runs when a student is admitted, with ``user`` set.

        It may return a dict, which becomes ``user.data``. If it raises, the session is
        disposed (``on_dispose`` runs) and the RLMS is told the lab could not start.
        """
        return self._register("on_start", fn)

    def on_dispose(self, fn: F) -> F:
        """``fn()`` runs exactly once when a session ends, however it ends."""
        return self._register("on_dispose", fn)

    def initial_url(self, fn: F) -> F:
        """``fn()`` returns where an admitted student is sent (default: ``[lab] initial_url``)."""
        return self._register("initial_url", fn)

    def user_loader(self, fn: F) -> F:
        """``fn(username_unique)`` backs ``user.user``, e.g. to look the student up in a table.

        A plain ``def``: ``user.user`` is an attribute, read where nothing can be awaited.
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("@lab.user_loader must be a plain def, not async def")
        return self._register("user_loader", fn)

    def route(
        self, method: str, path: str, *, name: str | None = None, cross_site: bool = False
    ) -> Callable[[F], F]:
        """Register an HTTP handler ``fn(request)`` at ``path`` (aiohttp path syntax).

        The handler may be ``async def`` or plain ``def`` (run in a thread), and may return an
        aiohttp response, or a dict or list to send as JSON. Requests that change state and
        come from another site's page are refused unless ``cross_site=True`` (for an API
        called from elsewhere on purpose).
        """
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"unknown HTTP method {method!r}")
        if not path.startswith("/") or re.search(r"\s", path):
            raise ValueError(f"route path must start with '/' and hold no spaces: {path!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@lab.route decorates a function, not {fn!r}")
            self.routes.append(Route(method, path, fn, name, cross_site))
            with contextlib.suppress(AttributeError):  # lets the access decorators check order
                fn.__labrt_route__ = f"{method} {path}"  # type: ignore[attr-defined]
            return fn

        return register

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self, *, unique: str | None = None
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, *, unique: str | None = None) -> Any:
        """Make ``fn`` a task: ``await fn.delay(...)`` runs it in the background.

        An ``async def`` runs on the event loop; a plain ``def`` in one of ``[tasks] threads``
        threads. ``unique="global"`` allows one unfinished run at a time in the whole lab,
        ``unique="user"`` one per session; a second submission fails at once with the error
        code ``already-running``. Usable as ``@lab.task`` or ``@lab.task(unique=...)``.
        """
        if unique not in UNIQUE_MODES:
            raise ValueError(f'unique must be None, "global" or "user", not {unique!r}')

        def register(fn: Callable[P, R]) -> TaskFunction[P, R]:
            if not callable(fn):
                raise TypeError(f"@lab.task decorates a function, not {fn!r}")
            spec = TaskSpec(fn, unique)
            if spec.name in self.task_functions:
                raise ValueError(f"a task named {spec.name!r} is already registered")
            function = TaskFunction(spec, fn, self._tasks_if_running)
            self.registry.tasks[spec.name] = spec
            self.task_functions[spec.name] = function
            return function

        return register if fn is None else register(fn)

    @property
    def tasks(self) -> list[Task]:
        """The current session's tasks, oldest first (empty without a session)."""
        bound = session_context.current_session()
        return [] if bound is None else self._task_manager().of_session(bound[1].sid)

    @property
    def running_tasks(self) -> list[Task]:
        """The current session's unfinished tasks (submitted or running)."""
        return [t for t in self.tasks if not t.finished]

    def get_task(self, task_id: str) -> Task | None:
        """The task with this id if it belongs to the current session, else None."""
        bound = session_context.current_session()
        task = self._task_manager().get(task_id) if bound is not None else None
        if task is None or bound is None or task.session_id != bound[1].sid:
            return None
        return task

    def on_message(self, event: str) -> Callable[[F], F]:
        """``fn(data)`` handles the ``event`` messages the page sends over the WebSocket.

        It runs with ``user`` set, only while the session is active at that instant; it may be
        ``async def`` or plain ``def`` (run in a thread). Spectators' messages never reach it.
        """
        if not isinstance(event, str) or not event or event in _RESERVED_EVENTS:
            raise ValueError(f"an event name, not {event!r} (reserved: {_RESERVED_EVENTS})")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@lab.on_message decorates a function, not {fn!r}")
            if event in self.message_handlers:
                raise ValueError(f"@lab.on_message({event!r}) is already registered")
            self.message_handlers[event] = fn
            return fn

        return register

    def push(self, event: str, data: Any = None) -> Queued:
        """Send ``{"event", "data"}`` to the current session's pages (all its tabs); from code
        with no session (an input's callback), to every student's pages.

        Works on the loop (``await lab.push(...)``) and from a thread (a plain ``def`` task or
        callback: ``lab.push(...)``, no await; ``.result()`` waits for the count). Either way
        the answer is how many pages it was queued for; ``data`` that is not JSON raises
        ``TypeError`` or ``ValueError`` here.
        """
        bound = session_context.current_session()
        sid = bound[1].sid if bound is not None else None
        return self._running("lab.push").push.deliver(message(event, data), sid=sid)

    def broadcast(self, event: str, data: Any = None) -> Queued:
        """Send to every connected page, spectators included (otherwise as :meth:`push`)."""
        return self._running("lab.broadcast").push.deliver(message(event, data), everyone=True)

    create_token = staticmethod(create_token)
