"""``kill -9`` of a real ``labrt run``, then a restart: nothing lost, nothing done twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time

import aiohttp
import pytest
from helpers import AUTH, Spawned, new_body, write_config

pytestmark = pytest.mark.slow


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def count(path, event, sid):
    return sum(1 for r in records(path) if r["event"] == event and r["sid"] == sid)


async def wait_for_records(path, n):
    """The spawned lab writes the record file; poll it (no event crosses processes)."""
    deadline = time.monotonic() + 30
    while len(records(path)) < n:
        assert time.monotonic() < deadline, records(path)
        await asyncio.sleep(0.02)


async def rlms(http, method, url, **kwargs):
    async with http.request(method, url, headers=AUTH, **kwargs) as r:
        return await r.json()


async def test_kill_9_then_restart(tmp_path):
    record = tmp_path / "record.jsonl"
    env = {"LABRT_TEST_RECORD": str(record)}
    config = write_config(tmp_path)
    first = Spawned(config, env)
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            now = time.time()
            short = await rlms(http, "POST", f"{first.url}/ldl/sessions/", json=new_body(now, 2))
            long = await rlms(http, "POST", f"{first.url}/ldl/sessions/", json=new_body(now))
            # A start cut in the middle of on_start.
            hanging = asyncio.ensure_future(
                rlms(
                    http, "POST", f"{first.url}/ldl/sessions/", json=new_body(now, hang_start=True)
                )
            )
            await wait_for_records(record, 3)
            async with http.get(long["url"], allow_redirects=False) as r:
                assert r.status == 302
    finally:
        first.kill()
    with pytest.raises(aiohttp.ClientError):
        await hanging
    hung_sid = records(record)[2]["sid"]
    await asyncio.sleep(max(0.0, now + 2.2 - time.time()))  # the short slot ends while down

    second = Spawned(config, env)
    try:
        # Recovery runs before the server listens: by now it is done.
        assert count(record, "dispose", short["session_id"]) == 1
        assert count(record, "dispose", hung_sid) == 1
        assert count(record, "dispose", long["session_id"]) == 0
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            for sid, expected in ((short["session_id"], -1), (long["session_id"], 5)):
                answer = await rlms(http, "GET", f"{second.url}/ldl/sessions/{sid}/status")
                assert answer == {"should_finish": expected}
            # The student's cookie from before the crash still works on the new process.
            async with http.get(f"{second.url}/labrt/status") as r:
                page = await r.json()
            assert (r.status, page["state"]) == (200, "active")
            assert 200 < page["time_left"] < 300
    finally:
        assert second.stop() == 0
    # SIGTERM ended the surviving session properly, once.
    assert count(record, "dispose", long["session_id"]) == 1

    db = sqlite3.connect(tmp_path / "labrt.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = dict(db.execute("SELECT sid, state || ':' || end_reason FROM sessions"))
    finally:
        db.close()
    assert rows[short["session_id"]] in ("ended:expired", "ended:interrupted")
    assert rows[hung_sid] == "ended:interrupted"
    assert rows[long["session_id"]] == "ended:shutdown"


async def test_sigterm_does_not_wait_forever_for_a_stuck_blocking_hook(tmp_path):
    record = tmp_path / "record.jsonl"
    config = write_config(tmp_path, "[session]\ndispose_timeout = 0.5\n")
    server = Spawned(config, {"LABRT_TEST_RECORD": str(record)})
    try:
        async with aiohttp.ClientSession() as http:
            body = new_body(time.time(), hang_dispose=True)
            started = await rlms(http, "POST", f"{server.url}/ldl/sessions/", json=body)
    finally:
        began = time.monotonic()
        assert server.stop(timeout=20) == 0
    assert time.monotonic() - began < 10
    assert count(record, "dispose", started["session_id"]) == 1
    log = server.log.read_text()
    assert "on_dispose still running" in log and "not waiting for stuck threads" in log
    db = sqlite3.connect(tmp_path / "labrt.sqlite")
    try:
        assert db.execute("SELECT state, end_reason FROM sessions").fetchall() == [
            ("ended", "shutdown")
        ]
    finally:
        db.close()


async def test_kill_9_during_a_running_task(tmp_path):
    record = tmp_path / "record.jsonl"
    env = {"LABRT_TEST_RECORD": str(record)}
    config = write_config(tmp_path)
    first = Spawned(config, env)
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            body = new_body(time.time())
            started = await rlms(http, "POST", f"{first.url}/ldl/sessions/", json=body)
            async with http.get(started["url"], allow_redirects=False) as r:
                assert r.status == 302
            async with http.post(f"{first.url}/api/block") as r:
                task_id = (await r.json())["task_id"]
            await wait_for_records(record, 2)  # start, task-start: the task is running
            async with http.get(f"{first.url}/labrt/tasks/{task_id}") as r:
                assert (await r.json())["status"] == "running"
    finally:
        first.kill()

    second = Spawned(config, env)
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as http,
            http.get(f"{second.url}/labrt/tasks/{task_id}") as r,
        ):
            state = await r.json()
        assert state["status"] == "failed"
        assert state["error"]["code"] == "interrupted"
    finally:
        assert second.stop() == 0
    assert [r["event"] for r in records(record)].count("task-start") == 1  # never re-run
    db = sqlite3.connect(tmp_path / "labrt.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute(
            "SELECT count(*) FROM tasks WHERE status IN ('submitted', 'running')"
        ).fetchone() == (0,)
    finally:
        db.close()
    listing = subprocess.run(
        [sys.executable, "-m", "labrt", "tasks", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert task_id[:12] in listing and "interrupted" in listing and "block" in listing
