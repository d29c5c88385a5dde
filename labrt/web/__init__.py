"""The HTTP side of the runtime: one aiohttp application, built from the runtime's parts."""

from .app import RUNTIME, build_app

__all__ = ["RUNTIME", "build_app"]
