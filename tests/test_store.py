"""The SQLite record: created, migrated forward, refused when it cannot be trusted."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import AUTH, Spawned, new_body, serve_lab, write_config

from labrt.store import SCHEMA_VERSION, Store, StoreError


async def test_new_store_is_wal_and_at_the_current_schema(tmp_path):
    store = await Store.open(tmp_path / "s.sqlite")
    await store.close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


async def test_a_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer than this labrt"):
        await Store.open(path)
    assert path.read_bytes() == before


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite store"):
        await Store.open(path)


async def test_read_only_open_never_creates_or_migrates(tmp_path):
    path = tmp_path / "s.sqlite"
    sqlite3.connect(path).close()  # an empty, unmigrated file
    with pytest.raises(StoreError, match="not yet migrated"):
        await Store.open(path, read_only=True)


@pytest.mark.slow
def test_labrt_run_refuses_a_broken_store_with_one_line(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "labrt.sqlite").write_bytes(b"garbage" * 1000)
    run = subprocess.run(
        [sys.executable, "-m", "labrt", "run", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "not a usable SQLite store" in run.stderr
    assert "listening" not in run.stderr


async def test_transitions_are_in_the_event_log(tmp_path):
    async with serve_lab(tmp_path) as lab:
        sid = await lab.start()
        await lab.call("DELETE", f"/ldl/sessions/{sid}")
        events = await lab.runtime.store.events(sid)
    assert [e["kind"] for e in events] == [
        "starting",
        "started",
        "disposing",
        "on-dispose-done",
        "ended",
    ]
    assert events[2]["reason"] == "disposed-by-rlms"
    assert all(e["session_id"] == sid for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


async def test_ended_sessions_are_kept_for_keep_days_then_pruned(tmp_path):
    """`[store] keep_days = 1`: the daily prune removes a session ended over a day ago, with
    its events and its task (kept longer by keep_results), and keeps a younger one."""
    day = 86400
    extra = "keep_days = 1\n\n[tasks]\nkeep_results = 864000\n"  # continues [store]
    async with serve_lab(tmp_path, extra) as lab, lab.browser() as browser:
        old = await lab.start(length=600)
        await lab.visit(browser, old)
        async with browser.post(lab.url("/api/block?seconds=0.01")) as r:
            task_id = (await r.json())["task_id"]
        assert (await lab.runtime.tasks.get(task_id).join(timeout=10)).status == "done"
        await lab.call("DELETE", f"/ldl/sessions/{old}")
        await lab.advance(1.5 * day)  # the first daily prune: nothing ended over a day ago
        assert await lab.runtime.store.session(old) is not None
        young = await lab.start(length=600)
        await lab.call("DELETE", f"/ldl/sessions/{young}")
        await lab.advance(0.6 * day)  # the second: `old` ended 2.1 days ago
        store = lab.runtime.store
        assert await store.session(old) is None
        assert await store.events(old) == []
        assert await store.task(task_id) is None
        assert (await store.session(young)).state.value == "ended"
        assert [e["kind"] for e in await store.events(young)][-1] == "ended"


def _run_once(config, *args):
    return subprocess.run(
        [sys.executable, "-m", "labrt", "run", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_second_labrt_on_the_same_store_is_refused(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    env = {"LABRT_TEST_RECORD": str(record)}
    config = write_config(tmp_path)
    first = Spawned(config, env)
    try:
        with urllib.request.urlopen(_start_request(first.url)) as answer:
            sid = json.loads(answer.read())["session_id"]
        monkeypatch.setenv("LABRT_TEST_RECORD", str(record))
        second = _run_once(config, "--port", "0")
        assert second.returncode == 1
        assert "another labrt is already running on this store" in second.stderr
        # The first one's student was not touched by the second's start and stop.
        assert [json.loads(line)["event"] for line in record.read_text().splitlines()] == ["start"]
        with urllib.request.urlopen(_status_request(first.url, sid)) as answer:
            assert json.loads(answer.read()) == {"should_finish": 5}
    finally:
        assert first.stop() == 0


@pytest.mark.slow
def test_a_port_in_use_leaves_running_slots_to_the_next_start(tmp_path):
    record = tmp_path / "record.jsonl"
    env = {"LABRT_TEST_RECORD": str(record)}
    config = write_config(tmp_path)
    lab = Spawned(config, env)
    with urllib.request.urlopen(_start_request(lab.url)) as answer:
        sid = json.loads(answer.read())["session_id"]
    lab.kill()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = _run_once(config, "--port", str(port))
    assert failed.returncode == 1 and "cannot listen" in failed.stderr
    db = sqlite3.connect(tmp_path / "labrt.sqlite")
    try:
        assert db.execute("SELECT state FROM sessions WHERE sid = ?", (sid,)).fetchone() == (
            "active",
        )
    finally:
        db.close()
    assert "dispose" not in record.read_text()
    again = Spawned(config, env)
    try:
        with urllib.request.urlopen(_status_request(again.url, sid)) as answer:
            assert json.loads(answer.read()) == {"should_finish": 5}
    finally:
        assert again.stop() == 0


def _start_request(url):
    return urllib.request.Request(
        f"{url}/ldl/sessions/",
        data=json.dumps(new_body(time.time())).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
        method="POST",
    )


def _status_request(url, sid):
    return urllib.request.Request(f"{url}/ldl/sessions/{sid}/status", headers=AUTH)


def _modes(directory):
    """The permission bits of every file of the store (main, -wal, -shm), by name."""
    return {p.name: oct(p.stat().st_mode & 0o777) for p in sorted(directory.glob("labrt.sqlite*"))}


@pytest.fixture
def umask_022():
    """The usual login umask, under which a plain create is world-readable (0644)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_store_files_are_0600_whatever_the_umask(tmp_path, umask_022):
    """The store holds the cookie secret and every session id: a local account that reads it
    can take over a student's session, so neither the file nor its WAL and SHM may be
    readable by anyone but labrt, whatever umask it was started with."""
    store = await Store.open(tmp_path / "labrt.sqlite")
    try:
        await store.secret("cookie")  # a write: the -wal and -shm files exist now
        modes = _modes(tmp_path)
    finally:
        await store.close()
    assert set(modes) == {
        "labrt.sqlite",
        "labrt.sqlite-wal",
        "labrt.sqlite-shm",
        "labrt.sqlite.lock",
    }
    assert modes == dict.fromkeys(modes, "0o600")


async def test_an_older_world_readable_store_is_tightened_at_open(tmp_path, umask_022):
    """A store made by an older labrt is 0644, and so are its -wal/-shm while it is open (or
    after a crash): opening it makes them all 0600, since SQLite never changes the mode of a
    file that already exists."""
    path = tmp_path / "labrt.sqlite"
    db = sqlite3.connect(path)  # a pre-existing store, 0644 under this umask
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    before = _modes(tmp_path)  # the connection still open: its -wal and -shm exist
    assert before["labrt.sqlite"] == before["labrt.sqlite-wal"] == "0o644"
    assert before["labrt.sqlite-shm"] == "0o644"
    try:
        store = await Store.open(path)
        try:
            modes = _modes(tmp_path)
        finally:
            await store.close()
    finally:
        db.close()
    assert modes["labrt.sqlite"] == "0o600"
    assert modes["labrt.sqlite-wal"] == "0o600"
    assert modes["labrt.sqlite-shm"] == "0o600"
