"""Hostile clients against the real server, each case checked against the defence that stops
it (docs/security.md lists every case, its defence and its test, including the ones other test
files already cover: floods and oversized frames in test_push.py, forged cookies, bad static
paths and bad ``back`` URLs in test_bad_input.py, Origin checks in test_author_api.py).

Slow clients are tried against a spawned ``labrt run`` (the aiohttp runner it builds is part
of the defence) over raw sockets, so bytes go out exactly when the test says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import aiohttp
import pytest
from helpers import (
    AUTH,
    BODIES,
    LABS,
    PREFIXES,
    Spawned,
    new_body,
    raw_exchange,
    serve_lab,
    store_bytes,
    write_config,
)
from yarl import URL

import labrt.web.ws
from labrt import Lab

LDL = PREFIXES["ldl"]
SLOW = "[server]\nheader_timeout = 2\nbody_timeout = 2\n"
# How long a slow connection may survive in these tests: the 2 s deadlines plus a wide margin
# for a loaded CI machine. Without the defences they would last as long as the client likes.
CUT_WITHIN = 10.0


# -- raw HTTP --------------------------------------------------------------------------------


def get(path: str, *headers: str) -> bytes:
    fields = "".join(f"{h}\r\n" for h in ("Host: 127.0.0.1", *headers, "Connection: close"))
    return f"GET {path} HTTP/1.1\r\n{fields}\r\n".encode()


async def trickle(
    host: str, port: int, head: bytes = b"", slowly: bytes = b"", step: float = 0.1
) -> float:
    """Send ``head`` at once, then ``slowly`` one byte every ``step`` s and after it more
    ``a``s (nothing at all if both are empty), until the server closes the connection.

    Returns how long the server kept it open; TimeoutError after ``CUT_WITHIN`` s.
    """
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    began = loop.time()
    filler = b"a" if head or slowly else b""
    try:
        writer.write(head)
        async with asyncio.timeout(CUT_WITHIN):
            for i in range(1_000_000):
                writer.write(slowly[i : i + 1] or filler)
                try:
                    await writer.drain()
                    if await asyncio.wait_for(reader.read(1024), step) == b"":
                        break  # the server closed it
                except TimeoutError:
                    continue  # still open: send the next byte
                except ConnectionError:
                    break
        return loop.time() - began
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def answers_promptly(url: str) -> None:
    """A normal client still gets its answers while the attack goes on."""
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", f"{LDL}/api", "/index.html"):
            async with asyncio.timeout(5), http.get(f"{url}{path}") as r:
                assert r.status == 200, (path, await r.text())


async def cut_while_others_are_served(url: URL, attack: list[Coroutine[Any, Any, float]]) -> None:
    """Run the slow connections of ``attack`` (each returns how long it stayed open): a normal
    client is answered meanwhile, and every slow one is cut within CUT_WITHIN."""
    running = [asyncio.ensure_future(a) for a in attack]
    try:
        await asyncio.sleep(0.5)  # every slow connection is open by now
        await answers_promptly(str(url))
        lasted = await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
    assert max(lasted) < CUT_WITHIN


# -- slow clients (slowloris) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """One ``labrt run`` with 2 s header and body deadlines, shared by the slow-client tests."""
    directory = tmp_path_factory.mktemp("slow")
    spawned = Spawned(write_config(directory, SLOW))
    try:
        yield URL(spawned.url)
    finally:
        assert spawned.stop() == 0


async def test_slow_headers_are_cut_and_others_are_served_meanwhile(slow_lab: URL):
    host, port = slow_lab.host, slow_lab.port
    assert host is not None and port is not None
    headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
    # Trickling one header byte at a time must not keep a connection open; nor may a
    # connection that never sends anything, nor one that trickles its second request after
    # a first answer (the deadline starts again from each answer, not from each byte).
    attack = [trickle(host, port, slowly=headers) for _ in range(100)]
    attack += [trickle(host, port, step=1.0) for _ in range(20)]
    attack += [trickle(host, port, get("/healthz").replace(b"close", b"keep-alive"), step=1.0)]
    await cut_while_others_are_served(slow_lab, attack)
    await answers_promptly(str(slow_lab))


async def test_slow_bodies_are_cut_and_nothing_starts(slow_lab: URL):
    host, port = slow_lab.host, slow_lab.port
    assert host is not None and port is not None
    head = (
        f"POST {LDL}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH['Authorization']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    chunked = head.replace(b"Content-Length: 5000", b"Transfer-Encoding: chunked") + b"1388\r\n"
    # The headers go out at once; the body, a byte every 0.1 s, would need minutes.
    attack = [trickle(host, port, head, b'{"request": ') for _ in range(20)]
    attack += [trickle(host, port, chunked, b'{"request": ') for _ in range(20)]
    await cut_while_others_are_served(slow_lab, attack)
    async with aiohttp.ClientSession() as http, http.get(slow_lab / "healthz") as r:
        assert (await r.json())["sessions"]["active"] == 0  # no start got through


# -- many idle WebSockets ----------------------------------------------------------------------


async def dead_socket(host: str, port: int) -> asyncio.StreamWriter:
    """A WebSocket that completes its handshake and then never reads or answers again."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /labrt/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return writer


async def test_dead_websockets_are_dropped_and_live_pages_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(labrt.web.ws, "HEARTBEAT", 0.5)  # 20 s in production
    async with serve_lab(tmp_path, lab_keys="spectators = true") as lab:
        host, port = lab.server.host, lab.server.port
        dead = [await dead_socket(host, port) for _ in range(50)]
        try:
            async with aiohttp.ClientSession() as http:
                live = await http.ws_connect(lab.url("/labrt/ws"))
                # A page that reads answers pings (aiohttp does so while receiving).
                got = asyncio.ensure_future(live.receive_json(timeout=3 * CUT_WITHIN))
                hub = lab.runtime.push
                assert hub.count() == 51
                async with asyncio.timeout(CUT_WITHIN):
                    while hub.count() > 1:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(1.5)  # three more heartbeats: the live page stays
                assert hub.count() == 1
                assert await hub.deliver('{"event": "still", "data": 1}', everyone=True) == 1
                assert await got == {"event": "still", "data": 1}
                await live.close()
        finally:
            for writer in dead:
                writer.close()


# -- cookies replayed, session ids guessed ---------------------------------------------------


@pytest.mark.parametrize("ending", ["dispose", "logout", "slot-over"])
async def test_a_cookie_replayed_after_its_session_ended_opens_nothing(tmp_path, ending):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start(length=60)
        await lab.visit(browser, sid)
        async with browser.post(lab.url("/api/visit")) as r:
            assert await r.json() == {"visits": 1}
        cookie = browser.cookie_jar.filter_cookies(lab.server.make_url("/"))["labrt"].value
        if ending == "dispose":
            assert await lab.call("DELETE", f"{LDL}/{sid}") == (200, {"message": "Deleted"})
        elif ending == "logout":
            async with browser.post(lab.url("/labrt/logout")) as r:
                assert r.status == 200
        else:
            await lab.work(browser, 60)
        await lab.settle()

        replay = {"Cookie": f"labrt={cookie}"}
        async with aiohttp.ClientSession() as thief:
            status, body = await lab.call("GET", "/labrt/status", auth=None, headers=replay)
            assert (status, body["state"], body["ws_token"]) == (200, "expired", None)
            html = {**replay, "Accept": "text/html"}
            async with thief.post(lab.url("/api/visit"), headers=html, allow_redirects=False) as r:
                assert (r.status, r.headers["Location"]) == (302, "https://lde.example/back")
            # The callback link still "works" (a reload), but only to say the time is over.
            await lab.visit(thief, sid)
            assert await lab.call("POST", "/api/visit", auth=None, headers=replay) == (
                401,
                {
                    "error": True,
                    "message": "Your session is over.",
                    "back": "https://lde.example/back",
                },
            )
            ws = await thief.ws_connect(lab.url("/labrt/ws"), headers=replay)
            events = [await ws.receive_json(timeout=5) for _ in range(2)]
            assert [e["event"] for e in events] == ["session", "ended"]
            assert (await ws.receive(timeout=5)).data == 4000
            await ws.close()
        assert (await lab.runtime.store.session(sid)).data == {"visits": 1}
        assert await lab.should_finish(sid) == -1

        await lab.advance(3601)  # [session] expired_users_timeout: the session is forgotten
        status, body = await lab.call("GET", "/labrt/status", auth=None, headers=replay)
        assert (status, body["state"]) == (401, "anonymous")
        status, _ = await lab.call("GET", f"/callback/{sid}", auth=None, allow_redirects=False)
        assert status == 403


async def test_session_ids_cannot_be_guessed(tmp_path):
    async with serve_lab(tmp_path) as lab:
        sids = [await lab.start() for _ in range(20)]
        assert len(set(sids)) == len(sids)
        for sid in sids:
            # 32 random bytes: 2**256 possible ids, for a handful alive at any time.
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid), sid
            assert len(base64.urlsafe_b64decode(sid + "=")) == 32
        near = sids[0][:-1] + ("A" if sids[0][-1] != "A" else "B")
        guesses = [near, sids[0].swapcase(), *(secrets.token_urlsafe(32) for _ in range(30))]
        async with aiohttp.ClientSession() as guesser:
            for guess in guesses:
                async with guesser.get(lab.url(f"/callback/{guess}"), allow_redirects=False) as r:
                    assert r.status == 403, guess
                assert await lab.should_finish(guess) == -1
            assert len(guesser.cookie_jar) == 0
        assert {await lab.should_finish(sid) for sid in sids} == {5}


# -- cross-site requests ------------------------------------------------------------------------


async def test_cross_site_writes_are_refused_by_default(tmp_path):
    lab_object = Lab()
    writes: list[str] = []

    @lab_object.route("POST", "/api/write")  # nothing said about cross-site: protected
    @lab_object.route("PUT", "/api/write")
    @lab_object.route("DELETE", "/api/write")
    async def write(request):
        writes.append(request.method)
        return {"writes": len(writes)}

    async with serve_lab(tmp_path, lab=lab_object) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        own = lab.url("/").rstrip("/")
        other_port = f"http://127.0.0.1:{lab.server.port + 1}"
        hostile = [
            {"Origin": "https://evil.example"},
            {"Origin": "null"},  # sandboxed iframes, data: URLs
            {"Origin": other_port},  # same host, another origin
            {"Origin": own.replace("http:", "https:")},
            {"Referer": "https://evil.example/page.html"},  # older browsers: no Origin
            {"Referer": f"{other_port}/page.html"},
            {"Origin": "https://evil.example", "Referer": f"{own}/index.html"},
        ]
        for headers in hostile:
            for method in ("POST", "PUT", "DELETE"):
                async with browser.request(method, lab.url("/api/write"), headers=headers) as r:
                    assert r.status == 403, (method, headers)
                    assert "Cross-site" in (await r.json())["message"]
        for path in ("/labrt/logout", f"/callback/{sid}/logout"):
            async with browser.post(lab.url(path), headers=hostile[4]) as r:
                assert r.status == 403, path
        assert writes == []
        assert await lab.should_finish(sid) == 5  # not logged out

        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            async with browser.post(lab.url("/api/write"), headers=headers) as r:
                assert r.status == 403, headers  # no Origin: the browser's own word suffices
                assert "Sec-Fetch-Site" in (await r.json())["message"]
        assert writes == []

        for headers in (
            {"Origin": own},
            {"Referer": f"{own}/index.html"},
            {},
            {"Origin": own, "Sec-Fetch-Site": "same-origin"},
            {"Sec-Fetch-Site": "none"},  # typed in the address bar
        ):
            async with browser.post(lab.url("/api/write"), headers=headers) as r:
                assert r.status == 200, headers
        assert writes == ["POST"] * 5


CROSS_SITE = (
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},  # no Origin: a GET, or a browser that omits it
    {"Sec-Fetch-Site": "same-site"},  # another host of the same site is still another origin
)


def rlms_calls(sid: str) -> list[tuple[str, str, Any]]:
    """Every RLMS route under both prefixes, each with a body that would otherwise work."""
    calls: list[tuple[str, str, Any]] = []
    for dialect, prefix in PREFIXES.items():
        calls += [
            ("GET", f"{prefix}/test", None),
            ("POST", f"{prefix}/", BODIES[dialect](time.time())),
            ("GET", f"{prefix}/{sid}/status", None),
            ("POST", f"{prefix}/status/multiple", {"session_ids": [sid]}),
            ("POST", f"{prefix}/{sid}", {"action": "delete"}),
            ("DELETE", f"{prefix}/{sid}", None),
        ]
    return calls


async def test_cross_site_requests_to_the_rlms_routes_are_refused(tmp_path):
    """A page on another site can drive the RLMS routes from a browser that has the RLMS's
    Basic credentials cached (an RLMS administrator's): every route, every method, is refused
    before the credentials are even looked at, and nothing is stored. A real RLMS is a server
    and sends neither Origin nor Sec-Fetch-Site; the lab's own origin is accepted."""
    async with serve_lab(tmp_path) as lab:
        sid = await lab.start()
        await lab.settle()
        before = store_bytes(tmp_path)
        for headers in CROSS_SITE:
            for method, path, body in rlms_calls(sid):
                for auth in (AUTH, None):
                    async with lab.http.request(
                        method, lab.url(path), json=body, headers={**(auth or {}), **headers}
                    ) as r:
                        answer = await r.json()
                        assert r.status == 403, (headers, method, path, auth, answer)
                        assert answer["error"] is True and "Cross-site" in answer["message"]
                        assert "WWW-Authenticate" not in r.headers
        await lab.settle()
        assert store_bytes(tmp_path) == before, "a cross-site request changed the store"
        assert len(await lab.runtime.store.recent_sessions(10)) == 1
        assert await lab.should_finish(sid) == 5  # not disposed

        own = lab.url("/").rstrip("/")
        for headers in ({"Origin": own}, {"Origin": own, "Sec-Fetch-Site": "same-origin"}):
            for method, path, body in rlms_calls(sid)[:4]:  # test, start, status, multiple
                status, answer = await lab.call(method, path, json=body, headers=headers)
                assert status == 200, (headers, path, answer)
        status, answer = await lab.call("DELETE", f"{LDL}/{sid}", headers={"Origin": own})
        assert (status, answer) == (200, {"message": "Deleted"})
        status, _ = await lab.call("GET", f"{LDL}/api", auth=None)
        assert status == 200  # /api: no credentials to abuse, no state


async def test_operator_routes_refuse_cross_site_and_never_ask_a_browser_to_log_in(tmp_path):
    """`POST /labrt/hardware` switches a device: refused cross-site even with credentials. And
    no operator refusal sends `WWW-Authenticate`: it would make a browser prompt for the RLMS's
    password, then send it with every later request, cross-site ones included."""
    extra = '[hardware]\npins = "mock"\n\n[drivers.led]\nkind = "gpio.output"\npin = 17\n'
    async with serve_lab(tmp_path, extra, module=LABS / "hardware_lab.py") as lab:
        led = lab.runtime.hardware.pin_factory.pin(17)
        on = {"name": "led", "value": "on"}
        for headers in CROSS_SITE:
            for auth in (AUTH, None):
                status, answer = await lab.call(
                    "POST", "/labrt/hardware", auth=auth, json=on, headers=headers
                )
                assert status == 403 and "Cross-site" in answer["message"], (headers, answer)
        assert led.state == 0

        relayed = {"X-Forwarded-For": "203.0.113.7"}  # not local, no credentials
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/metrics"),
            ("GET", "/labrt/hardware"),
            ("POST", "/labrt/hardware"),
        ):
            async with lab.http.request(method, lab.url(path), json=on, headers=relayed) as r:
                assert r.status == 403, path
                assert "WWW-Authenticate" not in r.headers, path
                assert (await r.json())["error"] is True
        assert led.state == 0

        own = lab.url("/").rstrip("/")
        for headers in ({"Origin": own}, {"Origin": own, "Sec-Fetch-Site": "same-origin"}, {}):
            status, _ = await lab.call("POST", "/labrt/hardware", json=on, headers=headers)
            assert status == 200, headers
        assert led.state == 1


# -- static files -------------------------------------------------------------------------------


async def test_static_files_cannot_lead_outside_their_folder(tmp_path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("TOP-SECRET")
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<p>the lab")
    (static / "alias.html").symlink_to(static / "index.html")  # inside: fine
    (static / "leak.txt").symlink_to(secret / "secret.txt")
    (static / "out").symlink_to(secret)
    (static / "etc").symlink_to("/etc")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(str(LABS / "static"), str(static)))
    spawned = Spawned(config)
    try:
        url = URL(spawned.url)
        assert url.host is not None and url.port is not None
        for path, status in [
            ("/alias.html", 200),
            ("/leak.txt", 400),
            ("/out/secret.txt", 400),
            ("/out/", 400),
            ("/etc/hostname", 400),
            ("/..\\outside\\secret.txt", 400),
            ("/out\\..\\..\\outside\\secret.txt", 400),
            ("/%2e%2e/outside/secret.txt", 400),
            ("/%2e%2e%5coutside%5csecret.txt", 400),
            (f"/{secret}/secret.txt", 400),  # an absolute path
        ]:
            answer, _, body = await raw_exchange(url.host, url.port, get(path))
            assert answer == status, (path, answer, body)
            assert b"TOP-SECRET" not in body and b"root:" not in body
    finally:
        assert spawned.stop() == 0


# -- back URLs and redirects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "back",
    [
        "//evil.example/",  # protocol-relative: no scheme
        "https:evil.example",  # no host
        "javascript://rlms.example/%0Aalert(1)",
        "https://rlms.example\\@evil.example/",
        "https://rlms.example/\u2028Set-Cookie: a=1",  # Unicode line separator
        "https://rlms.example/\x85",  # NEL
        "https://rlms.example/\tx",
    ],
)
async def test_back_urls_that_could_inject_or_mislead_are_refused(tmp_path, back):
    async with serve_lab(tmp_path) as lab:
        body = new_body(lab.clock.now())
        body["request"]["backUrl"] = back
        status, answer = await lab.call("POST", f"{LDL}/", json=body)
        assert (status, answer["field"]) == (400, "request.backUrl"), answer
        assert lab.runtime.sessions.sessions() == [] or all(
            s.request.back != back for s in lab.runtime.sessions.sessions()
        )


async def test_redirects_go_only_where_the_config_or_the_rlms_said(tmp_path):
    encoded = "https://rlms.example/after?x=%0D%0ASet-Cookie:%20admin=1"
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        body = new_body(lab.clock.now())
        body["request"]["backUrl"] = encoded  # escaped CR/LF are plain text: accepted
        status, answer = await lab.call("POST", f"{LDL}/", json=body)
        assert status == 200, answer
        sid = answer["session_id"]
        # A redirect target in the query is ignored: the lab's initial URL it is.
        target = f"/callback/{sid}?next=https://evil.example/&back=https://evil.example/"
        async with browser.get(lab.url(target), allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/")
        await lab.call("DELETE", f"{LDL}/{sid}")
        html = {"Accept": "text/html"}
        async with browser.post(lab.url("/api/visit"), headers=html, allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, encoded)
            assert not any("admin" in c for c in r.headers.getall("Set-Cookie", []))
