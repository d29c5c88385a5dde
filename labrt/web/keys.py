"""Typed keys of the aiohttp application: one per service a handler may use.

A handler asks for exactly what it needs (``request.app[SESSIONS]``), never for the runtime
that assembled the services, so that the web layer sits below the runtime.
"""

from __future__ import annotations

from aiohttp import web

from .._engine.cameras import Cameras
from .._engine.hardware import Hardware
from .._engine.hooks import HookRunner
from .._engine.metrics import Metrics
from .._engine.notify import Notifier
from .._engine.push import Hub
from .._engine.registry import Registry
from .._engine.sessions import SessionManager
from .._engine.tasks import TaskManager
from ..clock import Clock
from ..config import Config
from ..store import Store
from .signing import CookieSigner

CONFIG: web.AppKey[Config] = web.AppKey("config")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
STORE: web.AppKey[Store] = web.AppKey("store")
SESSIONS: web.AppKey[SessionManager] = web.AppKey("sessions")
TASKS: web.AppKey[TaskManager] = web.AppKey("tasks")
PUSH: web.AppKey[Hub] = web.AppKey("push")
HARDWARE: web.AppKey[Hardware] = web.AppKey("hardware")
HOOKS: web.AppKey[HookRunner] = web.AppKey("hooks")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
NOTIFIER: web.AppKey[Notifier] = web.AppKey("notifier")
SIGNER: web.AppKey[CookieSigner] = web.AppKey("signer")
CAMERAS: web.AppKey[Cameras] = web.AppKey("cameras")
