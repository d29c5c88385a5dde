"""The real LabDiscoveryEngine 0.6.0 (PyPI), run on loopback for integration tests.

LDE pins libraries that conflict with labrt's (aiohttp, Flask 2), so it lives in a venv of its
own and runs as its own processes: Redis (Debian's ``redis-server``), its web app under
gunicorn, and its worker (the only process that calls labs). Tests talk to it as an external
RLMS client would, over its JSON API with HTTP basic auth, and to Redis with a few raw RESP
commands, so nothing of LDE is imported here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

LDE_PINS = ["labdiscoveryengine==0.6.0", "pymongo==4.6.1", "gunicorn==21.2.0"]
# pymongo: newer releases break LDE's import. gunicorn: LDE does not pin it, and 23+ writes a
# control socket under ~/.gunicorn shared by every gunicorn of the user.
VENV = Path(os.environ.get("LABRT_LDE_VENV", Path.home() / ".cache" / "labrt-tests" / "lde-0.6.0"))
EXTERNAL_LOGIN, EXTERNAL_PASSWORD = "tester", "tester-password"
# LDE reads no configuration from the environment we want it to see.
_SCRUBBED = {
    "FLASK_APP",
    "FLASK_DEBUG",
    "LABDISCOVERYENGINE_DIRECTORY",
    "REDIS_URL",
    "SECRET_KEY",
    "MONGO_URI",
    "SQLALCHEMY_DATABASE_URI",
    "LDE_RUNNING_MODE",
    "VIRTUAL_ENV",
    "PYTHONPATH",
}


def ensure_venv() -> Path:
    """LDE's venv, made once and reused (a marker file says it is complete)."""
    marker = VENV / "labrt-pins.txt"
    if marker.exists() and marker.read_text() == "\n".join(LDE_PINS):
        return VENV
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [VENV / "bin" / "python", "-m", "pip", "install", "--quiet", *LDE_PINS],
        check=True,
        timeout=900,
    )
    marker.write_text("\n".join(LDE_PINS))
    return VENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis(port: int, *args: str) -> Any:
    """One Redis command over RESP; enough for GET, PING and PUBSUB NUMSUB."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        payload += b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload)
        return _reply(s.makefile("rb"))


def _reply(f: Any) -> Any:
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else f.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        return None if int(rest) < 0 else [_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected Redis reply {line!r}")


class LDE:
    """One LDE deployment: resources are ``{name: (url, login, password, api)}``,
    laboratories ``{name: [resource, ...]}``."""

    def __init__(
        self,
        workdir: Path,
        resources: dict[str, tuple[str, str, str, str]],
        laboratories: dict[str, list[str]],
    ) -> None:
        self.venv = ensure_venv()
        self.workdir = workdir
        self.deploy = workdir / "deploy"
        self.resources = resources
        self.laboratories = laboratories
        self.redis_port = free_port()
        self.web_port = free_port()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env["FLASK_CONFIG"] = "production"
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _hash(self, password: str) -> str:
        # LDE's own werkzeug; 1000 rounds keep each basic-auth check cheap (its default takes
        # about 150 ms of CPU per request).
        script = (
            "import sys; from werkzeug.security import generate_password_hash as g; "
            "print(g(sys.argv[1], method='pbkdf2:sha256:1000'))"
        )
        out = subprocess.check_output([self.venv / "bin" / "python", "-c", script, password])
        return out.decode().strip()

    def _write_deployment(self) -> None:
        self.deploy.mkdir(parents=True)
        (self.deploy / "configuration.yml").write_text(
            "SECRET_KEY: lde-test-secret\n"
            f"REDIS_URL: redis://127.0.0.1:{self.redis_port}/0\n"
            "DEFAULT_MAX_TIME: 300\n"
        )
        (self.deploy / "resources.yml").write_text(
            "".join(
                f"{name}:\n  url: {url}\n  login: {login}\n  password: {password}\n  api: {api}\n"
                for name, (url, login, password, api) in self.resources.items()
            )
        )
        (self.deploy / "laboratories.yml").write_text(
            "".join(
                f"{name}:\n  display_name: {name}\n  category: Electronics\n  max_time: 300\n"
                f"  resources: [{', '.join(resources)}]\n"
                for name, resources in self.laboratories.items()
            )
        )
        # Written directly: LDE's `credentials` CLI edits this YAML line by line and breaks it.
        (self.deploy / "credentials.yml").write_text(
            "administrators:\n  admin:\n    name: Admin\n"
            f"    password: {self._hash('admin-password')}\n"
            f"external:\n  {EXTERNAL_LOGIN}:\n    name: labrt tests\n"
            f"    password: {self._hash(EXTERNAL_PASSWORD)}\n    laboratories: all\n"
        )

    def _spawn(self, name: str, argv: list[str], cwd: Path) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self._processes[name] = subprocess.Popen(
            argv,
            cwd=cwd,
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start(self) -> LDE:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._write_deployment()
        self._spawn(
            "redis",
            [
                server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            self.workdir,
        )
        self._wait(lambda: redis(self.redis_port, "PING") == "PONG", "redis")
        bin_ = self.venv / "bin"
        self._spawn(
            "web",
            [
                str(bin_ / "gunicorn"),
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "1",
                "--threads",
                "8",
                "--graceful-timeout",
                "2",
                'labdiscoveryengine:create_app("production")',
            ],
            self.deploy,
        )
        self._spawn("worker", [str(bin_ / "lde"), "worker", "run"], self.deploy)
        self._wait(lambda: self.api("GET", "/external/v1/")[0] == 200, "LDE's web process")
        self._wait(self._worker_ready, "LDE's worker")
        return self

    def _worker_ready(self) -> bool:
        if redis(self.redis_port, "GET", "lde:running") != "true":
            return False
        channels = [f"lde:resources:{r}:channel" for r in self.resources]
        counts = redis(self.redis_port, "PUBSUB", "NUMSUB", *channels)
        return all(int(n) >= 1 for n in counts[1::2])

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text(errors="replace")
                    raise RuntimeError(f"{name} exited ({process.returncode}):\n{log[-3000:]}")
            try:
                if ready():
                    return
            except (OSError, RuntimeError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{what} not ready after {timeout} s")

    def stop(self) -> None:
        """The worker first (it may be calling the lab), then the web app, then Redis."""
        for name in ("worker", "web", "redis"):
            process = self._processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> LDE:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- LDE's external API: what another system booking students would call ----------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        token = base64.b64encode(f"{EXTERNAL_LOGIN}:{EXTERNAL_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None

    def reserve(self, laboratory: str, user: str, max_time: float) -> str:
        """Book ``user`` into ``laboratory`` for ``max_time`` s; returns the reservation id."""
        body = {
            "laboratory": laboratory,
            "userIdentifier": user,
            "userFullName": user.title(),
            "backUrl": "http://127.0.0.1:9/back",
            "locale": "es",
            "maxTime": max_time,
        }
        status, answer = self.api("POST", "/external/v1/reservations/", body)
        assert status == 200 and answer.get("success"), (status, answer)
        return answer["reservation_id"]

    def status(self, rid: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """The reservation; with ``previous``, LDE holds the answer until it changes (≤ 20 s)."""
        query = ""
        if previous is not None:
            query = f"?previous_status={previous['status']}&max_time=20"
            if previous.get("position") is not None:
                query += f"&previous_position={previous['position']}"
        return self.api("GET", f"/external/v1/reservations/{rid}{query}", timeout=40)[1]

    def wait_for(self, rid: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
        """Follow the reservation until it is ``wanted``; fails if it ends otherwise."""
        deadline = time.monotonic() + timeout
        current = self.status(rid)
        broken_since = None
        while current["status"] != wanted:
            if current["status"] == "broken":
                # LDE 0.6.0 says "broken" for an instant while its worker takes a reservation
                # off the queue; only a lasting "broken" is real.
                broken_since = broken_since or time.monotonic()
                if time.monotonic() - broken_since < 1:
                    time.sleep(0.05)
                    current = self.status(rid)
                    continue
            if current["status"] in ("finished", "broken") or time.monotonic() > deadline:
                raise AssertionError(f"reservation {rid} is {current}, expected {wanted}")
            current = self.status(rid, previous=current)
        return current

    def cancel(self, rid: str) -> dict[str, Any]:
        return self.api("DELETE", f"/external/v1/reservations/{rid}")[1]

    def assigned(self, resource: str) -> str | None:
        """The reservation holding ``resource``; None once LDE considers the lab free."""
        return redis(self.redis_port, "GET", f"lde:resources:{resource}:assigned")
