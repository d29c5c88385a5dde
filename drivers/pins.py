"""Which gpiozero pin factory drives the pins, and how lab.toml names a pin.

Devices never choose their pin library: they are handed the factory made here, once per
process, so a laptop runs the same lab on gpiozero's mock pins that a Pi runs on real ones.
"""

from __future__ import annotations

import glob
import importlib
import re
from typing import Any

from .base import DriverError
from .options import shown

PIN_FACTORIES = ("auto", "mock", "lgpio", "rpigpio", "pigpio", "native")

# gpiozero's module and class for each real factory; the library it imports, its package.
_REAL = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "lgpio", "lgpio"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory", "RPi", "RPi.GPIO"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory", "pigpio", "pigpio"),
    "native": ("gpiozero.pins.native", "NativeFactory", None, None),
}
# lgpio first: it is the only one that works on a Pi 5, and it does PWM on every model.
_AUTO_ORDER = ("lgpio", "rpigpio", "native")

PIN_EXPECTED = 'an integer GPIO number 0-53 or a name like "GPIO17" or "BOARD11"'
_PIN_NAME = re.compile(r"(GPIO|BCM|BOARD|J8:)?(\d+)")
# The 40-pin header, the same on every Pi since the 2014 B+: physical pin -> GPIO number.
_HEADER = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
    18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5,
    31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip


def gpio_chips() -> list[str]:
    """The GPIO character devices of this machine (empty on a laptop)."""
    return sorted(glob.glob("/dev/gpiochip*"))


def make_factory(name: str, *, pwm: bool) -> tuple[Any, str, bool]:
    """The pin factory called ``name``, a line for the log saying what was chosen and why,
    and whether the pins are simulated.

    ``pwm`` asks the mock factory for pins that simulate PWM (a plain mock pin refuses it).
    Raises ValueError for an unknown name, DriverError when the factory cannot start here.
    """
    if name not in PIN_FACTORIES:
        raise ValueError(
            f"unknown pin factory {name!r}; expected one of {', '.join(PIN_FACTORIES)}"
        )
    if name == "mock":
        return _mock(pwm, "asked for by name")
    if name != "auto":
        factory = _real(name)
        return factory, f"real pins (gpiozero {type(factory).__name__})", False
    chips = gpio_chips()
    if not chips:
        return _mock(pwm, "this machine has no GPIO")
    failures = []
    for candidate in _AUTO_ORDER:
        if pwm and candidate == "native":
            failures.append("the 'native' pin factory has no PWM, and a gpio.pwm is declared")
            continue
        try:
            factory = _real(candidate)
        except DriverError as e:
            failures.append(str(e))
            continue
        return (
            factory,
            f"real pins (gpiozero {type(factory).__name__}) on {', '.join(chips)}",
            False,
        )
    # Falling back to mock pins here would run the lab with its hardware silently dead.
    raise DriverError(f"this machine has GPIO ({', '.join(chips)}) but " + "; ".join(failures))


def gpio_number(pin: Any) -> int:
    """The GPIO (BCM) number of a pin as lab.toml names it; ValueError saying what is expected.

    One number per pin, whatever the spelling, so that two drivers claiming "BOARD11" and 17
    are seen to share a pin.
    """
    if isinstance(pin, int) and not isinstance(pin, bool):
        number = pin
    elif isinstance(pin, str) and (match := _PIN_NAME.fullmatch(pin.strip().upper())):
        prefix, digits = match.groups()
        number = int(digits)
        if prefix in ("BOARD", "J8:"):
            if not 1 <= number <= 40:
                raise ValueError(f"a pin of the 40-pin header, 1 to 40, got {shown(pin)}")
            if number not in _HEADER:
                raise ValueError(f"a GPIO pin, got {shown(pin)}: a power or ground pin")
            number = _HEADER[number]
    else:
        raise ValueError(f"{PIN_EXPECTED}, got {shown(pin)}")
    if not 0 <= number <= 53:
        raise ValueError(f"{PIN_EXPECTED}, got {shown(pin)}")
    return number


def _mock(pwm: bool, why: str) -> tuple[Any, str, bool]:
    from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin  # on first use, as gpio.py

    pin_class = MockPWMPin if pwm else MockPin
    factory = MockFactory(pin_class=pin_class)
    return factory, f"mock pins (gpiozero MockFactory with {pin_class.__name__}): {why}", True


def _real(name: str) -> Any:
    module_name, class_name, library, package = _REAL[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if library and (e.name or "").split(".")[0] == library:
            raise DriverError(
                f"pin factory {name!r} needs the {package} package: pip install {package}"
            ) from e
        raise DriverError(f"pin factory {name!r} could not be loaded: {e}") from e
    try:
        return getattr(module, class_name)()
    except Exception as e:
        raise DriverError(
            f"pin factory {name!r} could not start: {str(e) or type(e).__name__}"
        ) from e
