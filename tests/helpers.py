"""What tests share: lab configs on disk, start bodies in both dialects, a running server
driven over real sockets, and a spawned ``labrt run`` process."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from labrt.client import basic_auth
from labrt.clock import FakeClock
from labrt.config import load_config
from labrt.lab import Lab
from labrt.loader import load_lab
from labrt.runtime import Runtime

LABS = Path(__file__).parent / "labs"
REPOSITORY = Path(__file__).resolve().parent.parent
RECORDING_LAB = LABS / "recording.py"
USERNAME, PASSWORD = "rlms", "a-real-secret-for-tests"
AUTH = basic_auth(USERNAME, PASSWORD)
PREFIXES = {"weblab": "/weblab/sessions", "ldl": "/ldl/sessions"}


def write_config(
    directory: Path, extra: str = "", *, lab_keys: str = "", module: Path = RECORDING_LAB
) -> Path:
    """A valid lab.toml in ``directory`` using the recording lab; ``extra`` adds sections,
    ``lab_keys`` lines to ``[lab]``."""
    path = directory / "lab.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [lab]
            name = "test"
            module = "{module}"
            static = "{LABS / "static"}"
            {lab_keys}

            [rlms]
            username = "{USERNAME}"
            password = "{PASSWORD}"

            [store]
            path = "{directory / "labrt.sqlite"}"
            """
        )
        + textwrap.dedent(extra)
    )
    return path


def legacy_body(start: float, length: float = 300, **client: Any) -> dict[str, Any]:
    return {
        "client_initial_data": client,
        "server_initial_data": {
            "priority.queue.slot.start.timestamp": start,
            "priority.queue.slot.start": "2026-11-24 10:00:00.000000",
            "priority.queue.slot.length": str(length),
            "request.username": "jdoe",
            "request.username.unique": "jdoe@uni",
            "request.full_name": "Jane Doe",
            "request.locale": "es",
            "request.experiment_id.experiment_name": "blink",
            "request.experiment_id.category_name": "Electronics",
            "reservation_id": "r-1",
        },
        "back": "https://rlms.example/after",
    }


def new_body(start: float, length: float = 300, **client: Any) -> dict[str, Any]:
    iso = dt.datetime.fromtimestamp(start, dt.UTC).isoformat()
    return {
        "request": {
            "locale": "en",
            "user": client,
            "server": {"tag": "x"},
            "backUrl": "https://lde.example/back",
            "ldeReservationId": "abc",
        },
        "laboratory": {"name": "blink", "category": "Electronics"},
        "user": {"username": "jdoe", "unique": "jdoe@uni", "fullName": "Jane Doe"},
        "schedule": {"start": iso, "length": length},
    }


BODIES = {"weblab": legacy_body, "ldl": new_body}


@dataclass
class Harness:
    """A lab served on a loopback port, with a fake clock and an HTTP client."""

    runtime: Runtime
    server: TestServer
    clock: FakeClock
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def call(
        self, method: str, path: str, *, auth: dict[str, str] | None = AUTH, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {**(auth or {}), **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url(path), headers=headers, **kwargs) as r:
            text = await r.text()
            body: Any = text
            if r.content_type == "application/json":
                body = await r.json()
            return r.status, body

    async def start(self, dialect: str = "ldl", length: float = 300, **client: Any) -> str:
        """Start a session as the RLMS; returns its id."""
        body = BODIES[dialect](self.clock.now(), length, **client)
        status, answer = await self.call("POST", f"{PREFIXES[dialect]}/", json=body)
        assert status == 200, answer
        assert "session_id" in answer, answer
        return answer["session_id"]

    async def should_finish(self, sid: str, dialect: str = "ldl") -> int:
        status, answer = await self.call("GET", f"{PREFIXES[dialect]}/{sid}/status")
        assert status == 200
        return answer["should_finish"]

    def browser(self) -> aiohttp.ClientSession:
        """A student's browser: keeps cookies (also for 127.0.0.1), never follows redirects."""
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def visit(self, browser: aiohttp.ClientSession, sid: str) -> None:
        async with browser.get(self.url(f"/callback/{sid}"), allow_redirects=False) as r:
            assert r.status == 302, await r.text()

    async def settle(self) -> None:
        await self.runtime.sessions.settle()

    async def advance(self, seconds: float) -> None:
        """Move the fake clock and let what it triggers finish."""
        self.clock.advance(seconds)
        await self.settle()

    async def work(self, browser: aiohttp.ClientSession, seconds: float, step: float = 5) -> None:
        """The student's page polling every ``step`` s while ``seconds`` pass."""
        while seconds > 0:
            await self.advance(min(step, seconds))
            seconds -= step
            async with browser.get(self.url("/labrt/status")) as r:
                assert r.status == 200


@asynccontextmanager
async def serve_lab(
    directory: Path,
    extra: str = "",
    *,
    lab_keys: str = "",
    module: Path = RECORDING_LAB,
    lab: Lab | None = None,
    clock: FakeClock | None = None,
    dev: bool = False,
) -> AsyncIterator[Harness]:
    """Serve ``lab`` (default: the one in ``module``) with a config written into ``directory``."""
    path = write_config(directory, extra, lab_keys=lab_keys, module=module)
    config = load_config(path, dev=dev)
    clock = clock or FakeClock(float(int(time.time())))  # whole seconds: exact in ISO dates
    runtime = Runtime(config, lab or load_lab(config), clock=clock)
    server = TestServer(runtime.app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield Harness(runtime, server, clock, http)
    finally:
        await server.close()


def store_bytes(directory: Path) -> dict[str, bytes]:
    """The store's files as bytes, to prove a request changed nothing. Not the ``-shm`` file:
    it is the WAL's shared-memory index, where a mere read takes its read mark (as looking up
    an expired user does); any write still shows in the ``-wal`` file."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.glob("labrt.sqlite*"))
        if p.is_file() and not p.name.endswith("-shm")
    }


class Spawned:
    """A ``labrt run`` in its own process, as systemd would run it."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str] | None = None,
        *args: str,
        labrt: tuple[str | Path, ...] = (sys.executable, "-m", "labrt"),
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """``labrt``: the command, by default this interpreter's labrt (the tree under test);
        ``pass_fds``: descriptors it inherits (a socket, as systemd passes one)."""
        self.log = config.parent / f"labrt-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [*labrt, "run", str(config), "--port", "0", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=config.parent,
            pass_fds=pass_fds,
        )
        self.url = self._wait_listening()

    def _wait_listening(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r'listening on (http://[^\s"]+)', self.log.read_text())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"labrt run did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """``kill -9``: no cleanup of any kind runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log_file.close()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd stops a service; returns the exit status."""
        try:
            return stop_process(self.process, timeout)
        finally:
            self._log_file.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, as systemd stops a service, and its exit status; SIGKILL if it has not ended
    within ``timeout`` seconds (then the wait raises)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


async def raw_exchange(host: str, port: int, request: bytes) -> tuple[int, CIMultiDict[str], bytes]:
    """Send ``request`` exactly as written on a connection of its own (what an HTTP client
    would refuse to send); the answer's status, headers and body (up to Content-Length)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict(line.split(": ", 1) for line in lines if ": " in line)
    length = int(headers.get("Content-Length", len(body)))
    return int(status_line.split()[1]), headers, body[:length]


def copy_of_the_repository(target: Path) -> None:
    """What a clean clone has: tracked files plus new ones not ignored, nothing else."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPOSITORY / os.fsdecode(name)
        if source.is_file():
            (target / source.relative_to(REPOSITORY)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / source.relative_to(REPOSITORY))


def listening_url(process: subprocess.Popen[bytes], log: Path, seconds: float) -> str:
    """The URL a spawned ``labrt run`` logs once it listens (asserts it does in time)."""
    url = None
    deadline = time.monotonic() + seconds
    while url is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        found = re.search(rb"listening on (http://\S+)", log.read_bytes())
        url = found and found.group(1).decode()
    assert url, log.read_text()
    return url


def fake_student_sees_the_example(fake_new: list[str | Path], cwd: Path) -> None:
    """``labrt fake new`` (the given command) admits a student, whose browser then gets the
    example lab's page through the callback link."""
    fake = subprocess.run(fake_new, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert fake.returncode == 0, fake.stderr
    found = re.search(r"open:\s+(\S+)", fake.stdout)
    assert found, fake.stdout
    with urllib.request.urlopen(found.group(1), timeout=30) as page:  # follows the redirect
        assert page.status == 200
        assert "Lights, button and board" in page.read().decode()
