"""A lab with a long history restarts as fast as a new one (issue 19): a restart reads back only
the sessions not yet ended, and a student whose slot ended before it is found in the store on
their first request, with everything they had before the restart."""

from __future__ import annotations

import sqlite3
import time

import aiohttp
from helpers import PREFIXES, serve_lab
from history import fill_labrt_store

from labrt.clock import FakeClock

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
