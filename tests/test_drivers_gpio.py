"""The GPIO kinds on gpiozero's mock pins, the pin factories, and kind resolution."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from drivers import (
    Driver,
    DriverError,
    Edge,
    Environment,
    Input,
    OptionError,
    Output,
    PWMOutput,
    SerialPort,
)
from drivers.kinds import KINDS, resolve_kind
from drivers.pins import gpio_chips, make_factory

LOG = logging.getLogger("tests.drivers")


@pytest.fixture
async def env() -> AsyncIterator[Environment]:
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: escaped.append(context))
    factory = MockFactory(pin_class=MockPWMPin)
    yield Environment(loop=loop, pin_factory=factory, mock=True, log=LOG)
    factory.close()
    loop.set_exception_handler(None)
    assert escaped == []


@asynccontextmanager
async def opened(cls: type[Driver], env: Environment, **table: Any) -> AsyncIterator[Any]:
    """A driver validated, opened and finally closed as the runtime does: in worker threads."""
    driver = cls(f"{cls.kind}-{table.get('pin')}", cls.validate(table), env)
    await asyncio.to_thread(driver.open)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.close)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` against a deadline, for what only another thread changes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# Outputs


async def test_output_switches_and_reports_its_state(env):
    async with opened(Output, env, pin=17) as led:
        pin = env.pin_factory.pin(17)
        assert led.state() == {"value": 0, "blinking": False} and not pin.state
        led.on()
        assert led.is_active and led.value == 1 and pin.state
        led.toggle()
        assert led.state() == {"value": 0, "blinking": False}
        for value, expected in [("on", 1), (False, 0), (1, 1), ("OFF", 0), ("true", 1), ("0", 0)]:
            led.set(value)
            assert led.value == expected, value
        for bad in ("maybe", 2, 0.5, None):
            with pytest.raises(DriverError, match='expected "on", "off"'):
                led.set(bad)
        led.on()
        led.safe()
        assert led.value == 0


async def test_output_opens_in_its_safe_state_and_honours_active_low(env):
    async with opened(Output, env, pin="GPIO17", safe="on", active_high=False) as relay:
        pin = env.pin_factory.pin(17)
        assert relay.value == 1 and not pin.state  # active low: on is a low pin
        assert [state.state for state in pin.states] == [False]  # never high after opening
        relay.off()
        assert pin.state
        relay.safe()
        assert relay.value == 1


async def test_output_blinks_in_the_background_until_stopped(env):
    async with opened(Output, env, pin=27) as led:
        pin = env.pin_factory.pin(27)
        led.blink(on_time=0.01, off_time=0.01)
        assert led.state()["blinking"]
        await until(lambda: len(pin.states) >= 5)
        led.on()
        assert led.state() == {"value": 1, "blinking": False}
        led.blink(on_time=0.01, off_time=0.01, n=2)
        await until(lambda: not led.blinking)
        assert led.value == 0
        led.blink(on_time=0.01, off_time=0.01)
        led.safe()
        assert led.state() == {"value": 0, "blinking": False}
        for bad in ({"on_time": 0}, {"off_time": -1}, {"on_time": "1"}, {"n": 0}, {"n": 1.5}):
            with pytest.raises(ValueError):
                led.blink(**bad)


async def test_a_pin_cannot_be_opened_twice(env):
    async with opened(Output, env, pin=17):
        with pytest.raises(DriverError, match="in use"):
            async with opened(Output, env, pin="BOARD11"):
                pass


async def test_a_gpio_driver_needs_a_pin_factory():
    env = Environment(loop=asyncio.get_running_loop())
    with pytest.raises(DriverError, match="no pin factory"):
        async with opened(Output, env, pin=17):
            pass


async def test_a_closed_output_fails_clearly_and_closes_twice(env):
    led = Output("led", Output.validate({"pin": 5}), env)
    with pytest.raises(DriverError, match="led is not open"):
        led.on()
    assert led.state() == {"value": None, "blinking": False}
    await asyncio.to_thread(led.open)
    await asyncio.to_thread(led.close)
    await asyncio.to_thread(led.close)


# PWM outputs


async def test_pwm_output_value_frequency_and_state(env):
    async with opened(PWMOutput, env, pin=18, frequency=500) as fan:
        pin = env.pin_factory.pin(18)
        assert PWMOutput.uses_pwm(fan.options)
        assert fan.state() == {"value": 0.0, "frequency": 500.0}
        fan.value = 0.5
        assert pin.state == 0.5 and fan.value == 0.5
        fan.frequency = 1000
        assert fan.state() == {"value": 0.5, "frequency": 1000.0}
        for bad in (1.5, -0.1, "0.5", True):
            with pytest.raises(ValueError):
                fan.value = bad
        with pytest.raises(ValueError):
            fan.frequency = 0
        fan.on()
        assert fan.value == 1.0
        fan.off()
        assert fan.value == 0.0
        for value, expected in [("0.25", 0.25), ("on", 1.0), (0.75, 0.75), ("off", 0.0), (1, 1.0)]:
            fan.set(value)
            assert fan.value == expected, value
        for bad in ("fast", 2, "1.5", None):
            with pytest.raises(DriverError, match="0 to 1"):
                fan.set(bad)


async def test_pwm_output_opens_safe_and_safe_stops_a_pulse(env):
    async with opened(PWMOutput, env, pin=12, safe=0.3) as dimmer:
        pin = env.pin_factory.pin(12)
        assert dimmer.value == 0.3
        dimmer.pulse(fade_in_time=0.05, fade_out_time=0.05)
        await until(lambda: len(pin.states) >= 5)
        dimmer.safe()
        assert dimmer.value == 0.3 and pin.state == 0.3
        with pytest.raises(ValueError):
            dimmer.pulse(fade_in_time=0)


async def test_pwm_on_a_factory_without_pwm_fails_to_open():
    factory = MockFactory(pin_class=MockPin)
    env = Environment(loop=asyncio.get_running_loop(), pin_factory=factory, mock=True)
    try:
        with pytest.raises(DriverError, match="cannot open pin 18"):
            async with opened(PWMOutput, env, pin=18):
                pass
    finally:
        factory.close()


# Inputs


async def test_edges_from_a_foreign_thread_reach_every_consumer_in_order(env):
    async with opened(Input, env, pin=22, pull_up=False, bounce_time=None) as sensor:
        first, second = sensor.events(), sensor.events()
        pin = env.pin_factory.pin(22)

        def drive() -> None:
            for i in range(200):
                if i % 2 == 0:
                    pin.drive_high()
                else:
                    pin.drive_low()

        driver = threading.Thread(target=drive)
        driver.start()
        try:
            for consumer in (first, second):
                got: list[Edge] = []
                async with asyncio.timeout(5):
                    async for edge in consumer:
                        got.append(edge)
                        if len(got) == 200:
                            break
                assert [edge.active for edge in got] == [i % 2 == 0 for i in range(200)]
                times = [edge.time for edge in got]
                assert times == sorted(times) and times[-1] <= time.monotonic()
        finally:
            driver.join()
        assert sensor.state() == {"value": 0, "edges": 200, "dropped": 0}


async def test_slow_callbacks_delay_only_their_own_pin(env):
    release_sync = threading.Event()
    release_async = asyncio.Event()
    started_sync = threading.Event()
    calls: list[str] = []
    third_called = asyncio.Event()

    def slow_sync(edge: Edge) -> None:
        calls.append(f"sync {edge.active}")
        started_sync.set()
        release_sync.wait(5)

    async def slow_async(edge: Edge) -> None:
        calls.append(f"async {edge.active}")
        await release_async.wait()

    async def third(edge: Edge) -> None:
        calls.append("third")
        third_called.set()

    try:
        async with (
            opened(Input, env, pin=5, pull_up=False, bounce_time=None) as a,
            opened(Input, env, pin=6, pull_up=False, bounce_time=None) as b,
            opened(Input, env, pin=13, pull_up=False, bounce_time=None) as c,
        ):
            a.when_activated = a.when_deactivated = slow_sync
            b.when_activated = b.when_deactivated = slow_async
            c.when_activated = third
            a_edges = a.events()
            for pin in (5, 6):
                env.pin_factory.pin(pin).drive_high()
                env.pin_factory.pin(pin).drive_low()
            assert await asyncio.to_thread(started_sync.wait, 5)
            env.pin_factory.pin(13).drive_high()
            async with asyncio.timeout(5):
                await third_called.wait()
            # Both slow callbacks are still running, each holding back only its own pin.
            assert sorted(calls) == ["async True", "sync True", "third"]
            # Events are not held back by callbacks, even on a pin whose callback is stuck.
            async with asyncio.timeout(5):
                assert [(await anext(a_edges)).active for _ in range(2)] == [True, False]
            release_sync.set()
            release_async.set()
            await until(lambda: len(calls) == 5)
            assert calls[3:] in (["sync False", "async False"], ["async False", "sync False"])
    finally:
        release_sync.set()


async def test_a_failing_callback_is_logged_and_later_edges_still_arrive(env, caplog):
    seen: list[bool] = []

    def broken(edge: Edge) -> None:
        seen.append(edge.active)
        raise RuntimeError("author's bug")

    async def broken_async(edge: Edge) -> None:
        seen.append(edge.active)
        raise RuntimeError("author's async bug")

    async with opened(Input, env, pin=4) as button:
        button.when_activated = broken
        button.when_deactivated = broken_async
        with caplog.at_level(logging.ERROR, logger=LOG.name):
            for _ in range(2):
                button.set("press")
                button.set("release")
            await until(lambda: len(seen) == 4)
        assert seen == [True, False, True, False]
        failures = [r for r in caplog.records if "callback" in r.getMessage()]
        assert len(failures) == 4 and all(r.exc_info for r in failures)


async def test_wait_for_active_and_inactive(env):
    async with opened(Input, env, pin=4) as button:
        assert not button.is_active
        assert await button.wait_for_inactive(timeout=0)
        assert not await button.wait_for_active(timeout=0.01)
        waiter = asyncio.create_task(button.wait_for_active(timeout=5))
        await asyncio.sleep(0)  # the waiter is now listening
        presser = threading.Thread(target=env.pin_factory.pin(4).drive_low)  # pulled up
        presser.start()
        assert await waiter
        presser.join()
        assert button.is_active


async def test_an_input_is_pressed_on_mock_pins_whatever_its_pull(env):
    async with opened(Input, env, pin=4) as pulled_up:  # pressed pulls the pin low
        pulled_up.set("press")
        assert pulled_up.is_active and not env.pin_factory.pin(4).state
        pulled_up.set("release")
        assert not pulled_up.is_active and env.pin_factory.pin(4).state
        with pytest.raises(DriverError, match='"press", "release"'):
            pulled_up.set("half")
        pulled_up.safe()  # an input is always safe
    async with opened(Input, env, pin=23, pull_up="floating", active_state=True) as floating:
        floating.set(1)
        assert floating.is_active and env.pin_factory.pin(23).state
        floating.set(0)
        assert floating.state()["value"] == 0
        await until(lambda: floating.state()["edges"] == 2)


async def test_a_real_input_cannot_be_set():
    factory = MockFactory()
    env = Environment(loop=asyncio.get_running_loop(), pin_factory=factory, mock=False)
    try:
        async with opened(Input, env, pin=4) as button:
            with pytest.raises(DriverError, match="a real input cannot be set"):
                button.set("press")
    finally:
        factory.close()


async def test_a_slow_consumer_loses_the_oldest_edges_and_closing_ends_the_stream(env):
    async with opened(Input, env, pin=4, bounce_time=None) as button:
        edges = button.events()
        for _ in range(600):
            button.set("press")
            button.set("release")
        await until(lambda: button.state()["edges"] == 1200)
        assert button.state()["dropped"] == 200
        assert (await anext(edges)).active  # the oldest left: the 101st press
    got = [edge async for edge in edges]  # the rest, then the end
    assert len(got) == 999
    assert [edge async for edge in button.events()] == []


# Options


@pytest.mark.parametrize(
    ("cls", "table", "key", "expected"),
    [
        (Output, {}, "pin", "missing; expected an integer GPIO number 0-53"),
        (Output, {"pin": True}, "pin", '0-53 or a name like "GPIO17" or "BOARD11", got true'),
        (Output, {"pin": 54}, "pin", "an integer GPIO number 0-53"),
        (Output, {"pin": "GPIO"}, "pin", 'a name like "GPIO17"'),
        (Output, {"pin": "BOARD1"}, "pin", 'a GPIO pin, got "BOARD1": a power or ground pin'),
        (Output, {"pin": "BOARD41"}, "pin", "the 40-pin header"),
        (Output, {"pin": 17, "colour": "red"}, "colour", "unknown option; known: pin, safe"),
        (Output, {"pin": 17, "safe": "maybe"}, "safe", '"off" or "on"'),
        (Output, {"pin": 17, "safe": True}, "safe", '"off" or "on"'),
        (Output, {"pin": 17, "active_high": 1}, "active_high", "true or false"),
        (PWMOutput, {"pin": 18, "safe": 1.5}, "safe", "a number from 0 to 1"),
        (PWMOutput, {"pin": 18, "safe": "half"}, "safe", "a number from 0 to 1"),
        (PWMOutput, {"pin": 18, "frequency": 0}, "frequency", "greater than 0"),
        (PWMOutput, {"pin": 18, "frequency": True}, "frequency", "a frequency in Hz"),
        (Input, {"pin": 4, "pull_up": "up"}, "pull_up", '"floating"'),
        (
            Input,
            {"pin": 4, "pull_up": "floating"},
            "active_state",
            "for a floating input, got nothing",
        ),
        (
            Input,
            {"pin": 4, "active_state": True},
            "active_state",
            'no active_state unless pull_up = "floating"',
        ),
        (Input, {"pin": 4, "bounce_time": -1}, "bounce_time", "0 or more"),
        (Input, {"pin": 4, "safe": "off"}, "safe", "unknown option"),
    ],
)
def test_bad_options_name_their_key(cls, table, key, expected):
    with pytest.raises(OptionError) as error:
        cls.validate(table)
    assert error.value.key == key
    assert expected in error.value.expected


def test_options_get_their_defaults_and_pins_one_name():
    assert Output.validate({"pin": 17}) == {"pin": 17, "safe": "off", "active_high": True}
    assert PWMOutput.validate({"pin": "BCM18", "safe": 0}) == {
        "pin": "BCM18",
        "frequency": 100.0,
        "safe": 0,
        "active_high": True,
    }
    assert Input.validate({"pin": 4}) == {
        "pin": 4,
        "pull_up": True,
        "active_state": None,
        "bounce_time": 0.02,
    }
    for name in (17, "17", "GPIO17", "gpio17", "BCM17", "BOARD11", "J8:11"):
        assert Output.gpio_pins({"pin": name}) == [17], name
    assert not Output.uses_pwm({"pin": 17}) and not Input.uses_pwm({"pin": 4})


# Pin factories and kinds


@pytest.mark.skipif(bool(gpio_chips()), reason="this machine has GPIO")
def test_auto_pins_here_are_mock_pins_with_pwm():
    factory, description, mock = make_factory("auto", pwm=True)
    try:
        assert isinstance(factory, MockFactory) and factory.pin_class is MockPWMPin and mock
        assert description == (
            "mock pins (gpiozero MockFactory with MockPWMPin): this machine has no GPIO"
        )
    finally:
        factory.close()
    factory, description, mock = make_factory("mock", pwm=False)
    factory.close()
    assert factory.pin_class is MockPin and mock and "MockPin" in description


def test_unknown_and_missing_pin_factories():
    with pytest.raises(ValueError, match="auto, mock, lgpio, rpigpio, pigpio, native"):
        make_factory("nope", pwm=False)
    with pytest.raises(DriverError, match="needs the lgpio package: pip install lgpio"):
        make_factory("lgpio", pwm=False)
    with pytest.raises(DriverError, match=r"RPi\.GPIO"):
        make_factory("rpigpio", pwm=False)


AUTHOR_MODULE = """
from drivers import Driver

class Stepper(Driver):
    kind = "stepper"

NOT_A_DRIVER = object
"""


def test_resolve_kind(tmp_path, monkeypatch):
    (tmp_path / "lab_stepper.py").write_text(AUTHOR_MODULE)
    (tmp_path / "lab_broken.py").write_text("raise RuntimeError('broken at import')")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_kind("serial") is SerialPort
    assert set(KINDS) == {"gpio.output", "gpio.pwm", "gpio.input", "gpio.bank", "serial", "camera"}
    assert resolve_kind("lab_stepper:Stepper").kind == "stepper"
    for kind, expected in [
        ("gpio.led", "one of gpio.output, gpio.pwm, gpio.input, gpio.bank, serial"),
        (42, "package.module:ClassName"),
        ("lab_stepper:", "package.module:ClassName"),
        (
            "lab_stepper:NOT_A_DRIVER",
            "drivers.Driver at lab_stepper:NOT_A_DRIVER, got <class 'object'>",
        ),
        ("lab_stepper:Missing", "got nothing"),
        ("lab_nowhere:Stepper", "got lab_nowhere: ModuleNotFoundError"),
        ("lab_broken:Stepper", "RuntimeError: broken at import"),
    ]:
        with pytest.raises(OptionError) as error:
            resolve_kind(kind)
        assert error.value.key == "kind"
        assert expected in error.value.expected, kind


async def test_callbacks_do_not_inherit_the_context_that_flipped_the_pin(env):
    """On mock pins a student's request may flip a pin; its callback is not that student's."""
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []

    async def record(edge: Edge) -> None:
        seen.append(who.get())

    async with opened(Input, env, pin=4, bounce_time=None) as button:
        button.when_activated = record
        token = who.set("a student")
        try:
            env.pin_factory.pin(4).drive_low()
        finally:
            who.reset(token)
        await until(lambda: seen != [])
    assert seen == ["nobody"]
