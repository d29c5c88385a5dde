"""How each stack is started: labrt (one ``labrt run``), weblablib in its two documented
production forms (gunicorn sync workers; gunicorn's gevent worker with Flask-SocketIO plus
``flask weblab loop``), both with the Redis they need, and a bare aiohttp hello-world.

Each target starts fresh (an empty store, a flushed Redis), may be pre-filled with past
sessions before it starts, and lists every process it runs so that memory counts them all.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import time
from pathlib import Path

from .procs import Server, free_port

BENCH = Path(__file__).resolve().parent.parent
LABS = BENCH / "labs"
TESTS = BENCH.parent / "tests"  # tests/history.py fills a store with past sessions
RLMS_USER, RLMS_PASSWORD = "bench-rlms", "bench-" + secrets.token_hex(8)
API = "/weblab/sessions/api"
# The same on both sides: a long poll window, so that no session times out between two
# measurements (the RLMS's status polls do not count as the student's polls).
SESSION_TIMEOUT = 300


class Redis:
    """Debian's redis-server on a loopback port, no persistence, flushed between targets."""

    def __init__(self, binary: str, workdir: Path) -> None:
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.server = Server("redis", [*argv, "no", "--dir", str(workdir)], port, workdir / "r.log")
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.server.start(None)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.command(["PING"]) == [b"+PONG"]:
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def pids(self) -> list[int]:
        return self.server.pids()

    def stop(self) -> None:
        self.server.stop()

    def command(self, *commands: list[str]) -> list[bytes]:
        """Send ``commands`` pipelined over one connection; returns each reply's first line."""
        payload = bytearray()
        for argv in commands:
            payload += f"*{len(argv)}\r\n".encode()
            for arg in argv:
                data = arg.encode()
                payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as sock:
            sock.sendall(payload)
            buffer = b""
            while buffer.count(b"\r\n") < len(commands):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
        return buffer.split(b"\r\n")[: len(commands)]

    def flush(self) -> None:
        self.command(["FLUSHALL"])

    def fill_expired_users(self, count: int, now: float) -> None:
        """``count`` users whose slot ended in the last hour, as weblablib keeps them (one
        hash per expired user under ``lab:weblab:inactive:``, expiring after an hour)."""
        for first in range(0, count, 2000):
            batch = []
            for i in range(first, min(count, first + 2000)):
                key = f"lab:weblab:inactive:past-{i:06d}-{secrets.token_urlsafe(24)}"
                ended = now - 3000 * (i + 1) / count
                fields = {
                    "back": "https://rlms.example/after",
                    "max_date": str(ended),
                    "username": f"past{i}",
                    "username-unique": f"past{i}@bench",
                    "data": "{}",
                    "locale": '"en"',
                    "full_name": '"Past Student"',
                    "experiment_name": '"bench"',
                    "category_name": '"Bench"',
                    "experiment_id": '"bench@Bench"',
                    "request_client_data": "{}",
                    "request_server_data": "{}",
                    "start_date": str(ended - 300),
                    "disposing_resources": "false",
                }
                batch.append(["HSET", key, *[x for kv in fields.items() for x in kv]])
                batch.append(["EXPIRE", key, "3600"])
            self.command(*batch)


class OneServer:
    """A target that is a single server process (and what it forks)."""

    server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def pids(self) -> list[int]:
        return self.server.pids() if self.server else []

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class Labrt(OneServer):
    """``labrt run`` in its own process, as systemd runs it, on a fresh SQLite store; by the
    ``python`` of a venv labrt is installed in (env.labrt_venv), or the bench's own."""

    name = "labrt"

    def __init__(
        self,
        workdir: Path,
        module: Path = LABS / "compare_lab.py",
        python: Path | str = sys.executable,
    ) -> None:
        self.python = str(python)
        self.workdir = workdir / "labrt"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = self.workdir / "labrt.sqlite"
        self.module = module
        self.server: Server | None = None
        self.past = 0

    def _config(self, port: int) -> Path:
        path = self.workdir / "lab.toml"
        path.write_text(
            f'[lab]\nname = "bench"\nmodule = "{self.module}"\n'
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
            f'[rlms]\nusername = "{RLMS_USER}"\npassword = "{RLMS_PASSWORD}"\n'
            f'[store]\npath = "{self.store}"\n'
            f"[session]\ntimeout = {SESSION_TIMEOUT}\npoll_interval = 5\n"
        )
        return path

    def prepare(self, past_sessions: int = 0) -> None:
        """An empty store, then ``past_sessions`` ended sessions written into it."""
        for old in self.workdir.glob("labrt.sqlite*"):
            old.unlink()
        self.past = past_sessions
        if past_sessions:
            sys.path.insert(0, str(TESTS))
            from history import fill_labrt_store

            asyncio.run(fill_labrt_store(self.store, past_sessions, time.time()))

    def start(self) -> float:
        port = free_port()
        config = self._config(port)
        argv = [self.python, "-m", "labrt", "run", str(config)]
        self.server = Server("labrt", argv, port, self.workdir / "labrt.log", cwd=self.workdir)
        return self.server.start(API)

    def main_pid(self) -> int:
        assert self.server is not None and self.server.process is not None
        return self.server.process.pid


class Weblablib:
    """weblablib under gunicorn, with the Redis it needs (counted as part of the stack).

    ``push=False``: ``gunicorn -w 5`` sync workers, each with its own task runner and cleaner
    threads. ``push=True``: the Flask-SocketIO form, ``gunicorn -k gevent -w 1`` with a Redis
    message queue and no threads, plus ``flask weblab loop`` for tasks and cleaning.
    """

    def __init__(self, workdir: Path, venv: Path, redis: Redis, *, push: bool = False) -> None:
        self.name = "weblablib-socketio" if push else "weblablib"
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.venv, self.redis, self.push = venv, redis, push
        self.servers: list[Server] = []

    def _env(self) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis.url,
            "BENCH_SECRET": secrets.token_hex(16),
            "BENCH_RLMS_USER": RLMS_USER,
            "BENCH_RLMS_PASSWORD": RLMS_PASSWORD,
            "BENCH_SOCKETIO": "1" if self.push else "0",
        }

    def prepare(self, past_sessions: int = 0) -> None:
        self.redis.flush()
        if past_sessions:
            self.redis.fill_expired_users(past_sessions, time.time())

    def start(self) -> float:
        port = free_port()
        env = self._env()
        bin_ = self.venv / "bin"
        workers = ["-k", "gevent", "-w", "1"] if self.push else ["-w", "5"]
        argv = [str(bin_ / "gunicorn"), *workers, "-b", f"127.0.0.1:{port}"]
        argv += ["--no-control-socket", "--chdir", str(LABS), "wl_lab:app"]
        web = Server(self.name, argv, port, self.workdir / "gunicorn.log", env=env)
        self.servers = [web]
        cold = web.start(API)
        if self.push:
            loop = [str(bin_ / "flask"), "--app", "wl_lab:app", "weblab", "loop"]
            looper = Server(
                "weblab-loop", loop, 0, self.workdir / "loop.log", {**env, "BENCH_LOOP": "1"}, LABS
            )
            looper.env["BENCH_SOCKETIO"] = "0"
            looper.start(None)
            self.servers.append(looper)
        return cold

    @property
    def url(self) -> str:
        return self.servers[0].url

    def pids(self) -> list[int]:
        return [pid for s in self.servers for pid in s.pids()] + self.redis.pids()

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers = []


class Hello(OneServer):
    """The ceiling for request handling: one aiohttp handler, nothing else."""

    name = "aiohttp-hello"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: Server | None = None

    def prepare(self, past_sessions: int = 0) -> None:
        pass

    def start(self) -> float:
        port = free_port()
        argv = [sys.executable, str(LABS / "hello.py"), str(port)]
        self.server = Server(self.name, argv, port, self.workdir / "hello.log")
        return self.server.start("/")
