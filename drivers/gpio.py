"""The GPIO kinds: outputs (an LED, a relay), PWM outputs (a dimmed LED, a motor's speed) and
inputs (a button, a sensor) with edge events.

Each is a gpiozero device on the pin factory the environment hands over, so the same lab runs
on real pins and on gpiozero's mock pins. Pins are named as gpiozero names them: a GPIO
number (17), "GPIO17", or a physical pin of the 40-pin header ("BOARD11").

An input's edges arrive on the pin library's own thread; nothing happens there but stamping
the edge and handing it to the loop, where consumers and callbacks see it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Driver, DriverError, Environment, OptionError
from .fanout import QUEUE_SIZE, Fanout, Subscription
from .options import boolean, check_keys, is_number, number, shown
from .pins import PIN_EXPECTED, gpio_number

# _GPIOZERO: gpiozero is imported when the first GPIO device opens, not with this module:
# config checking needs the kinds, and a lab without GPIO then starts without paying for
# gpiozero's import (a tenth of a second on a Pi; see docs/performance.md, cold start).

_LEVELS = 'expected "on", "off", true, false, 1 or 0'
# An edge is stamped with the pin library's own time of the change when that is plausible.
MAX_EDGE_AGE = 10.0


class _GPIODriver(Driver):
    """What the GPIO kinds share: one pin, and the gpiozero device opened on it."""

    _device: Any = None

    @classmethod
    def gpio_pins(cls, options: Mapping[str, Any]) -> list[Any]:
        return [gpio_number(options["pin"])]

    def open(self) -> None:
        if self.env.pin_factory is None:
            raise DriverError(f"{self.name}: no pin factory was given to open a GPIO pin with")
        pin = self.options["pin"]
        try:
            self._device = self._make_device(gpio_number(pin))
        except Exception as e:  # gpiozero's errors, and the pin libraries' own
            raise DriverError(
                f"{self.name}: cannot open pin {pin}: {str(e) or type(e).__name__}"
            ) from e

    def close(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        try:
            device.close()
        except Exception:
            self.env.log.exception("%s: closing pin %s failed", self.name, self.options["pin"])

    def _make_device(self, pin: int) -> Any:
        raise NotImplementedError

    def _require(self) -> Any:
        if self._device is None:
            raise DriverError(f"{self.name} is not open")
        return self._device

    def _value(self) -> Any:
        """The device's value for state(): None when not open, since state() never fails."""
        device = self._device
        return None if device is None else device.value


class Output(_GPIODriver):
    """A digital output: an LED, a relay, a buzzer. Wire it so that a floating pin means off:
    when the process dies the kernel lets go of the pin.

    It opens already in its safe state, so it never flickers through the other one::

        [drivers.lamp]
        kind = "gpio.output"
        pin = 17            # LED + resistor from GPIO17 to ground
        safe = "off"

        lab.hardware["lamp"].blink(on_time=0.5, off_time=0.5, n=3)
    """

    kind = "gpio.output"

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        check_keys(table, ("pin", "safe", "active_high"))
        safe = table.get("safe", "off")
        if safe not in ("off", "on"):
            raise OptionError("safe", f'"off" or "on", got {shown(safe)}')
        return {
            "pin": _pin(table),
            "safe": safe,
            "active_high": boolean(table, "active_high", True),
        }

    def _make_device(self, pin: int) -> Any:
        from gpiozero import DigitalOutputDevice  # see _GPIOZERO

        return DigitalOutputDevice(
            pin,
            active_high=self.options["active_high"],
            initial_value=self.options["safe"] == "on",
            pin_factory=self.env.pin_factory,
        )

    def on(self) -> None:
        """Turn on (and stop blinking)."""
        self._require().on()

    def off(self) -> None:
        """Turn off (and stop blinking)."""
        self._require().off()

    def toggle(self) -> None:
        """Turn on if off, off if on (and stop blinking)."""
        self._require().toggle()

    def blink(self, on_time: float = 1, off_time: float = 1, n: int | None = None) -> None:
        """Blink ``n`` times (None: until told otherwise) on gpiozero's own thread; returns at
        once. A zero time would spin that thread, so times must be positive."""
        if not (is_number(on_time) and on_time > 0 and is_number(off_time) and off_time > 0):
            raise ValueError("blink times must be numbers of seconds greater than 0")
        self._require().blink(on_time, off_time, _count(n), background=True)

    @property
    def is_active(self) -> bool:
        return bool(self._require().is_active)

    @property
    def value(self) -> int:
        return int(self._require().value)

    @property
    def blinking(self) -> bool:
        # gpiozero keeps its blink thread after a counted blink ends: ask whether it runs.
        thread = getattr(self._device, "_blink_thread", None)
        return thread is not None and thread.is_alive()

    def safe(self) -> None:
        if self.options["safe"] == "on":
            self.on()
        else:
            self.off()

    def state(self) -> dict[str, Any]:
        value = self._value()
        return {"value": None if value is None else int(value), "blinking": self.blinking}

    def set(self, value: Any) -> None:
        on = _switch(value)
        if on is None:
            raise DriverError(f"{self.name}: cannot set {value!r}; {_LEVELS}")
        if on:
            self.on()
        else:
            self.off()


class PWMOutput(_GPIODriver):
    """A PWM output: a dimmed LED, a motor's speed through a driver board; ``value`` is the
    duty cycle from 0.0 to 1.0::

        [drivers.fan]
        kind = "gpio.pwm"
        pin = 18
        frequency = 1000
        safe = 0            # "off", "on", or a duty cycle

        lab.hardware["fan"].value = 0.4
    """

    kind = "gpio.pwm"

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        check_keys(table, ("pin", "frequency", "safe", "active_high"))
        safe = table.get("safe", "off")
        if safe not in ("off", "on") and not (is_number(safe) and 0 <= safe <= 1):
            raise OptionError("safe", f'"off", "on" or a number from 0 to 1, got {shown(safe)}')
        return {
            "pin": _pin(table),
            "frequency": number(table, "frequency", 100, what="a frequency in Hz", positive=True),
            "safe": safe,
            "active_high": boolean(table, "active_high", True),
        }

    @classmethod
    def uses_pwm(cls, options: Mapping[str, Any]) -> bool:
        return True

    def _make_device(self, pin: int) -> Any:
        from gpiozero import PWMOutputDevice  # see _GPIOZERO

        return PWMOutputDevice(
            pin,
            active_high=self.options["active_high"],
            initial_value=self._safe_value(),
            frequency=self.options["frequency"],
            pin_factory=self.env.pin_factory,
        )

    def _safe_value(self) -> float:
        safe = self.options["safe"]
        return {"off": 0.0, "on": 1.0}[safe] if isinstance(safe, str) else float(safe)

    @property
    def value(self) -> float:
        """The duty cycle, 0.0 to 1.0; setting it stops a pulse."""
        return float(self._require().value)

    @value.setter
    def value(self, value: float) -> None:
        if not (is_number(value) and 0 <= value <= 1):
            raise ValueError(f"a PWM value is a number from 0 to 1, not {value!r}")
        self._require().value = value

    @property
    def frequency(self) -> float:
        return float(self._require().frequency)

    @frequency.setter
    def frequency(self, hz: float) -> None:
        if not (is_number(hz) and hz > 0):
            raise ValueError(f"a PWM frequency is a number of Hz greater than 0, not {hz!r}")
        self._require().frequency = hz

    def on(self) -> None:
        self._require().on()

    def off(self) -> None:
        self._require().off()

    def pulse(
        self, fade_in_time: float = 1, fade_out_time: float = 1, n: int | None = None
    ) -> None:
        """Fade in and out ``n`` times (None: until told otherwise) on gpiozero's thread."""
        if not (is_number(fade_in_time) and fade_in_time > 0):
            raise ValueError("fade times must be numbers of seconds greater than 0")
        if not (is_number(fade_out_time) and fade_out_time > 0):
            raise ValueError("fade times must be numbers of seconds greater than 0")
        self._require().pulse(fade_in_time, fade_out_time, _count(n), background=True)

    def safe(self) -> None:
        self._require().value = self._safe_value()

    def state(self) -> dict[str, Any]:
        value = self._value()
        device = self._device
        return {
            "value": None if value is None else float(value),
            "frequency": None if device is None else float(device.frequency),
        }

    def set(self, value: Any) -> None:
        duty = _duty(value)
        if duty is None:
            raise DriverError(f'{self.name}: cannot set {value!r}; expected "on", "off" or 0 to 1')
        self.value = duty


@dataclass(frozen=True, slots=True)
class Edge:
    """A change of an input: whether it became ``active``, and when (``time.monotonic()``
    seconds, taken from the pin's own timestamp where the pin library gives one)."""

    active: bool
    time: float


EdgeCallback = Callable[[Edge], Any]


class Input(_GPIODriver):
    """A digital input: a button, a limit switch, a sensor's output.

    With the default pull-up, wire a button between the pin and ground: pressed is active.
    Read it three ways, all on the loop::

        [drivers.button]
        kind = "gpio.input"
        pin = 4

        button = lab.hardware["button"]
        button.when_activated = on_press          # called with the Edge; sync or async
        async for edge in button.events(): ...    # every edge, in order
        await button.wait_for_active(timeout=5)

    ``when_activated`` and ``when_deactivated`` are called with the :class:`Edge`, one after
    another in edge order: ``async def`` callbacks are awaited on the loop, plain ones run in
    the loop's default executor, so a slow callback delays only this pin's later callbacks.
    A callback's exception is logged, and the next edge is handled as usual.
    """

    kind = "gpio.input"

    def __init__(self, name: str, options: Mapping[str, Any], env: Environment) -> None:
        super().__init__(name, options, env)
        self.when_activated: EdgeCallback | None = None
        self.when_deactivated: EdgeCallback | None = None
        self._edges: Fanout[Edge] = Fanout()
        self._count = 0
        self._pending: deque[tuple[EdgeCallback, Edge]] = deque()
        self._dropped_callbacks = 0
        self._dispatcher: asyncio.Task[None] | None = None

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        check_keys(table, ("pin", "pull_up", "active_state", "bounce_time"))
        pull_up = table.get("pull_up", True)
        if pull_up == "floating":
            pull_up = None
        if pull_up is not None and not isinstance(pull_up, bool):
            raise OptionError("pull_up", f'true, false or "floating", got {shown(pull_up)}')
        active_state = table.get("active_state")
        if pull_up is None and not isinstance(active_state, bool):
            raise OptionError(
                "active_state",
                f"true (high is active) or false for a floating input, got {shown(active_state)}",
            )
        if pull_up is not None and active_state is not None:
            raise OptionError(
                "active_state",
                'no active_state unless pull_up = "floating" (with a pull, the level opposite '
                f"the pull is the active one), got {shown(active_state)}",
            )
        return {
            "pin": _pin(table),
            "pull_up": pull_up,
            "active_state": active_state,
            "bounce_time": number(table, "bounce_time", 0.02, optional=True),
        }

    def _make_device(self, pin: int) -> Any:
        from gpiozero import DigitalInputDevice  # see _GPIOZERO

        device = DigitalInputDevice(
            pin,
            pull_up=self.options["pull_up"],
            active_state=self.options["active_state"],
            bounce_time=self.options["bounce_time"] or None,
            pin_factory=self.env.pin_factory,
        )
        device.when_activated = functools.partial(self._pin_changed, True)
        device.when_deactivated = functools.partial(self._pin_changed, False)
        return device

    def _pin_changed(self, active: bool) -> None:
        """On the pin library's thread: stamp the edge and hand it over, nothing more."""
        device = self._device
        age = None if device is None else device.active_time if active else device.inactive_time
        if age is None or not 0 <= age <= MAX_EDGE_AGE:
            age = 0.0  # a pin library whose ticks are on another clock: stamp the edge now
        self.call_on_loop(self._on_edge, Edge(active, time.monotonic() - age))

    def _on_edge(self, edge: Edge) -> None:
        if self._device is None:  # closed while the edge was on its way
            return
        self._count += 1
        self._edges.publish(edge)
        callback = self.when_activated if edge.active else self.when_deactivated
        if callback is None:
            return
        if len(self._pending) >= QUEUE_SIZE:
            self._pending.popleft()
            self._dropped_callbacks += 1
        self._pending.append((callback, edge))
        if self._dispatcher is None:
            # A fresh context: the callbacks belong to the device, not to whatever request
            # happened to flip the pin (on mock pins, a student's).
            self._dispatcher = self.env.loop.create_task(
                self._dispatch(), name=f"{self.name} callbacks", context=contextvars.Context()
            )

    async def _dispatch(self) -> None:
        """This pin's one dispatcher: it lives while callbacks are pending."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                callback, edge = self._pending.popleft()
                try:
                    if inspect.iscoroutinefunction(callback):
                        result = callback(edge)
                    else:
                        result = await loop.run_in_executor(None, callback, edge)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self.env.log.exception(
                        "%s: callback %r failed on %s", self.name, callback, edge
                    )
        finally:
            self._dispatcher = None

    def close(self) -> None:
        super().close()
        self.call_on_loop(self._stop_events)

    def _stop_events(self) -> None:
        self._edges.close()
        self._pending.clear()
        if self._dispatcher is not None:
            self._dispatcher.cancel()

    def events(self) -> Subscription[Edge]:
        """Every edge from now on, in order, until the input is closed: ``async for edge in
        button.events()``. A consumer more than 1000 edges behind loses the oldest."""
        return self._edges.subscribe()

    @property
    def is_active(self) -> bool:
        return bool(self._require().is_active)

    def wait_for_active(self, timeout: float | None = None) -> Coroutine[Any, Any, bool]:
        """Wait until the input is active; False if ``timeout`` seconds pass first (as
        gpiozero's own ``wait_for_active``). Awaited in async def code, blocking in a
        plain def."""
        return self._one_spelling(self._wait_for(True, timeout), f"{self.name}.wait_for_active()")

    def wait_for_inactive(self, timeout: float | None = None) -> Coroutine[Any, Any, bool]:
        return self._one_spelling(
            self._wait_for(False, timeout), f"{self.name}.wait_for_inactive()"
        )

    async def _wait_for(self, active: bool, timeout: float | None) -> bool:  # noqa: ASYNC109
        edges = self.events()  # before looking, so an edge in between is not missed
        if self.is_active == active:
            return True
        try:
            async with asyncio.timeout(timeout):
                async for edge in edges:
                    if edge.active == active:
                        return True
        except TimeoutError:
            pass
        return False

    def safe(self) -> None:
        """An input is always safe."""

    def state(self) -> dict[str, Any]:
        value = self._value()
        return {
            "value": None if value is None else int(value),
            "edges": self._count,
            "dropped": self._edges.dropped + self._dropped_callbacks,
        }

    def set(self, value: Any) -> None:
        """On mock pins only: press or release, whatever the pull ("press", "on", 1 mean
        active)."""
        if not self.env.mock:
            raise DriverError(f"{self.name}: a real input cannot be set")
        active = _switch(value, on=("press",), off=("release",))
        if active is None:
            raise DriverError(f'{self.name}: cannot set {value!r}; "press", "release", {_LEVELS}')
        pin = self._require().pin
        pull_up, active_state = self.options["pull_up"], self.options["active_state"]
        active_high = active_state if pull_up is None else not pull_up
        if active == active_high:
            pin.drive_high()
        else:
            pin.drive_low()


def _pin(table: Mapping[str, Any]) -> Any:
    if "pin" not in table:
        raise OptionError("pin", f"missing; expected {PIN_EXPECTED}")
    try:
        gpio_number(table["pin"])
    except ValueError as e:
        raise OptionError("pin", str(e)) from None
    return table["pin"]


def _switch(value: Any, on: tuple[str, ...] = (), off: tuple[str, ...] = ()) -> bool | None:
    """True for on, False for off, None for anything else: a bool, 1 or 0, or a word in any
    case (the command line hands over strings, TOML and JSON hand over bools)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {1: True, 0: False}.get(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("on", "true", "1", *on):
            return True
        if word in ("off", "false", "0", *off):
            return False
    return None


def _duty(value: Any) -> float | None:
    """A duty cycle from "on", "off", a number or a number's text; None if it is none."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("on", "off"):
            return float(word == "on")
        try:
            value = float(word)
        except ValueError:
            return None
    return float(value) if is_number(value) and 0 <= value <= 1 else None


def _count(n: int | None) -> int | None:
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
        raise ValueError(f"n is a number of times greater than 0, or None for ever; not {n!r}")
    return n
