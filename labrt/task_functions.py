"""What ``@lab.task`` makes of a function: call it inline, or submit it as a task."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar

from drivers.base import one_spelling

from ._engine.registry import TaskSpec
from ._engine.tasks import Task, TaskManager

P = ParamSpec("P")
R = TypeVar("R")


class TaskFunction(Generic[P, R]):
    """What ``@lab.task`` makes of a function.

    ``fn(...)`` runs it inline, here and now (``await fn(...)`` for an ``async def``);
    ``await fn.delay(...)`` submits it and returns its :class:`Task` at once;
    ``await fn.run_sync(...)`` submits it and waits for it.
    """

    def __init__(
        self, spec: TaskSpec, fn: Callable[P, R], manager: Callable[[], TaskManager | None]
    ) -> None:
        functools.update_wrapper(self, fn)
        self.spec = spec
        self.fn = fn
        self.name = spec.name
        self.unique = spec.unique
        self.is_async = spec.is_async
        self._manager = manager  # the running lab's task manager, None while it is not running

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        manager = self._manager()
        if manager is None:  # no lab running (a unit test of the author's function)
            return self.fn(*args, **kwargs)
        if self.is_async:
            inline: Any = manager.run_inline_async(self.spec, args, kwargs)
            return inline  # type: ignore[no-any-return]  # the coroutine fn(...) returns
        return manager.run_inline(self.spec, args, kwargs)  # type: ignore[no-any-return]

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Task]:
        """Submit a run for the current session; the task is ``submitted`` when this returns.
        ``await fn.delay(...)`` in ``async def`` code; ``fn.delay(...)`` in a plain ``def``
        (it blocks until the submission is saved)."""
        manager = self._running()
        return one_spelling(
            manager.submit(self.spec, args, kwargs), manager.loop, f"{self.name}.delay()"
        )

    def run_sync(
        self, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Coroutine[Any, Any, Task]:
        """Submit a run and wait for it to finish (at most ``timeout`` seconds), as
        :meth:`delay` from ``async def`` or plain ``def`` code."""
        manager = self._running()
        return one_spelling(
            self._run_sync(manager, args, kwargs, timeout), manager.loop, f"{self.name}.run_sync()"
        )

    async def _run_sync(
        self,
        manager: TaskManager,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Task:
        task = await manager.submit(self.spec, args, kwargs)
        return await task.join(limit)

    def _running(self) -> TaskManager:
        manager = self._manager()
        if manager is None:
            raise RuntimeError("the lab is not running: a task works while `labrt run` serves it")
        return manager

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name} unique={self.unique!r}>"
