"""What ``@lab.task`` makes of a function: call it inline, or submit it as a task."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

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

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> Task:
        """Submit a run for the current session; the task is ``submitted`` when this returns."""
        manager = self._manager()
        if manager is None:
            raise RuntimeError("the lab is not running: a task works while `labrt run` serves it")
        return await manager.submit(self.spec, args, kwargs)

    async def run_sync(
        self,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (weblablib's signature)
        **kwargs: Any,
    ) -> Task:
        """Submit a run and wait for it to finish (at most ``timeout`` seconds)."""
        task = await self.delay(*args, **kwargs)
        return await task.join(timeout)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name} unique={self.unique!r}>"
