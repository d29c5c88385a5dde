"""Dev mode and `labrt init`: trying a lab on a laptop with nothing else installed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import aiohttp
import pytest
from helpers import LABS, Spawned, new_body, serve_lab, write_config

from labrt.client import basic_auth

HARDWARE = """
[hardware]
pins = "mock"
[drivers.led]
kind = "gpio.output"
pin = 17
[drivers.button]
kind = "gpio.input"
pin = 4
"""


async def test_dev_pages_exist_only_in_dev_mode(tmp_path):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py") as lab:
        for path in ("/labrt/dev", "/labrt/dev/hardware"):
            assert (await lab.call("GET", path, auth=None))[0] == 404


@pytest.mark.parametrize("dialect", ["ldl", "weblab"])
async def test_dev_starts_a_session_as_either_rlms(tmp_path, dialect):
    extra = HARDWARE
    async with serve_lab(tmp_path, extra, module=LABS / "hardware_lab.py", dev=True) as lab:
        status, page = await lab.call("GET", "/labrt/dev", auth=None)
        assert status == 200 and "Start a session" in page
        body = {"dialect": dialect, "username": "ana", "locale": "es", "minutes": 2}
        status, answer = await lab.call("POST", "/labrt/dev/session", auth=None, json=body)
        assert status == 200, answer
        async with lab.browser() as browser:
            async with browser.get(lab.url(answer["url"]), allow_redirects=False) as r:
                assert r.status == 302
            async with browser.get(lab.url("/labrt/status")) as r:
                state = await r.json()
        assert (state["state"], state["locale"], state["username"]) == ("active", "es", "ana")
        assert 119 < state["time_left"] <= 120
        stored = await lab.runtime.store.session(answer["session_id"])
        assert stored.request.dialect == dialect
        for bad in ({"dialect": "soap"}, {"minutes": -1}, {"username": ""}, [1]):
            status, error = await lab.call("POST", "/labrt/dev/session", auth=None, json=bad)
            assert status == 400 and error["error"] is True


async def test_the_dev_panel_presses_buttons_even_during_a_session(tmp_path):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py", dev=True) as lab:
        await lab.start()
        press = {"name": "button", "value": "press"}
        status, answer = await lab.call("POST", "/labrt/dev/hardware", auth=None, json=press)
        assert status == 200 and answer["state"]["value"] == 1
        status, panel = await lab.call("GET", "/labrt/dev/hardware", auth=None)
        assert panel["devices"]["button"]["state"]["value"] == 1 and panel["sessions"] == 1
        # Outputs are the student's while a session runs.
        led_on = {"name": "led", "value": "on"}
        status, refused = await lab.call("POST", "/labrt/dev/hardware", auth=None, json=led_on)
        assert status == 409 and "session" in refused["message"]
        evil = {"Origin": "https://evil.example"}
        status, _ = await lab.call(
            "POST", "/labrt/dev/hardware", auth=None, json=press, headers=evil
        )
        assert status == 403


def labrt(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "labrt", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_dev_is_refused_on_an_address_others_reach(tmp_path):
    config = write_config(tmp_path)
    result = labrt("run", str(config), "--dev", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "--force-dev" in result.stderr and "listening" not in result.stderr


@pytest.mark.slow
async def test_init_writes_a_lab_that_runs_at_once(tmp_path):
    made = labrt("init", "demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    demo = tmp_path / "demo"
    password = (demo / "rlms.password").read_text().strip()
    assert len(password) >= 24 and (demo / "rlms.password").stat().st_mode & 0o077 == 0
    assert labrt("init", "demo", cwd=tmp_path).returncode == 2  # never over an existing one
    assert labrt("init", "../escape", cwd=tmp_path).returncode == 2

    lab = Spawned(demo / "lab.toml")  # no --dev: its password is a real one
    try:
        auth = basic_auth("rlms", password)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            body = new_body(time.time())
            async with http.post(f"{lab.url}/ldl/sessions/", json=body, headers=auth) as r:
                started = await r.json()
            async with http.get(started["url"]) as r:  # follows to the lab's page
                assert r.status == 200 and "Switch the light" in await r.text()
            ws = await http.ws_connect(f"{lab.url}/labrt/ws")
            assert json.loads((await ws.receive()).data)["event"] == "session"
            await ws.send_json({"event": "toggle"})
            message = json.loads((await ws.receive(timeout=5)).data)
            assert message == {"event": "light", "data": True}
            await ws.close()
    finally:
        assert lab.stop() == 0


async def test_dev_pages_answer_only_to_loopback_names(tmp_path):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py", dev=True) as lab:
        rebound = {"Host": "evil.example:8080"}
        for method, path in (("GET", "/labrt/dev"), ("POST", "/labrt/dev/session")):
            status, _ = await lab.call(method, path, auth=None, headers=rebound, json={})
            assert status == 403
        assert (await lab.call("GET", "/labrt/dev", auth=None, headers={"Host": "localhost"}))[
            0
        ] == 200
