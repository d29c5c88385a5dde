"""The HTTP side of the runtime: one aiohttp application, built from the runtime's parts."""

from .app import build_app

__all__ = ["build_app"]
