"""What every driver is: one device, opened, used, put in its safe state, closed.

A driver knows nothing of labrt. Whoever runs it (labrt's runtime, a test, a script) gives it
an :class:`Environment`: the event loop that callbacks and data are handed to, the gpiozero
pin factory, and a way to report a fault. ``open``, ``close`` and ``safe`` may block (they
touch the device) and are called from a worker thread; the typed methods an author calls
(``led.on()``, ``await port.request(...)``) never block the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class DriverError(Exception):
    """A device could not do what was asked (open, safe, I/O); the message says why."""


class OptionError(Exception):
    """A driver's options in lab.toml are wrong: ``key`` (None for the whole table) and what
    was expected there."""

    def __init__(self, key: str | None, expected: str) -> None:
        super().__init__(f"{key}: {expected}" if key else expected)
        self.key = key
        self.expected = expected


@dataclass(frozen=True)
class Environment:
    """What a driver gets from whoever runs it."""

    loop: asyncio.AbstractEventLoop
    # gpiozero's pin factory (a MockFactory off the Pi); None when no GPIO driver is declared.
    pin_factory: Any = None
    # True when the pins or ports are simulated: a driver may then accept bench-only actions,
    # such as pressing a button from the command line.
    mock: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("drivers"))
    # Called on the loop's thread as on_problem(driver_name, fault), fault None once cleared.
    on_problem: Callable[[str, str | None], None] = lambda name, problem: None
    # The folder a driver's relative paths are relative to: labrt gives the folder of
    # lab.toml; a script's default is its working directory when it makes the environment.
    folder: Path = field(default_factory=Path.cwd)


class Driver:
    """One device. Subclasses set ``kind``, validate their options and implement the rest.

    An author's own kind is named in lab.toml as ``kind = "package.module:ClassName"``.
    """

    kind: ClassVar[str] = ""
    # Seconds that safe() and close() may take before the runner counts them as failed; a
    # kind that programs a board in safe() may need minutes.
    safe_timeout: ClassVar[float] = 10.0

    def __init__(self, name: str, options: Mapping[str, Any], env: Environment) -> None:
        self.name = name
        self.options = dict(options)
        self.env = env

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        """Check this kind's options (``kind`` removed) and return them with defaults filled
        in; raise :class:`OptionError` on the first mistake. Pure: touches no device."""
        if table:
            raise OptionError(next(iter(table)), "no options for this kind")
        return {}

    @classmethod
    def warnings(cls, options: Mapping[str, Any], folder: Path) -> list[str]:
        """What may stop the device from working but may be fixed by the time the lab runs
        (a program not installed yet, a USB device unplugged): ``labrt check`` prints them
        and the runtime logs them at start, without refusing to start. ``folder`` is what
        relative paths are relative to (:attr:`Environment.folder`)."""
        return []

    @classmethod
    def gpio_pins(cls, options: Mapping[str, Any]) -> list[Any]:
        """The GPIO pins this driver claims (two drivers may not share one)."""
        return []

    @classmethod
    def uses_pwm(cls, options: Mapping[str, Any]) -> bool:
        """Whether it needs PWM-capable pins (the mock factory then simulates PWM)."""
        return False

    def open(self) -> None:
        """Acquire the device. May block; called in a worker thread."""

    def close(self) -> None:
        """Release the device. May block; called in a worker thread. Never raises."""

    def safe(self) -> None:
        """Put the device in the state it must be in when nobody is using it. May block;
        called in a worker thread; raises :class:`DriverError` if it could not."""

    def state(self) -> dict[str, Any]:
        """The device's state as JSON, for pages, logs and ``labrt hardware``."""
        return {}

    def set(self, value: Any) -> None:
        """Bench control (``labrt hardware --set name=value``): put the device in ``value``.

        Called on the loop's thread; raises :class:`DriverError` if this kind cannot be set.
        """
        raise DriverError(f"{self.name}: a {self.kind} cannot be set")

    def call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Hand ``fn(*args)`` to the loop from any thread (a pin's callback thread, a reader
        thread). Dropped once the loop is closed: the process is ending and nobody listens."""
        with contextlib.suppress(RuntimeError):
            self.env.loop.call_soon_threadsafe(fn, *args)

    def _one_spelling(self, coro: Coroutine[Any, Any, T], what: str) -> Coroutine[Any, Any, T]:
        """See :func:`one_spelling`: ``board.request(...)`` works in a plain ``def`` task as it
        reads."""
        return one_spelling(coro, self.env.loop, what)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.kind})>"


def one_spelling(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None, what: str
) -> Coroutine[Any, Any, T]:
    """``coro`` to await in ``async def`` code; from a plain ``def`` in a thread it runs on
    ``loop`` here and now and its result is returned (typed as the coroutine: a thread
    cannot await), as the blocking libraries labs are ported from do. So ported code does
    what it says instead of making a coroutine that never runs. On the loop outside any
    coroutine (a plain callback the loop runs), nothing could await it: that raises.

    Shared by the drivers and by labrt's own calls (``logout()``, ``task.delay()``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if asyncio.current_task() is None:
            coro.close()
            raise RuntimeError(
                f"{what} was called in a plain function running on the event loop, where "
                "nothing can wait for it: call it from async def code (with await) or from a "
                "plain def running in a thread"
            )
        return coro
    if loop is None or loop.is_closed() or not loop.is_running():
        coro.close()
        raise RuntimeError(f"{what}: the lab is not running")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[return-value]
