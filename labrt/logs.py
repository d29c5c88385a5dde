"""Logging: one line per event on stderr, never a raw session id or a password.

A session id is a bearer secret (it is the student's link into the lab), so logs name a
session by a short hash of it instead.
"""

from __future__ import annotations

import hashlib
import logging
import sys


def session_tag(sid: str) -> str:
    """A short, stable, non-reversible name for a session, safe to log."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


def setup(level: str = "INFO") -> None:
    """Plain lines on stderr; journald adds the timestamp and the unit under systemd."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per request: too much for a Pi's journal by default.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
