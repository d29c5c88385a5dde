"""Every consumer of a stream (a pin's edges, a port's lines) gets all of it, in order.

Each ``async for`` has its own bounded queue, so a page that stopped reading cannot hold up
the others or grow memory without end: when its queue is full the oldest item is dropped
and counted. A subscription starts when it is created, not at its first ``__anext__``, so
nothing is missed between asking for a stream and starting to read it. Nobody has to
unsubscribe: a subscription nobody holds is garbage, and the weak set forgets it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

QUEUE_SIZE = 1000


class Subscription(Generic[T]):
    """One consumer's queue: iterate it with ``async for``; it ends when its source closes,
    after the items already queued."""

    def __init__(self, size: int) -> None:
        self._items: deque[T] = deque()
        self._size = size
        self._arrived = asyncio.Event()
        self._ended = False

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.popleft()

    def _put(self, item: T) -> bool:
        """Queue ``item``; False when the oldest item had to be dropped for it."""
        kept = len(self._items) < self._size
        if not kept:
            self._items.popleft()
        self._items.append(item)
        self._arrived.set()
        return kept

    def _end(self) -> None:
        self._ended = True
        self._arrived.set()


class Fanout(Generic[T]):
    """The consumers of one stream. Used on the loop's thread only."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._size = size
        self._subscriptions: weakref.WeakSet[Subscription[T]] = weakref.WeakSet()
        self._closed = False
        self.dropped = 0

    def subscribe(self) -> Subscription[T]:
        subscription: Subscription[T] = Subscription(self._size)
        if self._closed:
            subscription._end()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def publish(self, item: T) -> None:
        for subscription in list(self._subscriptions):
            if not subscription._put(item):
                self.dropped += 1

    def close(self) -> None:
        """End every subscription, present and future."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription._end()
        self._subscriptions.clear()
