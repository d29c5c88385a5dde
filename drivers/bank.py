"""A bank of GPIO pins in one table: N outputs (16 switches) or N inputs (5 buttons).

Each pin is an :class:`~drivers.gpio.Output` or :class:`~drivers.gpio.Input` of its own,
sharing the bank's options, so ``bank[3]`` does everything a single device does::

    [drivers.switches]
    kind = "gpio.bank"
    pins = [17, 27, 22, 23]
    direction = "output"
    safe = "off"

    lab.hardware.switches[3].on()
    lab.hardware.switches.values = [1, 0, 1, 1]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .base import Driver, DriverError, Environment, OptionError
from .gpio import _LEVELS, Input, Output, _switch
from .options import check_keys, shown
from .pins import gpio_number

OUTPUT_OPTIONS = ("safe", "active_high")
INPUT_OPTIONS = ("pull_up", "active_state", "bounce_time")
DIRECTIONS = ("output", "input")


class Bank(Driver):
    """N GPIO outputs or N GPIO inputs declared in one table; ``bank[i]`` is the i-th pin's
    :class:`Output` or :class:`Input` (in the order of ``pins``)."""

    kind = "gpio.bank"

    def __init__(self, name: str, options: Mapping[str, Any], env: Environment) -> None:
        super().__init__(name, options, env)
        member = Output if self.options["direction"] == "output" else Input
        shared = {k: v for k, v in self.options.items() if k not in ("pins", "direction")}
        self._members: list[Any] = [
            member(f"{name}[{i}]", {**shared, "pin": pin}, env)
            for i, pin in enumerate(self.options["pins"])
        ]

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        check_keys(table, ("pins", "direction", *OUTPUT_OPTIONS, *INPUT_OPTIONS))
        direction = table.get("direction")
        if direction not in DIRECTIONS:
            raise OptionError("direction", f'"output" or "input", got {shown(direction)}')
        pins = table.get("pins")
        if not isinstance(pins, list) or not pins:
            raise OptionError("pins", f"a list of GPIO pins, like [17, 27, 22], got {shown(pins)}")
        numbers: list[int] = []
        for i, pin in enumerate(pins):
            try:
                number = gpio_number(pin)
            except ValueError as e:
                raise OptionError("pins", f"{e}, at pins[{i}]") from None
            if number in numbers:
                raise OptionError("pins", f"each pin once, got GPIO{number} twice")
            numbers.append(number)
        output = direction == "output"
        own, other = (OUTPUT_OPTIONS, INPUT_OPTIONS) if output else (INPUT_OPTIONS, OUTPUT_OPTIONS)
        for key in other:
            if key in table:
                wanted = "input" if output else "output"
                raise OptionError(key, f'no {key} unless direction = "{wanted}"')
        member = Output if output else Input
        validated = member.validate({"pin": pins[0], **{k: table[k] for k in own if k in table}})
        del validated["pin"]
        return {"pins": list(pins), "direction": direction, **validated}

    @classmethod
    def gpio_pins(cls, options: Mapping[str, Any]) -> list[Any]:
        return [gpio_number(pin) for pin in options["pins"]]

    @property
    def _output(self) -> bool:
        return bool(self.options["direction"] == "output")

    def open(self) -> None:
        for i, member in enumerate(self._members):
            try:
                member.open()
            except Exception as e:
                for opened in reversed(self._members[:i]):
                    opened.close()
                detail = str(e).removeprefix(f"{member.name}: ")
                raise DriverError(f"{self.name}: pins[{i}]: {detail}") from e

    def close(self) -> None:
        for member in reversed(self._members):
            member.close()  # never raises: a pin that fails to close is logged

    def __getitem__(self, index: int) -> Any:
        """The ``index``-th pin's :class:`Output` or :class:`Input`."""
        return self._members[index]

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._members)

    @property
    def values(self) -> list[int]:
        """1 or 0 for each pin, in the order of ``pins``; an output bank's can be set with a
        list of as many values (each as ``labrt hardware --set`` accepts them)."""
        return [int(member.value if self._output else member.is_active) for member in self]

    @values.setter
    def values(self, values: list[Any]) -> None:
        if not self._output:
            raise AttributeError(f"{self.name}: the values of inputs cannot be set")
        levels = self._levels(values)
        if levels is None:
            raise ValueError(f"{self.name}: expected {len(self)} values, got {values!r}")
        for member, on in zip(self._members, levels, strict=True):
            if on:
                member.on()
            else:
                member.off()

    def on(self) -> None:
        """Turn every output on."""
        self.values = [1] * len(self)

    def off(self) -> None:
        """Turn every output off."""
        self.values = [0] * len(self)

    def safe(self) -> None:
        """Every output in its safe state; inputs have none."""
        failures = []
        for member in self._members:
            try:
                member.safe()
            except DriverError as e:
                failures.append(str(e))
        if failures:
            raise DriverError(f"{self.name}: " + "; ".join(failures))

    def state(self) -> dict[str, Any]:
        return {"values": [member.state()["value"] for member in self._members]}

    def set(self, value: Any) -> None:
        """Bench control: a list of one value per pin (or a string "1,0,1"), or one value for
        every pin. Outputs take on/off; inputs, on mock pins only, press/release."""
        if not self._output and not self.env.mock:
            raise DriverError(f"{self.name}: a real input cannot be set")
        if isinstance(value, str) and "," in value:
            value = [item.strip() for item in value.split(",")]
        values = value if isinstance(value, list) else [value] * len(self)
        if len(values) != len(self):
            raise DriverError(f"{self.name}: expected {len(self)} values, got {len(values)}")
        words = () if self._output else ("press",), () if self._output else ("release",)
        for i, item in enumerate(values):
            if _switch(item, *words) is None:
                extra = "" if self._output else '"press", "release", '
                raise DriverError(f"{self.name}: cannot set [{i}] to {item!r}; {extra}{_LEVELS}")
        for member, item in zip(self._members, values, strict=True):
            member.set(item)

    def _levels(self, values: Any) -> list[bool] | None:
        if not isinstance(values, list | tuple) or len(values) != len(self):
            return None
        levels = [_switch(item) for item in values]
        if any(level is None for level in levels):
            return None
        return [bool(level) for level in levels]
