"""The hardware layer: one driver per device, built on gpiozero and pyserial.

This package imports nothing from labrt, so drivers can be used and tested on their own.

What a lab and a kind of its own need is exported here: the kinds (:class:`Output`,
:class:`PWMOutput`, :class:`Input`, :class:`Bank`, :class:`SerialPort`, :class:`Camera`), the base
:class:`Driver` and its :class:`Environment`, the errors, and the helpers a ``validate``
uses to check its options (:func:`check_keys`, :func:`boolean`, :func:`number`, :func:`text`,
:func:`gpio_number`).
How labrt finds kinds and pin factories (``drivers.kinds``, ``drivers.pins``) is labrt's own.

Errors: :class:`OptionError` (a driver's table in lab.toml is wrong; raised by ``validate``)
and :class:`DriverError` (a device could not do what was asked).
"""

from __future__ import annotations

from .bank import Bank
from .base import Driver, DriverError, Environment, OptionError
from .camera import Camera, Frame, Viewer
from .fanout import Subscription
from .gpio import Edge, Input, Output, PWMOutput
from .options import boolean, check_keys, number, shown, text
from .pins import gpio_number
from .serialport import SerialPort

__all__ = [
    "Bank",
    "Camera",
    "Driver",
    "DriverError",
    "Edge",
    "Environment",
    "Frame",
    "Input",
    "OptionError",
    "Output",
    "PWMOutput",
    "SerialPort",
    "Subscription",
    "Viewer",
    "boolean",
    "check_keys",
    "gpio_number",
    "number",
    "shown",
    "text",
]
