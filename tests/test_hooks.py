"""The author's hooks: failures never leave a session half started or half ended."""

from __future__ import annotations

import asyncio
import logging

from helpers import serve_lab

from labrt import Lab, user


async def test_on_start_raising_disposes_and_answers_the_error(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("LABRT_TEST_RECORD", str(record))
    async with serve_lab(tmp_path) as lab:
        for dialect, prefix in (("weblab", "/weblab/sessions/"), ("ldl", "/ldl/sessions/")):
            from helpers import BODIES

            body = BODIES[dialect](lab.clock.now(), fail_start=True)
            assert await lab.call("POST", prefix, json=body) == (
                200,
                {"error": True, "message": "Error initializing laboratory"},
            )
        events = [line for line in record.read_text().splitlines()]
        assert len(events) == 4  # start, dispose, start, dispose
        assert [e.split('"event": "')[1].split('"')[0] for e in events] == [
            "start",
            "dispose",
            "start",
            "dispose",
        ]
        stored = await lab.runtime.store.recent_sessions(10)
        assert [(s.state, s.end_reason) for s in stored] == [("ended", "start-failed")] * 2
        # The lab is not broken by it: the next student gets in.
        sid = await lab.start()
        assert await lab.should_finish(sid) == 5


async def test_on_dispose_raising_is_logged_and_the_dispose_completes(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("LABRT_TEST_RECORD", str(tmp_path / "record.jsonl"))
    async with serve_lab(tmp_path) as lab:
        sid = await lab.start(fail_dispose=True)
        with caplog.at_level(logging.ERROR, logger="labrt.sessions"):
            assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (
                200,
                {"message": "Deleted"},
            )
        assert "on_dispose raised" in caplog.text
        assert "the board is on fire" in caplog.text  # the traceback is in the log
        assert (await lab.runtime.store.session(sid)).state == "ended"
        nxt = await lab.start()
        assert await lab.should_finish(nxt) == 5


async def test_next_student_waits_for_the_previous_dispose(tmp_path):
    lab_obj = Lab()
    release = asyncio.Event()
    order = []

    @lab_obj.on_start
    async def start(client_data, server_data):
        order.append(("start", user.username_unique))

    @lab_obj.on_dispose
    async def dispose():
        order.append(("dispose begins", user.username_unique))
        await release.wait()
        order.append(("dispose ends", user.username_unique))

    async with serve_lab(tmp_path, lab=lab_obj) as lab:
        first = await lab.start()
        disposing = asyncio.ensure_future(lab.call("DELETE", f"/ldl/sessions/{first}"))
        await asyncio.sleep(0.05)
        assert await lab.should_finish(first) == 2  # disposal running: ask again
        starting = asyncio.ensure_future(lab.start())
        await asyncio.sleep(0.05)
        assert not starting.done() and not disposing.done()
        release.set()
        assert await disposing == (200, {"message": "Deleted"})
        await starting
        assert [step for step, _ in order] == ["start", "dispose begins", "dispose ends", "start"]


async def test_dispose_timeout_bounds_a_stuck_on_dispose(tmp_path, caplog):
    lab_obj = Lab()

    @lab_obj.on_dispose
    async def dispose():
        await asyncio.Event().wait()  # never returns

    async with serve_lab(tmp_path, "[session]\ndispose_timeout = 0.2\n", lab=lab_obj) as lab:
        sid = await lab.start()
        with caplog.at_level(logging.ERROR):
            assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (
                200,
                {"message": "Deleted"},
            )
        assert "on_dispose still running" in caplog.text
        assert await lab.should_finish(sid) == -1


async def test_plain_hooks_run_off_the_loop_with_user_set(tmp_path):
    import threading

    lab_obj = Lab()
    seen = {}

    @lab_obj.on_start
    def start(client_data, server_data):
        seen["thread"] = threading.current_thread().name
        seen["user"] = user.username
        return {"from": "a thread"}

    async with serve_lab(tmp_path, lab=lab_obj) as lab:
        sid = await lab.start()
        assert lab.runtime.sessions.get(sid).data == {"from": "a thread"}
    assert seen["user"] == "jdoe"
    assert seen["thread"].startswith("labrt-hook")


async def test_on_start_returning_a_non_dict_fails_the_start(tmp_path):
    lab_obj = Lab()

    @lab_obj.on_start
    async def start(client_data, server_data):
        return ["not", "a", "dict"]

    async with serve_lab(tmp_path, lab=lab_obj) as lab:
        from helpers import new_body

        status, answer = await lab.call("POST", "/ldl/sessions/", json=new_body(lab.clock.now()))
        assert (status, answer["error"]) == (200, True)


async def test_max_concurrent_sessions(tmp_path):
    async with serve_lab(tmp_path, lab_keys="max_concurrent_sessions = 1") as lab:
        from helpers import new_body

        first = await lab.start()
        status, answer = await lab.call("POST", "/ldl/sessions/", json=new_body(lab.clock.now()))
        assert status == 503 and answer["error"] is True
        assert "at most 1" in answer["message"]
        await lab.call("DELETE", f"/ldl/sessions/{first}")
        await lab.start()


async def test_user_data_persists_between_requests_and_restarts(tmp_path):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        for expected in (1, 2):
            async with browser.post(lab.url("/api/visit")) as r:
                assert await r.json() == {"visits": expected}
        stored = await lab.runtime.store.session(sid)
        assert stored.data == {"visits": 2}
