"""Logging: one line per event on stderr, never a raw session id or a password.

A session id is a bearer secret (it is the student's link into the lab), so logs name a
session by a short hash of it instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sys
from typing import Any


def session_tag(sid: str) -> str:
    """A short, stable, non-reversible name for a session, safe to log."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


# What a lifecycle event carries besides its message (``extra=`` of the logging call).
EVENT_FIELDS = ("event", "session", "reason", "experiment", "lab")


def lifecycle(transition: str, sid: str, reason: str | None = None, **more: str) -> dict[str, Any]:
    """The ``extra`` of a session lifecycle log line: what a log collector filters on."""
    fields = {"event": f"session-{transition}", "session": session_tag(sid), **more}
    if reason is not None:
        fields["reason"] = reason
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log collector; the same events as the text lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in EVENT_FIELDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """One event per line on stderr: plain text (journald adds the time and the unit) or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per request: too much for a Pi's journal by default.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
