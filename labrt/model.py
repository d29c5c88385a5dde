"""The runtime's data: what a session is, independent of the wire, the store and the web.

Both protocol dialects are parsed into one :class:`StartRequest`; the session manager turns it
into a :class:`Session`, which the store persists and the ``user`` proxy reads.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any


class Dialect(enum.StrEnum):
    """Which RLMS family sent the session (the URL prefix it used)."""

    LEGACY = "weblab"
    NEW = "ldl"


class State(enum.StrEnum):
    """Where a session is in its life; only ever moves forward, in this order."""

    STARTING = "starting"  # on_start is running; the RLMS does not know the sid yet
    ACTIVE = "active"  # admitted; may still be out of time (see SessionManager.is_active)
    DISPOSING = "disposing"  # on_dispose and the session's cleanup are running
    ENDED = "ended"  # fully disposed; remembered as an expired user for a while


# A session in the lab: being admitted or admitted. The one definition of a "live" session.
LIVE = frozenset({State.STARTING, State.ACTIVE})


class EndReason(enum.StrEnum):
    """Why a session ended; recorded with the transition and logged."""

    EXPIRED = "expired"  # the slot's time ran out
    TIMED_OUT = "timed-out"  # the student's page stopped polling (or never arrived)
    LOGGED_OUT = "logged-out"  # the student left
    DISPOSED_BY_RLMS = "disposed-by-rlms"  # the RLMS asked for it
    START_FAILED = "start-failed"  # on_start raised
    SHUTDOWN = "shutdown"  # the service was stopped
    INTERRUPTED = "interrupted"  # the process died while the session was starting


@dataclass(frozen=True)
class StartRequest:
    """A start request from either dialect, validated and normalised."""

    dialect: Dialect
    username: str
    username_unique: str
    full_name: str | None
    locale: str | None
    back: str
    experiment_name: str
    category_name: str | None
    experiment_id: str
    client_data: Any
    server_data: Any
    start_date: float
    max_date: float


@dataclass(eq=False)
class Session:
    """One student's slot: the start request that made it, and where it is in its life. The
    manager mutates it only after the store has the new state."""

    sid: str
    request: StartRequest  # who, from which RLMS, for how long: fixed at the start
    created_at: float
    state: State = State.STARTING
    end_reason: EndReason | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # Polling: the student's page must show up within the first-visit grace, then keep polling.
    visited: bool = False
    last_seen: float = 0.0
    disposing_at: float | None = None
    dispose_hook_done: bool = False
    ended_at: float | None = None
    # The JSON of `data` as last written, to persist only real changes.
    stored_data: str = "{}"

    @classmethod
    def from_request(cls, sid: str, request: StartRequest, now: float) -> Session:
        return cls(sid=sid, request=request, created_at=now, last_seen=now)


class TaskStatus(enum.StrEnum):
    """Where a task is; only ever moves forward, in this order."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED = frozenset({TaskStatus.DONE, TaskStatus.FAILED})


@dataclass(eq=False)
class TaskRecord:
    """One submission of a task function. The task manager mutates it only after the store
    has the new state; ``stopping`` alone lives only in memory (a restart fails every
    unfinished task anyway)."""

    task_id: str
    session_id: str | None
    name: str
    args: str  # what it was called with, for the record (not to run it again)
    submitted_at: float
    status: TaskStatus = TaskStatus.SUBMITTED
    result: Any = None
    error: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the task's own, live
    saved: dict[str, Any] = field(default_factory=dict)  # as last stored: what others see
    started_at: float | None = None
    finished_at: float | None = None
    stopping: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def task_error(code: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    """A task's error as JSON: what went wrong (``code``), and the exception if one was raised."""
    error: dict[str, Any] = {"code": code, "message": message}
    if exc is not None:
        error["class"] = type(exc).__name__
    return error


INTERRUPTED = task_error("interrupted", "the lab stopped while this task was unfinished")


def dump_json(value: Any) -> str:
    """Canonical JSON, so equal data always compares equal as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
