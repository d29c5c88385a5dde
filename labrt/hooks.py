"""Calling the author's code, whether it is ``async def`` or a plain blocking ``def``.

Plain functions run in a small thread pool of their own, with the caller's context variables
(so ``user`` works there too). The pool is separate from the task pool on purpose: a lab whose
task threads are all busy programming a board must still be able to run ``on_dispose`` at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HOOK_THREADS = 4


class HookRunner:
    def __init__(self, threads: int = HOOK_THREADS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="labrt-hook")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Await ``fn(*args)`` if it is a coroutine function, else run it in the pool."""
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, context.run, fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def close(self) -> None:
        # A hook stuck in a thread must not hold the shutdown hostage; it is reported by the
        # caller that gave up waiting for it.
        self._executor.shutdown(wait=False, cancel_futures=True)
