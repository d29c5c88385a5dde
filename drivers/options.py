"""Checks shared by the kinds' ``validate``: each raises :class:`OptionError` naming the key and
what was expected, so a mistake in lab.toml is reported once, at ``labrt check``, in words
the author can act on.

TOML has no null, so "absent" is how an author leaves an optional key unset; these helpers
also accept None because code (tests, scripts) builds option tables too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, overload

from .base import OptionError


def shown(value: Any) -> str:
    """A value as lab.toml would write it (true, "text"), for messages about options."""
    if value is None:
        return "nothing"
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def check_keys(table: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse keys this kind does not know: a misspelt ``safe`` must not be silently ignored."""
    known = list(known)
    for key in table:
        if key not in known:
            raise OptionError(key, f"unknown option; known: {', '.join(known)}")


def is_number(value: Any) -> bool:
    """True for an int or a float; a bool is not a number here, however Python sees it."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def boolean(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise OptionError(key, f"true or false, got {shown(value)}")
    return value


def number(
    table: Mapping[str, Any],
    key: str,
    default: float | None,
    *,
    what: str = "a time in seconds",
    positive: bool = False,
    optional: bool = False,
) -> float | None:
    """A number ≥ 0 (> 0 when ``positive``); None only when ``optional``."""
    value = table.get(key, default)
    if value is None and optional:
        return None
    if not is_number(value) or value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "0 or more"
        raise OptionError(key, f"{what}, {bound}, got {shown(value)}")
    return float(value)


@overload
def text(table: Mapping[str, Any], key: str, default: str) -> str: ...
@overload
def text(table: Mapping[str, Any], key: str, default: None) -> str | None: ...
def text(table: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A non-empty string, or the default (which may be None) when absent."""
    value = table.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str) or not value:
        raise OptionError(key, f"a non-empty string, got {shown(value)}")
    return value
