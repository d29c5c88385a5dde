"""A lab with a long history restarts as fast as a new one (issue 19): a restart reads back only
the sessions not yet ended, and a student whose slot ended before it is found in the store on
their first request, with everything they had before the restart."""

from __future__ import annotations

import sqlite3
import time
from functools import partial

import aiohttp
from helpers import PREFIXES, serve_lab
from history import fill_labrt_store

from labrt.clock import FakeClock
from labrt.store import Store

PAST = 100_000


async def test_a_restart_loads_none_of_the_history_and_still_knows_its_expired_users(tmp_path):
    now = float(int(time.time()))
    await fill_labrt_store(tmp_path / "labrt.sqlite", PAST, now)
    async with serve_lab(tmp_path, clock=FakeClock(now)) as lab:
        assert lab.runtime.sessions.sessions() == []  # 100k ended sessions, none read back
        live = await lab.start()
        assert [s.sid for s in lab.runtime.sessions.sessions()] == [live]

        # The student whose slot ended last before the restart comes back to the lab's page.
        sid = stored_sid(lab, 0)
        cookie = {lab.runtime.config.server.cookie_name: lab.runtime.signer.sign(sid)}
        async with aiohttp.ClientSession(cookies=cookie) as browser:
            async with browser.get(lab.url("/labrt/status")) as r:
                assert r.status == 200
                body = await r.json()
            assert body["state"] == "expired" and body["reason"] == "expired"
            assert body["username"] == "past0"
        assert lab.runtime.sessions.get(sid) is not None  # remembered from now on
        # The RLMS disposing of it again hears it is known, as before the restart.
        status, answer = await lab.call("DELETE", f"{PREFIXES['ldl']}/{stored_sid(lab, 1)}")
        assert (status, answer) == (200, {"message": "Deleted"})

        # One whose slot ended longer ago than expired_users_timeout is forgotten, as before.
        old = stored_sid(lab, PAST - 1)
        await lab.advance(lab.runtime.config.session.expired_users_timeout - 2000)
        cookie = {lab.runtime.config.server.cookie_name: lab.runtime.signer.sign(old)}
        async with (
            aiohttp.ClientSession(cookies=cookie) as browser,
            browser.get(lab.url("/labrt/status")) as r,
        ):
            assert r.status == 401


def stored_sid(lab, index: int) -> str:
    """The id of ``past_session(index, ...)``, the index-th most recently ended."""
    with sqlite3.connect(f"file:{lab.runtime.store.path}?mode=ro", uri=True) as db:
        (sid,) = db.execute(
            "SELECT sid FROM sessions WHERE username = ?", (f"past{index}",)
        ).fetchone()
    return sid


async def test_what_a_restart_reads_does_not_grow_with_the_history(tmp_path):
    """The store's share of a restart, counted in SQLite's own steps (its progress handler),
    not in seconds: the same with 20k ended sessions as with 10. A query that scans the
    history instead of an index (as ``ORDER BY created_at`` once made the planner do) makes
    it grow with every session the lab has had."""
    now = float(int(time.time()))
    steps = {}
    for past in (10, 20_000):
        path = tmp_path / f"{past}.sqlite"
        await fill_labrt_store(path, past, now)
        store = await Store.open(path)
        try:
            count = [0]
            step = partial(_count_step, count)
            await store._db.set_progress_handler(step, 10)
            await store._in_write_thread(store._writes.set_progress_handler, step, 10)
            # What Runtime.start asks of the store, in its order (tasks, sessions, retention).
            await store.secret("cookie-secret")
            await store.interrupt_tasks(now)
            await store.prune_tasks(now - 3600)
            await store.tasks_finished_since(now - 3600)
            assert await store.unfinished_sessions() == []
            await store.prune_sessions(ended_before=now - 30 * 86400)
            steps[past] = count[0]
        finally:
            await store.close()
    assert steps[20_000] <= steps[10] + 20, steps


def _count_step(count: list[int]) -> int:
    count[0] += 1
    return 0  # go on
