"""Which class a ``kind`` in lab.toml names: a built-in kind, or an author's own driver."""

from __future__ import annotations

import importlib

from .bank import Bank
from .base import Driver, OptionError
from .camera import Camera
from .gpio import Input, Output, PWMOutput
from .options import shown
from .serialport import SerialPort

KINDS: dict[str, type[Driver]] = {
    "gpio.output": Output,
    "gpio.pwm": PWMOutput,
    "gpio.input": Input,
    "gpio.bank": Bank,
    "serial": SerialPort,
    "camera": Camera,
}

_EXPECTED = f'one of {", ".join(KINDS)}, or "package.module:ClassName" of a drivers.Driver'


def resolve_kind(kind: str) -> type[Driver]:
    """The driver class for ``kind``; an author's class is imported here, so a mistake in its
    module is reported as a configuration error naming ``kind``."""
    if not isinstance(kind, str):
        raise OptionError("kind", f"{_EXPECTED}, got {shown(kind)}")
    if kind in KINDS:
        return KINDS[kind]
    module_name, colon, class_name = kind.partition(":")
    if not (colon and module_name and class_name):
        raise OptionError("kind", f"{_EXPECTED}, got {shown(kind)}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the author's module may fail in any way as it is imported
        problem = f"{type(e).__name__}: {e}"
        raise OptionError("kind", f"a module that imports, got {module_name}: {problem}") from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        got = "nothing" if cls is None else repr(cls)
        raise OptionError("kind", f"a subclass of drivers.Driver at {kind}, got {got}")
    return cls
