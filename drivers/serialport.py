"""A device on a serial line (an Arduino, an instrument) that talks in lines of text.

One reader thread per port reads with a short timeout (``loop://`` has no file descriptor to
wait on, and the thread must notice ``close()``), cuts lines and hands them to the loop. Writes
go through one writer thread per port, so they keep their order and the loop never blocks.
The reader thread also owns recovery: when the device goes away it reports the problem,
retries opening with backoff, and waits for the board's banner again (opening a port resets
many Arduinos, and they ignore what is sent while they boot).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import urlsplit

import serial

from .base import Driver, DriverError, Environment, OptionError
from .fanout import QUEUE_SIZE, Fanout, Subscription
from .options import boolean, check_keys, number, shown, text

BAUDRATES = serial.SerialBase.BAUDRATES
NEWLINES = ("\n", "\r\n", "\r")
READ_TIMEOUT = 0.1  # how long a read blocks: the reader thread notices close() this fast
WRITE_TIMEOUT = 5.0  # for one chunk of about a second of line time; a device not reading fails
FIRST_RETRY, LAST_RETRY = 0.2, 5.0  # seconds between attempts to reopen a lost device
MAX_LINE = 65536  # bytes without a newline handed over as a line, so memory stays bounded
CLOSE_TIMEOUT = 2.0
RECENT = 20  # lines each way kept for state()

_URL_EXPECTED = (
    'a device path such as "/dev/ttyACM0" or "/dev/serial/by-id/...", '
    'or "loop://", "socket://HOST:PORT", "rfc2217://HOST:PORT"'
)

_OPTIONS = [
    "url",
    "baudrate",
    "newline",
    "encoding",
    "safe",
    "banner",
    "banner_timeout",
    "reconnect",
]

Expect = str | re.Pattern[str] | Callable[[str], Any] | None


class _Port(Protocol):
    """What the threads use of an open pyserial port, whichever class the URL picked
    (``serial_for_url`` gives a loop://, socket:// or rfc2217:// port its own class)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = ..., /) -> bytes: ...

    def write(self, b: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class SerialPort(Driver):
    """A serial device that talks in lines: request/response, or a stream of readings::

        [drivers.board]
        kind = "serial"
        url = "/dev/serial/by-id/usb-Arduino_Uno-if00"   # loop:// or socket:// without one
        baudrate = 115200
        banner = "READY"        # the board prints it once booted
        safe = "ALL OFF"        # sent whenever the lab must be safe

        board = lab.hardware["board"]
        await board.request("LED 1 ON", expect="OK")
        async for line in board.lines(): ...

    A lost device is reported (``state()["connected"]`` false, the runtime is told) and
    reopened in the background while ``reconnect`` is on; reads and requests waiting at that
    moment fail with :class:`DriverError`. Lines before the banner go to ``lines()`` only.
    """

    kind = "serial"

    def __init__(self, name: str, options: Mapping[str, Any], env: Environment) -> None:
        super().__init__(name, options, env)
        newline = self.options["newline"]
        self._newline = newline.encode()
        self._separator = b"\r" if newline == "\r" else b"\n"
        self._chunk = max(64, self.options["baudrate"] // 10)
        # Shared with the threads: the open port (None while lost) and the stop signal.
        self._port: _Port | None = None
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._partial = bytearray()  # the reader thread's unfinished line
        self._lines_out = 0  # written by the writer thread only
        # The last lines each way, for a person watching (labrt's dev panel, `state()`).
        self._recent: deque[dict[str, str]] = deque(maxlen=RECENT)
        # The loop's side.
        self._connected = False
        self._closed = False
        self._error: str | None = None
        self._reported = False
        self._outages = 0
        self._lines_in = 0
        # Lines for readline() and request(): the latest ones, not a consumer that lags.
        self._unread: deque[str] = deque(maxlen=QUEUE_SIZE)
        self._arrived = asyncio.Event()
        self._lines: Fanout[str] = Fanout()
        self._request_lock = asyncio.Lock()

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        check_keys(table, _OPTIONS)
        url = _url(table)
        baudrate = table.get("baudrate", 115200)
        if type(baudrate) is not int or baudrate not in BAUDRATES:
            rates = ", ".join(map(str, BAUDRATES))
            raise OptionError("baudrate", f"one of {rates}, got {shown(baudrate)}")
        newline = table.get("newline", "\n")
        if newline not in NEWLINES:
            raise OptionError("newline", rf'"\n", "\r\n" or "\r", got {shown(newline)}')
        encoding = text(table, "encoding", "utf-8")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise OptionError(
                "encoding", f'a codec such as "utf-8", got {shown(encoding)}'
            ) from None
        return {
            "url": url,
            "baudrate": baudrate,
            "newline": newline,
            "encoding": encoding,
            "safe": text(table, "safe", None),
            "banner": text(table, "banner", None),
            "banner_timeout": number(table, "banner_timeout", 5.0, positive=True),
            "reconnect": boolean(table, "reconnect", True),
        }

    # Opening and closing, in a worker thread.

    def open(self) -> None:
        """Open the port and wait for the banner. A device that is not there fails the open
        only when ``reconnect`` is off; otherwise it is reported and waited for."""
        try:
            self._connect()
        except DriverError as e:
            if not self.options["reconnect"]:
                raise
            self.call_on_loop(self._on_gone, str(e))
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-writer")
        self._reader = threading.Thread(
            target=self._read_forever, name=f"{self.name}-reader", daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        self._stopping.set()
        try:
            if self._reader is not None:
                self._reader.join(CLOSE_TIMEOUT)
                if self._reader.is_alive():
                    self.env.log.warning("%s: the reader thread did not stop", self.name)
            if self._writer is not None:
                self._writer.shutdown(wait=True, cancel_futures=True)
        except Exception:
            self.env.log.exception("%s: closing failed", self.name)
        _close_quietly(self._take_port())
        self.call_on_loop(self._on_closed)

    def safe(self) -> None:
        """Send the ``safe`` command, after any write already queued; blocks until sent."""
        command = self.options["safe"]
        if command is None:
            return
        if self._port is None:
            raise DriverError(f"{self.name}: cannot send {command!r}: {self._not_connected()}")
        self._submit(self._encode(command) + self._newline).result()

    # The reader thread.

    def _connect(self) -> None:
        """Open the port and wait for the banner; then the loop may use it. Blocks."""
        url = self.options["url"]
        try:
            port = serial.serial_for_url(
                url,
                do_not_open=True,
                baudrate=self.options["baudrate"],
                timeout=READ_TIMEOUT,
                write_timeout=WRITE_TIMEOUT,
                exclusive=True,  # another program on the same board would garble both
            )
            port.open()
        except (OSError, ValueError) as e:  # SerialException is an OSError
            raise DriverError(f"cannot open {url}: {e}") from e
        self._partial.clear()
        try:
            leftover = self._wait_for_banner(port)
        except DriverError:
            _close_quietly(port)
            raise
        self._port = port
        self.call_on_loop(self._on_back)
        if leftover:
            self.call_on_loop(self._on_lines, leftover)

    def _wait_for_banner(self, port: _Port) -> list[str]:
        """Read until the banner; return the lines that came after it in the same read."""
        banner = self.options["banner"]
        if banner is None:
            return []
        timeout = self.options["banner_timeout"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            lines = self._split(_read_chunk(port))
            for i, line in enumerate(lines):
                if banner in line:
                    self.call_on_loop(self._on_lines, lines[: i + 1])
                    return lines[i + 1 :]
            if lines:
                self.call_on_loop(self._on_lines, lines)
        raise DriverError(f"no line containing {banner!r} within {timeout:g} s of opening")

    def _read_forever(self) -> None:
        try:
            self._read_until_stopped()
        except Exception as e:  # a bug here must not leave the port silently deaf
            self.env.log.exception("%s: the reader thread failed", self.name)
            self.call_on_loop(self._on_gone, f"reader thread failed: {e}")
        finally:
            _close_quietly(self._take_port())

    def _read_until_stopped(self) -> None:
        delay = FIRST_RETRY
        while not self._stopping.is_set():
            port = self._port
            if port is None:
                if not self.options["reconnect"] or self._stopping.wait(delay):
                    return
                delay = min(2 * delay, LAST_RETRY)
                try:
                    self._connect()
                except DriverError as e:
                    if not self._stopping.is_set():
                        self.call_on_loop(self._on_gone, str(e))
                    continue
                delay = FIRST_RETRY
                continue
            try:
                lines = self._split(_read_chunk(port))
            except DriverError as e:
                port = self._take_port()
                self.call_on_loop(self._on_gone, str(e))
                _close_quietly(port)
                continue
            if lines:
                self.call_on_loop(self._on_lines, lines)

    def _split(self, chunk: bytes) -> list[str]:
        """Cut what arrived into lines, keeping the unfinished end for the next chunk."""
        self._partial += chunk
        if self._separator not in chunk and len(self._partial) <= MAX_LINE:
            return []
        *complete, rest = bytes(self._partial).split(self._separator)
        self._partial[:] = rest
        if len(self._partial) > MAX_LINE:
            complete.append(rest)
            self._partial.clear()
        encoding = self.options["encoding"]
        return [line.decode(encoding, "replace").strip("\r\n") for line in complete]

    def _take_port(self) -> _Port | None:
        port, self._port = self._port, None
        return port

    # The writer thread.

    def _submit(self, data: bytes) -> concurrent.futures.Future[None]:
        if self._writer is None:
            raise DriverError(f"{self.name} is not open")
        text = data.decode(self.options["encoding"], "replace").rstrip("\r\n")
        self._recent.append({"out": text})
        try:
            return self._writer.submit(self._write_now, data)
        except RuntimeError:  # shut down
            raise DriverError(f"{self.name} is closed") from None

    def _write_now(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise DriverError(f"{self.name}: {self._not_connected()}")
        try:
            # In chunks of about a second of line time, so that the write timeout means
            # "the device stopped reading" and not "this upload is long".
            for start in range(0, len(data), self._chunk):
                if self._stopping.is_set():
                    raise DriverError(f"{self.name} was closed during a write")
                port.write(data[start : start + self._chunk])
        except serial.SerialTimeoutException:
            raise DriverError(f"{self.name}: write timed out: the device is not reading") from None
        except (OSError, ValueError) as e:
            raise DriverError(f"{self.name}: write failed: {e}") from e
        self._lines_out += data.count(self._newline)

    def _encode(self, line: str) -> bytes:
        return line.encode(self.options["encoding"], "replace")

    # The loop's side.

    def _on_lines(self, lines: list[str]) -> None:
        self._lines_in += len(lines)
        for line in lines:
            self._lines.publish(line)
            self._recent.append({"in": line})
        if self._connected:  # else before the banner: not an answer to anything
            self._unread.extend(lines)
            self._wake()

    def _on_back(self) -> None:
        if self._closed:
            return
        self._connected = True
        self._error = None
        if self._reported:
            self._reported = False
            self._report(None)

    def _on_gone(self, problem: str) -> None:
        if self._closed:
            return
        if self._connected:
            self._connected = False
            self._outages += 1
            self._wake()
        if problem != self._error:
            self._error = problem
            self._reported = True
            self._report(problem)

    def _on_closed(self) -> None:
        self._closed = True
        self._connected = False
        self._lines.close()
        self._wake()

    def _report(self, problem: str | None) -> None:
        try:
            self.env.on_problem(self.name, problem)
        except Exception:
            self.env.log.exception("%s: reporting %r failed", self.name, problem)

    def _wake(self) -> None:
        """Wake every coroutine waiting for a line (or for the news that none will come)."""
        self._arrived.set()
        self._arrived.clear()

    def _not_connected(self) -> str:
        error = self._error
        return f"not connected ({error})" if error else "not connected"

    async def _next_line(self) -> str:
        outages = self._outages
        while not self._unread:
            if self._closed:
                raise DriverError(f"{self.name} is closed")
            if not self._connected or self._outages != outages:
                raise DriverError(f"{self.name}: {self._not_connected()}")
            await self._arrived.wait()
        return self._unread.popleft()

    # The author's API: awaited in async def code; in a plain def (a thread) each call runs
    # on the loop and blocks until done (Driver._one_spelling).

    def write(self, data: bytes | str) -> Coroutine[Any, Any, None]:
        """Send ``data`` as it is; returns once it is written."""
        return self._one_spelling(self._write(data), f"{self.name}.write()")

    def write_line(self, line: str) -> Coroutine[Any, Any, None]:
        """Send ``line`` and the newline."""
        return self._one_spelling(self._write_line(line), f"{self.name}.write_line()")

    def readline(self, timeout: float | None = None) -> Coroutine[Any, Any, str]:
        """The oldest line not yet read (of the last 1000 since the banner).

        Raises TimeoutError after ``timeout`` seconds, DriverError if the device is or goes
        away meanwhile.
        """
        return self._one_spelling(self._readline(timeout), f"{self.name}.readline()")

    def request(
        self, command: str, expect: Expect = None, timeout: float = 2.0
    ) -> Coroutine[Any, Any, str]:
        """Send ``command`` as a line and return the first line after it that matches
        ``expect``: a string it contains, a regex it matches, a function that accepts it,
        or None for the next line. Lines before the match are consumed, lines not read
        before the command are dropped (they cannot be its answer). Requests never
        interleave; ``timeout`` counts from this request's turn.
        """
        return self._one_spelling(self._request(command, expect, timeout), f"{self.name}.request()")

    async def _write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = self._encode(data)
        await asyncio.wrap_future(self._submit(data))

    async def _write_line(self, line: str) -> None:
        await self._write(self._encode(line) + self._newline)

    async def _readline(self, limit: float | None) -> str:
        try:
            async with asyncio.timeout(limit):
                return await self._next_line()
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no line within {limit:g} s") from None

    async def _request(self, command: str, expect: Expect, limit: float) -> str:
        matches = _matcher(expect)
        async with self._request_lock:
            self._unread.clear()
            try:
                async with asyncio.timeout(limit):
                    await self._write_line(command)
                    while not matches(line := await self._next_line()):
                        pass
                    return line
            except TimeoutError:
                raise TimeoutError(
                    f"{self.name}: no answer to {command!r} within {limit:g} s"
                ) from None

    def lines(self) -> Subscription[str]:
        """Every line from now on, banners included, across reconnections, until the port
        is closed: ``async for line in port.lines()``."""
        return self._lines.subscribe()

    @property
    def connected(self) -> bool:
        return self._connected

    def state(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "url": self.options["url"],
            "error": self._error,
            "lines_in": self._lines_in,
            "lines_out": self._lines_out,
            "dropped": self._lines.dropped,
            "recent": list(self._recent),
        }

    def set(self, value: Any) -> None:
        """Bench use: send ``value`` as a line; a failure is logged."""
        if not isinstance(value, str):
            raise DriverError(f"{self.name}: set sends a line of text, not {value!r}")
        if not self._connected:
            raise DriverError(f"{self.name}: {self._not_connected()}")
        self._submit(self._encode(value) + self._newline).add_done_callback(self._log_failure)

    def _log_failure(self, future: concurrent.futures.Future[None]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            self.env.log.error("%s", error)


def _url(table: Mapping[str, Any]) -> str:
    url = table.get("url")
    if url is None:
        raise OptionError("url", f"missing; expected {_URL_EXPECTED}")
    if not isinstance(url, str):
        raise OptionError("url", f"{_URL_EXPECTED}, got {shown(url)}")
    scheme, found, _ = url.partition("://")
    if not found:
        good = url.startswith("/")
    elif scheme in ("socket", "rfc2217"):
        try:
            parts = urlsplit(url)
            good = bool(parts.hostname) and parts.port is not None
        except ValueError:  # a port that is not a number
            good = False
    else:
        good = scheme == "loop"
    if not good:
        raise OptionError("url", f"{_URL_EXPECTED}, got {shown(url)}")
    return url


def _matcher(expect: Expect) -> Callable[[str], bool]:
    if expect is None:
        return lambda line: True
    if isinstance(expect, str):
        return lambda line: expect in line
    if isinstance(expect, re.Pattern):
        return lambda line: expect.search(line) is not None
    if callable(expect):
        return lambda line: bool(expect(line))
    raise TypeError(f"expect is a string, a compiled regex, a function or None; not {expect!r}")


def _read_chunk(port: _Port) -> bytes:
    """What has arrived, waiting up to READ_TIMEOUT for the first byte."""
    try:
        return port.read(port.in_waiting or 1)
    except Exception as e:  # an unplugged device raises SerialException, OSError, and worse
        raise DriverError(f"device gone: {str(e) or type(e).__name__}") from e


def _close_quietly(port: _Port | None) -> None:
    if port is not None:
        # Closing a port whose device is gone may fail; it is closed enough.
        with contextlib.suppress(Exception):
            port.close()
