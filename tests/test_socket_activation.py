"""Socket activation (issue 18): a socket held by systemd keeps the lab's port while labrt is
down, so a request from the RLMS waits in the kernel's queue instead of being refused.

The tests hold the listening socket themselves, as systemd would, and pass it to `labrt run`
as file descriptor 3 with `LISTEN_FDS` and `LISTEN_PID` (sd_listen_fds(3))."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import AUTH, Spawned, new_body, write_config

from labrt._engine.activation import inherited_sockets

# What systemd does between fork and exec: the socket goes to fd 3, LISTEN_PID is the pid of
# the process that will run labrt (exec keeps the pid). argv: fd, "self" or a pid, labrt's args.
ON_FD_3 = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid()) if sys.argv[2] == "self" else sys.argv[2]
os.execv(sys.executable, [sys.executable, "-m", "labrt", *sys.argv[3:]])
"""

ENV_LAB = """
import os
from labrt import Lab

lab = Lab()


@lab.route("GET", "/env")
async def env(request):
    return {name: os.environ.get(name) for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
"""
UNSET = {"LISTEN_FDS": None, "LISTEN_PID": None, "LISTEN_FDNAMES": None}
SYSTEMD_ENV = {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "labrt.socket"}


def held_socket(kind: int = socket.SOCK_STREAM, *, listen: bool = True) -> socket.socket:
    """A socket bound on loopback, as a socket unit's ListenStream= makes it."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if listen and kind == socket.SOCK_STREAM:
        sock.listen(16)
    return sock


def on_fd_3(sock: socket.socket, listen_pid: str = "self") -> tuple[str, ...]:
    return (sys.executable, "-c", ON_FD_3, str(sock.fileno()), listen_pid)


def lab_config(directory: Path, port: int) -> Path:
    (directory / "env_lab.py").write_text(ENV_LAB)
    return write_config(directory, f"[server]\nport = {port}\n", module=directory / "env_lab.py")


def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request as the RLMS makes it, on a connection of its own."""
    address = url.removeprefix("http://")
    connection = http.client.HTTPConnection(address, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        headers = {**AUTH, "Content-Type": "application/json"}
        connection.request(method, path, body=data, headers=headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def listening_line(lab: Spawned) -> str:
    return next(line for line in lab.log.read_text().splitlines() if "listening on" in line)


@pytest.mark.slow
def test_a_request_while_labrt_is_down_is_answered_once_it_is_back(tmp_path):
    held = held_socket()
    port = held.getsockname()[1]
    config = lab_config(tmp_path, port)
    spawn = {"labrt": on_fd_3(held), "pass_fds": (held.fileno(),)}
    lab = Spawned(config, SYSTEMD_ENV, **spawn)
    try:
        assert lab.url == f"http://127.0.0.1:{port}"
        assert listening_line(lab).endswith("(socket from systemd)")
        assert call(lab.url, "GET", "/env") == (200, UNSET)  # nothing labrt starts inherits them
        status, started = call(lab.url, "POST", "/ldl/sessions/", new_body(time.time()))
        assert status == 200
        sid = started["session_id"]
        before = call(lab.url, "GET", f"/ldl/sessions/{sid}/status")
        assert before[0] == 200 and before[1]["should_finish"] > 0

        lab.kill()  # a crash: nobody listens, the socket stays held
        pending = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        pending.request("GET", f"/ldl/sessions/{sid}/status", headers=AUTH)  # not refused

        lab = Spawned(config, SYSTEMD_ENV, **spawn)  # restarted on the same socket
        answer = pending.getresponse()
        assert (answer.status, json.loads(answer.read())) == before
        pending.close()
    finally:
        lab.kill()
        held.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "listen_pid"),
    [({}, "self"), (SYSTEMD_ENV, "1")],
    ids=["no LISTEN_FDS", "LISTEN_PID of another process"],
)
def test_a_socket_not_meant_for_labrt_is_left_alone(tmp_path, env, listen_pid):
    """Without LISTEN_FDS, or with another process's LISTEN_PID, labrt binds [server] host
    and port itself, even though a listening socket sits on fd 3."""
    held = held_socket()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        own_port = probe.getsockname()[1]
    config = lab_config(tmp_path, own_port)
    lab = Spawned(
        config,
        env,
        "--port",
        str(own_port),
        labrt=on_fd_3(held, listen_pid),
        pass_fds=(held.fileno(),),
    )
    try:
        assert lab.url == f"http://127.0.0.1:{own_port}"
        assert listening_line(lab).endswith("(bound by labrt)")
        assert call(lab.url, "GET", "/env") == (200, UNSET)
    finally:
        lab.kill()
        held.close()


@pytest.mark.slow
@pytest.mark.parametrize("passed", ["udp", "not listening", "another port"])
def test_a_socket_labrt_cannot_serve_is_a_configuration_error(tmp_path, passed):
    held = {
        "udp": lambda: held_socket(socket.SOCK_DGRAM),
        "not listening": lambda: held_socket(listen=False),
        "another port": held_socket,
    }[passed]()
    config = lab_config(tmp_path, held.getsockname()[1] + (passed == "another port"))
    try:
        result = subprocess.run(
            [*on_fd_3(held), "run", str(config)],
            env={**os.environ, **SYSTEMD_ENV},
            pass_fds=(held.fileno(),),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.close()
    assert result.returncode == 2, result.stderr
    if passed == "another port":
        assert "[server] port (or --port) is" in result.stderr
    else:
        assert "not a listening TCP socket" in result.stderr


def test_the_variables_are_gone_whoever_they_were_for():
    for environ in (
        {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "labrt.socket", "HOME": "/"},
        {"LISTEN_FDS": "0", "LISTEN_PID": str(os.getpid()), "HOME": "/"},
    ):
        assert inherited_sockets(environ) == []
        assert environ == {"HOME": "/"}
