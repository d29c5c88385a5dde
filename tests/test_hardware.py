"""The lab's devices under the runtime: safe at start, after each slot, at stop and after a
crash; unavailable while a device cannot be made safe; bench control for the operator."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import AUTH, LABS, Spawned, new_body, serve_lab, write_config

from drivers.simulator import DeviceSimulator
from labrt.config import ConfigError, load_config

HARDWARE = """
[hardware]
pins = "mock"

[drivers.led]
kind = "gpio.output"
pin = 17

[drivers.dim]
kind = "gpio.pwm"
pin = 18
safe = 0.1

[drivers.button]
kind = "gpio.input"
pin = 4
"""


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("LABRT_TEST_RECORD", str(path))
    return path


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pin(lab, number):
    return lab.runtime.hardware.pin_factory.pin(number)


async def test_safe_at_start_and_after_each_slot(tmp_path, record):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py") as lab:
        led, dim = pin(lab, 17), pin(lab, 18)
        assert (led.state, dim.state) == (0, pytest.approx(0.1))  # safe before anyone came
        assert lab.runtime.hardware.mode.startswith("mock")
        sid = await lab.start()
        async with lab.browser() as browser:
            await lab.visit(browser, sid)
            async with browser.post(lab.url("/led/on")) as r:
                assert (await r.json())["value"] == 1
            async with browser.post(lab.url("/dim/0.7")) as r:
                assert (await r.json())["value"] == pytest.approx(0.7)
        assert (led.state, dim.state) == (1, pytest.approx(0.7))
        assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (200, {"message": "Deleted"})
        # on_dispose saw the lab as the student left it; then everything went safe.
        assert [r for r in records(record) if r["event"] == "dispose"] == [
            {"event": "dispose", "led": 1}
        ]
        assert (led.state, dim.state) == (0, pytest.approx(0.1))


async def test_no_reset_under_another_students_feet(tmp_path):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py") as lab:
        first, second = await lab.start(), await lab.start()
        async with lab.browser() as browser:
            await lab.visit(browser, second)
            async with browser.post(lab.url("/led/on")) as r:
                assert r.status == 200
        await lab.call("DELETE", f"/ldl/sessions/{first}")
        assert pin(lab, 17).state == 1  # the second student still has the lab
        await lab.call("DELETE", f"/ldl/sessions/{second}")
        assert pin(lab, 17).state == 0


async def test_a_device_that_cannot_be_made_safe_closes_the_lab(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(LABS))
    flaky = importlib.import_module("kinds").Flaky  # the class lab.toml names
    extra = HARDWARE + '\n[drivers.relay]\nkind = "kinds:Flaky"\n'
    monkeypatch.setattr(flaky, "failing", True)
    async with serve_lab(tmp_path, extra, module=LABS / "hardware_lab.py") as lab:
        assert not lab.runtime.hardware.available
        status, health = await lab.call("GET", "/healthz")
        assert status == 503 and health["ok"] is False
        assert health["problems"] == ["relay: safe() failed: the relay does not answer"]
        body = new_body(lab.clock.now())
        status, answer = await lab.call("POST", "/ldl/sessions/", json=body)
        assert status == 503 and answer["error"] is True
        assert "relay: safe() failed" in answer["message"]
        assert await lab.runtime.store.recent_sessions(5) == []  # nothing was started

        flaky.failing = False  # the relay is fixed: the next start tries again and succeeds
        sid = await lab.start()
        assert await lab.should_finish(sid) == 5
        assert (await lab.call("GET", "/healthz"))[0] == 200


async def test_bench_control_only_while_nobody_uses_the_lab(tmp_path):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py") as lab:
        status, listing = await lab.call("GET", "/labrt/hardware")
        assert status == 200 and listing["available"] is True
        assert listing["devices"]["led"] == {
            "kind": "gpio.output",
            "state": {**listing["devices"]["led"]["state"], "value": 0},
            "problem": None,
        }
        set_on = {"name": "led", "value": "on"}
        assert (await lab.call("POST", "/labrt/hardware", json=set_on))[0] == 200
        assert pin(lab, 17).state == 1
        press = {"name": "button", "value": "press"}  # mock pins: a virtual press
        assert (await lab.call("POST", "/labrt/hardware", json=press))[0] == 200
        # The next student finds the lab safe again.
        sid = await lab.start()
        assert pin(lab, 17).state == 0
        status, refused = await lab.call("POST", "/labrt/hardware", json=set_on)
        assert status == 409 and "session" in refused["message"]
        assert pin(lab, 17).state == 0
        for bad, code in (
            ({"name": "nope", "value": 1}, 404),
            ({"name": "led"}, 400),
            ([1, 2], 400),
        ):
            await lab.call("DELETE", f"/ldl/sessions/{sid}")
            assert (await lab.call("POST", "/labrt/hardware", json=bad))[0] == code
        status, _ = await lab.call("POST", "/labrt/hardware", json={"name": "dim", "value": 7})
        assert status == 400


def _labrt(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "labrt", *args], capture_output=True, text=True, timeout=60, **kwargs
    )


@pytest.mark.slow
def test_safe_on_sigterm_and_after_kill_9(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(LABS))
    record = tmp_path / "record.jsonl"
    env = {"LABRT_TEST_RECORD": str(record), "PYTHONPATH": str(LABS)}
    extra = '[hardware]\npins = "mock"\n[drivers.led]\nkind = "kinds:Recorded"\npin = 17\n'
    config = write_config(tmp_path, extra, module=LABS / "hardware_lab.py")

    def safe_records():
        return [r for r in records(record) if r["event"] == "safe"]

    first = Spawned(config, env)
    assert safe_records() == [{"event": "safe", "device": "led", "value": 0, **_rest(record)}]
    first.kill()
    second = Spawned(config, env)  # the first start after a crash
    assert len(safe_records()) == 2 and safe_records()[-1]["value"] == 0
    assert second.stop() == 0
    assert len(safe_records()) == 3 and safe_records()[-1]["value"] == 0


def _rest(record):
    """The other fields of the driver's state, whatever they are."""
    first = next(r for r in records(record) if r["event"] == "safe")
    return {k: v for k, v in first.items() if k not in ("event", "device", "value")}


@pytest.mark.slow
def test_labrt_hardware_command(tmp_path):
    config = write_config(tmp_path, HARDWARE, module=LABS / "hardware_lab.py")
    down = _labrt("hardware", str(config))
    assert down.returncode == 1 and "not running" in down.stderr
    assert "gpio.output" in down.stdout
    lab = Spawned(config)
    try:
        shown = _labrt("hardware", str(config), "--url", lab.url, "--set", "led=on")
        assert shown.returncode == 0, shown.stderr
        assert "pins: mock" in shown.stdout
        led_line = next(line for line in shown.stdout.splitlines() if line.startswith("led "))
        assert "value=1" in led_line
        body = json.dumps(new_body(time.time())).encode()
        request = urllib.request.Request(
            f"{lab.url}/ldl/sessions/", data=body, headers=AUTH, method="POST"
        )
        with urllib.request.urlopen(request) as answer:
            assert "session_id" in json.loads(answer.read())
        refused = _labrt("hardware", str(config), "--url", lab.url, "--set", "led=off")
        assert refused.returncode == 1 and "session" in refused.stderr
    finally:
        assert lab.stop() == 0


@pytest.mark.parametrize(
    ("drivers", "key", "says"),
    [
        ('[drivers.led]\nkind = "gpio.output"\n', "[drivers.led] pin", "pin"),
        (
            '[drivers.a]\nkind = "gpio.output"\npin = 17\n'
            '[drivers.b]\nkind = "gpio.input"\npin = 17\n',
            "[drivers.b] pin",
            "17",
        ),
        (
            '[drivers.port]\nkind = "serial"\nurl = "loop://"\nbaudrate = 12345\n',
            "[drivers.port] baudrate",
            "12345",
        ),
        ('[drivers.x]\nkind = "gpio.teleporter"\npin = 3\n', "[drivers.x] kind", "gpio.teleporter"),
        ('[drivers.x]\nkind = "gpio.output"\npin = true\n', "[drivers.x] pin", "true"),
        (
            '[drivers.x]\nkind = "gpio.output"\npin = 3\nsafe = "maybe"\n',
            "[drivers.x] safe",
            "maybe",
        ),
        ('[drivers.x]\nkind = "serial"\n', "[drivers.x] url", "url"),
        ("[drivers.x]\npin = 3\n", "[drivers.x] kind", "kind"),
        ('[drivers."bad name"]\nkind = "gpio.output"\npin = 3\n', "[drivers.bad name]", "name"),
        ('[hardware]\npins = "teleport"\n', "[hardware] pins", "teleport"),
    ],
)
def test_bad_hardware_config_is_one_line_and_exit_2(tmp_path, drivers, key, says):
    config = write_config(tmp_path, drivers)
    result = _labrt("check", str(config))
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f": {key}: " in lines[0] and says.lower() in lines[0].lower(), lines[0]


def test_good_hardware_config(tmp_path):
    config = load_config(write_config(tmp_path, HARDWARE))
    assert [d.name for d in config.hardware.drivers] == ["led", "dim", "button"]
    assert config.hardware.pins == "mock"


async def test_a_serial_device_unplugged_mid_session(tmp_path):
    """Reported, retried, back when it returns; the lab keeps answering meanwhile."""
    async with DeviceSimulator() as device:
        extra = (
            f'[drivers.board]\nkind = "serial"\nurl = "{device.url}"\nbanner = "READY"\n'
            'safe = "RESET"\n'
        )
        async with serve_lab(tmp_path, extra, module=LABS / "hardware_lab.py") as lab:
            assert device.commands == ["RESET"]  # made safe at start
            sid = await lab.start()
            async with lab.browser() as browser:
                await lab.visit(browser, sid)
                ping = {"command": "PING"}
                async with browser.post(lab.url("/board"), json=ping) as r:
                    assert await r.json() == {"answer": "PONG"}
                await device.stop()
                async with asyncio.timeout(10):
                    while "board" not in lab.runtime.hardware.faults:
                        await asyncio.sleep(0.01)
                status, health = await lab.call("GET", "/healthz")
                assert status == 200 and "board" in health["hardware"]["faults"]
                async with browser.get(lab.url("/labrt/status")) as r:
                    assert (await r.json())["state"] == "active"
                async with browser.post(lab.url("/board"), json=ping) as r:
                    assert r.status == 500  # the author's route: the device is gone
                await device.start()
                async with asyncio.timeout(10):
                    while "board" in lab.runtime.hardware.faults:
                        await asyncio.sleep(0.01)
                async with browser.post(lab.url("/board"), json=ping) as r:
                    assert await r.json() == {"answer": "PONG"}
            await lab.call("DELETE", f"/ldl/sessions/{sid}")
            assert device.commands[-1] == "RESET"  # made safe after the slot


async def test_operator_endpoints_refuse_what_a_proxy_relays(tmp_path):
    async with serve_lab(tmp_path, HARDWARE, module=LABS / "hardware_lab.py") as lab:
        relayed = {"X-Forwarded-For": "203.0.113.7"}
        set_on = {"name": "led", "value": "on"}
        for method, path, body in (
            ("GET", "/healthz", None),
            ("GET", "/labrt/hardware", None),
            ("POST", "/labrt/hardware", set_on),
        ):
            status, answer = await lab.call(method, path, auth=None, headers=relayed, json=body)
            assert status == 403 and answer["error"] is True
            # The RLMS's credentials open them from anywhere.
            status, _ = await lab.call(method, path, headers=relayed, json=body)
            assert status == 200
        assert pin(lab, 17).state == 1


def test_an_authors_kind_next_to_lab_toml(tmp_path):
    (tmp_path / "bell.py").write_text(
        "from drivers import Driver\n\nclass Bell(Driver):\n    kind = 'bell'\n"
    )
    config = load_config(write_config(tmp_path, '[drivers.bell]\nkind = "bell:Bell"\n'))
    assert config.hardware.drivers[0].driver.__name__ == "Bell"


@pytest.mark.slow
def test_a_device_that_cannot_open_stops_the_start_with_one_line(tmp_path):
    extra = '[drivers.board]\nkind = "serial"\nurl = "socket://127.0.0.1:9"\nreconnect = false\n'
    result = _labrt("run", str(write_config(tmp_path, extra)), "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("labrt: board: cannot open socket://127.0.0.1:9"), lines
    assert "Traceback" not in result.stderr and "listening" not in result.stderr


# -- issue 16: a kind's safe timeout, its config's folder, risky pins ---------------------------

SLOW_KINDS = """
import time

from drivers import Driver


class Slow(Driver):
    kind = "slow"

    def safe(self):
        time.sleep(0.5)


class Patient(Slow):
    kind = "patient"
    safe_timeout = 5.0  # programs flash, say
"""


async def test_a_kind_declares_its_own_safe_timeout(tmp_path, monkeypatch):
    from drivers import Driver

    (tmp_path / "slow_kinds_16.py").write_text(SLOW_KINDS)
    monkeypatch.setattr(Driver, "safe_timeout", 0.1)  # the default, made tiny
    extra = (
        '[drivers.slow]\nkind = "slow_kinds_16:Slow"\n'
        '[drivers.patient]\nkind = "slow_kinds_16:Patient"\n'
    )
    async with serve_lab(tmp_path, extra) as lab:
        unsafe = lab.runtime.hardware.unsafe
        assert unsafe == {"slow": "safe() failed: no answer within 0.1 s"}


def test_a_kinds_safe_timeout_must_be_a_positive_number(tmp_path):
    (tmp_path / "bad_timeout_16.py").write_text(
        "from drivers import Driver\n\nclass Bad(Driver):\n    safe_timeout = 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, '[drivers.x]\nkind = "bad_timeout_16:Bad"\n'))
    assert caught.value.key == "[drivers.x] kind" and "safe_timeout" in caught.value.message


FOLDER_KIND = """
from drivers import Driver


class Program(Driver):
    kind = "program"

    @classmethod
    def validate(cls, table):
        return {"file": table["file"]}

    def open(self):
        self.text = (self.env.folder / self.options["file"]).read_text()
"""


async def test_a_kind_is_given_its_configs_folder(tmp_path, monkeypatch):
    from drivers import Environment

    lab_folder = tmp_path / "lab"
    lab_folder.mkdir()
    (lab_folder / "folder_kind_16.py").write_text(FOLDER_KIND)
    (lab_folder / "blink.hex").write_text("blink")
    monkeypatch.chdir(tmp_path)  # not the lab's folder
    extra = '[drivers.board]\nkind = "folder_kind_16:Program"\nfile = "blink.hex"\n'
    async with serve_lab(lab_folder, extra) as lab:
        board = lab.runtime.hardware.devices["board"]
        assert board.env.folder == lab_folder.resolve() and board.text == "blink"
    assert load_config(lab_folder / "lab.toml").hardware.folder == lab_folder.resolve()
    assert Environment(loop=asyncio.get_running_loop()).folder == tmp_path  # a script's cwd


RISKY = """
[hardware]
pins = "mock"

[drivers.lamp]
kind = "gpio.output"
pin = 2

[drivers.button]
kind = "gpio.input"
pin = "BOARD5"

[drivers.sensor]
kind = "gpio.input"
pin = 4
pull_up = false

[drivers.console]
kind = "gpio.bank"
pins = [14, 15, 17]
direction = "input"
"""


def _risky_lines(text):
    return [line for line in text.splitlines() if "GPIO" in line and "[drivers." in line]


async def test_risky_pins_are_logged_once_at_start(tmp_path, caplog):
    caplog.set_level("WARNING", logger="labrt.hardware")
    async with serve_lab(tmp_path, RISKY):
        pass
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2, warned
    lamp, console = warned
    assert lamp.startswith("[drivers.lamp] GPIO2 as an output: ") and "pull-up" in lamp
    assert console.startswith("[drivers.console] GPIO14 is the UART's TX, ")
    assert "; GPIO15 is the UART's RX, " in console and "serial console" in console


def test_labrt_check_warns_of_risky_pins_but_passes(tmp_path):
    result = _labrt("check", str(write_config(tmp_path, RISKY)))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("labrt: warning: [drivers.lamp] GPIO2 as an output: ")
    assert lines[1].startswith("labrt: warning: [drivers.console] GPIO14 is the UART's TX")


def test_an_input_on_i2cs_pulled_up_pins_needs_pull_up(tmp_path):
    from labrt._engine.hardware import risky_pins

    extra = (
        '[drivers.up]\nkind = "gpio.input"\npin = 2\n'
        '[drivers.down]\nkind = "gpio.input"\npin = 3\npull_up = false\n'
    )
    lines = risky_pins(load_config(write_config(tmp_path, extra)).hardware)
    assert lines == [
        "[drivers.down] GPIO3 as an input without pull_up = true: it is I2C's SCL, with a "
        "pull-up resistor on the board, so it reads high unless driven low"
    ]
