"""Work the loop does on the side (store writes, forgetting old records) that nobody awaits.

The loop keeps only weak references to tasks, so an unawaited task needs a strong one until it
ends, and its failure must reach the log rather than vanish with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what  # how a failure is logged: "background write failed"
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(self._what, exc_info=task.exception())

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def pending(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    async def settle(self) -> None:
        """Wait until none is in flight, those spawned meanwhile included."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
