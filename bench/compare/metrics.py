"""One measurement each, against a running target, over real sockets. Each returns plain
numbers (ms, requests or sessions per second, MiB) keyed by metric name; run.py repeats them
on fresh servers and takes medians."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from . import load
from .load import AUTH, SESSIONS, SessionLost, Student, client, percentile
from .procs import memory


class Target(Protocol):
    name: str

    @property
    def url(self) -> str: ...

    def pids(self) -> list[int]: ...


@dataclass
class Sizes:
    """How much of each measurement to do: the full run, or the smoke run's handful."""

    seconds: float = 5.0
    warmup: float = 1.0
    sequential_starts: int = 50
    concurrent_starts: int = 100
    live_sessions: int = 100
    users: int = 50
    task_chain: int = 20
    tasks: int = 100
    push_messages: int = 50
    push_users: int = 50
    push_users_messages: int = 20
    past_requests: int = 2000


SMOKE = Sizes(
    seconds=1.0,
    warmup=1.0,
    sequential_starts=10,
    concurrent_starts=20,
    live_sessions=20,
    users=10,
    task_chain=5,
    tasks=20,
    push_messages=20,
    push_users=5,
    push_users_messages=5,
    past_requests=200,
)


def rss(target: Target) -> dict[str, float]:
    r, p = memory(target.pids())
    return {"rss_mb": r, "pss_mb": p}


async def session_starts(url: str, sizes: Sizes) -> dict[str, float]:
    """The RLMS starting sessions one after another, then 20 at a time."""
    out: dict[str, float] = {}
    async with client(20) as http:
        latencies = []
        began = time.monotonic()
        for _ in range(sizes.sequential_starts):
            t = time.monotonic()
            await load.start_session(http, url)
            latencies.append((time.monotonic() - t) * 1000)
        out["start_seq_per_s"] = sizes.sequential_starts / (time.monotonic() - began)
        out["start_seq_p50_ms"] = percentile(latencies, 0.5)

        gate = asyncio.Semaphore(20)
        latencies = []

        async def one() -> None:
            async with gate:
                t = time.monotonic()
                await load.start_session(http, url)
                latencies.append((time.monotonic() - t) * 1000)

        began = time.monotonic()
        await asyncio.gather(*(one() for _ in range(sizes.concurrent_starts)))
        out["start_conc_per_s"] = sizes.concurrent_starts / (time.monotonic() - began)
        out["start_conc_p50_ms"] = percentile(latencies, 0.5)
    return out


def _wrk(
    wrk_binary: str,
    url: str,
    requests: list[tuple[str, str, dict[str, str], str | None]],
    connections: int,
    sizes: Sizes,
) -> load.WrkResult:
    load.wrk(wrk_binary, url, requests, connections=connections, seconds=sizes.warmup)
    return load.wrk(wrk_binary, url, requests, connections=connections, seconds=sizes.seconds)


def status_polls(wrk_binary: str, url: str, sids: list[str], sizes: Sizes) -> dict[str, float]:
    """The RLMS polling ``/status`` for every live session, and ``/status/multiple`` with all
    of them in one request."""
    single = [("GET", f"{SESSIONS}/{sid}/status", AUTH, None) for sid in sids]
    result = _wrk(wrk_binary, url, single, 20, sizes)
    asyncio.run(load.check_alive(url, sids))
    body = json.dumps({"session_ids": sids})
    headers = {**AUTH, "Content-Type": "application/json"}
    multiple = _wrk(
        wrk_binary, url, [("POST", f"{SESSIONS}/status/multiple", headers, body)], 20, sizes
    )
    asyncio.run(load.check_alive(url, sids))
    return {
        "status_rps": result.rps,
        "status_p99_ms": result.p99_ms,
        "status_bad": result.bad,
        "multiple_rps": multiple.rps,
        "multiple_p99_ms": multiple.p99_ms,
    }


def hello(wrk_binary: str, url: str, sizes: Sizes) -> dict[str, float]:
    result = _wrk(wrk_binary, url, [("GET", "/", {}, None)], 20, sizes)
    return {"status_rps": result.rps, "status_p99_ms": result.p99_ms}


def active_view(
    wrk_binary: str, target: Target, users: list[Student], sizes: Sizes
) -> dict[str, float]:
    """50 students, one connection each, asking an ``@requires_active`` JSON view; the
    stack's memory is sampled meanwhile (its peak is "under load")."""
    requests = [
        ("GET", "/bench/active", {"Cookie": u.cookie, "Accept": "application/json"}, None)
        for u in users
    ]
    peak = {"rss_mb": 0.0, "pss_mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            for key, value in rss(target).items():
                peak[key] = max(peak[key], value)

    sampler = threading.Thread(target=sample, daemon=True)
    load.wrk(wrk_binary, target.url, requests, connections=len(users), seconds=sizes.warmup)
    sampler.start()
    try:
        result = load.wrk(
            wrk_binary, target.url, requests, connections=len(users), seconds=sizes.seconds
        )
    finally:
        done.set()
        sampler.join()
    asyncio.run(load.check_alive(target.url, [u.sid for u in users]))
    if result.bad:
        raise SessionLost(f"{result.bad} bad answers from the active view")
    return {
        "active_rps": result.rps,
        "active_p50_ms": result.p50_ms,
        "active_p99_ms": result.p99_ms,
        "rss_load_mb": peak["rss_mb"],
        "pss_load_mb": peak["pss_mb"],
    }


async def _task_done(
    http: aiohttp.ClientSession, url: str, cookie: str, task_id: str
) -> float | None:
    """The task's own end stamp once it is done, else None."""
    headers = {"Cookie": cookie, "Accept": "application/json"}
    async with http.get(f"{url}/bench/tasks/{task_id}", headers=headers) as r:
        answer = await r.json(content_type=None)
    if answer["status"] in ("failed", "missing"):
        raise RuntimeError(f"task {task_id}: {answer}")
    return float(answer["result"]) if answer["status"] == "done" else None


async def _submit(http: aiohttp.ClientSession, url: str, cookie: str) -> str:
    headers = {"Cookie": cookie, "Accept": "application/json"}
    async with http.post(f"{url}/bench/tasks", headers=headers) as r:
        answer = await r.json(content_type=None)
    return str(answer["task_id"])


async def tasks(url: str, users: list[Student], sizes: Sizes) -> dict[str, float]:
    """Submit an empty task and follow it until it is done (the chain), then submit many at
    once and wait until all are done (the throughput).

    The task returns ``time.monotonic()`` as it ends, so "done" is read from the task's own
    stamp, not from when a poll happened to see it: polling over HTTP costs a millisecond or
    more per look on this machine, more than labrt's whole submit→done. When the client saw
    it done is reported too (``task_seen_p50_ms``, polls 1 ms apart).
    """
    async with client(20) as http:
        cookie = users[0].cookie
        latencies, seen = [], []
        for _ in range(sizes.task_chain):
            began = time.monotonic()
            task_id = await _submit(http, url, cookie)
            while (stamp := await _task_done(http, url, cookie, task_id)) is None:  # noqa: ASYNC110 (the server is polled, as a page does)
                await asyncio.sleep(0.001)
            seen.append((time.monotonic() - began) * 1000)
            latencies.append((stamp - began) * 1000)

        began = time.monotonic()
        gate = asyncio.Semaphore(10)

        async def submit(i: int) -> tuple[str, str]:
            user = users[i % len(users)]
            async with gate:
                return user.cookie, await _submit(http, url, user.cookie)

        pending = list(await asyncio.gather(*(submit(i) for i in range(sizes.tasks))))
        stamps = []
        while pending:  # tasks end about in submission order: look at the oldest first
            stamp = await _task_done(http, url, *pending[0])
            if stamp is None:
                await asyncio.sleep(0.002)
                continue
            stamps.append(stamp)
            pending.pop(0)
        per_s = sizes.tasks / (max(stamps) - began)
    return {
        "task_p50_ms": percentile(latencies, 0.5),
        "task_p99_ms": percentile(latencies, 0.99),
        "task_seen_p50_ms": percentile(seen, 0.5),
        "tasks_per_s": per_s,
    }


async def push(
    url: str, users: list[Student], kind: str, messages: int, prefix: str = "push"
) -> dict[str, float]:
    """The lab pushes ``messages`` stamped messages, 10 ms apart, to each student's page, all
    students at once; latency is from the push call to the page having it, on the machine's
    monotonic clock, over every page's messages."""
    latencies: list[float] = []
    async with client(len(users) + 10) as http:
        pages = [await _page(http, url, user, kind) for user in users]
        readers = [
            asyncio.ensure_future(_read_stamps(ws, kind, messages, latencies)) for ws in pages
        ]
        await asyncio.sleep(0.2)  # the pages are registered on the server side

        async def push_to(user: Student) -> None:
            query = f"count={messages}&gap=0.01"
            headers = {"Cookie": user.cookie}
            async with http.post(f"{url}/bench/push?{query}", headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"push route: {r.status} {await r.text()}")

        await asyncio.gather(*(push_to(user) for user in users))
        await asyncio.wait_for(asyncio.gather(*readers), 60)
        for ws in pages:
            await ws.close()
    return {
        f"{prefix}_p50_ms": percentile(latencies, 0.5),
        f"{prefix}_p99_ms": percentile(latencies, 0.99),
    }


async def _page(
    http: aiohttp.ClientSession, url: str, user: Student, kind: str
) -> aiohttp.ClientWebSocketResponse:
    """A student's page connected to the lab's push channel."""
    headers = {"Cookie": user.cookie}
    if kind == "labrt":
        return await http.ws_connect(f"{url}/labrt/ws", headers=headers)
    # Engine.IO 4 over WebSocket, the transport Flask-SocketIO's page script uses
    ws = await http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", headers=headers)
    opened = await ws.receive_str(timeout=10)
    if not opened.startswith("0"):
        raise RuntimeError(f"socket.io open: {opened!r}")
    await ws.send_str("40")
    while True:
        answer = await ws.receive_str(timeout=10)
        if answer.startswith("40"):
            return ws
        if answer.startswith("44"):
            raise RuntimeError(f"socket.io refused the page: {answer}")


async def _read_stamps(
    ws: aiohttp.ClientWebSocketResponse, kind: str, messages: int, latencies: list[float]
) -> None:
    seen = 0
    while seen < messages:
        frame = await ws.receive(timeout=30)
        now = time.monotonic()
        if frame.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"page socket: {frame}")
        text = frame.data
        data: Any
        if kind == "labrt":
            message = json.loads(text)
            if message.get("event") != "stamp":
                continue
            data = message["data"]
        else:
            if text == "2":  # Engine.IO ping
                await ws.send_str("3")
                continue
            if not text.startswith("42"):
                continue
            name, data = json.loads(text[2:])
            if name != "stamp":
                continue
        latencies.append((now - data["sent"]) * 1000)
        seen += 1


async def status_latency(url: str, sid: str, sizes: Sizes) -> tuple[float, float]:
    """p50 and p99 of one ``/status`` after another, for one live session."""
    latencies = []
    async with client(1) as http:
        target = f"{url}{SESSIONS}/{sid}/status"
        for _ in range(sizes.past_requests):
            t = time.monotonic()
            async with http.get(target, headers=AUTH) as r:
                answer = await r.json(content_type=None)
            latencies.append((time.monotonic() - t) * 1000)
            if answer["should_finish"] <= 0:
                raise SessionLost("the live session ended during the status chain")
    return percentile(latencies, 0.5), percentile(latencies, 0.99)
