"""The serial kind over pyserial's loop:// and over socket:// to the device simulator."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drivers import DriverError, Environment, OptionError, SerialPort
from drivers.simulator import DeviceSimulator


class Problems:
    """What the port reported through ``on_problem``, to wait on in order."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str | None]] = []
        self._next = 0
        self._changed = asyncio.Event()

    def __call__(self, name: str, problem: str | None) -> None:
        self.reports.append((name, problem))
        self._changed.set()

    async def wait_for(self, check: Callable[[str | None], bool]) -> str | None:
        """The first report not yet waited for that passes ``check``."""
        async with asyncio.timeout(5):
            while True:
                while self._next < len(self.reports):
                    _, problem = self.reports[self._next]
                    self._next += 1
                    if check(problem):
                        return problem
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
async def env(problems) -> AsyncIterator[Environment]:
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: escaped.append(context))
    yield Environment(loop=loop, log=logging.getLogger("tests.drivers"), on_problem=problems)
    loop.set_exception_handler(None)
    assert escaped == []


@pytest.fixture
async def device() -> AsyncIterator[DeviceSimulator]:
    async with DeviceSimulator(step=0.005) as simulator:
        yield simulator


@asynccontextmanager
async def opened(env: Environment, **table: Any) -> AsyncIterator[SerialPort]:
    port = SerialPort("board", SerialPort.validate(table), env)
    await asyncio.to_thread(port.open)
    try:
        yield port
    finally:
        await asyncio.to_thread(port.close)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` against a deadline, for what only another task or thread changes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# loop://


async def test_loop_url_echoes_lines(env):
    async with opened(env, url="loop://") as port:
        assert port.state() == {
            "connected": True,
            "url": "loop://",
            "error": None,
            "lines_in": 0,
            "lines_out": 0,
            "dropped": 0,
            "recent": [],
        }
        await port.write_line("hello")
        assert await port.readline(timeout=5) == "hello"
        assert port.state()["recent"] == [{"out": "hello"}, {"in": "hello"}]
        await port.write(b"caf\xc3\xa9\r\nhalf")
        await port.write("-line\n")
        assert [await port.readline(timeout=5) for _ in range(2)] == ["café", "half-line"]
        assert port.state()["lines_in"] == 3 and port.state()["lines_out"] == 3
        with pytest.raises(TimeoutError, match=r"no line within 0\.01 s"):
            await port.readline(timeout=0.01)
        port.set("bench")
        assert await port.readline(timeout=5) == "bench"
        # What was not read before a request cannot be its answer.
        await port.write_line("stale")
        await until(lambda: port.state()["lines_in"] == 5)
        assert await port.request("fresh") == "fresh"
        with pytest.raises(DriverError, match="a line of text"):
            port.set(3)


async def test_loop_url_with_carriage_returns(env):
    async with opened(env, url="loop://", newline="\r") as port:
        await port.write_line("one")
        await port.write(b"two\r")
        assert [await port.readline(timeout=5) for _ in range(2)] == ["one", "two"]


async def test_a_closed_port_ends_its_streams_and_refuses_work(env):
    async with opened(env, url="loop://") as port:
        lines = port.lines()
        await port.write_line("last")
        assert await port.readline(timeout=5) == "last"
    assert [line async for line in lines] == ["last"]
    assert not port.state()["connected"]
    with pytest.raises(DriverError, match="closed"):
        await port.readline()
    with pytest.raises(DriverError, match="closed"):
        await port.write_line("more")
    await asyncio.to_thread(port.close)  # twice is harmless


# socket:// to the simulator


async def test_banner_request_and_response(env, device):
    port = SerialPort("board", SerialPort.validate({"url": device.url, "banner": "READY"}), env)
    everything = port.lines()  # subscribed before opening: sees the banner too
    await asyncio.to_thread(port.open)
    try:
        assert port.state()["connected"]
        assert await anext(everything) == "READY"
        await port.write_line("ECHO first")
        assert await port.readline(timeout=5) == "first"  # the banner is not for readline
        assert await port.request("PING") == "PONG"
        assert await port.request("LED 1 ON", expect="OK") == "OK"
        assert await port.request("PROGRAM 10", expect="DONE") == "DONE"
        regex = re.compile(r"PROGRESS [5-9]")
        assert await port.request("PROGRAM 10", expect=regex) == "PROGRESS 50"
        assert await port.request("ECHO fresh", expect="fresh") == "fresh"
        answer = await port.request("PROGRAM 10", expect=lambda line: line.endswith("75"))
        assert answer == "PROGRESS 75"
        assert await port.request("FLY", expect="ERR") == "ERR unknown command"
        assert device.commands[:4] == ["ECHO first", "PING", "LED 1 ON", "PROGRAM 10"]
    finally:
        await asyncio.to_thread(port.close)


async def test_a_request_times_out(env, device):
    async with opened(env, url=device.url, banner="READY") as port:
        with pytest.raises(TimeoutError, match=r"no answer to .PING. within 0\.1 s"):
            await port.request("PING", expect="NEVER", timeout=0.1)
        assert await port.request("PING") == "PONG"  # the port still works


async def test_a_plain_def_talks_to_the_board_as_it_reads(env, device):
    """In a thread (a plain def task or route), the same calls block and return the answer,
    instead of making coroutines that never run."""
    async with opened(env, url=device.url, banner="READY") as port:

        def blocking() -> tuple[str, str]:
            port.write_line("ECHO from a thread")
            line = port.readline(timeout=5)
            return line, port.request("PING")

        assert await asyncio.to_thread(blocking) == ("from a thread", "PONG")
        assert device.commands[:2] == ["ECHO from a thread", "PING"]


async def test_concurrent_requests_never_interleave(env, device):
    async with opened(env, url=device.url, banner="READY") as port:
        answers = await asyncio.gather(
            *(port.request(f"ECHO {i} done", expect=f"{i} done") for i in range(10))
        )
        assert answers == [f"{i} done" for i in range(10)]
        # A request that interleaved with a long answer would take one of its lines.
        requests = [
            port.request(f"ECHO {i}") if i % 2 else port.request("PROGRAM 1", expect="DONE")
            for i in range(10)
        ]
        answers = await asyncio.gather(*requests)
        assert answers == [str(i) if i % 2 else "DONE" for i in range(10)]
        assert port.state()["lines_out"] == 20
        # The second command is not even sent before the first has its answer.
        everything = port.lines()
        first = asyncio.create_task(port.request("PROGRAM 1", expect="DONE"))
        second = asyncio.create_task(port.request("ECHO second"))
        async with asyncio.timeout(5):
            while await anext(everything) != "PROGRESS 75":
                pass
        assert port.state()["lines_out"] == 21
        assert await asyncio.gather(first, second) == ["DONE", "second"]


async def test_lines_go_to_every_consumer_in_order(env, device):
    async with opened(env, url=device.url, banner="READY") as port:
        first, second = port.lines(), port.lines()
        assert await port.request("PROGRAM 100", expect="DONE") == "DONE"
        expected = ["PROGRESS 25", "PROGRESS 50", "PROGRESS 75", "DONE"]
        for consumer in (first, second):
            async with asyncio.timeout(5):
                assert [await anext(consumer) for _ in range(4)] == expected


async def test_safe_sends_its_command(env, device):
    async with opened(env, url=device.url, banner="READY", safe="LED 1 OFF") as port:
        await asyncio.to_thread(port.safe)
        await until(lambda: device.commands == ["LED 1 OFF"])
    async with opened(env, url=device.url) as port:
        await asyncio.to_thread(port.safe)  # no safe command: nothing to send


async def test_a_device_that_goes_away_is_reported_and_comes_back(env, device, problems):
    async with opened(env, url=device.url, banner="READY", safe="RESET") as port:
        assert await port.request("PING") == "PONG"
        pending = asyncio.create_task(port.readline())
        await asyncio.sleep(0)  # the readline is now waiting
        await device.stop()
        problem = await problems.wait_for(lambda problem: problem is not None)
        assert "device gone" in problem
        with pytest.raises(DriverError, match="not connected"):
            await pending
        state = port.state()
        assert not state["connected"] and state["error"]
        with pytest.raises(DriverError, match="not connected"):
            await port.readline(timeout=5)
        with pytest.raises(DriverError, match="not connected"):
            await port.request("PING")
        with pytest.raises(DriverError, match="cannot send 'RESET'"):
            await asyncio.to_thread(port.safe)
        with pytest.raises(DriverError, match="not connected"):
            port.set("PING")

        await device.start()  # plugged back in, on the same port
        await problems.wait_for(lambda problem: problem is None)
        assert port.state()["connected"] and port.state()["error"] is None
        assert await port.request("PING") == "PONG"
        assert problems.reports[-1] == ("board", None)


async def test_a_missing_device_is_waited_for_unless_reconnect_is_off(env, problems):
    device = DeviceSimulator()
    await device.start()
    await device.stop()  # a port that nobody listens on
    with pytest.raises(DriverError, match="cannot open socket://"):
        async with opened(env, url=device.url, reconnect=False):
            pass
    async with opened(env, url=device.url, banner="READY") as port:
        assert "cannot open" in await problems.wait_for(lambda problem: problem is not None)
        assert not port.state()["connected"]
        await device.start()
        try:
            await problems.wait_for(lambda problem: problem is None)
            assert await port.request("PING") == "PONG"
        finally:
            await device.stop()


async def test_a_missing_banner_fails_the_open(env):
    async with DeviceSimulator(banner="BOOTING") as device:
        with pytest.raises(DriverError, match=r"no line containing .READY. within 0\.2 s"):
            async with opened(
                env, url=device.url, banner="READY", banner_timeout=0.2, reconnect=False
            ):
                pass


# Options


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ({}, "url", "missing; expected a device path"),
        ({"url": "COM3"}, "url", 'a device path such as "/dev/ttyACM0"'),
        ({"url": "http://host:80"}, "url", "socket://HOST:PORT"),
        ({"url": "socket://host"}, "url", "socket://HOST:PORT"),
        ({"url": "socket://host:port"}, "url", "socket://HOST:PORT"),
        ({"url": 42}, "url", "got 42"),
        ({"url": "loop://", "baudrate": 12345}, "baudrate", "one of 50, 75"),
        ({"url": "loop://", "baudrate": "9600"}, "baudrate", 'got "9600"'),
        ({"url": "loop://", "baudrate": 9600.0}, "baudrate", "got 9600.0"),
        ({"url": "loop://", "newline": ";"}, "newline", r'"\r\n"'),
        ({"url": "loop://", "encoding": "klingon"}, "encoding", '"utf-8"'),
        ({"url": "loop://", "safe": ""}, "safe", "a non-empty string"),
        ({"url": "loop://", "safe": 0}, "safe", "a non-empty string"),
        ({"url": "loop://", "banner_timeout": 0}, "banner_timeout", "greater than 0"),
        ({"url": "loop://", "reconnect": "yes"}, "reconnect", "true or false"),
        ({"url": "loop://", "parity": "N"}, "parity", "unknown option; known: url, baudrate"),
    ],
)
def test_bad_options_name_their_key(table, key, expected):
    with pytest.raises(OptionError) as error:
        SerialPort.validate(table)
    assert error.value.key == key
    assert expected in error.value.expected


def test_options_get_their_defaults():
    assert SerialPort.validate({"url": "/dev/serial/by-id/usb-Arduino-if00"}) == {
        "url": "/dev/serial/by-id/usb-Arduino-if00",
        "baudrate": 115200,
        "newline": "\n",
        "encoding": "utf-8",
        "safe": None,
        "banner": None,
        "banner_timeout": 5.0,
        "reconnect": True,
    }
    for url in ("loop://", "socket://127.0.0.1:7000", "rfc2217://lab-pi.local:4000"):
        assert SerialPort.validate({"url": url, "baudrate": 9600})["url"] == url
    assert SerialPort.gpio_pins({}) == [] and not SerialPort.uses_pwm({})


async def test_the_simulator_answers_like_a_board():
    async with DeviceSimulator(step=0) as device:
        reader, writer = await asyncio.open_connection(device.host, device.port)
        try:
            assert await reader.readline() == b"READY\r\n"
            writer.write(b"LED 3 OFF\nLED x ON\nRESET\nECHO a b\n")
            answers = [await reader.readline() for _ in range(4)]
            assert answers == [
                b"OK\r\n",
                b"ERR usage: LED <n> ON|OFF\r\n",
                b"OK RESET\r\n",
                b"a b\r\n",
            ]
            assert device.commands == ["LED 3 OFF", "LED x ON", "RESET", "ECHO a b"]
        finally:
            writer.close()
            await writer.wait_closed()
