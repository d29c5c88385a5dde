"""Live push over WebSocket: real clients against the real server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import time

import aiohttp
import pytest
from helpers import Spawned, serve_lab, write_config
from yarl import URL

from labrt import Lab, current_task, requires_active, user


def push_lab() -> Lab:
    lab = Lab()

    @lab.on_message("light")
    async def light(data):
        await lab.push("light", {"on": data["on"], "by": user.username})

    @lab.on_message("slow")
    async def slow(data):
        await asyncio.sleep(data)
        await lab.push("slow", "done")

    @lab.on_message("sync")
    def sync(data):
        user.data["sync"] = data  # a plain def handler, in a thread, with user set

    @lab.route("POST", "/broadcast")
    async def broadcast(request):
        body = await request.json()
        return {"pages": await lab.broadcast(body["event"], body["data"])}

    @lab.route("POST", "/push")
    @requires_active
    async def push(request):
        body = await request.json()
        return {"pages": await lab.push(body["event"], body["data"])}

    @lab.task
    def count(n):
        for i in range(n):
            current_task.data["i"] = i
            current_task.store()
            lab.push("counted", i)  # from a thread: no await
        return n

    @lab.route("POST", "/count")
    @requires_active
    async def submit(request):
        return (await count.delay(3)).as_dict()

    return lab


async def student(lab):
    sid = await lab.start()
    browser = lab.browser()
    await lab.visit(browser, sid)
    return sid, browser


async def connect(lab, browser, **kwargs):
    return await browser.ws_connect(lab.url("/labrt/ws"), **kwargs)


async def next_event(ws, timeout=5):
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def until(ws, event, timeout=5):
    async with asyncio.timeout(timeout):
        while True:
            message = await next_event(ws, timeout)
            if message["event"] == event:
                return message["data"]


async def closed(ws, timeout=5):
    """Read until the close; returns the code the server closed with."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                return message.data
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code


async def test_push_reaches_every_tab_of_the_session_and_no_one_else(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        (_, alice), (_, bob) = await student(lab), await student(lab)
        async with alice, bob:
            tabs = [await connect(lab, alice) for _ in range(3)]
            other = await connect(lab, bob)
            for ws in [*tabs, other]:
                hello = await until(ws, "session")
                assert hello["state"] == "active" and 299 < hello["time_left"] <= 300
            await tabs[0].send_json({"event": "light", "data": {"on": True}})
            for ws in tabs:
                assert await until(ws, "light") == {"on": True, "by": "jdoe"}
            async with alice.post(lab.url("/push"), json={"event": "x", "data": [1]}) as r:
                assert await r.json() == {"pages": 3}
            for ws in tabs:
                assert await until(ws, "x") == [1]
            # Bob heard nothing of Alice's events.
            with pytest.raises(TimeoutError):
                await next_event(other, timeout=0.2)
            for ws in [*tabs, other]:
                await ws.close()


async def test_broadcast_and_spectators(tmp_path):
    async with serve_lab(tmp_path, lab_keys="spectators = true", lab=push_lab()) as lab:
        _, alice = await student(lab)
        async with alice, aiohttp.ClientSession() as nobody:
            mine = await connect(lab, alice)
            await until(mine, "session")
            watcher = await connect(lab, nobody)
            _, answer = await lab.call(
                "POST", "/broadcast", auth=None, json={"event": "board", "data": {"led": 1}}
            )
            assert answer == {"pages": 2}
            assert await until(mine, "board") == {"led": 1}
            assert await until(watcher, "board") == {"led": 1}
            # A spectator may watch, not act; and lab.push never reaches it.
            await watcher.send_json({"event": "keepalive"})  # labrt.js's: silently fine
            with pytest.raises(TimeoutError):
                await next_event(watcher, timeout=0.2)
            await watcher.send_json({"event": "light", "data": {"on": True}})
            assert (await until(watcher, "error"))["code"] == "read-only"
            async with alice.post(lab.url("/push"), json={"event": "mine", "data": 1}) as r:
                assert await r.json() == {"pages": 1}
            with pytest.raises(TimeoutError):
                await next_event(watcher, timeout=0.2)
            await mine.close()
            await watcher.close()


async def test_without_spectators_a_page_needs_a_session(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab, aiohttp.ClientSession() as nobody:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(lab, nobody)
        assert refused.value.status == 401


async def test_slot_end_sends_ended_then_closes(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            await lab.work(browser, 300)
            assert await until(ws, "ended") == {
                "reason": "expired",
                "back": "https://lde.example/back",
            }
            assert await closed(ws) == 4000


async def test_a_message_after_the_deadline_is_refused_even_before_the_timer(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        sid, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            await lab.work(browser, 295)
            lab.clock.advance(5, fire=False)  # the slot is over; no timer has run yet
            await ws.send_json({"event": "sync", "data": "too late"})
            assert (await until(ws, "ended"))["reason"] == "expired"
            assert await closed(ws) == 4000
        await lab.settle()
        assert (await lab.runtime.store.session(sid)).data == {}  # the handler never ran


async def test_bad_messages_are_answered_and_the_page_stays(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            for frame, code in (
                ("not json", "bad-message"),
                ("[1, 2]", "bad-message"),
                ('{"data": 1}', "bad-message"),
                ('{"event": 5}', "bad-message"),
                ('{"event": "light", "data": 1, "extra": 2}', "bad-message"),
                ('{"event": "teleport"}', "unknown-event"),
                (nested(100), "bad-message"),  # deeper than labrt takes, within json's reach
            ):
                await ws.send_str(frame)
                assert (await until(ws, "error"))["code"] == code
            await ws.send_bytes(b"\x00\x01")
            assert (await until(ws, "error"))["code"] == "bad-message"
            await ws.send_json({"event": "light", "data": "no dict"})  # the handler fails
            assert (await until(ws, "error"))["code"] == "handler-failed"
            await ws.send_json({"event": "light", "data": {"on": False}})
            assert (await until(ws, "light"))["on"] is False
            await ws.close()


async def test_oversize_and_floods_close_one_page_and_not_the_others(tmp_path):
    extra = "[push]\nmax_message_size = 1024\nmessages_per_second = 5\nmax_spectators = 200\n"
    async with serve_lab(tmp_path, extra, lab_keys="spectators = true", lab=push_lab()) as lab:
        _, browser = await student(lab)
        # No limit on connections: aiohttp's client allows 100 by default.
        crowd = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with browser, crowd:
            watchers = await asyncio.gather(*(connect(lab, crowd) for _ in range(200)))
            big = await connect(lab, browser)
            await until(big, "session")
            await big.send_str(json.dumps({"event": "light", "data": "x" * 2000}))
            assert await closed(big) == 1009
            flood = await connect(lab, browser)
            await until(flood, "session")
            for _ in range(30):
                await flood.send_json({"event": "keepalive"})
            assert await closed(flood) == 4008
            binary = await connect(lab, browser)  # binary frames count too
            await until(binary, "session")
            for _ in range(30):
                await binary.send_bytes(b"\x00")
            assert await closed(binary) == 4008
            await lab.call("POST", "/broadcast", auth=None, json={"event": "still", "data": 1})
            got = await asyncio.gather(*(until(w, "still") for w in watchers))
            assert got == [1] * 200
            await asyncio.gather(*(w.close() for w in watchers))


async def test_a_page_that_stops_reading_does_not_delay_the_others(tmp_path):
    extra = "[push]\nsend_queue = 8\n"
    async with serve_lab(tmp_path, extra, lab=push_lab()) as lab:
        sid, browser = await student(lab)
        async with browser:
            reader = await connect(lab, browser)
            await until(reader, "session")
            cookie = browser.cookie_jar.filter_cookies(lab.server.make_url("/"))["labrt"].value
            stalled = await stalled_page(lab, cookie)
            try:
                blob = "x" * 60_000
                # Far more than the stalled socket's buffers and queue can take.
                for i in range(300):
                    await lab.runtime.push.deliver(
                        json.dumps({"event": "blob", "data": [i, blob]}), sid=sid
                    )
                    message = await until(reader, "blob", timeout=5)
                    assert message[0] == i  # the reading page got each one at once
                async with asyncio.timeout(10):
                    while len(lab.runtime.push.pages_of(sid)) > 1:
                        await asyncio.sleep(0.01)  # the stalled page was dropped
            finally:
                stalled.close()
            await reader.close()


async def stalled_page(lab, cookie):
    """A WebSocket client that completes the handshake and then never reads again."""
    host, port = lab.server.host, lab.server.port
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /labrt/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nCookie: labrt={cookie}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return writer


def offer(token: str) -> tuple[str, str]:
    """The subprotocols labrt.js offers: the token travels in a header, never in the URL."""
    return ("labrt", f"labrt.token.{token}")


async def fresh_token(lab, browser) -> str:
    async with browser.get(lab.url("/labrt/status")) as r:
        return (await r.json())["ws_token"]


async def refused(lab, client, **kwargs) -> int:
    """The status a WebSocket handshake to /labrt/ws was refused with."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect(lab.url("/labrt/ws"), **kwargs)
    return caught.value.status


async def test_token_auth_without_cookies(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser, aiohttp.ClientSession() as iframe:  # no cookies in there
            token = await fresh_token(lab, browser)
            ws = await iframe.ws_connect(lab.url("/labrt/ws"), protocols=offer(token))
            assert ws.protocol == "labrt"  # a browser fails the connection without an answer
            assert (await until(ws, "session"))["state"] == "active"
            await ws.send_json({"event": "light", "data": {"on": True}})
            assert (await until(ws, "light"))["by"] == "jdoe"
            await ws.close()
            assert await refused(lab, iframe, protocols=offer(token)) == 401  # single use
            # By the cookie, offering only "labrt" as labrt.js does without a token.
            page = await connect(lab, browser, protocols=("labrt",))
            assert page.protocol == "labrt"
            await until(page, "session")
            await page.close()

            token = await fresh_token(lab, browser)
            forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
            for bad in (forged, "nonsense", "x" * 300, ""):
                assert await refused(lab, iframe, protocols=offer(bad)) == 401
            # A token offered without the "labrt" subprotocol itself: refused, not logged.
            only = (f"labrt.token.{token}",)
            assert await refused(lab, iframe, protocols=only) == 400

            # In the URL it would land in access logs: refused with a 400 saying where it
            # goes, and burnt.
            status, answer = await lab.call("GET", f"/labrt/ws?token={token}", auth=None)
            assert status == 400 and "Sec-WebSocket-Protocol" in answer["message"], answer
            assert await refused(lab, iframe, protocols=offer(token)) == 401

            token = await fresh_token(lab, browser)
            await lab.work(browser, 115)
            lab.clock.advance(10)  # the token was valid for 120 s
            assert await refused(lab, iframe, protocols=offer(token)) == 401

            token = await fresh_token(lab, browser)  # the session ends: its tokens with it
            async with browser.post(lab.url("/labrt/logout")) as r:
                assert r.status == 200
            await lab.settle()
            assert await refused(lab, iframe, protocols=offer(token)) == 401


async def raw_event(ws, event: str, timeout: float = 5) -> str:
    """The text of the next frame carrying ``event``, as the page receives it."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.TEXT, message
            if json.loads(message.data)["event"] == event:
                return message.data


async def test_nothing_served_to_a_page_opens_the_session(tmp_path):
    """Issue 14, case 3: the callback link is the only way in. Nothing page script can read
    carries the session id, and no part of the WebSocket token opens /callback/."""
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        sid, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            served = [await raw_event(ws, "session")]
            async with browser.get(lab.url("/labrt/status")) as r:
                served.append(await r.text())
                token = (await r.json())["ws_token"]
            async with browser.post(lab.url("/count")) as r:
                served.append(await r.text())
            served.append(await raw_event(ws, "task"))
            await ws.close()
            for text in served:
                assert sid not in text, text

            parts = {token, *re.split(r"[.\-_]", token)}
            for separator in ".-_":
                parts.update(token.split(separator))
            async with aiohttp.ClientSession() as stranger:
                for part in sorted(parts - {""}):
                    url = lab.url(f"/callback/{part}")
                    async with stranger.get(url, allow_redirects=False) as r:
                        assert "Set-Cookie" not in r.headers, part
                        assert r.status != 302, part
                # The control: the link the RLMS hands out does open the session.
                url = lab.url(f"/callback/{sid}")
                async with stranger.get(url, allow_redirects=False) as r:
                    assert r.status == 302 and "Set-Cookie" in r.headers


async def test_another_sites_page_cannot_open_the_socket(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await connect(lab, browser, origin="https://evil.example")
            assert refused.value.status == 403
            ws = await connect(lab, browser, origin=lab.url("/").rstrip("/"))
            await until(ws, "session")
            await ws.close()


async def test_task_changes_and_thread_pushes_reach_the_page(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            async with browser.post(lab.url("/count")) as r:
                task_id = (await r.json())["task_id"]
            statuses, counted = [], []
            async with asyncio.timeout(10):
                while "done" not in statuses:
                    message = await next_event(ws)
                    if message["event"] == "task":
                        assert message["data"]["task_id"] == task_id
                        statuses.append(message["data"]["status"])
                    elif message["event"] == "counted":
                        counted.append(message["data"])
            assert statuses[0] == "submitted" and statuses[1] == "running"
            assert statuses[-1] == "done"
            assert counted == [0, 1, 2]
            await ws.close()


async def test_a_slow_handler_delays_only_its_own_page(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        (_, alice), (_, bob) = await student(lab), await student(lab)
        async with alice, bob:
            slow, quick = await connect(lab, alice), await connect(lab, bob)
            await until(slow, "session")
            await until(quick, "session")
            await slow.send_json({"event": "slow", "data": 1.0})
            await quick.send_json({"event": "light", "data": {"on": True}})
            assert (await until(quick, "light", timeout=0.9))["on"] is True
            assert await until(slow, "slow") == "done"
            await slow.close()
            await quick.close()


async def test_stopping_tells_every_page(tmp_path):
    serving = serve_lab(tmp_path, lab_keys="spectators = true", lab=push_lab())
    lab = await serving.__aenter__()
    _, browser = await student(lab)
    try:
        async with browser, aiohttp.ClientSession() as nobody:
            page, watcher = await connect(lab, browser), await connect(lab, nobody)
            await until(page, "session")
            stopping = asyncio.ensure_future(serving.__aexit__(None, None, None))
            assert (await until(page, "ended"))["reason"] == "shutdown"
            assert (await until(watcher, "ended"))["reason"] == "shutdown"
            assert await closed(page) == 4000
            assert await closed(watcher) == 1001
            await stopping
    finally:
        if not stopping.done():
            await stopping


async def test_user_data_changed_by_a_message_handler_is_saved(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        sid, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            await ws.send_json({"event": "sync", "data": [1, 2]})
            async with asyncio.timeout(5):
                while (await lab.runtime.store.session(sid)).data.get("sync") != [1, 2]:
                    await asyncio.sleep(0.01)
            await ws.close()


def test_registration_errors():
    lab = Lab()
    with pytest.raises(ValueError, match="reserved"):
        lab.on_message("keepalive")

    @lab.on_message("x")
    def x(data): ...

    with pytest.raises(ValueError, match="already registered"):
        lab.on_message("x")(x)
    with pytest.raises(RuntimeError, match="not running"):
        lab.push("x", 1)


async def test_labrt_js_is_served_and_small(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        status, body = await lab.call("GET", "/labrt/labrt.js", auth=None)
        assert status == 200 and "labrt" in body
        assert len(body.encode()) < 10 * 1024


# -- issue 14, case 7: spectators cannot stall the loop; sockets are capped ----------------


async def test_a_spectator_flood_leaves_other_requests_fast(tmp_path):
    """50 spectators each send 40 frames of 62 KiB of JSON (under max_message_size, and
    within the burst the rate limit lets through) to a spawned ``labrt run``; requests from
    someone else, timed meanwhile, are answered within 50 ms and every spectator is closed."""
    spawned = Spawned(write_config(tmp_path, lab_keys="spectators = true"))
    url = URL(spawned.url)
    frame = "[" + ",".join(["0"] * 31_700) + "]"  # about 62 KiB, slow to parse
    assert 60_000 < len(frame) < 64 * 1024

    async def flood(ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            for _ in range(40):
                await ws.send_str(frame)

    async def timed(http: aiohttp.ClientSession) -> float:
        began = time.perf_counter()
        async with http.get(url / "style.css") as r:
            assert r.status == 200
            await r.read()
        return time.perf_counter() - began

    try:
        crowd = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with crowd, aiohttp.ClientSession() as outsider:
            spectators = [await crowd.ws_connect(url / "labrt/ws") for _ in range(50)]
            await timed(outsider)  # the connection is open; what follows is the request
            flooding = asyncio.gather(*(flood(ws) for ws in spectators))
            # Requests one after another while the flood lasts (at least three): unfixed,
            # the flood lasts seconds and every request in it waits; the median forgives
            # one hiccup of a loaded machine.
            samples: list[float] = []
            while not flooding.done() or len(samples) < 3:
                samples.append(await timed(outsider))
                await asyncio.sleep(0.01)
            await flooding
            assert statistics.median(samples) < 0.05, samples
            # Each was closed at its first frame (1009; 1006 when the close frame was lost to
            # the reset of a connection still sending), and the lab holds none of them.
            codes = await asyncio.gather(*(closed(ws, timeout=10) for ws in spectators))
            assert set(codes) <= {1009, 1006}, codes
            async with asyncio.timeout(10):
                while "labrt_websocket_pages 0" not in await metrics(outsider, url):
                    await asyncio.sleep(0.05)
    finally:
        assert spawned.stop() == 0


async def metrics(http: aiohttp.ClientSession, url: URL) -> str:
    async with http.get(url / "metrics") as r:  # from loopback: an operator's request
        assert r.status == 200
        return await r.text()


def nested(depth: int) -> str:
    return '{"event": "light", "data": ' + "[" * depth + "]" * depth + "}"


async def test_deeply_nested_messages_are_bad_messages_logged_once(tmp_path, caplog):
    """Issue 14, cases 7 and 8: nesting deeper than json's recursion limit is a bad message
    like any other, not a traceback per frame."""
    extra = "[push]\nmessages_per_second = 10000\nsend_queue = 100000\n"
    async with serve_lab(tmp_path, extra, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            caplog.clear()
            for _ in range(2000):
                await ws.send_str(nested(5000))
            codes = [(await until(ws, "error"))["code"] for _ in range(2000)]
            assert set(codes) == {"bad-message"}
            await ws.send_json({"event": "light", "data": {"on": True}})  # still connected
            assert (await until(ws, "light"))["on"] is True
            await ws.close()
        logged = [r for r in caplog.records if r.name.startswith("labrt")]
        assert len(logged) <= 1, [r.getMessage() for r in logged[:3]]
        assert not any(r.exc_info for r in logged)


async def test_spectators_past_the_cap_are_refused_before_the_upgrade(tmp_path):
    async with serve_lab(tmp_path, lab_keys="spectators = true", lab=push_lab()) as lab:
        crowd = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with crowd:
            watchers = [await connect(lab, crowd, protocols=("labrt",)) for _ in range(100)]
            assert {w.protocol for w in watchers} == {"labrt"}
            assert await refused(lab, crowd) == 503
            status, answer = await lab.call("GET", "/labrt/ws", auth=None)  # the JSON it says
            assert status == 503 and "spectators" in answer["message"], answer
            await watchers.pop().close()
            async with asyncio.timeout(5):  # a seat is free again once that one has gone
                while len(lab.runtime.push.pages_of(None)) > 99:
                    await asyncio.sleep(0.01)
            watchers.append(await connect(lab, crowd))
            # A spectator may send labrt.js's keepalive, and nothing else: not even a
            # message of a few hundred bytes is read (1009).
            await watchers[0].send_str('{"event":"keepalive","data":null}')
            await watchers[0].send_json({"event": "light", "data": {"on": True}})
            assert (await until(watchers[0], "error"))["code"] == "read-only"
            await watchers[1].send_json({"event": "light", "data": "x" * 300})
            assert await closed(watchers[1]) == 1009
            await asyncio.gather(*(w.close() for w in watchers))


async def test_past_the_cap_of_pages_a_session_loses_its_oldest(tmp_path):
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        sid, browser = await student(lab)
        async with browser:
            pages = []
            for _ in range(9):
                pages.append(await connect(lab, browser))
                await until(pages[-1], "session")
            assert await closed(pages[0]) == 4029  # replaced by a newer page
            assert lab.runtime.push.push(sid, "still", 1) == 8
            for ws in pages[1:]:
                assert await until(ws, "still") == 1
                await ws.close()


async def test_the_default_rate_lets_a_60_hz_control_stream(tmp_path):
    """Issue 16, item 8: a slider or a joystick sends about 60 messages a second; the default
    ``[push] messages_per_second`` takes that with headroom, without dropping any."""
    async with serve_lab(tmp_path, lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            began = time.monotonic()
            for i in range(150):  # 2.5 s at 60 Hz
                await ws.send_json({"event": "light", "data": {"on": i}})
                await asyncio.sleep(max(0.0, began + (i + 1) / 60 - time.monotonic()))
            seen = []
            while len(seen) < 150:
                message = await next_event(ws)
                assert message["event"] == "light", message  # no error, no close
                seen.append(message["data"]["on"])
            assert seen == list(range(150))
            await ws.close()


async def test_excess_messages_are_dropped_with_one_error_and_a_flood_closes(tmp_path):
    """Past the rate (and its burst) messages are dropped, and the page hears of it by one
    ``error`` a second at most; only a page that keeps it up is closed with 4008."""
    async with serve_lab(tmp_path, "[push]\nmessages_per_second = 5\n", lab=push_lab()) as lab:
        _, browser = await student(lab)
        async with browser:
            ws = await connect(lab, browser)
            await until(ws, "session")
            for i in range(15):  # a burst of 10 passes, 5 are dropped
                await ws.send_json({"event": "light", "data": {"on": i}})
            await asyncio.sleep(0.5)  # the bucket refills a little
            await ws.send_json({"event": "light", "data": {"on": "last"}})
            events = []
            while not events or events[-1] != ("light", "last"):
                message = await next_event(ws)
                data = message["data"]
                events.append((message["event"], data["on"] if "on" in data else data["code"]))
            assert events.count(("error", "too-many-messages")) == 1, events
            assert [on for event, on in events if event == "light"] == [*range(10), "last"]
            # A flood is closed.
            for _ in range(100):
                await ws.send_json({"event": "keepalive"})
            assert await closed(ws) == 4008
