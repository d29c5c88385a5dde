"""Importing the author's lab module and finding its ``Lab``.

An import error is a configuration error: it is reported like one (file, key, what went wrong
and on which line of the author's file), before anything starts.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from ._engine.templates import CatalogError, Translations
from .config import Config, ConfigError
from .lab import Lab

KEY = "[lab] module"
_IMPORTLIB = Path(importlib.__file__).parent
_LABRT = Path(__file__).resolve().parent


def load_lab(config: Config) -> Lab[Any]:
    spec = config.lab.module
    if Path(spec).is_absolute():
        module = _import_file(config, Path(spec))
        attr = None
    else:
        name, _, attr = spec.partition(":")
        _importable(config.file.parent)
        module = _import_name(config, name)
    lab = _find_lab(config, module, attr or None)
    _check_devices(config, lab)
    lab._settings = config.settings  # lab.settings: lab.toml's [settings], from now on
    _check_translations(config)
    return lab


def _check_devices(config: Config, lab: Lab[Any]) -> None:
    """The devices the lab's ``Devices`` class names are declared in lab.toml, each of the
    class it says: otherwise ``lab.hardware.light`` would fail in a student's slot."""
    declared = {d.name: d for d in config.hardware.drivers}
    devices = lab.registry.devices
    for name, expected in devices.declared().items():
        driver = declared.get(name)
        if driver is None:
            raise ConfigError(
                config.file,
                f"[drivers.{name}]",
                f"expected a device named {name!r}: the lab's {devices.__name__} names it "
                f"({expected.__name__})",
            )
        if not issubclass(driver.driver, expected):
            raise ConfigError(
                config.file,
                f"[drivers.{name}] kind",
                f"expected a kind whose driver is a {expected.__name__} (the lab's "
                f"{devices.__name__} says so), got {driver.kind!r} ({driver.driver.__name__})",
            )


def _check_translations(config: Config) -> None:
    """Every catalog of ``[lab] translations`` reads (a .po compiles), before anything starts."""
    try:
        Translations.load(config.lab.translations)
    except CatalogError as exc:
        raise ConfigError(config.file, "[lab] translations", str(exc)) from None


def _failure(config: Config, what: str, exc: BaseException) -> ConfigError:
    where = ""
    detail: object = exc
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        detail = exc.msg  # str(exc) already ends with the place, which is added once below
        where = f" ({Path(exc.filename).name}, line {exc.lineno})"
    else:
        # The author's frames, not the import machinery's, nor labrt's own (a decorator
        # refusing what it was given points at the author's line).
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if not f.filename.startswith("<") and Path(f.filename).parent != _IMPORTLIB
        ]
        frames = [f for f in frames if not _labrt_own(f.filename)] or frames
        if frames:
            where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return ConfigError(
        config.file, KEY, f"cannot import {what}: {type(exc).__name__}: {detail}{where}"
    )


def _labrt_own(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(_LABRT) and not path.is_relative_to(_LABRT / "templates")


def _import_file(config: Config, path: Path) -> ModuleType:
    # A fresh module per load, named after the file, so two labs (or two tests) never share one.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    name = f"labrt_lab_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(config.file, KEY, f"expected a Python source file, got {path}")
    module = importlib.util.module_from_spec(module_spec)
    _importable(path.parent)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _failure(config, str(path), exc) from exc
    return module


def _importable(directory: Path) -> None:
    """Like ``python lab.py``: modules next to the lab (or next to lab.toml) import."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


def _import_name(config: Config, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise _failure(config, repr(name), exc) from exc


def _find_lab(config: Config, module: ModuleType, attr: str | None) -> Lab[Any]:
    if attr is not None:
        value = getattr(module, attr, None)
        if not isinstance(value, Lab):
            got = "nothing" if value is None else type(value).__name__
            raise ConfigError(
                config.file, KEY, f"expected {module.__name__}.{attr} to be a Lab, found {got}"
            )
        return value
    labs = {n: v for n, v in vars(module).items() if isinstance(v, Lab)}
    if len(labs) == 1:
        return next(iter(labs.values()))
    if not labs:
        raise ConfigError(
            config.file,
            KEY,
            f"expected the module {module.__file__} to define a Lab (lab = labrt.Lab())",
        )
    names = ", ".join(sorted(labs))
    raise ConfigError(
        config.file,
        KEY,
        f"expected one Lab in the module, found several ({names}); "
        "name one with 'module:attribute'",
    )
