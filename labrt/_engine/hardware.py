"""The lab's devices, as declared in lab.toml: opened at start, made safe whenever nobody is
using them, closed at stop.

Safety comes first: ``safe()`` runs on every driver before the server accepts anyone (which is
also the first start after a crash), after each dispose that leaves the lab empty, and on
shutdown. While a driver's ``safe()`` fails the lab is unavailable: no student is admitted
until a later attempt succeeds. Driver calls that may block run in a small pool of their own,
so a hung device never stalls the event loop or the author's task threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import typing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers import Bank, Driver, DriverError, Environment, Input
from drivers.pins import make_factory

if TYPE_CHECKING:
    from ..config import HardwareConfig

log = logging.getLogger("labrt.hardware")

# A blocking call (choosing the pin library) that takes longer than this counts as failed. A
# driver's safe() and close() have their kind's own Driver.safe_timeout (10 s by default).
DEVICE_TIMEOUT = 10.0
# Opening may wait for a board to boot after its reset (a serial banner).
OPEN_TIMEOUT = 60.0
# While the lab is unavailable, safe() is tried again this often (and before each start).
RETRY_INTERVAL = 15.0


class Devices(Mapping[str, Driver]):
    """``lab.hardware``: the drivers by name, also as attributes (``lab.hardware.led1``).

    A lab may subclass it to say which class each device is, for editors and type checkers
    (``light: Output``), and pass the subclass to ``Lab(devices=...)``; the lab then refuses to
    start unless lab.toml declares each of them, of that class.
    """

    def __init__(self, drivers: dict[str, Driver]) -> None:
        self._drivers = drivers

    @classmethod
    def declared(cls) -> dict[str, type[Driver]]:
        """The devices this class names, with their driver classes."""
        hints = typing.get_type_hints(cls)
        named = {name: hint for name, hint in hints.items() if not name.startswith("_")}
        for name, hint in named.items():
            if not (isinstance(hint, type) and issubclass(hint, Driver)):
                raise TypeError(
                    f"{cls.__name__}.{name}: a device is annotated with its driver class "
                    f"(e.g. drivers.Output), not {hint!r}"
                )
        return named

    def __getitem__(self, name: str) -> Driver:
        try:
            return self._drivers[name]
        except KeyError:
            known = ", ".join(self._drivers) or "none"
            raise KeyError(f"no driver named {name!r} in lab.toml (declared: {known})") from None

    def __getattr__(self, name: str) -> Driver:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._drivers)

    def __len__(self) -> int:
        return len(self._drivers)

    def __repr__(self) -> str:
        return f"<hardware {', '.join(self._drivers) or '(none)'}>"


class Hardware:
    def __init__(self, config: HardwareConfig, devices: type[Devices] = Devices) -> None:
        self.config = config
        self._devices = devices
        # Whether nobody is using the lab now (the runtime sets it): a retry of safe() must
        # not reset devices under a student whose slot survived a restart.
        self.idle: Callable[[], bool] = lambda: True
        # Called with a device's name at each fault or failed safe() (the runtime counts them).
        self.on_error: Callable[[str], None] = lambda name: None
        self.mode = "no devices declared"
        self.mock = True
        self.pin_factory: Any = None  # gpiozero's, when GPIO is declared (mock pins: for tests)
        self.devices = self._devices({})
        # Why the lab may not admit anyone: drivers whose safe() failed.
        self.unsafe: dict[str, str] = {}
        # Faults the drivers report themselves (a serial device unplugged), for /healthz.
        self.faults: dict[str, str] = {}
        # Set by bench control (labrt hardware --set): the next start makes everything safe.
        self.touched = False
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="labrt-hardware")
        self._retry: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return not self.unsafe

    async def open(self) -> None:
        """Choose the pins, create and open every driver; a failure stops the start."""
        loop = asyncio.get_running_loop()
        declared = self.config.drivers
        if not declared:
            return
        factory = None
        if any(d.driver.gpio_pins(d.options) for d in declared):
            pwm = any(d.driver.uses_pwm(d.options) for d in declared)
            choose = functools.partial(make_factory, self.config.pins, pwm=pwm)
            factory, self.mode, self.mock = await self._call(choose)
            self.pin_factory = factory
        else:
            self.mode, self.mock = "no GPIO declared", False
        log.info("hardware: %s", self.mode)
        for warning in warnings(self.config):
            log.warning("%s", warning)
        env = Environment(
            loop=loop,
            pin_factory=factory,
            mock=self.mock,
            log=log,
            on_problem=self._fault,
            folder=self.config.folder or Path.cwd(),
        )
        opened: dict[str, Driver] = {}
        try:
            for declared_driver in declared:
                driver = declared_driver.driver(declared_driver.name, declared_driver.options, env)
                try:
                    await self._call(driver.open, limit=OPEN_TIMEOUT)
                except TimeoutError:
                    raise DriverError(
                        f"{driver.name}: did not open within {OPEN_TIMEOUT:g} s"
                    ) from None
                except DriverError as exc:
                    detail = str(exc).removeprefix(f"{driver.name}: ")
                    raise DriverError(f"{driver.name}: {detail}") from exc
                opened[driver.name] = driver
        except BaseException:
            await self._close(opened)
            raise
        self.devices = self._devices(opened)

    async def make_safe(self, why: str) -> bool:
        """Put every device in its safe state; True if all of them are."""
        results = await asyncio.gather(
            *(self._safe(driver) for driver in self.devices.values()), return_exceptions=True
        )
        for driver, result in zip(self.devices.values(), results, strict=True):
            if isinstance(result, BaseException):
                # Drivers name themselves in their messages; the name is the key here.
                detail = str(result).removeprefix(f"{driver.name}: ") or type(result).__name__
                problem = f"safe() failed: {detail}"
                self.on_error(driver.name)
                if self.unsafe.get(driver.name) != problem:
                    log.error("hardware %s (%s): %s", driver.name, why, problem)
                self.unsafe[driver.name] = problem
            elif self.unsafe.pop(driver.name, None) is not None:
                log.info("hardware %s is safe again (%s)", driver.name, why)
        if self.unsafe:
            self._keep_retrying()
        self.touched = False
        return self.available

    async def ready_for_a_student(self, *, idle: bool) -> str | None:
        """None if a student may be admitted now, else why not. When nobody is using the lab
        (``idle``) every device is made safe first, whatever happened to it since the last
        dispose; otherwise only if a device is unsafe or was moved by bench control."""
        if idle or self.unsafe or self.touched:
            await self.make_safe("before a start")
        if self.unsafe:
            return "; ".join(f"{name}: {problem}" for name, problem in self.unsafe.items())
        return None

    def set(self, name: str, value: Any) -> dict[str, Any]:
        """Bench control of one device; the caller has checked that nobody is using the lab."""
        driver = self.devices[name]
        driver.set(value)
        self.touched = True
        return driver.state()

    def states(self) -> dict[str, dict[str, Any]]:
        kinds = {d.name: d.kind for d in self.config.drivers}  # as lab.toml names them
        return {
            name: {
                "kind": kinds.get(name, driver.kind),
                "state": _state(driver),
                "problem": self.unsafe.get(name) or self.faults.get(name),
            }
            for name, driver in self.devices.items()
        }

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
        await self._close(dict(self.devices))
        self.devices = self._devices({})
        # A device stuck in a call cannot be waited for; the process exits past it.
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- helpers -----------------------------------------------------------------------------

    async def _call(self, fn: Any, *args: Any, limit: float = DEVICE_TIMEOUT) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._pool, fn, *args), limit)

    async def _safe(self, driver: Driver) -> None:
        try:
            await self._call(driver.safe, limit=driver.safe_timeout)
        except TimeoutError:
            raise DriverError(f"no answer within {driver.safe_timeout:g} s") from None

    async def _close(self, drivers: dict[str, Driver]) -> None:
        for driver in reversed(list(drivers.values())):
            try:
                await self._call(driver.close, limit=driver.safe_timeout)
            except Exception:
                log.exception("hardware %s: close failed", driver.name)

    def _fault(self, name: str, problem: str | None) -> None:
        if problem is None:
            if self.faults.pop(name, None) is not None:
                log.info("hardware %s: back to normal", name)
        elif self.faults.get(name) != problem:
            self.on_error(name)
            self.faults[name] = problem
            log.warning("hardware %s: %s", name, problem)

    def _keep_retrying(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.ensure_future(self._retry_until_safe())

    async def _retry_until_safe(self) -> None:
        while self.unsafe:
            await asyncio.sleep(RETRY_INTERVAL)
            if self.idle():
                await self.make_safe("retry")


def _state(driver: Driver) -> dict[str, Any]:
    try:
        return driver.state()
    except Exception as exc:
        return {"error": f"state() failed: {exc}"}


# Pins that are not like the others on a Raspberry Pi's header: what a device there risks.
_I2C = {2: "SDA", 3: "SCL"}
_UART = {14: "TX", 15: "RX"}
_PULLED_UP = "is I2C's {}, with a pull-up resistor on the board"


def warnings(config: HardwareConfig) -> list[str]:
    """What ``labrt check`` prints and the start logs, without refusing to start: risky
    pins, and each driver's own warnings (a program not installed, a device unplugged)."""
    folder = config.folder or Path.cwd()
    lines = risky_pins(config)
    for declared in config.drivers:
        for warning in declared.driver.warnings(declared.options, folder):
            lines.append(f"[drivers.{declared.name}] {warning}")
    return lines


def risky_pins(config: HardwareConfig) -> list[str]:
    """One line per device on a risky pin (I2C's pulled-up 2 and 3 as an output, or as an
    input pulled down or floating; the console's 14 and 15 at all), naming pin and reason:
    a warning for ``labrt check`` and the log at start, not an error."""
    lines = []
    for declared in config.drivers:
        cls, options = declared.driver, declared.options
        is_input = issubclass(cls, Input) or (
            issubclass(cls, Bank) and options.get("direction") == "input"
        )
        reasons = []
        for pin in cls.gpio_pins(options):
            if pin in _I2C and not is_input:
                reasons.append(
                    f"GPIO{pin} as an output: it {_PULLED_UP.format(_I2C[pin])}, so it is high "
                    "whenever labrt does not drive it (stopped, crashed, booting), and what it "
                    "drives is on then"
                )
            elif pin in _I2C and options.get("pull_up") is not True:
                reasons.append(
                    f"GPIO{pin} as an input without pull_up = true: it "
                    f"{_PULLED_UP.format(_I2C[pin])}, so it reads high unless driven low"
                )
            elif pin in _UART:
                reasons.append(
                    f"GPIO{pin} is the UART's {_UART[pin]}, which the serial console uses unless "
                    "it is turned off (raspi-config, Interface Options, Serial Port)"
                )
        if reasons:
            lines.append(f"[drivers.{declared.name}] " + "; ".join(reasons))
    return lines
