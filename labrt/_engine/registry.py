"""What a lab author registered: hooks, routes, message handlers and task functions.

Filled at import time of the lab module by ``Lab``'s decorators, read by the engine and the
web layer once the lab runs. Plain data, so that the engine depends on what was registered
rather than on the ``Lab`` that registered it.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .hardware import Devices

UNIQUE_MODES = (None, "global", "user")
_TOKEN_BYTES = 32


def create_token(size: int = _TOKEN_BYTES) -> str:
    """A random URL-safe token (32 bytes → 43 characters), as used for session ids."""
    return secrets.token_urlsafe(size)


@dataclass
class Hooks:
    on_start: Callable[..., Any] | None = None
    on_dispose: Callable[..., Any] | None = None
    initial_url: Callable[[], Any] | None = None
    user_loader: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Any]
    name: str | None = None
    cross_site: bool = False
    max_body_size: int | None = None  # this route's own body limit; None: [server]'s


@dataclass(frozen=True)
class TaskSpec:
    """A task function as the task manager runs it."""

    fn: Callable[..., Any]
    unique: str | None = None

    @property
    def name(self) -> str:
        return str(getattr(self.fn, "__name__", repr(self.fn)))

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


@dataclass
class Registry:
    hooks: Hooks = field(default_factory=Hooks)
    routes: list[Route] = field(default_factory=list)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    message_handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Which class each device is, if the author said so (Lab(devices=...)).
    devices: type[Devices] = Devices
