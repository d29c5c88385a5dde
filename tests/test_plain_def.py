"""A lab written in weblablib's plain-``def`` style runs as written: in a thread, ``logout()``,
``task.delay()``, ``task.run_sync()`` and ``task.join()`` block until done and return what
they say, as weblablib's do, instead of making coroutines that never run.

The lab below is the seed's resource pattern (open with ``init.run_sync()`` in ``on_start``,
close with ``clean.run_sync()`` in ``on_dispose``) and routes that submit, wait and leave.
Apart from its imports and decorators it is weblablib code.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import serve_lab

from labrt import Lab, logout, requires_active, user


def weblablib_style_lab(events: list[str]) -> Lab:
    lab = Lab()

    @lab.task
    def init():
        events.append("opened")
        return "board ready"

    @lab.task
    def clean():
        events.append("closed")
        return "board released"

    @lab.task
    def double(n):
        return n * 2

    @lab.task
    def remember_the_user():
        events.append(f"task saw {user.username}")

    @lab.on_start
    def start(client_data, server_data):
        task = init.run_sync()
        user.data["init"] = task.result

    @lab.on_dispose
    def dispose():
        task = clean.run_sync(timeout=5)
        events.append(f"clean {task.status}: {task.result}")
        remember_the_user.delay()  # not waited for here: the dispose waits for it

    @lab.route("GET", "/api/init")
    @requires_active
    def init_result(request):
        return {"init": user.data.get("init")}

    @lab.route("POST", "/api/double")
    @requires_active
    def submit(request):
        task = double.delay(21)
        finished = task.join(timeout=5)
        return {"task_id": task.task_id, "status": finished.status, "result": finished.result}

    @lab.route("POST", "/api/leave")
    @requires_active
    def leave(request):
        return {"left": logout()}

    return lab


async def test_a_weblablib_style_lab_runs_unchanged(tmp_path):
    events: list[str] = []
    async with serve_lab(tmp_path, lab=weblablib_style_lab(events)) as lab:
        sid = await lab.start()
        assert events == ["opened"]  # on_start's run_sync really ran the task
        async with lab.browser() as browser:
            await lab.visit(browser, sid)
            async with browser.get(lab.url("/api/init")) as r:
                assert (r.status, await r.json()) == (200, {"init": "board ready"})
            async with browser.post(lab.url("/api/double")) as r:
                answer = await r.json()
                assert r.status == 200, answer
                assert (answer["status"], answer["result"]) == ("done", 42)
            assert lab.runtime.tasks.get(answer["task_id"]).result == 42
            async with browser.post(lab.url("/api/leave")) as r:
                assert (r.status, await r.json()) == (200, {"left": True})
        await lab.settle()
        assert await lab.should_finish(sid) == -1
        assert events == [
            "opened",
            "closed",
            "clean done: board released",
            "task saw jdoe",
        ]


async def test_without_a_session_a_thread_logout_is_false(tmp_path):
    lab = Lab()

    @lab.route("POST", "/api/leave")
    def leave(request):  # no @requires_active: anyone may call it
        return {"left": logout()}

    async with serve_lab(tmp_path, lab=lab) as served:
        status, answer = await served.call("POST", "/api/leave", auth=None)
        assert (status, answer) == (200, {"left": False})


async def test_a_call_nothing_can_wait_for_raises_at_once(tmp_path):
    """On the loop but outside any coroutine (a plain callback the loop runs), a coroutine
    could never be awaited: the call says so instead of doing nothing."""
    lab = Lab()

    @lab.task
    def job():
        return 1

    async with serve_lab(tmp_path, lab=lab):
        failures: list[BaseException] = []
        done = asyncio.Event()

        def callback() -> None:
            for call in (logout, job.delay):
                try:
                    call()
                except RuntimeError as exc:
                    failures.append(exc)
            done.set()

        asyncio.get_running_loop().call_soon(callback)
        await done.wait()
        assert len(failures) == 2
        assert all("call it from async def code" in str(e) for e in failures)


@pytest.mark.parametrize("where", ["async", "thread"])
async def test_both_spellings_give_the_same_task(tmp_path, where):
    lab = Lab()

    @lab.task
    def triple(n):
        return 3 * n

    if where == "async":

        @lab.route("POST", "/api/run")
        @requires_active
        async def run(request):
            task = await triple.run_sync(5)
            return {"result": task.result}

    else:

        @lab.route("POST", "/api/run")
        @requires_active
        def run(request):
            return {"result": triple.run_sync(5).result}

    async with serve_lab(tmp_path, lab=lab) as served, served.browser() as browser:
        await served.visit(browser, await served.start())
        async with browser.post(served.url("/api/run")) as r:
            assert (r.status, await r.json()) == (200, {"result": 15})


async def test_a_plain_def_waiting_on_the_loop_ends_with_its_slot(tmp_path):
    """A plain def route that waits, through one spelling, on a coroutine with no bound of
    its own (an input that never becomes active) must not outlive the slot: the dispose
    cancels what the thread waits for, the thread returns, and the next student is let in
    at once instead of waiting for (then being refused because of) a stray thread."""
    lab = Lab()
    waiting = asyncio.Event()

    @lab.route("POST", "/api/wait")
    @requires_active
    def wait(request):
        loop = lab.hardware.button.env.loop
        loop.call_soon_threadsafe(waiting.set)
        return {"pressed": lab.hardware.button.wait_for_active()}  # no timeout: for ever

    settings = """
    [session]
    dispose_timeout = 2

    [hardware]
    pins = "mock"

    [drivers.button]
    kind = "gpio.input"
    pin = 4
    """
    async with (
        asyncio.timeout(20),  # without the defence, the stuck thread would hang the test
        serve_lab(tmp_path, settings, lab=lab) as served,
        served.browser() as browser,
    ):
        sid = await served.start()
        await served.visit(browser, sid)
        request = asyncio.ensure_future(browser.post(served.url("/api/wait")))
        await asyncio.wait_for(waiting.wait(), 5)
        status, _ = await served.call("DELETE", f"/ldl/sessions/{sid}")
        assert status == 200
        await served.settle()
        async with await request as r:
            assert r.status == 401  # the route ended with its slot: "your session is over"
        assert served.runtime.sessions.strays() == []
        assert served.runtime.hooks.running() == []
        await served.start()  # admitted: nothing of the last session is still running
