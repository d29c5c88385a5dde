"""The load generators, the same for every target: wrk (one thread, closed loop) for
throughput, and an aiohttp client for latency chains and the RLMS's and students' calls.

wrk counts a redirect as a success, and a student kicked out by ``@requires_active`` is
redirected: every measurement that uses sessions checks afterwards that they are still alive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from labrt.client import basic_auth

from .targets import RLMS_PASSWORD, RLMS_USER

AUTH = basic_auth(RLMS_USER, RLMS_PASSWORD)
SESSIONS = "/weblab/sessions"


class SessionLost(Exception):
    """A session died during a measurement: the repetition is not valid (weblablib's
    timestamp bug kills about one session in 3,000) and is run again."""


def start_body(length: float = 3600) -> dict[str, Any]:
    """A legacy-dialect start, which both labs speak, with the slot starting now. The local
    time string goes with the timestamp for labs that read only the former."""
    now = time.time()
    local = dt.datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S.%f")
    return {
        "client_initial_data": {},
        "server_initial_data": {
            "priority.queue.slot.start.timestamp": now,
            "priority.queue.slot.start": local,
            "priority.queue.slot.length": str(length),
            "request.username": "student",
            "request.username.unique": "student@bench",
            "request.full_name": "Bench Student",
            "request.locale": "en",
            "request.experiment_id.experiment_name": "bench",
            "request.experiment_id.category_name": "Bench",
        },
        "back": "https://rlms.example/after",
    }


@dataclass
class Student:
    sid: str
    cookie: str  # the Cookie header the callback URL set


def client(limit: int = 100) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def start_session(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """The RLMS starts a session; returns the sid and the callback URL."""
    async with http.post(f"{url}{SESSIONS}/", json=start_body(), headers=AUTH) as r:
        answer = await r.json(content_type=None)
    if r.status != 200 or "session_id" not in answer:
        raise RuntimeError(f"start failed: {r.status} {answer}")
    return answer["session_id"], answer["url"]


async def visit(callback: str) -> str:
    """The student follows the callback URL; returns the Cookie header their browser keeps."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(callback, allow_redirects=False) as r:
            if r.status != 302:
                raise RuntimeError(f"callback answered {r.status}: {await r.text()}")
        cookies = jar.filter_cookies(callback)  # type: ignore[arg-type]
    return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())


async def students(url: str, count: int) -> list[Student]:
    async with client() as http:
        started = [await start_session(http, url) for _ in range(count)]
    cookies = await asyncio.gather(*(visit(callback) for _, callback in started))
    return [Student(sid, cookie) for (sid, _), cookie in zip(started, cookies, strict=True)]


async def check_alive(url: str, sids: list[str]) -> None:
    """Raise SessionLost unless the RLMS would keep every one of ``sids`` running."""
    async with client(20) as http:

        async def should_finish(sid: str) -> int:
            async with http.get(f"{url}{SESSIONS}/{sid}/status", headers=AUTH) as r:
                return int((await r.json(content_type=None))["should_finish"])

        answers = await asyncio.gather(*(should_finish(sid) for sid in sids))
    dead = [sid for sid, n in zip(sids, answers, strict=True) if n <= 0]
    if dead:
        raise SessionLost(f"{len(dead)} of {len(sids)} sessions ended during the run")


# -- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx/3xx answers plus socket errors other than connect

    def as_dict(self) -> dict[str, float]:
        return {"rps": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "bad": self.bad}


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def _script(requests: list[tuple[str, str, dict[str, str], str | None]]) -> str:
    """A wrk script that sends ``requests`` (method, path, headers, body) in turn.

    The requests are formatted in ``init``, once wrk has set the thread's Host header:
    formatted at load time they would go out without one, and be refused.
    """
    lines = ["local specs = {}"]
    for i, (method, path, headers, body) in enumerate(requests, 1):
        hdrs = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
        shown = "nil" if body is None else _lua_string(body)
        lines.append(
            f"specs[{i}] = {{ {_lua_string(method)}, {_lua_string(path)}, {{ {hdrs} }}, {shown} }}"
        )
    lines += [
        f"local n = {len(requests)}",
        "local reqs = {}",
        "local i = 0",
        "init = function(args)",
        "  for k = 1, n do",
        "    local s = specs[k]",
        "    reqs[k] = wrk.format(s[1], s[2], s[3], s[4])",
        "  end",
        "end",
        "request = function()",
        "  i = i % n + 1",
        "  return reqs[i]",
        "end",
    ]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not found:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def wrk(
    wrk_binary: str,
    url: str,
    requests: list[tuple[str, str, dict[str, str], str | None]],
    *,
    connections: int,
    seconds: float,
) -> WrkResult:
    """Run wrk with one thread and ``connections`` connections for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_script(requests))
        script = Path(f.name)
    try:
        # wrk takes whole seconds only.
        argv = [wrk_binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        argv += ["--latency", "--timeout", "10s", "-s", str(script), url]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0 or done.stderr.strip():  # a Lua error exits 0
            raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
        out = done.stdout
    finally:
        script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = 0
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found:
        bad += int(found.group(1))
    found = re.search(r"Socket errors: connect \d+, read (\d+), write (\d+), timeout (\d+)", out)
    if found:
        bad += sum(int(x) for x in found.groups())
    return WrkResult(rps, p50, p99, total, bad)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction + 0.5) - 1)]
