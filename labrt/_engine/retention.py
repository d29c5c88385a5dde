"""How long the record keeps ended sessions: ``[store] keep_days``.

Without a limit the store grows by about 1.4 KB a slot for as long as the lab runs (measured
by bench/soak.py). Pruning runs at start and then once a day, on the clock's deadline like every
other expiry; it never touches a session that has not ended, so recovery is unaffected.
"""

from __future__ import annotations

import asyncio
import logging

from ..clock import Clock, Timer
from ..store import Store

log = logging.getLogger("labrt.retention")

DAY = 86400.0


class Retention:
    def __init__(self, store: Store, clock: Clock, keep_days: float) -> None:
        self.store = store
        self.clock = clock
        self.keep_days = keep_days
        self._timer: Timer | None = None
        self._running: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.keep_days:
            await self.prune()

    async def prune(self) -> None:
        cutoff = self.clock.now() - self.keep_days * DAY
        try:
            removed = await self.store.prune_sessions(ended_before=cutoff)
        except Exception:  # a failed prune costs disk space, never a slot: try again tomorrow
            log.exception("pruning the record failed")
        else:
            if removed:
                days = self.keep_days
                log.info("record: removed %d session(s) ended over %g days ago", removed, days)
        self._timer = self.clock.call_at(self.clock.now() + DAY, self._due)

    def _due(self) -> None:
        self._running = asyncio.ensure_future(self.prune())

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
