"""The hardware layer: one driver per device, built on gpiozero and pyserial.

This package imports nothing from labrt, so drivers can be used and tested on their own.

Errors: :class:`OptionError` (a driver's table in lab.toml is wrong; raised by ``validate``
and :func:`resolve_kind`) and :class:`DriverError` (a device could not do what was asked).
"""

from __future__ import annotations

from .base import Driver, DriverError, Environment, OptionError
from .fanout import Subscription
from .gpio import Edge, Input, Output, PWMOutput
from .kinds import KINDS, resolve_kind
from .pins import PIN_FACTORIES, gpio_chips, gpio_number, make_factory
from .serialport import SerialPort

__all__ = [
    "KINDS",
    "PIN_FACTORIES",
    "Driver",
    "DriverError",
    "Edge",
    "Environment",
    "Input",
    "OptionError",
    "Output",
    "PWMOutput",
    "SerialPort",
    "Subscription",
    "gpio_chips",
    "gpio_number",
    "make_factory",
    "resolve_kind",
]
