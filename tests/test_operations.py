"""Running as a service: systemd's notifications and units, a clean stop, metrics, logs, and
two labs side by side on one host."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from helpers import AUTH, LABS, PASSWORD, Spawned, new_body, serve_lab, write_config
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent

BLOCKING_LAB = """
import time
from labrt import Lab

lab = Lab()


@lab.route("POST", "/block")
async def block(request):
    time.sleep(1.5)  # blocks the event loop, as a careless lab would
    return {}
"""


def datagrams(sock: socket.socket, until: str, timeout: float = 30) -> list[tuple[float, str]]:
    """(arrival time, message) of every datagram up to the first containing ``until``."""
    got: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append((time.monotonic(), data))
        if until in data:
            return got
    raise AssertionError(f"no {until!r} in {got}")


@pytest.mark.slow
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_notifications_in_order(tmp_path, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"@labrt-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    (tmp_path / "blocking.py").write_text(BLOCKING_LAB)
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000"}  # ping every 0.1 s
    lab = None
    try:
        lab_started = time.monotonic()
        lab = Spawned(write_config(tmp_path, module=tmp_path / "blocking.py"), env)
        ready = datagrams(sock, "READY=1")
        assert not any("WATCHDOG=1" in m for _, m in ready)  # nothing before READY
        with urllib.request.urlopen(f"{lab.url}/ldl/sessions/api") as answer:
            assert answer.status == 200  # READY came once the server accepted connections
        assert ready[-1][0] > lab_started
        pings = datagrams(sock, "WATCHDOG=1")
        pings += datagrams(sock, "WATCHDOG=1")
        assert "STATUS=0 session(s) active" in pings[-1][1]
        # A blocked loop sends no pings: systemd would restart it.
        request = urllib.request.Request(f"{lab.url}/block", method="POST")
        blocked_at = time.monotonic()
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 200
        after = [t for t, m in datagrams(sock, "WATCHDOG=1") if t > blocked_at]
        assert after and after[0] - blocked_at > 1.2
        lab.process.send_signal(15)
        stopping = datagrams(sock, "STOPPING=1")
        assert stopping
        assert lab.process.wait(30) == 0
    finally:
        if lab is not None:
            lab.kill()
        sock.close()


UNITS = ("labrt.service", "labrt@.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_unit_files_verify(tmp_path):
    labrt = Path(sys.executable).with_name("labrt")
    for name, installed in (
        ("labrt.service", "labrt.service"),
        ("labrt@.service", "labrt@x.service"),
        ("labrt.socket", "labrt.socket"),
        ("labrt@.socket", "labrt@x.socket"),
    ):
        text = (ROOT / "systemd" / name).read_text()
        (tmp_path / installed).write_text(text.replace("/opt/labrt/venv/bin/labrt", str(labrt)))
    units = sorted(tmp_path.glob("*.s*"))
    assert len(units) == 4
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in units)],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr) == (0, "")
    # What `labrt systemd` prints starts from the same units: systemd/ links to the package's.
    for name in ("labrt.service", "labrt.socket"):
        shipped = ROOT / "labrt" / "templates" / name
        assert (ROOT / "systemd" / name).resolve() == shipped.resolve()
    # The service works without its socket too: it neither requires nor waits for it.
    for name in UNITS:
        assert ".socket" not in "".join(
            line
            for line in (ROOT / "systemd" / name).read_text().splitlines(True)
            if not line.startswith("#")
        )


def test_labrt_systemd_prints_a_unit_for_this_installation(tmp_path):
    config = write_config(tmp_path)
    unit = subprocess.run(
        [sys.executable, "-m", "labrt", "systemd", str(config), "--user", "lab1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"ExecStart={Path(sys.executable).with_name('labrt')} run {config.resolve()}" in unit
    assert "User=lab1" in unit and "Type=notify" in unit and "WatchdogSec=" in unit
    assert f"ReadWritePaths={tmp_path.resolve()}" in unit  # where its store is
    assert "LoadCredential=" not in unit  # lab.toml has the password: a credential goes unread
    # The store holds the cookie secret and the session ids: whatever the system's umask, what
    # the service creates is its own alone (issue 14, case 4), in both shipped units too.
    for text in (unit, *((ROOT / "systemd" / n).read_text() for n in UNITS)):
        assert "\nUMask=0077\n" in text and "\nStateDirectoryMode=0700\n" in text
    if shutil.which("systemd-analyze"):
        (tmp_path / "lab1.service").write_text(unit)
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / "lab1.service")],
            capture_output=True,
            text=True,
        )
        assert (verify.returncode, verify.stderr) == (0, "")


@pytest.mark.parametrize(
    ("host", "listen"),
    [
        ("127.0.0.1", "127.0.0.1:{port}"),
        ("localhost", "127.0.0.1:{port}"),
        ("0.0.0.0", "0.0.0.0:{port}"),
        ("::1", "[::1]:{port}"),
    ],
)
def test_labrt_systemd_prints_the_matching_socket(tmp_path, host, listen):
    """`labrt systemd --socket` prints the socket unit that holds the lab's [server] port for
    the service `labrt systemd` prints; installed side by side under one name, they verify."""
    config = write_config(tmp_path, f'[server]\nhost = "{host}"\nport = 8093\n')

    def printed(*options: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "labrt", "systemd", *options, str(config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    socket_unit, service = printed("--socket"), printed()
    assert socket_unit.startswith(f"# Written by `labrt systemd --socket {config.resolve()}`")
    lines = socket_unit.splitlines()
    assert [line for line in lines if line.startswith("ListenStream=")] == [
        "ListenStream=" + listen.format(port=8093)
    ]
    assert "[Socket]" in lines and "WantedBy=sockets.target" in lines
    assert "sudo cp" not in socket_unit
    assert "[Socket]" not in service and "ExecStart=" in service
    if shutil.which("systemd-analyze"):
        (tmp_path / "lab1.service").write_text(service)
        (tmp_path / "lab1.socket").write_text(socket_unit)
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / "lab1.socket")],
            capture_output=True,
            text=True,
        )
        assert (verify.returncode, verify.stderr) == (0, "")


def test_labrt_systemd_refuses_a_socket_for_a_host_name(tmp_path):
    """ListenStream= takes an address, not a name to resolve."""
    config = write_config(tmp_path, '[server]\nhost = "lab.example.org"\n')
    result = subprocess.run(
        [sys.executable, "-m", "labrt", "systemd", "--socket", str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "an IP address" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("user", ["Pi", "lab\nExecStartPre=/bin/sh", "", "a b"])
def test_labrt_systemd_refuses_a_user_name_that_is_not_one(tmp_path, user):
    """The name goes into the unit as it is: a newline would add a line of its own."""
    config = write_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "labrt", "systemd", str(config), "--user", user],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "expected a system user name" in result.stderr
    assert result.stdout == ""


def test_labrt_systemd_with_the_password_as_a_credential(tmp_path, monkeypatch):
    """No password in lab.toml and the store in the state directory: the unit loads the
    credential, and needs no extra writable path. Neither the shell's password variable nor
    a missing $STATE_DIRECTORY gets in the way of writing it."""
    config = write_config(tmp_path)
    text = config.read_text().replace(f'password = "{PASSWORD}"\n', "")
    text = text.replace(str(tmp_path / "labrt.sqlite"), "$STATE_DIRECTORY/labrt.sqlite")
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY",)}
    env["LABRT_RLMS_PASSWORD"] = "from-the-shell"
    unit = subprocess.run(
        [sys.executable, "-m", "labrt", "systemd", str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert "LoadCredential=rlms-password:/etc/labrt/rlms.password" in unit
    assert "ReadWritePaths" not in unit
    assert unit.startswith(f"# Written by `labrt systemd {config.resolve()}`")
    assert "sudo cp" not in unit  # the shipped file's installation notes are left out


def test_the_password_can_be_a_systemd_credential(tmp_path, monkeypatch):
    from labrt.config import load_config

    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('password = "a-real-secret-for-tests"\n', ""))
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "rlms-password").write_text("from-systemd-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    monkeypatch.delenv("LABRT_RLMS_PASSWORD", raising=False)
    assert load_config(config).rlms.password == "from-systemd-credential"


@pytest.mark.slow
async def test_sigterm_with_a_session_and_a_running_task(tmp_path):
    record = tmp_path / "record.jsonl"
    env = {"LABRT_TEST_RECORD": str(record), "PYTHONPATH": str(LABS)}
    extra = '[hardware]\npins = "mock"\n[drivers.led]\nkind = "kinds:Recorded"\npin = 17\n'
    lab = Spawned(write_config(tmp_path, extra), env)
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            body = new_body(time.time())
            async with http.post(f"{lab.url}/ldl/sessions/", json=body, headers=AUTH) as r:
                started = await r.json()
            async with http.get(started["url"], allow_redirects=False):
                pass
            async with http.post(f"{lab.url}/api/block") as r:
                task_id = (await r.json())["task_id"]
            deadline = time.monotonic() + 10
            while "task-start" not in record.read_text():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        began = time.monotonic()
        assert lab.stop(timeout=60) == 0
        assert time.monotonic() - began < 30  # well within TimeoutStopSec
    finally:
        lab.kill()
    events = [json.loads(line) for line in record.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("dispose") == 1
    assert kinds[-1] == "safe" and events[-1]["value"] == 0  # safe, after the dispose
    db = __import__("sqlite3").connect(tmp_path / "labrt.sqlite")
    try:
        status, result = db.execute(
            "SELECT status, result FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        reason = db.execute("SELECT end_reason FROM sessions").fetchone()[0]
    finally:
        db.close()
    assert (status, json.loads(result), reason) == ("done", "slept", "shutdown")  # it stopped


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_move_with_the_events(tmp_path):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        status, text = await lab.call("GET", "/metrics", auth=None)
        assert status == 200
        before = samples(text)
        assert before[("labrt_sessions_active", ())] == 0
        sid = await lab.start()
        await lab.visit(browser, sid)
        assert await lab.should_finish(sid) == 5
        async with browser.post(lab.url("/api/block?seconds=0")) as r:
            task_id = (await r.json())["task_id"]
        await lab.runtime.tasks.get(task_id).join(10)
        ws = await browser.ws_connect(lab.url("/labrt/ws"))
        await ws.receive()
        now = samples((await lab.call("GET", "/metrics", auth=None))[1])
        assert now[("labrt_sessions_started_total", (("dialect", "ldl"),))] == 1
        assert now[("labrt_sessions_active", ())] == 1
        assert now[("labrt_websocket_pages", ())] == 1
        assert now[("labrt_rlms_requests_total", (("endpoint", "start"), ("status", "200")))] == 1
        assert now[("labrt_rlms_requests_total", (("endpoint", "status"), ("status", "200")))] == 1
        assert now[("labrt_task_duration_seconds_count", (("task", "block"),))] == 1
        await ws.close()
        await lab.call("DELETE", f"/ldl/sessions/{sid}")
        after = samples((await lab.call("GET", "/metrics", auth=None))[1])
        assert after[("labrt_sessions_ended_total", (("reason", "disposed-by-rlms"),))] == 1
        assert after[("labrt_sessions_active", ())] == 0
        status, _ = await lab.call(
            "GET", "/metrics", auth=None, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert status == 403  # from elsewhere, only with the RLMS credentials


async def test_metrics_and_healthz_access_is_configurable(tmp_path):
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    async with serve_lab(tmp_path, '[server]\noperator_access = "open"\n') as lab:
        assert (await lab.call("GET", "/metrics", auth=None, headers=relayed))[0] == 200
        status, health = await lab.call("GET", "/healthz", auth=None, headers=relayed)
        assert status == 200 and health["store"] == "ok" and "loop_lag" in health
    other = tmp_path / "other"
    other.mkdir()
    async with serve_lab(other, '[server]\noperator_access = "credentials"\n') as lab:
        assert (await lab.call("GET", "/metrics", auth=None))[0] == 403  # even from loopback
        assert (await lab.call("GET", "/metrics"))[0] == 200


LED = '[hardware]\npins = "mock"\n\n[drivers.led]\nkind = "gpio.output"\npin = 17\n'
OPERATOR_CALLS = (
    ("GET", "/healthz", None),
    ("GET", "/labrt/hardware", None),
    ("POST", "/labrt/hardware", {"name": "led", "value": "on"}),
)


async def test_local_operator_access_needs_a_loopback_host_and_no_relay(tmp_path):
    """Loopback alone is not "local": a browser on the lab machine visiting a hostile site
    whose name resolves to 127.0.0.1 (DNS rebinding) sends `Host: evil.example` and a
    matching Origin, and a proxy on the machine may relay with only `X-Forwarded-Host` or
    `-Proto`. Neither may read the lab's state or switch a device; the RLMS's credentials
    still work whatever the Host says, so `labrt hardware` does."""
    async with serve_lab(tmp_path, LED, module=LABS / "hardware_lab.py") as lab:
        port = lab.server.port
        led = lab.runtime.hardware.pin_factory.pin(17)
        hostile = (
            {"Host": "evil.example", "Origin": "http://evil.example"},
            {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
            {"X-Forwarded-Host": "evil.example"},
            {"X-Forwarded-Proto": "https"},
            {"Host": f"localhost.evil.example:{port}"},
            {"Host": f"evil@localhost:{port}"},
        )
        for headers in hostile:
            for method, path, body in OPERATOR_CALLS:
                status, answer = await lab.call(method, path, auth=None, headers=headers, json=body)
                assert status == 403, (headers, method, path, status, answer)
                assert answer["error"] is True
            assert led.state == 0, headers  # never switched
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", f"[::1]:{port}"):
            for method, path, _body in OPERATOR_CALLS[:2]:
                status, _ = await lab.call(method, path, auth=None, headers={"Host": host})
                assert status == 200, (host, path)
        on = {"name": "led", "value": "on"}
        status, _ = await lab.call(
            "POST", "/labrt/hardware", auth=None, json=on, headers={"Host": f"localhost:{port}"}
        )
        assert status == 200 and led.state == 1
        for method, path, body in OPERATOR_CALLS:  # the credentials, whatever the Host
            status, _ = await lab.call(method, path, headers={"Host": "evil.example"}, json=body)
            assert status == 200, path


@pytest.mark.slow
def test_json_logs_name_every_transition_and_never_the_session_id(tmp_path):
    config = write_config(tmp_path)
    lab = Spawned(config, {}, "--log-format", "json")
    try:
        body = json.dumps(new_body(time.time())).encode()
        headers = {**AUTH, "Content-Type": "application/json"}
        request = urllib.request.Request(
            f"{lab.url}/ldl/sessions/", data=body, headers=headers, method="POST"
        )
        with urllib.request.urlopen(request) as answer:
            sid = json.loads(answer.read())["session_id"]
        request = urllib.request.Request(
            f"{lab.url}/ldl/sessions/{sid}", headers=AUTH, method="DELETE"
        )
        with urllib.request.urlopen(request) as answer:
            assert json.loads(answer.read()) == {"message": "Deleted"}
    finally:
        assert lab.stop() == 0
    text = lab.log.read_text()
    assert sid not in text
    lines = [json.loads(line) for line in text.splitlines()]
    events = [(e["event"], e.get("reason")) for e in lines if "event" in e]
    assert events == [
        ("session-started", None),
        ("session-ending", "disposed-by-rlms"),
        ("session-ended", "disposed-by-rlms"),
    ]
    assert all(
        e["session"] == lines[-1].get("session", e["session"]) for e in lines if "event" in e
    )


async def test_two_labs_on_one_host_do_not_talk_to_each_other(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        serve_lab(tmp_path / "a", '[server]\ncookie_name = "lab_a"\n') as a,
        serve_lab(tmp_path / "b", '[server]\ncookie_name = "lab_b"\n') as b,
    ):
        # One browser, the same student in both labs (same host, two ports).
        async with a.browser() as browser:
            sid_a, sid_b = await a.start(), await b.start()
            await a.visit(browser, sid_a)
            await b.visit(browser, sid_b)
            for _ in range(2):
                for lab in (a, b):
                    async with browser.post(lab.url("/api/visit")) as r:
                        assert r.status == 200
            async with browser.post(a.url("/api/visit")) as r:
                assert await r.json() == {"visits": 3}
            async with browser.post(b.url("/api/block?seconds=30")) as r:
                task_id = (await r.json())["task_id"]
            async with browser.get(a.url(f"/labrt/tasks/{task_id}")) as r:
                assert r.status == 404  # lab A knows nothing of lab B's task
            async with browser.get(b.url(f"/labrt/tasks/{task_id}")) as r:
                assert r.status == 200
            # A's session ends; B's goes on.
            await a.call("DELETE", f"/ldl/sessions/{sid_a}")
            async with browser.get(b.url("/labrt/status")) as r:
                assert (await r.json())["state"] == "active"
            async with browser.get(a.url("/labrt/status")) as r:
                assert (await r.json())["state"] == "expired"
            assert await b.should_finish(sid_b) == 5
            assert await a.should_finish(sid_b) == -1  # unknown there
            b.runtime.tasks.get(task_id).stop()
        assert (await a.runtime.store.session(sid_a)).data == {"visits": 3}
        assert (await b.runtime.store.session(sid_b)).data == {"visits": 2}
