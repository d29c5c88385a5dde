"""Group commit (issue 19): writes that arrive together share one transaction and one fsync,
yet each caller's statements stay all or nothing, and no caller hears back before the COMMIT
holding its statements returned (``kill -9`` right after an answer loses nothing)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from history import student

import labrt
from labrt.model import Session, State
from labrt.store import Store

ROOT = Path(labrt.__file__).resolve().parent.parent


def new_session(sid: str, now: float = 1000.0) -> Session:
    return Session.from_request(sid, student(sid, now, now + 300), now)


def wal_commits(path: Path) -> int:
    """COMMITs in the store's WAL, read from the file itself: a frame whose header records the
    database size is the last frame of a committed transaction (and, with
    ``synchronous=FULL``, an fsync). Frames from an earlier round of the WAL have other salts."""
    data = (path.with_name(path.name + "-wal")).read_bytes()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits = 0
    for at in range(32, len(data) - 24 + 1, 24 + page_size):
        header = data[at : at + 24]
        if header[8:16] != salts:
            break
        if struct.unpack(">I", header[4:8])[0]:
            commits += 1
    return commits


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.fixture
async def store(tmp_path):
    """A store on a new file (``store.path``), closed after the test."""
    opened = await Store.open(tmp_path / "s.sqlite")
    try:
        yield opened
    finally:
        await opened.close()


async def test_concurrent_writes_share_commits(store):
    before, counted = wal_commits(store.path), store.commits
    sessions = [new_session(f"s{i}") for i in range(50)]
    await asyncio.gather(*(store.insert_session(s, {"kind": "starting"}) for s in sessions))
    await asyncio.gather(
        *(
            store.update_session(s.sid, {"state": State.ACTIVE}, at=1001.0, event={"kind": "x"})
            for s in sessions
        )
    )
    commits = wal_commits(store.path) - before
    # 100 writes of two statements each: one transaction each before group commit.
    assert 2 <= commits <= 10
    assert store.commits - counted == commits  # the counter counts real COMMITs
    assert all(s.state is State.ACTIVE for s in await store.unfinished_sessions()), (
        "every write is in"
    )
    assert len(await store.events()) == 100


async def test_a_lone_write_costs_one_commit(store):
    before = wal_commits(store.path)
    await store.insert_session(new_session("a"), {"kind": "starting"})
    await store.update_session("a", {"visited": True}, at=1001.0)  # one statement
    assert wal_commits(store.path) - before == 2


async def test_a_failing_write_fails_alone_and_leaves_nothing(store):
    await store.insert_session(new_session("taken"), {"kind": "first"})
    before = wal_commits(store.path)
    writes = [store.insert_session(new_session(f"ok{i}"), {"kind": "k"}) for i in range(10)]
    # Its session row is fine; its event (no kind) breaks NOT NULL: the row must go too.
    writes.insert(3, store.insert_session(new_session("half"), {"kind": None}))
    # Fails on its first statement: a duplicate session id.
    writes.insert(7, store.insert_session(new_session("taken"), {"kind": "second"}))
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    failed = [i for i, o in enumerate(outcomes) if o is not None]
    assert failed == [3, 7]
    assert all(isinstance(outcomes[i], sqlite3.IntegrityError) for i in failed)
    assert wal_commits(store.path) - before == 1  # the others were still committed together
    assert not store._writes.in_transaction
    assert {s.sid for s in await store.unfinished_sessions()} == {
        "taken",
        *(f"ok{i}" for i in range(10)),
    }
    assert [e["kind"] for e in await store.events("taken")] == ["first"]
    assert await store.events("half") == []
    assert len(await store.events()) == 11
    # The store goes on working after a failed batch.
    await store.update_session("ok0", {"visited": True}, at=1002.0, event={"kind": "v"})
    assert (await store.session("ok0")).visited
    assert rows(store.path, "PRAGMA integrity_check") == [("ok",)]


async def test_a_cancelled_caller_neither_cancels_the_batch_nor_loses_its_write(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    try:
        writes = [
            asyncio.ensure_future(store.insert_session(new_session(f"s{i}"), {"kind": "k"}))
            for i in range(10)
        ]
        await asyncio.sleep(0)  # all queued, the first batch under way
        writes[0].cancel()
        writes[5].cancel()
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        assert [i for i, o in enumerate(outcomes) if o is not None] == [0, 5]
        assert all(isinstance(outcomes[i], asyncio.CancelledError) for i in (0, 5))
        assert not store._writes.in_transaction
    finally:
        await store.close()
    # A cancelled caller's write was begun (or queued) and is committed all the same, whole.
    assert len(rows(path, "SELECT sid FROM sessions")) == 10
    assert len(rows(path, "SELECT id FROM events")) == 10


async def test_close_commits_what_is_queued(tmp_path):
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    writes = [
        asyncio.ensure_future(store.insert_session(new_session(f"s{i}"), {"kind": "k"}))
        for i in range(20)
    ]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    await asyncio.gather(*writes)
    assert len(rows(path, "SELECT sid FROM sessions")) == 20


# The child: waves of session starts (insert, then update to active, as the manager does),
# each acknowledged on stdout the moment its await returns; at the chosen acknowledgement it
# kills itself, after `delay` seconds (0: at once, while the rest of the wave is queued or
# under way; more: in the middle of a later batch's transaction or fsync).
CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from test_group_commit import new_session
    from labrt.model import State
    from labrt.store import Store

    path, kill_at, delay = Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    acks = 0

    def ack(line):
        global acks
        os.write(1, (line + "\\n").encode())  # unbuffered: printed means acknowledged
        acks += 1
        if acks == kill_at:
            if delay:
                asyncio.get_running_loop().call_later(
                    delay, os.kill, os.getpid(), signal.SIGKILL
                )
            else:
                os.kill(os.getpid(), signal.SIGKILL)

    async def start(store, sid):
        await store.insert_session(new_session(sid), {"kind": "starting"})
        ack(f"starting {sid}")
        await store.update_session(sid, {"state": State.ACTIVE}, at=1001.0,
                                   event={"kind": "started"})
        ack(f"active {sid}")

    async def main():
        store = await Store.open(path)
        wave = 0
        while True:
            wave += 1
            await asyncio.gather(*(start(store, f"w{wave}-{i}") for i in range(25)))

    try:
        asyncio.run(main())
    finally:
        os._exit(1)  # never here but by a failure; the store's thread would keep us alive
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "delay"), [(1, 0), (7, 0), (30, 0), (60, 0.0005), (90, 0.002), (140, 0.01)]
)
def test_nothing_acknowledged_is_lost_to_kill_9(tmp_path, kill_at, delay):
    path = tmp_path / "s.sqlite"
    here = str(Path(__file__).parent)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, here, str(path), str(kill_at), str(delay)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == -9, child.stderr
    acked = [line.split() for line in child.stdout.splitlines()]
    assert len(acked) >= kill_at
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    states = dict(rows(path, "SELECT sid, state FROM sessions"))
    events = {(sid, kind) for sid, kind in rows(path, "SELECT session_id, kind FROM events")}
    for what, sid in acked:
        assert sid in states, f"{what} {sid} was acknowledged, then lost"
        if what == "active":
            assert states[sid] == "active", f"{sid} was acknowledged active, then lost"
            assert (sid, "started") in events
        assert (sid, "starting") in events
    # All or nothing per write: an active session has its event, a starting one has none.
    for sid, state in states.items():
        assert ((sid, "started") in events) == (state == "active")
