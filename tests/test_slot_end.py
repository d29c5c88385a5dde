"""Nothing a session runs outlives its slot.

At the end of a slot the session's coroutines (routes, message handlers) are cancelled and its
threads are waited for, then ``on_dispose`` runs, then the hardware is made safe; a thread that
will not return in time keeps the next student out (and ``/healthz`` names it) until it does.
Each test races real requests against the slot's end on the real server, with gpiozero's mock
pins, and reads the lamp's pin afterwards: the one thing a student must never find is a lamp
left on by the previous student's code.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from helpers import PREFIXES, new_body, serve_lab

from labrt import Lab, requires_active

LDL = PREFIXES["ldl"]
LAMP = """
[hardware]
pins = "mock"

[drivers.lamp]
kind = "gpio.output"
pin = 17
"""
# Long enough for the slot's end to come while a handler still waits; short for the suite.
ROUTE_WAIT = 1.0
# Shorter than the second a closing page has to answer (labrt.push.CLOSE_WAIT).
HANDLER_WAIT = 0.5


def lamp(lab) -> int:
    return lab.runtime.hardware.pin_factory.pin(17).state


def session_config(dispose_timeout: float) -> str:
    return LAMP + f"\n[session]\ndispose_timeout = {dispose_timeout}\n"


async def in_thread_soon(event: threading.Event) -> None:
    """Wait (without blocking the loop) until a thread of the lab sets ``event``."""
    assert await asyncio.to_thread(event.wait, 10), "the lab's thread never got there"


async def test_an_async_route_racing_the_slot_end_is_cancelled_before_on_dispose(tmp_path):
    app = Lab()
    seen: list[str] = []
    waiting = asyncio.Event()

    @app.on_dispose
    async def dispose():
        seen.append(f"on_dispose, lamp {app.hardware.lamp.state()['value']}")

    @app.route("POST", "/lamp")
    @requires_active
    async def switch(request):
        waiting.set()
        await asyncio.sleep(ROUTE_WAIT)
        app.hardware.lamp.on()
        seen.append("switched")
        return {"on": True}

    async with serve_lab(tmp_path, LAMP, lab=app) as lab, lab.browser() as browser:
        sid = await lab.start(length=300)
        await lab.visit(browser, sid)
        request = asyncio.ensure_future(browser.post(lab.url("/lamp")))
        await waiting.wait()
        await lab.advance(300)  # the slot ends while the route awaits
        async with await request as r:
            assert (r.status, (await r.json())["message"]) == (401, "Your session is over.")
        await asyncio.sleep(ROUTE_WAIT + 0.2)  # past the moment the route meant to switch
        assert seen == ["on_dispose, lamp 0"]
        assert lamp(lab) == 0


@pytest.mark.parametrize("kind", ["async", "thread"])
async def test_a_message_handler_racing_the_slot_end_is_stopped_before_on_dispose(tmp_path, kind):
    app = Lab()
    seen: list[str] = []
    waiting = threading.Event()

    @app.on_dispose
    async def dispose():
        seen.append("on_dispose")

    if kind == "async":

        @app.on_message("lamp")
        async def switch(data):
            waiting.set()
            await asyncio.sleep(HANDLER_WAIT)
            app.hardware.lamp.on()
            seen.append("switched")

    else:

        @app.on_message("lamp")
        def switch(data):  # a thread: cannot be cancelled, so the dispose waits for it
            waiting.set()
            time.sleep(HANDLER_WAIT)
            app.hardware.lamp.on()
            seen.append("switched")

    async with serve_lab(tmp_path, LAMP, lab=app) as lab, lab.browser() as browser:
        sid = await lab.start(length=300)
        await lab.visit(browser, sid)
        # A page that does not answer the close: its socket stays up a moment after "ended".
        async with browser.ws_connect(lab.url("/labrt/ws"), autoclose=False) as ws:
            assert (await ws.receive_json())["event"] == "session"
            await ws.send_json({"event": "lamp", "data": None})
            await in_thread_soon(waiting)
            await lab.advance(300)
            assert (await ws.receive_json(timeout=5))["event"] == "ended"
            await asyncio.sleep(HANDLER_WAIT + 0.2)
            # The thread finished before on_dispose; the coroutine never switched.
            assert seen == (["on_dispose"] if kind == "async" else ["switched", "on_dispose"])
            assert lamp(lab) == 0


async def test_forty_slow_thread_routes_neither_delay_on_dispose_nor_outlive_it(tmp_path):
    """A student sends 40 slow plain-``def`` requests just before the end: the few running
    are waited for, those still queued never start, and on_dispose runs at once, in a pool
    of its own."""
    app = Lab()
    on_dispose_at: list[float] = []
    running = threading.Event()

    @app.on_dispose
    def dispose():
        on_dispose_at.append(time.monotonic())

    @app.route("POST", "/lamp")
    @requires_active
    def switch(request):
        running.set()
        time.sleep(0.3)
        app.hardware.lamp.on()
        return {"on": True}

    async with (
        serve_lab(tmp_path, session_config(2), lab=app) as lab,
        lab.browser() as browser,
    ):
        sid = await lab.start(length=300)
        await lab.visit(browser, sid)
        requests = [asyncio.ensure_future(browser.post(lab.url("/lamp"))) for _ in range(40)]
        await in_thread_soon(running)
        ended = time.monotonic()
        await lab.advance(300)
        statuses = []
        for request in requests:
            async with await request as r:
                statuses.append(r.status)
        assert on_dispose_at and on_dispose_at[0] - ended < 2  # within dispose_timeout
        assert set(statuses) <= {200, 401} and statuses.count(401) >= 20
        await asyncio.sleep(0.5)
        assert lamp(lab) == 0


def stubborn_lab(release: threading.Event, where: str) -> tuple[Lab, list[str], threading.Event]:
    """A lab whose code in ``where`` (a task, on_dispose or a route) ignores the end of its
    slot: it waits for ``release``, then switches the lamp on."""
    app = Lab()
    events: list[str] = []
    inside = threading.Event()

    def stubborn() -> None:
        events.append(f"{where} begins")
        inside.set()
        release.wait(30)  # ignores current_task.stopping and every timeout
        app.hardware.lamp.on()
        events.append(f"{where} returns")

    @app.on_start
    def start(client_data, server_data):
        events.append(f"on_start, lamp {app.hardware.lamp.state()['value']}")

    if where == "task":
        task = app.task(stubborn)

        @app.route("POST", "/go")
        @requires_active
        async def go(request):
            await task.delay()
            return {}

    elif where == "route":

        @app.route("POST", "/go")
        @requires_active
        def go(request):
            stubborn()
            return {}

    else:
        app.on_dispose(stubborn)
    return app, events, inside


async def end_first_slot(lab, where: str, inside: threading.Event) -> str:
    """Start a session, have its stubborn code running, and dispose it as the RLMS would."""
    sid = await lab.start()
    async with lab.browser() as browser:
        await lab.visit(browser, sid)
        sending = None
        if where != "on_dispose":
            sending = asyncio.ensure_future(browser.post(lab.url("/go")))
            await in_thread_soon(inside)
        assert await lab.call("DELETE", f"{LDL}/{sid}") == (200, {"message": "Deleted"})
        if sending is not None:
            sending.cancel()
    if where == "on_dispose":
        await in_thread_soon(inside)
    return sid


async def healthz(lab) -> tuple[int, dict]:
    return await lab.call("GET", "/healthz", auth=None)


async def test_a_stubborn_thread_delays_the_next_on_start_and_is_reported(tmp_path):
    for where in ("task", "on_dispose", "route"):
        release = threading.Event()
        app, events, inside = stubborn_lab(release, where)
        directory = tmp_path / where
        directory.mkdir()
        async with serve_lab(directory, session_config(2), lab=app) as lab:
            await end_first_slot(lab, where, inside)
            second = asyncio.ensure_future(lab.start())
            await asyncio.sleep(0.3)
            assert not second.done(), f"{where}: the next student started beside it"
            status, health = await healthz(lab)
            assert status == 503
            assert any(where in problem for problem in health["problems"]), health
            metrics = await lab.call("GET", "/metrics", auth=None)
            assert f'labrt_stray_threads{{what="{where}' in metrics[1]
            release.set()
            await second
            # The thread's last act (the lamp on) came before the next on_start, which found
            # the lamp safe again: every start into an empty lab makes the hardware safe.
            assert events[-2:] == [f"{where} returns", "on_start, lamp 0"], (where, events)
            assert (await healthz(lab))[0] == 200


async def test_a_start_is_refused_while_a_thread_stays_stuck_past_the_bound(tmp_path):
    release = threading.Event()
    app, events, inside = stubborn_lab(release, "task")
    async with serve_lab(tmp_path, session_config(0.5), lab=app) as lab:
        try:
            await end_first_slot(lab, "task", inside)
            before = [s.sid for s in await lab.runtime.store.recent_sessions(10)]
            body = new_body(lab.clock.now())
            status, answer = await lab.call("POST", f"{LDL}/", json=body)
            assert status == 503 and answer["error"] is True
            assert "task stubborn" in answer["message"] and "still running" in answer["message"]
            after = [s.sid for s in await lab.runtime.store.recent_sessions(10)]
            assert after == before  # nothing stored
        finally:
            release.set()
        # Once it has returned, the lamp it switched goes safe at once, with nobody to start.
        async with asyncio.timeout(5):
            while lamp(lab) != 0:
                await asyncio.sleep(0.02)
        await lab.start()
        assert events[-1] == "on_start, lamp 0"


async def test_a_thread_that_outlived_its_session_leaves_the_lab_safe(tmp_path):
    release = threading.Event()
    app, events, inside = stubborn_lab(release, "route")
    async with serve_lab(tmp_path, session_config(0.3), lab=app) as lab:
        await end_first_slot(lab, "route", inside)
        assert lamp(lab) == 0
        release.set()  # the route switches the lamp on, after its session ended
        async with asyncio.timeout(5):
            while events[-1] != "route returns":
                await asyncio.sleep(0.01)
            while lamp(lab) != 0:
                await asyncio.sleep(0.01)
