"""Who is watching which camera, so that what a student sees ends with their slot.

A viewer is let in as the active student of a session, as a spectator (only when the lab
allows them, at most ``[push] max_spectators`` per camera), or from the dev page. A session's
streams end the moment it starts disposing; a newer stream of the same session and camera
beyond ``STREAMS_PER_SESSION`` ends the oldest (a reloaded page). A stream whose viewer is
not reading, so that its handler is stuck writing, has its connection aborted after a short
grace: nothing the student can do keeps a picture of the bench flowing past the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from drivers import Camera, Viewer

from ..model import Session, State
from .hardware import Hardware
from .sessions import SessionManager

STREAMS_PER_SESSION = 4  # per camera: a few tabs, and a reload while the old one closes
GRACE = 1.0  # seconds an ended stream has to finish on its own before it is cut

Who = Literal["student", "spectator", "dev"]


class TooManyViewers(Exception):
    """Every spectator seat of this camera is taken."""


@dataclass(eq=False)
class Watch:
    """One stream: its viewer, and how to cut its connection if it does not end."""

    viewer: Viewer
    camera: str
    sid: str | None
    who: Who
    abort: Callable[[], None]
    _cut: asyncio.TimerHandle | None = field(default=None, repr=False)

    def end(self) -> None:
        if self.viewer.ended:
            return
        self.viewer.end()
        self._cut = asyncio.get_running_loop().call_later(GRACE, self.abort)

    def _finished(self) -> None:
        if self._cut is not None:
            self._cut.cancel()


class Cameras:
    def __init__(
        self,
        *,
        sessions: SessionManager,
        hardware: Hardware,
        spectators: bool,
        max_spectators: int,
    ) -> None:
        self.hardware = hardware
        self.spectators_allowed = spectators
        self.max_spectators = max_spectators
        self._watches: dict[Watch, None] = {}  # in the order they began
        sessions.on_change(self._session_changed)

    def find(self, name: str) -> Camera | None:
        device = self.hardware.devices.get(name)
        return device if isinstance(device, Camera) else None

    def all(self) -> dict[str, Camera]:
        return {n: d for n, d in self.hardware.devices.items() if isinstance(d, Camera)}

    @contextlib.asynccontextmanager
    async def watch(
        self, name: str, session: Session | None, who: Who, abort: Callable[[], None]
    ) -> AsyncIterator[Viewer]:
        """Watch camera ``name`` as ``who`` (``session`` is the student's, else None);
        ``abort`` closes the viewer's connection at once."""
        camera = self.find(name)
        if camera is None:
            raise KeyError(name)
        if who == "spectator" and self._count(name, "spectator") >= self.max_spectators:
            raise TooManyViewers(name)
        sid = None if session is None else session.sid
        if sid is not None:
            mine = [w for w in self._watches if w.sid == sid and w.camera == name]
            for old in mine[: max(0, len(mine) + 1 - STREAMS_PER_SESSION)]:
                old.end()
        async with camera.viewer() as viewer:
            watch = Watch(viewer, name, sid, who, abort)
            self._watches[watch] = None
            try:
                yield viewer
            finally:
                self._watches.pop(watch, None)
                watch._finished()

    def viewers(self, name: str) -> dict[str, int]:
        return {who: self._count(name, who) for who in ("student", "spectator", "dev")}

    def _count(self, name: str, who: Who) -> int:
        return sum(
            1 for w in self._watches if w.camera == name and w.who == who and not w.viewer.ended
        )

    def _session_changed(self, session: Session) -> None:
        if session.state in (State.DISPOSING, State.ENDED):
            for watch in [w for w in self._watches if w.sid == session.sid]:
                watch.end()

    def shutdown(self) -> None:
        """The lab is stopping: every stream ends (cut after the grace if stuck)."""
        for watch in list(self._watches):
            watch.end()
