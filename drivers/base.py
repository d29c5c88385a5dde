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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


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


class Driver:
    """One device. Subclasses set ``kind``, validate their options and implement the rest.

    An author's own kind is named in lab.toml as ``kind = "package.module:ClassName"``.
    """

    kind: ClassVar[str] = ""

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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.kind})>"
