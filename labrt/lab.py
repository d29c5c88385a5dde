"""The ``Lab`` object a lab module exposes: what the author registers, nothing that runs.

Registration happens at import time, before any runtime exists; the runtime reads the
registrations when it builds the web application and the session manager.
"""

from __future__ import annotations

import contextlib
import inspect
import mimetypes
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from aiohttp import web

from ._engine import context as session_context
from ._engine.hardware import Devices, Hardware
from ._engine.push import Hub, Queued, message
from ._engine.registry import UNIQUE_MODES, Hooks, Registry, Route, TaskSpec, create_token
from ._engine.tasks import Task, TaskManager
from ._engine.templates import Templates
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
    templates: Templates | None = None  # [lab] templates and translations


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

    # lab.toml's [settings], handed over by labrt's loader once the lab module is imported.
    _settings: Mapping[str, Any] | None = None

    @property
    def settings(self) -> Mapping[str, Any]:
        """lab.toml's ``[settings]`` table, read-only (tables as mappings, arrays as tuples;
        empty without the table). Available once labrt has loaded the lab: in hooks, routes,
        tasks and what they call, not while the module is being imported."""
        if self._settings is None:
            raise RuntimeError(
                "lab.settings is available once labrt has loaded the lab (after the lab module "
                "is imported): read it in hooks, routes, tasks or functions they call, "
                "not at import time"
            )
        return self._settings

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
        self,
        method: str,
        path: str,
        *,
        name: str | None = None,
        cross_site: bool = False,
        max_body_size: int | None = None,
    ) -> Callable[[F], F]:
        """Register an HTTP handler ``fn(request)`` at ``path`` (aiohttp path syntax).

        The handler may be ``async def`` or plain ``def`` (run in a thread), and may return an
        aiohttp response, a dict or list to send as JSON, a str to send as text, or (as in
        Flask) ``(body, status)`` or ``(body, status, headers)``. Requests that change state
        and come from another site's page are refused unless ``cross_site=True`` (for an API
        called from elsewhere on purpose). ``max_body_size`` (bytes) replaces ``[server]
        max_body_size`` for this route only, e.g. for an upload.
        """
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"unknown HTTP method {method!r}")
        if not path.startswith("/") or re.search(r"\s", path):
            raise ValueError(f"route path must start with '/' and hold no spaces: {path!r}")
        _refuse_flask_syntax(path)
        if max_body_size is not None and (
            isinstance(max_body_size, bool)
            or not isinstance(max_body_size, int)
            or max_body_size < 1
        ):
            raise ValueError(f"max_body_size must be a positive int (bytes), not {max_body_size!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@lab.route decorates a function, not {fn!r}")
            self.routes.append(Route(method, path, fn, name, cross_site, max_body_size))
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

    def render(self, template: str, /, **context: Any) -> web.Response:
        """Render ``template`` from ``[lab] templates`` with ``context`` into a response
        (``text/html`` for ``.html``). Every template also sees ``user`` and ``_``,
        ``gettext`` and ``ngettext`` in the student's locale. Needs the ``labrt[templates]``
        extra. It renders where it is called: on the loop in an ``async def``, in the
        handler's thread in a plain ``def``.
        """
        templates = self._running("lab.render").templates
        if templates is None:
            raise RuntimeError("lab.render works while `labrt run` serves the lab")
        content_type = mimetypes.guess_type(template)[0] or "text/html"
        text = templates.render(template, context)
        return web.Response(text=text, content_type=content_type, charset="utf-8")

    def gettext(self, message: str, /, **variables: Any) -> str:
        """``message`` translated into the current student's locale from ``[lab]
        translations`` (as written when there is no catalog for it, or no student), then
        formatted with ``variables``: ``lab.gettext("Hello %(name)s", name=user.full_name)``.
        """
        templates = None if self._serving is None else self._serving.templates
        if templates is None:
            return message % variables if variables else message
        return templates.translations.gettext(message, **variables)

    def ngettext(self, singular: str, plural: str, n: int, /, **variables: Any) -> str:
        """The singular or plural form for ``n``, translated as :meth:`gettext`; ``%(num)d``
        is ``n``."""
        templates = None if self._serving is None else self._serving.templates
        if templates is None:
            variables.setdefault("num", n)
            return (singular if n == 1 else plural) % variables
        return templates.translations.ngettext(singular, plural, n, **variables)

    create_token = staticmethod(create_token)


# Flask's converters, as aiohttp spells them (a placeholder with a regular expression).
_FLASK_CONVERTERS = {"int": r"\d+", "float": r"[0-9.]+", "path": ".*", "uuid": "[0-9a-fA-F-]+"}
_FLASK_PART = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
# aiohttp's placeholders, whose regular expressions may hold "<" (and one level of braces).
_PLACEHOLDER = re.compile(r"\{(?:[^{}]|\{[^{}]*\})*\}")


def _refuse_flask_syntax(path: str) -> None:
    """A Flask-style ``<int:n>`` in a route path is a literal to aiohttp (every request a 404):
    refuse it, naming aiohttp's spelling."""
    if not _FLASK_PART.search(_PLACEHOLDER.sub("", path)):
        return

    def spelled(found: re.Match[str]) -> str:
        converter, variable = found.group(1), found.group(2)
        pattern = _FLASK_CONVERTERS.get(converter or "")
        return f"{{{variable}:{pattern}}}" if pattern else f"{{{variable}}}"

    aiohttp_path = _FLASK_PART.sub(spelled, path)
    raise ValueError(
        f"route path {path!r} uses Flask's <...> syntax, which aiohttp takes literally: "
        f'write r"{aiohttp_path}" (aiohttp\'s spelling) and read the part with '
        "request.match_info[...] (a str: convert it yourself, e.g. int(...))"
    )
