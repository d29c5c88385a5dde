"""A simulated microcontroller, so that the complete example runs on any laptop.

``SimulatedBoard`` is an author's own driver kind (see "Writing your own kind" in
docs/hardware.md): the built-in ``serial`` kind, plus a board to talk to. lab.toml names it

    [drivers.board]
    kind = "examples.complete.simulated_board:SimulatedBoard"
    banner = "READY"
    safe = "RESET"

On a Raspberry Pi with a real board on its USB cable, lab.toml names the built-in kind and the
board's port instead, and nothing else changes: lab.py talks to both in the same way.

    [drivers.board]
    kind = "serial"
    url = "/dev/serial/by-id/usb-Arduino_Uno_1234-if00"
    banner = "READY"
    safe = "RESET"
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from drivers import DriverError, Environment, OptionError, SerialPort
from drivers.simulator import DeviceSimulator

# Port 0: any free port, picked when the board is opened; url then says which one.
ANY_PORT = "socket://127.0.0.1:0"
START_TIMEOUT = 5.0  # seconds for the simulator to listen
STOP_TIMEOUT = 5.0  # seconds for it to hang up and end its thread


class SimulatedBoard(SerialPort):
    """A serial port whose board is ``drivers.simulator.DeviceSimulator`` (banner READY;
    PING, ECHO, LED n ON|OFF, PROGRAM size, RESET), started by ``open()`` and stopped by
    ``close()``.

    The simulator runs in a thread of its own, with its own event loop, as a real board is a
    computer of its own: it keeps answering whatever labrt's loop is doing, and ``close()``
    can stop it while labrt is shutting down. The port reaches it over TCP
    (``socket://127.0.0.1:PORT``), so everything from there on is the real serial driver:
    the banner, requests, ``lines()``, the safe line, reconnecting.
    """

    kind = "examples.complete.simulated_board:SimulatedBoard"
    # Seconds between the board's PROGRESS lines: slow enough to watch the progress bar.
    step = 0.5

    def __init__(self, name: str, options: Mapping[str, Any], env: Environment) -> None:
        super().__init__(name, options, env)
        self._simulator: DeviceSimulator | None = None
        self._simulator_loop: asyncio.AbstractEventLoop | None = None
        self._simulator_stop: asyncio.Event | None = None
        self._simulator_thread: threading.Thread | None = None
        self._simulator_error: BaseException | None = None

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        """The options of ``serial`` (banner, safe, newline...), all but ``url``: the
        simulator picks its own port when the board is opened."""
        if "url" in table:
            raise OptionError(
                "url",
                "unknown option for a simulated board, which picks its own port; "
                'for a real board write kind = "serial"',
            )
        return super().validate({**table, "url": ANY_PORT})

    def open(self) -> None:
        """Start the simulator on a free port, then open the port to it like any board."""
        ready = threading.Event()
        self._simulator_thread = threading.Thread(
            target=self._simulate, args=(ready,), name=f"{self.name}-simulator", daemon=True
        )
        self._simulator_thread.start()
        if not ready.wait(START_TIMEOUT) or self._simulator is None:
            self._stop_simulator()
            why = self._simulator_error or f"not listening within {START_TIMEOUT:g} s"
            raise DriverError(f"{self.name}: the simulated board did not start: {why}")
        self.options["url"] = self._simulator.url
        try:
            super().open()  # waits for the banner, as with a real board
        except BaseException:
            self._stop_simulator()
            raise

    def close(self) -> None:
        """Close the port (as pulling the cable would), then switch the board off."""
        super().close()
        self._stop_simulator()

    def _simulate(self, ready: threading.Event) -> None:
        """The simulator's thread: an event loop of its own until ``close()``."""
        try:
            asyncio.run(self._serve(ready))
        except BaseException as e:  # reported by open(), which waits on ready
            self._simulator_error = e
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._simulator_loop = asyncio.get_running_loop()
        self._simulator_stop = asyncio.Event()
        async with DeviceSimulator(step=self.step) as simulator:  # port 0: a free one
            self._simulator = simulator
            ready.set()
            await self._simulator_stop.wait()

    def _stop_simulator(self) -> None:
        """Ask the simulator's loop to stop, and wait for its thread. Never raises."""
        loop, stop = self._simulator_loop, self._simulator_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already ended
                loop.call_soon_threadsafe(stop.set)
        thread = self._simulator_thread
        if thread is not None:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                self.env.log.warning("%s: the simulator did not stop", self.name)
