"""The whole hand-over in both dialects, over real HTTP, with protocol.md's exact shapes."""

from __future__ import annotations

import re

import pytest
from helpers import AUTH, PREFIXES, serve_lab

SID = re.compile(r"[A-Za-z0-9_-]{43}")


@pytest.mark.parametrize("dialect", ["weblab", "ldl"])
async def test_api_and_test_endpoints(tmp_path, dialect):
    async with serve_lab(tmp_path) as lab:
        prefix = PREFIXES[dialect]
        assert await lab.call("GET", f"{prefix}/api", auth=None) == (200, {"api_version": "1"})
        assert await lab.call("GET", f"{prefix}/test") == (200, {"valid": True})
        # Other spellings of the same credentials are the same credentials.
        token = AUTH["Authorization"].split(" ")[1]
        for spelled in (f"basic {token}", f"BASIC  {token} ", f"Basic {token}\t"):
            assert await lab.call("GET", f"{prefix}/test", auth={"Authorization": spelled}) == (
                200,
                {"valid": True},
            ), spelled


async def test_both_dialects_at_once(tmp_path):
    """Two RLMS, one per prefix, each with a student in the lab at the same time."""
    async with serve_lab(tmp_path) as lab:
        sids = {d: await lab.start(d) for d in PREFIXES}
        assert sids["weblab"] != sids["ldl"]
        browsers = {d: lab.browser() for d in PREFIXES}
        try:
            for dialect, sid in sids.items():
                await lab.visit(browsers[dialect], sid)
            for dialect, sid in sids.items():
                assert await lab.should_finish(sid, dialect) == 5
                async with browsers[dialect].get(lab.url("/api/whoami")) as r:
                    assert (await r.json())["active"] is True
            # Status is one namespace: either prefix answers for either session.
            assert await lab.should_finish(sids["ldl"], "weblab") == 5
            status, answer = await lab.call(
                "POST",
                "/weblab/sessions/status/multiple",
                json={"session_ids": [*sids.values(), "unknown"]},
            )
            assert (status, answer) == (
                200,
                {"status": {sids["weblab"]: 5, sids["ldl"]: 5, "unknown": -1}},
            )
        finally:
            for browser in browsers.values():
                await browser.close()


@pytest.mark.parametrize("dialect", ["weblab", "ldl"])
async def test_full_hand_over(tmp_path, dialect):
    prefix = PREFIXES[dialect]
    async with serve_lab(tmp_path) as lab:
        start = lab.clock.now()
        body = {"weblab": _legacy, "ldl": _new}[dialect](lab, start)
        status, answer = await lab.call("POST", f"{prefix}/", json=body)
        assert status == 200
        assert set(answer) == {"url", "session_id"}
        sid = answer["session_id"]
        assert SID.fullmatch(sid)
        assert answer["url"] == lab.url(f"/callback/{sid}")

        async with lab.browser() as browser:
            # The callback sets the cookie and sends the student to the initial URL.
            async with browser.get(answer["url"], allow_redirects=False) as r:
                assert r.status == 302
                assert r.headers["Location"] == "/"
                cookie = r.cookies["labrt"]
                assert cookie["httponly"] and cookie["samesite"] == "Lax"
            async with browser.get(lab.url("/")) as r:
                assert r.status == 200
                assert "hello from the test lab" in await r.text()
            async with browser.get(lab.url("/api/whoami")) as r:
                who = await r.json()
            assert who["username"] == "jdoe" and who["active"] is True
            assert 299 < who["time_left"] <= 300

            # The RLMS polls while the student works; the answer shrinks in the last seconds.
            assert await lab.should_finish(sid, dialect) == 5
            await lab.work(browser, 296.5)
            async with browser.get(lab.url(f"/callback/{sid}/poll")) as r:
                assert await r.json() == {"success": True}
            assert await lab.should_finish(sid, dialect) == 3
            await lab.advance(3)
            assert await lab.should_finish(sid, dialect) == 1  # last second: 1, never 0

            # The RLMS ends the slot; the page then learns its time is over.
            if dialect == "ldl":
                assert await lab.call("DELETE", f"{prefix}/{sid}") == (200, {"message": "Deleted"})
            else:
                assert await lab.call("POST", f"{prefix}/{sid}", json={"action": "delete"}) == (
                    200,
                    {"message": "Deleted"},
                )
            assert await lab.should_finish(sid, dialect) == -1
            async with browser.get(lab.url("/labrt/status")) as r:
                page = await r.json()
            assert page["state"] == "expired" and page["reason"] == "disposed-by-rlms"
            assert page["back"] == body_back(body)
            async with browser.post(lab.url("/api/visit"), allow_redirects=False) as r:
                assert r.status == 401 and (await r.json())["back"] == body_back(body)
        # Disposing again is harmless; an unknown session is "Not found".
        assert await lab.call("DELETE", f"{prefix}/{sid}") == (200, {"message": "Deleted"})
        unknown = "x" * 43
        assert await lab.call("DELETE", f"{prefix}/{unknown}") == (200, {"message": "Not found"})
        assert await lab.call("POST", f"{prefix}/{sid}", json={"action": "nope"}) == (
            200,
            {"message": "Unknown op"},
        )

        stored = await lab.runtime.store.session(sid)
        assert stored.state == "ended" and stored.end_reason == "disposed-by-rlms"
        assert stored.request.username_unique == "jdoe@uni"
        assert stored.request.experiment_id == "blink@Electronics"
        events = [e["kind"] for e in await lab.runtime.store.events(sid)]
        assert events == ["starting", "started", "disposing", "on-dispose-done", "ended"]


def body_back(body):
    return body.get("back") or body["request"]["backUrl"]


def _legacy(lab, start):
    return {
        "client_initial_data": {"mode": "advanced"},
        "server_initial_data": {
            "priority.queue.slot.start.timestamp": str(start),
            "priority.queue.slot.length": "300",
            "request.username": "jdoe",
            "request.username.unique": "jdoe@uni",
            "request.full_name": "Jane Doe",
            "request.experiment_id.experiment_name": "blink",
            "request.experiment_id.category_name": "Electronics",
        },
        "back": "https://rlms.example/after",
    }


def _new(lab, start):
    import datetime as dt

    iso = dt.datetime.fromtimestamp(start, dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "request": {"backUrl": "https://lde.example/back", "ldeReservationId": "r1"},
        "laboratory": {"name": "blink", "category": "Electronics"},
        "user": {"username": "jdoe", "unique": "jdoe@uni"},
        "schedule": {"start": iso, "length": 300},
    }


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (
            "weblab",
            {
                "locale": "es",
                "experiment_id": "blink@Electronics",
                "full_name": "Jane Doe",
                "client_data": {"a": 1},
            },
        ),
        (
            "ldl",
            {
                "locale": "en",
                "experiment_id": "blink@Electronics",
                "full_name": "Jane Doe",
                "client_data": {"a": 1},
            },
        ),
    ],
)
async def test_user_fields_from_either_dialect(tmp_path, dialect, expected):
    seen = {}
    from labrt import Lab, user

    lab_obj = Lab()

    @lab_obj.on_start
    async def start(client_data, server_data):
        seen.update(
            locale=user.locale,
            experiment_id=user.experiment_id,
            full_name=user.full_name,
            client_data=client_data,
            active=user.active,
            time_left=user.time_left,
            request_server_data=user.request_server_data,
        )

    async with serve_lab(tmp_path, lab=lab_obj) as lab:
        await lab.start(dialect, a=1)
    assert {k: seen[k] for k in expected} == expected
    assert seen["active"] is True and seen["time_left"] > 299
    if dialect == "weblab":
        assert seen["request_server_data"]["reservation_id"] == "r-1"  # extra keys pass through
    else:
        assert seen["request_server_data"] == {"tag": "x"}


async def test_category_less_new_dialect_uses_name_as_id(tmp_path):
    async with serve_lab(tmp_path) as lab:
        body = _new(lab, lab.clock.now())
        del body["laboratory"]["category"]
        status, answer = await lab.call("POST", "/ldl/sessions/", json=body)
        assert status == 200
        stored = await lab.runtime.store.session(answer["session_id"])
        assert stored.request.experiment_id == "blink" and stored.request.locale == "en"


async def test_public_url_and_base_url(tmp_path):
    extra = """
    [server]
    base_url = "/labs/one"
    public_url = "https://lab.example.org"
    """
    async with serve_lab(tmp_path, extra) as lab:
        body = _new(lab, lab.clock.now())
        status, answer = await lab.call("POST", "/labs/one/ldl/sessions/", json=body)
        assert status == 200
        assert answer["url"] == f"https://lab.example.org/callback/{answer['session_id']}"
        assert (await lab.call("GET", "/ldl/sessions/api"))[0] == 404
