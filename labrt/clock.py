"""The one source of time for the runtime.

Slot times come from the RLMS as absolute wall-clock instants, so deadlines are kept in epoch
seconds. Every module asks a :class:`Clock` for "now" and for a callback at a deadline; tests swap
in :class:`FakeClock` and move time by hand, so expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time in epoch seconds."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the event loop once ``now()`` reaches ``when``."""
        ...


class SystemClock:
    """The real clock.

    Deadlines are turned into loop delays when scheduled; if the wall clock jumps (NTP syncing
    after a Pi boots without an RTC) a callback may fire early or late, so callers re-check
    ``now()`` against their deadline when called and reschedule if needed.
    """

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to, for tests of time-based behaviour."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float, *, fire: bool = True) -> None:
        """Move time forward, firing due callbacks in deadline order, each at its own instant.

        With ``fire=False`` nothing fires yet, as when the loop is busy past a deadline: what
        reads the time must still see that the deadline passed.
        """
        target = self._now + seconds
        while fire and self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = target
