"""The durable record: one SQLite file, the only module that speaks SQL.

Memory is the working state; this is the record it is rebuilt from after a restart. Every
session transition is committed here (``synchronous=FULL``, so it survives a power cut, not only
a crash) before anyone hears of it. Writes go through one connection, one transaction at a time,
made by one committer task that a caller's cancellation never reaches, so a half-written
transition can never be left behind. Writes that arrive together share a transaction (group
commit): each caller's statements stay all or nothing, in a savepoint of their own if another
caller's fail, and every caller hears back only once the COMMIT holding its statements returned.

Reads go through aiosqlite. Writes have a connection of their own, in a thread of its own, that
takes a whole transaction in one hand-off (``BEGIN``, every statement, ``COMMIT``): a hand-off
between the event loop and a thread costs more than a statement does, and aiosqlite makes one
per statement. WAL lets the reads go on while a transaction is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import operator
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .model import (
    INTERRUPTED,
    Dialect,
    EndReason,
    Session,
    StartRequest,
    State,
    TaskRecord,
    TaskStatus,
    dump_json,
)

# Forward-only migrations: MIGRATIONS[n] brings a store at user_version n to n + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE sessions (
        sid TEXT PRIMARY KEY,
        dialect TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('starting', 'active', 'disposing', 'ended')),
        end_reason TEXT,
        username TEXT NOT NULL,
        username_unique TEXT NOT NULL,
        full_name TEXT,
        locale TEXT,
        back TEXT NOT NULL,
        experiment_name TEXT NOT NULL,
        category_name TEXT,
        experiment_id TEXT NOT NULL,
        client_data TEXT NOT NULL,
        server_data TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        start_date REAL NOT NULL,
        max_date REAL NOT NULL,
        created_at REAL NOT NULL,
        visited INTEGER NOT NULL DEFAULT 0,
        last_seen REAL NOT NULL,
        disposing_at REAL,
        dispose_hook_done INTEGER NOT NULL DEFAULT 0,
        ended_at REAL
    );
    CREATE INDEX sessions_unfinished ON sessions (state) WHERE state != 'ended';
    CREATE INDEX sessions_ended_at ON sessions (ended_at);
    CREATE INDEX sessions_created_at ON sessions (created_at);
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        session_id TEXT REFERENCES sessions (sid),
        name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('submitted', 'running', 'done', 'failed')),
        args TEXT NOT NULL,
        result TEXT,
        error TEXT,
        data TEXT NOT NULL DEFAULT '{}',
        submitted_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX tasks_session ON tasks (session_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        session_id TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_session ON events (session_id);
    """,
    """
    CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('submitted', 'running');
    CREATE INDEX tasks_finished_at ON tasks (finished_at);
    CREATE INDEX tasks_submitted_at ON tasks (submitted_at);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

# A session's row: its start request, one column per field of StartRequest (the one list of
# them), then where it is in its life.
_REQUEST_COLUMNS = tuple(f.name for f in dataclasses.fields(StartRequest))
# How a request field that is not stored as it is goes to its column and back.
_REQUEST_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "dialect": (lambda d: d.value, Dialect),
    "client_data": (dump_json, json.loads),
    "server_data": (dump_json, json.loads),
}
# Per request field, in order: how it goes to its column (None: as it is), and back.
_ENCODERS = tuple(_REQUEST_CODECS.get(name, (None, None))[0] for name in _REQUEST_COLUMNS)
# The request's fields in column order (not dataclasses.astuple: it deep-copies every value).
_REQUEST_VALUES = operator.attrgetter(*_REQUEST_COLUMNS)
_DECODERS = tuple((name, _REQUEST_CODECS.get(name, (None, None))[1]) for name in _REQUEST_COLUMNS)
_SESSION_COLUMNS = (
    "sid",
    *_REQUEST_COLUMNS,
    "state",
    "end_reason",
    "data",
    "created_at",
    "visited",
    "last_seen",
    "disposing_at",
    "dispose_hook_done",
    "ended_at",
)
_SELECT_SESSIONS = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions"
_INSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _SESSION_COLUMNS)})"
)
# Columns a transition may change; anything else is fixed when the session starts.
_MUTABLE = frozenset(
    {
        "state",
        "end_reason",
        "data",
        "visited",
        "last_seen",
        "disposing_at",
        "dispose_hook_done",
        "ended_at",
    }
)


class StoreError(Exception):
    """The store file cannot be used (newer schema, not a labrt store, unreadable)."""


_TASK_COLUMNS = (
    "task_id",
    "session_id",
    "name",
    "status",
    "args",
    "result",
    "error",
    "data",
    "submitted_at",
    "started_at",
    "finished_at",
)
_SELECT_TASKS = f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks"
_TASK_MUTABLE = frozenset({"status", "result", "error", "data", "started_at", "finished_at"})


def _task_row(t: TaskRecord) -> tuple[Any, ...]:
    return (
        t.task_id,
        t.session_id,
        t.name,
        t.status.value,
        t.args,
        dump_json(t.result),
        None if t.error is None else dump_json(t.error),
        dump_json(t.saved),
        t.submitted_at,
        t.started_at,
        t.finished_at,
    )


def _task_value(column: str, value: Any) -> Any:
    if column in ("result", "data"):
        return dump_json(value)
    if column == "error":
        return None if value is None else dump_json(value)
    if column == "status":
        return TaskStatus(value).value
    return value


def _task_from_row(row: Sequence[Any]) -> TaskRecord:
    r = dict(zip(_TASK_COLUMNS, row, strict=True))
    return TaskRecord(
        task_id=r["task_id"],
        session_id=r["session_id"],
        name=r["name"],
        status=TaskStatus(r["status"]),
        args=r["args"],
        result=None if r["result"] is None else json.loads(r["result"]),
        error=None if r["error"] is None else json.loads(r["error"]),
        data=json.loads(r["data"]),
        saved=json.loads(r["data"]),
        submitted_at=r["submitted_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def _own(path: Path) -> int:
    """Lock ``<path>.lock`` for this process (the kernel drops it if the process dies)."""
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"{lock}: cannot create the store's lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"{path}: another labrt is already running on this store; stop it first"
        ) from None
    return fd


def _private(path: Path) -> None:
    """Make the store file and its ``-wal``/``-shm`` readable by labrt alone (0600).

    The store holds the cookie secret and every session id: anyone who reads it can take over
    a student's session. A new file is created 0600 here, before SQLite opens it, because
    SQLite creates a file with the process's umask (often 0644) but gives ``-wal`` and ``-shm``
    the main file's mode. A store made by an older labrt (or a WAL left by it) keeps its
    mode when reopened, so existing files are tightened too.
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                if name.stat().st_mode & 0o077:
                    os.chmod(name, 0o600)
            except FileNotFoundError:
                pass
    except OSError as exc:
        raise StoreError(f"{exc.filename}: cannot make the store private: {exc.strerror}") from None


def _session_row(s: Session) -> tuple[Any, ...]:
    request = [
        value if encode is None else encode(value)
        for value, encode in zip(_REQUEST_VALUES(s.request), _ENCODERS, strict=True)
    ]
    return (
        s.sid,
        *request,
        s.state.value,
        s.end_reason.value if s.end_reason else None,
        s.stored_data,
        s.created_at,
        int(s.visited),
        s.last_seen,
        s.disposing_at,
        int(s.dispose_hook_done),
        s.ended_at,
    )


def _session_from_row(row: Sequence[Any]) -> Session:
    r = dict(zip(_SESSION_COLUMNS, row, strict=True))
    request = StartRequest(
        *[r[name] if decode is None else decode(r[name]) for name, decode in _DECODERS]
    )
    return Session(
        sid=r["sid"],
        request=request,
        state=State(r["state"]),
        end_reason=EndReason(r["end_reason"]) if r["end_reason"] else None,
        data=json.loads(r["data"]),
        stored_data=r["data"],
        created_at=r["created_at"],
        visited=bool(r["visited"]),
        last_seen=r["last_seen"],
        disposing_at=r["disposing_at"],
        dispose_hook_done=bool(r["dispose_hook_done"]),
        ended_at=r["ended_at"],
    )


Statement = tuple[str, Sequence[Any]]
_T = TypeVar("_T")


@dataclasses.dataclass(slots=True)
class _Write:
    """One caller's statements, to commit atomically, and where it hears how that went."""

    statements: list[Statement]
    done: asyncio.Future[None]


# -- the write thread's side: plain sqlite3, called only in the store's write thread ---------


def _open_writer(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("synchronous=FULL", "foreign_keys=ON", "busy_timeout=5000"):
            db.execute(f"PRAGMA {pragma}")
    except BaseException:
        db.close()
        raise
    return db


def _write(db: sqlite3.Connection, writes: list[list[Statement]]) -> dict[int, Exception]:
    """Commit ``writes`` in one transaction; returns the writes that failed (by index), none of
    whose statements were committed. Raises if the whole batch failed (nothing committed)."""
    if len(writes) == 1 and len(writes[0]) == 1 and not db.in_transaction:
        # One statement is a transaction of its own in autocommit mode. (Never inside a
        # transaction a failed ROLLBACK left open: it would not be committed.)
        db.execute(*writes[0][0])
        return {}
    db.execute("BEGIN IMMEDIATE")
    try:
        try:
            # Optimistically without savepoints: two statements fewer per write.
            for statements in writes:
                for sql, params in statements:
                    db.execute(sql, params)
            failed: dict[int, Exception] = {}
        except Exception:
            _rollback(db)
            if len(writes) == 1:
                raise
            # Someone's statement failed: again from the start, each write in a savepoint, so
            # that only the writes that fail are left out.
            db.execute("BEGIN IMMEDIATE")
            failed = _each_in_a_savepoint(db, writes)
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    return failed


def _each_in_a_savepoint(
    db: sqlite3.Connection, writes: list[list[Statement]]
) -> dict[int, Exception]:
    failed: dict[int, Exception] = {}
    for i, statements in enumerate(writes):
        db.execute("SAVEPOINT write")
        try:
            for sql, params in statements:
                db.execute(sql, params)
        except Exception as exc:
            if not db.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the writes
                # before this one are gone too.
                raise
            db.execute("ROLLBACK TO write")
            failed[i] = exc
        db.execute("RELEASE write")
    return failed


def _rollback(db: sqlite3.Connection) -> None:
    """End the open transaction, if any, without committing it."""
    if db.in_transaction:
        # An error here means the failure that brought us here already ended it.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class Store:
    """Async access to the SQLite file: made at once, usable once :meth:`connect` returned
    (:meth:`open` does both), always :meth:`close`."""

    _db: aiosqlite.Connection  # set by connect(); reads
    _writes: sqlite3.Connection  # set by connect() unless read-only; used in _write_thread only

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._read_only = read_only
        self._owner: int | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        # Writes waiting for the next transaction, and the task committing them (None: idle).
        self._queue: list[_Write] = []
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0  # transactions committed (an autocommitted statement counts as one)

    @classmethod
    async def open(cls, path: Path, *, read_only: bool = False) -> Store:
        store = cls(path, read_only=read_only)
        await store.connect()
        return store

    async def connect(self) -> None:
        """Open (creating and migrating unless read-only) the store's file.

        A writer owns the store alone: a second ``labrt run`` on the same file would recover
        and dispose the first one's students, so it is refused instead.
        """
        path = self.path
        if self._read_only:
            self._db = await aiosqlite.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None
            )
        else:
            self._owner = _own(path)
            try:
                _private(path)
                self._db = await aiosqlite.connect(path, isolation_level=None)
            except BaseException:
                os.close(self._owner)
                self._owner = None
                raise
        try:
            await self._prepare(self._read_only)
            if not self._read_only:
                self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="labrt-store")
                self._writes = await self._in_write_thread(_open_writer, path)
        except BaseException:
            await self.close()
            raise

    async def _in_write_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._write_thread is not None
        return await asyncio.wrap_future(self._write_thread.submit(fn, *args))

    async def _prepare(self, read_only: bool) -> None:
        try:
            (version,) = await self._fetchone("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this labrt "
                    f"understands ({SCHEMA_VERSION}); upgrade labrt"
                )
            if read_only:
                if version < SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: store not yet migrated; run the lab once")
                return
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._db.execute("PRAGMA busy_timeout=5000")
            for target in range(version, SCHEMA_VERSION):
                await self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{MIGRATIONS[target]}\n"
                    f"PRAGMA user_version = {target + 1};\nCOMMIT;"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite store ({exc})") from exc

    async def ping(self) -> None:
        """A trivial read, to know the file still answers."""
        await self._fetchone("SELECT 1")

    async def close(self) -> None:
        """Close the file if it was opened; a store that never connected has nothing to close.
        Writes already queued are committed first."""
        try:
            while self._committer is not None:
                await asyncio.wait([self._committer])
            if self._write_thread is not None:
                # Behind a transaction still under way in the thread, if the committer was
                # cancelled while it ran.
                if hasattr(self, "_writes"):
                    await self._in_write_thread(self._writes.close)
                self._write_thread.shutdown(wait=False)
                self._write_thread = None
            if hasattr(self, "_db"):
                await self._db.close()
        finally:
            if self._owner is not None:
                os.close(self._owner)  # releases the lock
                self._owner = None

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._db.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _transaction(self, statements: Iterable[Statement]) -> None:
        """Commit ``statements`` atomically; return once the COMMIT holding them returned.

        The write joins the queue; the committer takes everything queued at once into one
        transaction (one fsync for all), and what arrives meanwhile goes in the next one.
        """
        statements = list(statements)
        if not statements:
            return
        write = _Write(statements, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_queued(), name="labrt-store-commit")
        # A caller cancelled while its write is queued or under way must not leave it half
        # applied: the committer goes on, and commits it.
        await asyncio.shield(write.done)

    async def _commit_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._commit(batch)
        finally:
            self._committer = None
            # Left only if the committer itself was cancelled (the loop is closing): these
            # writes were never begun.
            queued, self._queue = self._queue, []
            for write in queued:
                write.done.cancel()

    async def _commit(self, batch: list[_Write]) -> None:
        """One transaction for the whole batch, then tell every caller how its write went."""
        try:
            failed = await self._in_write_thread(
                _write, self._writes, [write.statements for write in batch]
            )
            self.commits += 1
        except asyncio.CancelledError:
            for write in batch:
                write.done.cancel()
            raise
        except Exception as exc:
            for write in batch:
                write.done.set_exception(exc)
            return
        for i, write in enumerate(batch):
            if i in failed:
                write.done.set_exception(failed[i])
            else:
                write.done.set_result(None)

    # -- meta ------------------------------------------------------------------------------

    async def secret(self, key: str) -> bytes:
        """A random secret kept in the store, created on first use (cookie signing)."""
        row = await self._fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        if row is None:
            await self._transaction(
                [
                    (
                        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                        (key, secrets.token_hex(32)),
                    )
                ]
            )
            row = await self._fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes.fromhex(row[0])

    # -- sessions --------------------------------------------------------------------------

    async def insert_session(self, session: Session, event: dict[str, Any]) -> None:
        await self._transaction(
            [
                (_INSERT_SESSION, _session_row(session)),
                self._event(session.sid, session.created_at, event),
            ]
        )

    async def update_session(
        self, sid: str, changes: dict[str, Any], *, at: float, event: dict[str, Any] | None = None
    ) -> None:
        """Apply ``changes`` (column → value) to one session, with an event, atomically."""
        unknown = set(changes) - _MUTABLE
        if unknown:
            raise ValueError(f"not mutable session columns: {sorted(unknown)}")
        values = [_column_value(v) for v in changes.values()]
        sets = ", ".join(f"{column} = ?" for column in changes)
        statements: list[Statement] = [
            (f"UPDATE sessions SET {sets} WHERE sid = ?", (*values, sid))
        ]
        if event is not None:
            statements.append(self._event(sid, at, event))
        await self._transaction(statements)

    async def save_last_seen(self, items: Sequence[tuple[str, float, bool]]) -> None:
        """Batched low-value write: when each student was last seen."""
        await self._transaction(
            ("UPDATE sessions SET last_seen = ?, visited = ? WHERE sid = ?", (t, int(v), sid))
            for sid, t, v in items
        )

    async def unfinished_sessions(self) -> list[Session]:
        """Sessions not yet ended, oldest first: what a restart must finish or resume. Found
        by the partial index ``sessions_unfinished``, so the cost does not grow with the
        ended sessions kept. Sorted here, not by ``ORDER BY created_at``: with it, SQLite's
        planner walks the whole history in ``sessions_created_at`` order instead."""
        rows = await self._db.execute_fetchall(f"{_SELECT_SESSIONS} WHERE state != 'ended'")
        return sorted((_session_from_row(row) for row in rows), key=lambda s: s.created_at)

    async def recent_sessions(self, limit: int) -> list[Session]:
        rows = await self._db.execute_fetchall(
            f"{_SELECT_SESSIONS} ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [_session_from_row(row) for row in rows]

    async def session(self, sid: str) -> Session | None:
        row = await self._fetchone(f"{_SELECT_SESSIONS} WHERE sid = ?", (sid,))
        return None if row is None else _session_from_row(row)

    async def events(self, sid: str | None = None) -> list[dict[str, Any]]:
        """The event log, oldest first; each event is its detail plus ``at`` and ``kind``."""
        where, params = ("WHERE session_id = ?", (sid,)) if sid is not None else ("", ())
        rows = await self._db.execute_fetchall(
            f"SELECT at, session_id, kind, detail FROM events {where} ORDER BY id", params
        )
        return [
            {**json.loads(detail), "at": at, "session_id": session_id, "kind": kind}
            for at, session_id, kind, detail in rows
        ]

    # -- tasks -----------------------------------------------------------------------------

    async def insert_task(self, task: TaskRecord) -> None:
        placeholders = ", ".join("?" for _ in _TASK_COLUMNS)
        await self._transaction(
            [
                (
                    f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) VALUES ({placeholders})",
                    _task_row(task),
                )
            ]
        )

    async def update_task(self, task_id: str, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (column → Python value, JSON columns encoded here) atomically."""
        unknown = set(changes) - _TASK_MUTABLE
        if unknown:
            raise ValueError(f"not mutable task columns: {sorted(unknown)}")
        values = [_task_value(column, value) for column, value in changes.items()]
        sets = ", ".join(f"{column} = ?" for column in changes)
        statement = f"UPDATE tasks SET {sets} WHERE task_id = ?"
        await self._transaction([(statement, (*values, task_id))])

    async def interrupt_tasks(self, at: float) -> int:
        """Fail every task left unfinished by a process that is gone; returns how many."""
        rows = await self._db.execute_fetchall(
            "SELECT task_id FROM tasks WHERE status IN ('submitted', 'running')"
        )
        await self._transaction(
            [
                (
                    "UPDATE tasks SET status = 'failed', error = ?, finished_at = ? "
                    "WHERE status IN ('submitted', 'running')",
                    (dump_json(INTERRUPTED), at),
                )
            ]
        )
        return len(list(rows))  # a list, though aiosqlite annotates it only as Iterable

    async def tasks_finished_since(self, since: float) -> list[TaskRecord]:
        rows = await self._db.execute_fetchall(
            f"{_SELECT_TASKS} WHERE finished_at >= ? ORDER BY submitted_at", (since,)
        )
        return [_task_from_row(row) for row in rows]

    async def recent_tasks(self, limit: int) -> list[TaskRecord]:
        rows = await self._db.execute_fetchall(
            f"{_SELECT_TASKS} ORDER BY submitted_at DESC LIMIT ?", (limit,)
        )
        return [_task_from_row(row) for row in rows]

    async def task(self, task_id: str) -> TaskRecord | None:
        row = await self._fetchone(f"{_SELECT_TASKS} WHERE task_id = ?", (task_id,))
        return None if row is None else _task_from_row(row)

    async def forget_task(self, task_id: str) -> None:
        """Delete a finished task (its results are kept for ``[tasks] keep_results``)."""
        await self._transaction(
            [("DELETE FROM tasks WHERE task_id = ? AND finished_at IS NOT NULL", (task_id,))]
        )

    async def prune_sessions(self, ended_before: float) -> int:
        """Delete sessions that ended before ``ended_before``, with their events and tasks
        (in one transaction); returns how many sessions went."""
        old = "SELECT sid FROM sessions WHERE state = 'ended' AND ended_at < ?"
        (count,) = await self._fetchone(f"SELECT COUNT(*) FROM ({old})", (ended_before,))
        if count:
            await self._transaction(
                [
                    (f"DELETE FROM events WHERE session_id IN ({old})", (ended_before,)),
                    (f"DELETE FROM tasks WHERE session_id IN ({old})", (ended_before,)),
                    (f"DELETE FROM sessions WHERE sid IN ({old})", (ended_before,)),
                ]
            )
        return int(count)

    async def prune_tasks(self, finished_before: float) -> None:
        await self._transaction([("DELETE FROM tasks WHERE finished_at < ?", (finished_before,))])

    @staticmethod
    def _event(sid: str | None, at: float, event: dict[str, Any]) -> Statement:
        detail = {k: v for k, v in event.items() if k != "kind"}
        return (
            "INSERT INTO events (at, session_id, kind, detail) VALUES (?, ?, ?, ?)",
            (at, sid, event["kind"], dump_json(detail)),
        )


def _column_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, State | EndReason):
        return value.value
    return value
