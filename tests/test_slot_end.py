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
import contextlib
import sqlite3
import threading
import time

import aiohttp
import pytest
from helpers import PREFIXES, new_body, serve_lab

from labrt import Lab, requires_active
from labrt.model import State

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
# Shorter than the second a closing page has to answer (labrt._engine.push.CLOSE_WAIT).
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


def stubborn_lab(
    release: threading.Event, where: str, how: str
) -> tuple[Lab, list[str], threading.Event]:
    """A lab whose code in ``where`` (a task, on_dispose or a route) ignores the end of its
    slot: it waits for ``release``, then switches the lamp on. ``how``: in a thread; as a
    coroutine that swallows its cancellation; or (a route) a coroutine awaiting
    ``asyncio.to_thread``."""
    app = Lab()
    events: list[str] = []
    inside = threading.Event()

    def stubborn(*_: object) -> None:  # a route's handler is given the request
        events.append(f"{where} begins")
        inside.set()
        release.wait(30)  # ignores current_task.stopping and every timeout
        app.hardware.lamp.on()
        events.append(f"{where} returns")

    async def stubborn_coroutine(*_: object) -> None:
        events.append(f"{where} begins")
        inside.set()
        while not release.is_set():
            # "Retry until the board answers": the end of the slot is swallowed.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        app.hardware.lamp.on()
        events.append(f"{where} returns")

    async def stubborn_to_thread(*_: object) -> None:
        await asyncio.to_thread(stubborn)

    code = {"thread": stubborn, "coroutine": stubborn_coroutine, "to_thread": stubborn_to_thread}
    code = code[how]

    @app.on_start
    def start(client_data, server_data):
        events.append(f"on_start, lamp {app.hardware.lamp.state()['value']}")

    if where == "task":
        task = app.task(code)

        @app.route("POST", "/go")
        @requires_active
        async def go(request):
            await task.delay()
            return {}

    elif where == "route":
        app.route("POST", "/go")(requires_active(code))
    else:
        app.on_dispose(code)
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


@pytest.mark.parametrize(
    ("where", "how"),
    [
        ("task", "thread"),
        ("on_dispose", "thread"),
        ("route", "thread"),
        ("task", "coroutine"),
        ("on_dispose", "coroutine"),
        ("route", "coroutine"),
        ("route", "to_thread"),
    ],
)
async def test_stubborn_code_delays_the_next_on_start_and_is_reported(tmp_path, where, how):
    release = threading.Event()
    app, events, inside = stubborn_lab(release, where, how)
    async with serve_lab(tmp_path, session_config(2), lab=app) as lab:
        try:
            await end_first_slot(lab, where, inside)
            second = asyncio.ensure_future(lab.start())
            await asyncio.sleep(0.3)
            assert not second.done(), "the next student started beside it"
            status, health = await healthz(lab)
            assert status == 503
            named = "thread stubborn" if how == "to_thread" else where
            assert any(named in problem for problem in health["problems"]), health
            metrics = await lab.call("GET", "/metrics", auth=None)
            assert f'labrt_stray_calls{{what="{named}' in metrics[1]
        finally:
            release.set()
        await second
        # Its last act (the lamp on) came before the next on_start, which found the lamp
        # safe again: every start into an empty lab makes the hardware safe.
        assert events[-2:] == [f"{where} returns", "on_start, lamp 0"], events
        assert (await healthz(lab))[0] == 200


async def test_a_start_is_refused_while_a_thread_stays_stuck_past_the_bound(tmp_path):
    release = threading.Event()
    app, events, inside = stubborn_lab(release, "task", "thread")
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
    app, events, inside = stubborn_lab(release, "route", "thread")
    async with serve_lab(tmp_path, session_config(0.3), lab=app) as lab:
        await end_first_slot(lab, "route", inside)
        assert lamp(lab) == 0
        release.set()  # the route switches the lamp on, after its session ended
        async with asyncio.timeout(5):
            while events[-1] != "route returns":
                await asyncio.sleep(0.01)
            while lamp(lab) != 0:
                await asyncio.sleep(0.01)


async def test_a_flood_from_outside_the_slot_does_not_delay_the_student_in_it(tmp_path):
    """Slow public plain-``def`` routes, hit by anyone, fill only their own threads."""
    app = Lab()
    gate, blocked = threading.Event(), threading.Semaphore(0)

    @app.route("GET", "/public")
    def public(request):
        blocked.release()
        gate.wait(30)
        return {}

    @app.route("POST", "/lamp")
    @requires_active
    def switch(request):
        app.hardware.lamp.on()
        return {"on": True}

    async with (
        serve_lab(tmp_path, LAMP, lab=app) as lab,
        lab.browser() as browser,
        aiohttp.ClientSession() as outsider,
    ):
        sid = await lab.start()
        await lab.visit(browser, sid)
        flood = [asyncio.ensure_future(outsider.get(lab.url("/public"))) for _ in range(30)]
        try:
            for _ in range(4):  # every thread that serves nobody's requests is taken
                assert await asyncio.to_thread(blocked.acquire, timeout=10)
            async with asyncio.timeout(5), browser.post(lab.url("/lamp")) as r:
                assert r.status == 200
            assert lamp(lab) == 1
        finally:
            gate.set()
            for request in flood:
                (await request).release()


async def test_an_initial_url_hook_cut_by_the_slot_end_answers_session_over(tmp_path):
    app = Lab()
    entered = asyncio.Event()

    @app.initial_url
    async def where():
        entered.set()
        await asyncio.sleep(ROUTE_WAIT)
        return "/"

    async with serve_lab(tmp_path, lab=app) as lab, lab.browser() as browser:
        sid = await lab.start()
        visit = asyncio.ensure_future(browser.get(lab.url(f"/callback/{sid}")))
        await entered.wait()
        assert await lab.call("DELETE", f"{LDL}/{sid}") == (200, {"message": "Deleted"})
        async with await visit as r:
            assert (r.status, (await r.json())["message"]) == (401, "Your session is over.")


async def test_a_dispose_at_work_is_not_reported_as_stray_code(tmp_path):
    """While on_dispose is still within its bound, /healthz has nothing to say about it."""
    app = Lab()
    inside, release = threading.Event(), threading.Event()

    @app.on_dispose
    def dispose():
        inside.set()
        release.wait(10)

    async with serve_lab(tmp_path, session_config(5), lab=app) as lab:
        sid = await lab.start()
        disposing = asyncio.ensure_future(lab.call("DELETE", f"{LDL}/{sid}"))
        try:
            await in_thread_soon(inside)
            status, health = await healthz(lab)
            assert status == 200 and health["stray_calls"] == []
        finally:
            release.set()
        assert await disposing == (200, {"message": "Deleted"})


async def test_a_dispose_the_store_could_not_finish_keeps_the_next_student_out(tmp_path):
    """A slot whose end could not be written stays "disposing": the next start retries that
    dispose first, and is refused while it still fails, admitted once it went through. The
    failure is SQLite's own, raised by a trigger on the lab's real store file."""
    async with serve_lab(tmp_path, LAMP) as h:
        first = await h.start()
        db = sqlite3.connect(h.runtime.store.path)
        db.execute(
            "CREATE TRIGGER broken BEFORE UPDATE OF state ON sessions "
            "WHEN NEW.state = 'ended' BEGIN SELECT RAISE(ABORT, 'the disk is failing'); END"
        )
        db.commit()
        try:
            status, _ = await h.call("DELETE", f"{LDL}/{first}")
            assert status == 500
            assert h.runtime.sessions.get(first).state is State.DISPOSING
            status, answer = await h.call("POST", f"{LDL}/", json=new_body(h.clock.now()))
            assert status == 503, answer
            assert "could not be disposed" in answer["message"]
            assert [s.state for s in await h.runtime.store.unfinished_sessions()] == [
                State.DISPOSING
            ]
        finally:
            db.execute("DROP TRIGGER broken")
            db.commit()
            db.close()
        second = await h.start()
        assert h.runtime.sessions.get(first).state is State.ENDED
        assert [s.sid for s in await h.runtime.store.unfinished_sessions()] == [second]
        kinds = [(e["session_id"], e["kind"]) for e in await h.runtime.store.events()]
        assert kinds.index((first, "ended")) < kinds.index((second, "starting"))
