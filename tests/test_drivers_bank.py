"""The gpio.bank kind on gpiozero's mock pins: N outputs or N inputs in one table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from helpers import write_config

from drivers import Bank, DriverError, Environment, Input, OptionError, Output
from drivers.kinds import KINDS, resolve_kind
from labrt.config import ConfigError, load_config

LOG = logging.getLogger("tests.drivers")
PINS = [17, 27, 22, 23]


@pytest.fixture
async def env() -> AsyncIterator[Environment]:
    factory = MockFactory()
    yield Environment(loop=asyncio.get_running_loop(), pin_factory=factory, mock=True, log=LOG)
    factory.close()


@asynccontextmanager
async def opened(env: Environment, **table: Any) -> AsyncIterator[Any]:
    bank = Bank("switches", Bank.validate(table), env)
    await asyncio.to_thread(bank.open)
    try:
        yield bank
    finally:
        await asyncio.to_thread(bank.close)


def test_the_kind_is_registered():
    assert KINDS["gpio.bank"] is Bank and resolve_kind("gpio.bank") is Bank


def test_validate_fills_defaults_per_direction():
    assert Bank.validate({"pins": PINS, "direction": "output"}) == {
        "pins": PINS,
        "direction": "output",
        "safe": "off",
        "active_high": True,
    }
    assert Bank.validate({"pins": [4, "BOARD11"], "direction": "input", "bounce_time": 0}) == {
        "pins": [4, "BOARD11"],
        "direction": "input",
        "pull_up": True,
        "active_state": None,
        "bounce_time": 0.0,
    }
    assert Bank.gpio_pins({"pins": [4, "BOARD11"], "direction": "input"}) == [4, 17]


@pytest.mark.parametrize(
    ("table", "key", "says"),
    [
        ({"direction": "output"}, "pins", "list of GPIO pins"),
        ({"pins": [], "direction": "output"}, "pins", "list of GPIO pins"),
        ({"pins": 17, "direction": "output"}, "pins", "list of GPIO pins"),
        ({"pins": [17, "BOARD2"], "direction": "output"}, "pins", "pins[1]"),
        ({"pins": [17, "BOARD11"], "direction": "output"}, "pins", "twice"),
        ({"pins": PINS}, "direction", '"output" or "input"'),
        ({"pins": PINS, "direction": "out"}, "direction", '"output" or "input"'),
        ({"pins": PINS, "direction": "output", "pull_up": False}, "pull_up", "input"),
        ({"pins": PINS, "direction": "input", "safe": "off"}, "safe", "output"),
        ({"pins": PINS, "direction": "output", "safe": "of"}, "safe", '"off" or "on"'),
        ({"pins": PINS, "direction": "output", "colour": 1}, "colour", "unknown option"),
    ],
)
def test_validate_refuses(table, key, says):
    with pytest.raises(OptionError) as caught:
        Bank.validate(table)
    assert caught.value.key == key and says in caught.value.expected, caught.value


async def test_an_output_bank_switches_each_and_all(env):
    async with opened(env, pins=PINS, direction="output") as bank:
        assert len(bank) == 4 and all(isinstance(member, Output) for member in bank)
        assert bank.values == [0, 0, 0, 0] and bank.state() == {"values": [0, 0, 0, 0]}
        bank[2].on()
        assert env.pin_factory.pin(22).state and bank.values == [0, 0, 1, 0]
        bank.values = [1, 0, 1, 1]
        assert [env.pin_factory.pin(p).state for p in PINS] == [1, 0, 1, 1]
        bank.safe()
        assert bank.values == [0, 0, 0, 0]
        bank.on()
        assert bank.values == [1, 1, 1, 1]
        bank.off()
        assert bank.values == [0, 0, 0, 0]
        with pytest.raises(ValueError, match="4 values"):
            bank.values = [1, 0]
        with pytest.raises(IndexError):
            bank[4]


async def test_an_output_bank_with_safe_on_opens_on(env):
    async with opened(env, pins=PINS, direction="output", safe="on", active_high=False) as bank:
        assert bank.values == [1, 1, 1, 1]
        assert [env.pin_factory.pin(p).state for p in PINS] == [0, 0, 0, 0]  # active low
        bank.off()
        bank.safe()
        assert bank.values == [1, 1, 1, 1]


async def test_bench_control_of_an_output_bank(env):
    async with opened(env, pins=PINS, direction="output") as bank:
        bank.set([1, "off", True, "on"])
        assert bank.values == [1, 0, 1, 1]
        bank.set("0,1,0,0")  # as `labrt hardware --set switches=0,1,0,0` hands it over
        assert bank.values == [0, 1, 0, 0]
        bank.set("on")  # one value for all
        assert bank.values == [1, 1, 1, 1]
        for bad, says in [([1, 0], "4 values"), ([1, 0, "maybe", 1], "[2]"), ("x", "cannot")]:
            with pytest.raises(DriverError, match=r"switches") as caught:
                bank.set(bad)
            assert says in str(caught.value)
        assert bank.values == [1, 1, 1, 1]  # a refused list changes nothing


async def test_an_input_bank_reads_and_presses_on_mock_pins(env):
    async with opened(env, pins=[4, 5, 6], direction="input", bounce_time=0) as bank:
        assert all(isinstance(member, Input) for member in bank)
        assert bank.values == [0, 0, 0]
        edges = bank[1].events()
        env.pin_factory.pin(5).drive_low()  # pulled up: pressed is low
        assert (await asyncio.wait_for(anext(edges), 5)).active
        assert bank.values == [0, 1, 0]
        bank.set(["press", "release", "press"])
        assert bank.state() == {"values": [1, 0, 1]}
        bank.safe()  # inputs have no safe state: nothing changes
        assert bank.values == [1, 0, 1]
        with pytest.raises(AttributeError):
            bank.values = [0, 0, 0]


async def test_an_input_bank_on_real_pins_cannot_be_set(env):
    real = Environment(loop=env.loop, pin_factory=env.pin_factory, mock=False, log=LOG)
    async with opened(real, pins=[4, 5], direction="input") as bank:
        with pytest.raises(DriverError, match="real input"):
            bank.set("press")


async def test_a_pin_that_cannot_open_closes_the_others(env):
    taken = Output("taken", Output.validate({"pin": 27}), env)
    taken.open()  # pin 27 is in use: the bank's second pin cannot open
    bank = Bank("switches", Bank.validate({"pins": [17, 27], "direction": "output"}), env)
    with pytest.raises(DriverError, match=r"switches: pins\[1\]: cannot open pin 27"):
        await asyncio.to_thread(bank.open)
    assert bank.state() == {"values": [None, None]}
    again = Output("again", Output.validate({"pin": 17}), env)
    again.open()  # the bank let go of pin 17
    again.close()
    taken.close()


def test_a_banks_pins_conflict_with_other_devices(tmp_path):
    extra = (
        '[drivers.lamp]\nkind = "gpio.output"\npin = 22\n'
        '[drivers.switches]\nkind = "gpio.bank"\npins = [17, "BOARD15"]\ndirection = "output"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, extra))
    assert caught.value.key == "[drivers.switches] pin"
    assert "is also [drivers.lamp]'s" in caught.value.message


def test_sixteen_switches_in_one_table(tmp_path):
    pins = [4, 17, 27, 22, 5, 6, 13, 19, 26, 18, 23, 24, 25, 12, 16, 20]
    extra = f'[drivers.switches]\nkind = "gpio.bank"\npins = {pins}\ndirection = "output"\n'
    (driver,) = load_config(write_config(tmp_path, extra)).hardware.drivers
    assert driver.driver is Bank and driver.driver.gpio_pins(driver.options) == pins
