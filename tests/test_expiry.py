"""Every way a slot runs out, on a fake clock: no test here sleeps."""

from __future__ import annotations

import json

import pytest
from helpers import BODIES, PREFIXES, serve_lab, store_bytes


def dispose_calls(path, sid):
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(1 for e in lines if e["event"] == "dispose" and e["sid"] == sid)


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("LABRT_TEST_RECORD", str(path))
    return path


async def page_state(lab, browser):
    async with browser.get(lab.url("/labrt/status")) as r:
        return r.status, await r.json()


async def test_slot_end(tmp_path, record):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start(length=60)
        await lab.visit(browser, sid)
        await lab.work(browser, 59.5, step=4)
        assert await lab.should_finish(sid) == 1
        assert (await page_state(lab, browser))[1]["state"] == "active"
        assert dispose_calls(record, sid) == 0
        await lab.advance(0.5)  # the slot's last instant
        assert await lab.should_finish(sid) == -1
        assert dispose_calls(record, sid) == 1
        status, page = await page_state(lab, browser)
        assert (status, page["state"], page["reason"]) == (200, "expired", "expired")
        assert page["time_left"] == 0
        stored = await lab.runtime.store.session(sid)
        assert stored.state == "ended" and stored.end_reason == "expired"


async def test_poll_timeout(tmp_path, record):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        await lab.advance(14.9)
        assert await lab.should_finish(sid) == 5
        await lab.advance(0.1)  # 15 s without a poll
        assert await lab.should_finish(sid) == -1
        assert dispose_calls(record, sid) == 1
        assert (await lab.runtime.store.session(sid)).end_reason == "timed-out"


async def test_first_visit_grace(tmp_path, record):
    """Before the student arrives, the lab waits max(timeout, 60) s, not 15."""
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        late, never = await lab.start(), await lab.start()
        await lab.advance(50)
        assert await lab.should_finish(late) == 5
        await lab.visit(browser, late)  # arrives after 50 s: from now on the 15 s rule
        await lab.advance(9.9)
        assert await lab.should_finish(never) == 5
        await lab.advance(0.1)
        assert await lab.should_finish(never) == -1
        assert (await lab.runtime.store.session(never)).end_reason == "timed-out"
        assert await lab.should_finish(late) == 5
        await lab.advance(5)
        assert await lab.should_finish(late) == -1
        assert dispose_calls(record, late) == dispose_calls(record, never) == 1


async def test_timeout_zero_disables_the_poll_timeout(tmp_path):
    async with serve_lab(tmp_path, "[session]\ntimeout = 0\n") as lab:
        sid = await lab.start(length=600)
        await lab.advance(599)
        assert await lab.should_finish(sid) == 1
        await lab.advance(1)
        assert await lab.should_finish(sid) == -1


async def test_poll_interval_zero_answers_zero(tmp_path):
    async with serve_lab(tmp_path, "[session]\npoll_interval = 0\n") as lab:
        sid = await lab.start()
        assert await lab.should_finish(sid) == 0


@pytest.mark.parametrize("how", ["labrt", "callback-get", "callback-post"])
async def test_logout(tmp_path, record, how):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        if how == "labrt":
            async with browser.post(lab.url("/labrt/logout")) as r:
                assert await r.json() == {"success": True, "back": "https://lde.example/back"}
        else:
            method = "GET" if how == "callback-get" else "POST"
            async with browser.request(method, lab.url(f"/callback/{sid}/logout")) as r:
                assert await r.json() == {"success": True}
        assert await lab.should_finish(sid) == -1
        assert dispose_calls(record, sid) == 1
        assert (await page_state(lab, browser))[1]["reason"] == "logged-out"
        async with browser.get(lab.url(f"/callback/{sid}/poll")) as r:
            assert await r.json() == {"success": False, "reason": "User inactive"}


async def test_poll_and_logout_need_the_same_session(tmp_path):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        mine, other = await lab.start(), await lab.start()
        await lab.visit(browser, mine)
        for path in (f"/callback/{other}/poll", f"/callback/{other}/logout"):
            async with browser.get(lab.url(path)) as r:
                assert await r.json() == {
                    "success": False,
                    "reason": "Different session identifier",
                }
        assert await lab.should_finish(other) == 5


async def test_expired_user_retention(tmp_path):
    extra = "[session]\nexpired_users_timeout = 600\n"
    async with serve_lab(tmp_path, extra) as lab, lab.browser() as browser:
        sid = await lab.start(length=60)
        await lab.visit(browser, sid)
        await lab.work(browser, 60)
        for _ in range(2):  # the link still works after the end: a reload shows "time over"
            await lab.visit(browser, sid)
            status, page = await page_state(lab, browser)
            assert (status, page["state"]) == (200, "expired")
            async with browser.get(lab.url("/api/whoami")) as r:
                assert r.status == 200 and (await r.json())["active"] is False
            await lab.advance(299)
        await lab.advance(2)  # 600 s after the end: forgotten
        status, page = await page_state(lab, browser)
        assert (status, page["state"]) == (401, "anonymous")
        async with browser.get(lab.url(f"/callback/{sid}"), allow_redirects=False) as r:
            assert r.status == 403
        assert await lab.should_finish(sid) == -1
        assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (200, {"message": "Not found"})


async def test_requires_active_denies_at_the_deadline_instant(tmp_path, record):
    """Even if no timer has run yet (a busy loop), the deadline is the deadline."""
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start(length=60)
        await lab.visit(browser, sid)
        await lab.work(browser, 55)
        lab.clock.advance(4.999, fire=False)
        async with browser.post(lab.url("/api/visit")) as r:
            assert r.status == 200
        lab.clock.advance(0.001, fire=False)
        async with browser.post(lab.url("/api/visit"), allow_redirects=False) as r:
            assert r.status == 401
            assert (await r.json())["back"] == "https://lde.example/back"
        html = {"Accept": "text/html"}
        async with browser.get(lab.url("/api/whoami"), headers=html) as r:
            assert (await r.json())["active"] is False
        async with browser.post(lab.url("/api/visit"), headers=html, allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "https://lde.example/back")
        assert await lab.should_finish(sid) in (-1, 2)
        await lab.settle()
        assert dispose_calls(record, sid) == 1
        # The student's clicks during the last second counted once each; data is kept.
        assert json.loads((await lab.runtime.store.session(sid)).stored_data) == {"visits": 1}


async def test_anonymous_is_forbidden(tmp_path):
    async with serve_lab(tmp_path) as lab:
        status, body = await lab.call("POST", "/api/visit", auth=None)
        assert status == 403 and "forbidden" in body["message"].lower()
        url = lab.url("/callback/" + "A" * 43)
        async with lab.browser() as browser, browser.get(url, allow_redirects=False) as r:
            assert r.status == 403


async def test_unauthorized_link_redirects(tmp_path):
    link = "https://rlms.example/login"
    keys = f'unauthorized_link = "{link}"'
    async with serve_lab(tmp_path, lab_keys=keys) as lab, lab.browser() as browser:
        for path in ("/api/whoami", "/callback/" + "A" * 43):
            async with browser.get(lab.url(path), allow_redirects=False) as r:
                assert (r.status, r.headers["Location"]) == (302, link)


@pytest.mark.parametrize("dialect", ["weblab", "ldl"])
async def test_a_slot_that_starts_in_the_future_is_refused_not_lengthened(tmp_path, dialect):
    """Admitted now, a five-minute slot starting in ten years would last ten years."""
    async with serve_lab(tmp_path) as lab:
        before = store_bytes(tmp_path)
        now = lab.clock.now()
        for start in (now + 10 * 365 * 86400, now + 3600):
            body = BODIES[dialect](start, 300)
            status, answer = await lab.call("POST", f"{PREFIXES[dialect]}/", json=body)
            assert status == 409 and answer["error"] is True, answer
            assert "the slot starts in" in answer["message"] and "clock" in answer["message"]
        assert store_bytes(tmp_path) == before
        # A little ahead (the two clocks differ by a minute) is a slot like any other.
        body = BODIES[dialect](now + 60, 300)
        status, answer = await lab.call("POST", f"{PREFIXES[dialect]}/", json=body)
        assert status == 200 and "session_id" in answer
