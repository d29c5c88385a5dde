"""A camera pointed at the bench: JPEG pictures from a webcam, the Pi's camera module, or an
MJPEG streamer already running, shared by everyone watching.

One capture per camera, on the event loop and never blocking it: a program's stdout is a
non-blocking pipe, an HTTP stream a non-blocking socket, and cutting the bytes into pictures
(drivers/jpeg.py) takes microseconds. A V4L2 webcam is read by ffmpeg, asked for the
camera's own MJPEG and copying it (``-c:v copy``): ffmpeg is maintained, knows every
camera's quirks, and re-encodes nothing; an ioctl loop of our own would know none of that.

Pictures pass through untouched. Each viewer gets the newest picture whenever it is ready
for one, so a slow viewer skips pictures instead of queueing them, and never slows the
others (as µStreamer does). The capture starts with the first viewer and stops ``linger``
seconds after the last, so the camera's LED goes off and the CPU is free. When the source
fails (unplugged, the program exits, the URL does not answer), viewers get a "no signal"
picture every second, the fault is reported once, and the capture retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .base import Driver, DriverError, Environment, OptionError
from .jpeg import JpegSplitter
from .options import check_keys, is_number, number, shown, text

_OPTIONS = ["device", "command", "url", "width", "height", "fps", "linger"]
_SOURCES = ("device", "command", "url")
_ONE_SOURCE = (
    'exactly one source: device = "/dev/video0", command = ["program", "arg", ...] '
    '(writing MJPEG to stdout), or url = "http://host:port/stream"'
)

# The picture viewers get while the source sends none, made once with ffmpeg's drawtext
# (dark grey, "NO SIGNAL", 640x480): a file, so that labrt needs no image library.
NO_SIGNAL = (Path(__file__).resolve().parent / "no_signal.jpg").read_bytes()
NO_SIGNAL_EVERY = 1.0  # seconds between repeats, so a page knows the stream is alive
STALL = 5.0  # a source that sends no picture for this long is restarted
FIRST_RETRY, LAST_RETRY = 0.5, 10.0  # backoff between attempts to restart a failed source
STEADY = 10.0  # a source that ran this long failed anew: retry from FIRST_RETRY again
EXIT_WAIT = 2.0  # after SIGTERM, before SIGKILL
CLOSE_TIMEOUT = 5.0
FPS_WINDOW = 5.0  # seconds of pictures the measured rate is over
CHUNK = 1 << 16


@dataclass(frozen=True, eq=False)
class Frame:
    """One picture as the source sent it: ``jpeg`` is untouched. ``signal`` is False for
    the "no signal" picture; ``number`` grows by one per picture; ``time`` is when its last
    byte arrived (the loop's clock), for measuring how late it reaches a viewer."""

    jpeg: bytes
    number: int
    time: float
    signal: bool = True


class Viewer:
    """One consumer of a camera (a page's ``<img>``, a snapshot). ``await viewer.next()``
    gives the newest picture it has not had, waiting for one if needed, and None once the
    viewer is ended (the camera closed, or whoever let it in ended it)."""

    def __init__(self, camera: Camera) -> None:
        self._camera = camera
        self._seen = 0
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False

    async def next(self) -> Frame | None:
        while not self.ended:
            frame = self._camera._latest
            if frame is not None and frame.number > self._seen:
                self._seen = frame.number
                return frame
            self._waiter = asyncio.get_running_loop().create_future()
            self._camera._waiting.add(self)
            try:
                await self._waiter
            finally:
                self._waiter = None
                self._camera._waiting.discard(self)
        return None

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Source(Protocol):
    async def read(self) -> bytes:
        """The next bytes; b"" at the end, or an exception saying what went wrong."""

    async def ended(self) -> str:
        """Why the bytes ended, in words."""

    async def close(self) -> None: ...


class Camera(Driver):
    """A camera whose pictures pages show with ``<img src="/labrt/camera/NAME">``::

        [drivers.cam]
        kind = "camera"
        device = "/dev/video0"     # or: command = [...] / url = "http://..."
        width = 640
        height = 480
        fps = 30

    labrt serves it to the active student (and to spectators when the lab allows them);
    a lab's own code may take a picture with ``await cam.snapshot()``.
    """

    kind = "camera"

    def __init__(self, name: str, options: Mapping[str, Any], env: Environment) -> None:
        super().__init__(name, options, env)
        self._viewers: set[Viewer] = set()
        self._waiting: set[Viewer] = set()
        self._latest: Frame | None = None
        self._numbers = 0
        self._capture: asyncio.Task[None] | None = None
        self._stopping: asyncio.TimerHandle | None = None
        self._closed = False
        self._status = "idle"  # starting, streaming, no signal
        self._problem: str | None = None
        self._reported = False
        self._pid: int | None = None
        self._frames = 0
        self._skipped = 0
        self._times: deque[float] = deque(maxlen=max(2, int(options["fps"] * FPS_WINDOW) + 1))
        # Rate limit to ``fps``: a token bucket of two, so jitter does not drop pictures.
        self._tokens = 2.0
        self._refilled = 0.0
        self.starts = 0  # captures started, for tests and the curious

    # -- lab.toml -------------------------------------------------------------------------

    @classmethod
    def validate(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        check_keys(table, _OPTIONS)
        given = [key for key in _SOURCES if key in table]
        if len(given) != 1:
            raise OptionError(given[1] if len(given) > 1 else None, _ONE_SOURCE)
        source = given[0]
        options: dict[str, Any] = {"device": None, "command": None, "url": None}
        if source == "device":
            device = text(table, "device", "")
            if not device.startswith("/"):
                raise OptionError("device", f'a path such as "/dev/video0", got {shown(device)}')
            options["device"] = device
        elif source == "command":
            command = table["command"]
            if (
                not isinstance(command, list)
                or not command
                or not all(isinstance(part, str) and part for part in command)
            ):
                raise OptionError(
                    "command",
                    'a list of strings, the program first, such as ["rpicam-vid", "-t", "0", '
                    f'"--codec", "mjpeg", "-o", "-"], got {shown(command)}',
                )
            options["command"] = list(command)
        else:
            url = text(table, "url", "")
            if not url.startswith(("http://", "https://")):
                raise OptionError("url", f"an http:// or https:// URL, got {shown(url)}")
            options["url"] = url
        for key, default in (("width", 640), ("height", 480)):
            value = table.get(key, default)
            if key in table and source != "device":
                raise OptionError(
                    key, f"only for a device source; a {source} sets its own picture size"
                )
            if type(value) is not int or not 16 <= value <= 8192:
                raise OptionError(key, f"a whole number of pixels, 16 to 8192, got {shown(value)}")
            options[key] = value
        fps = table.get("fps", 30)
        if not is_number(fps) or not 0 < fps <= 120:
            raise OptionError(
                "fps", f"pictures per second, more than 0 and at most 120, got {shown(fps)}"
            )
        options["fps"] = fps
        options["linger"] = number(table, "linger", 3.0)
        return options

    @classmethod
    def warnings(cls, options: Mapping[str, Any], folder: Path) -> list[str]:
        program = _program(options)
        lines = []
        if program is not None and _find(program, folder) is None:
            install = " (apt install ffmpeg)" if program == "ffmpeg" else ""
            lines.append(f"{program} is not installed{install}: viewers will see no signal")
        device = options["device"]
        if device is not None and not Path(device).exists():
            lines.append(f"{device} is not there now: viewers see no signal until it is")
        return lines

    # -- what labrt and a lab use ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def viewer(self) -> AsyncIterator[Viewer]:
        """Watch the camera for the length of the ``async with``: the capture runs while
        anyone watches (and ``linger`` seconds more)."""
        if self._closed:
            raise DriverError(f"{self.name}: the camera is closed")
        viewer = Viewer(self)
        self._viewers.add(viewer)
        self._start()
        try:
            yield viewer
        finally:
            viewer.end()
            self._viewers.discard(viewer)
            if not self._viewers:
                self._linger()

    async def snapshot(self) -> bytes:
        """The newest picture as JPEG; the "no signal" picture if none comes within a few
        seconds (``STALL``)."""
        async with self.viewer() as viewer:
            try:
                async with asyncio.timeout(STALL):
                    frame = await viewer.next()
            except TimeoutError:
                frame = None
        return NO_SIGNAL if frame is None else frame.jpeg

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    @property
    def status(self) -> str:
        """idle, starting, streaming or no signal."""
        return self._status

    def fps(self) -> float:
        """Pictures per second sent on to viewers, over the last few seconds."""
        if self._status != "streaming" or len(self._times) < 2:
            return 0.0
        now = self.env.loop.time()
        recent = [t for t in self._times if t > now - FPS_WINDOW]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def state(self) -> dict[str, Any]:
        return {
            "state": self._status,
            "source": self._source_name(),
            "viewers": len(self._viewers),
            "fps": round(self.fps(), 1),
            "frames": self._frames,
            "problem": self._problem,
            "pid": self._pid,
        }

    # -- the driver's life ------------------------------------------------------------------

    def close(self) -> None:
        """End every viewer and stop the capture (from a worker thread)."""
        with contextlib.suppress(RuntimeError, TimeoutError):
            future = asyncio.run_coroutine_threadsafe(self._shut(), self.env.loop)
            future.result(CLOSE_TIMEOUT)

    async def _shut(self) -> None:
        self._closed = True
        for viewer in list(self._viewers):
            viewer.end()
        await self._stop()

    # -- the capture, on the loop -------------------------------------------------------------

    def _start(self) -> None:
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None
        if self._capture is None or self._capture.done():
            self.starts += 1
            self._status = "starting"
            self._capture = asyncio.get_running_loop().create_task(
                self._run(), name=f"camera {self.name}"
            )

    def _linger(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = loop.call_later(
            self.options["linger"], lambda: loop.create_task(self._stop_if_unwatched())
        )

    async def _stop_if_unwatched(self) -> None:
        self._stopping = None
        if not self._viewers:
            await self._stop()

    async def _stop(self) -> None:
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.cancel()
            await asyncio.gather(capture, return_exceptions=True)
        self._status = "idle"
        self._latest = None  # a later viewer must not get a picture from back then
        self._times.clear()

    async def _run(self) -> None:
        """Keep pictures coming while the capture runs: restart the source when it fails,
        and show "no signal" meanwhile."""
        loop = asyncio.get_running_loop()
        ticker = loop.create_task(self._no_signal_while_down())
        retry = FIRST_RETRY
        try:
            while True:
                began = loop.time()
                try:
                    problem = await self._stream()
                except Exception as exc:  # a bug of ours or a source's: retried, not fatal
                    self.env.log.exception("camera %s: capture failed", self.name)
                    problem = _describe(exc)
                self._down(problem)
                if loop.time() - began >= STEADY:
                    retry = FIRST_RETRY
                await asyncio.sleep(retry)
                retry = min(retry * 2, LAST_RETRY)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _stream(self) -> str:
        """Read the source until it fails; the problem, in words."""
        splitter = JpegSplitter()
        loop = asyncio.get_running_loop()
        try:
            source = await self._open()
        except (OSError, DriverError) as exc:
            return _describe(exc)
        try:
            async with asyncio.timeout_at(loop.time() + STALL) as stall:
                while chunk := await source.read():
                    for jpeg in splitter.feed(chunk):
                        stall.reschedule(loop.time() + STALL)
                        self._offer(jpeg, loop.time())
            return await source.ended()
        except TimeoutError:
            return f"no picture for {STALL:g} s"
        except (OSError, DriverError, EOFError) as exc:
            return _describe(exc)
        finally:
            await source.close()
            self._pid = None

    async def _open(self) -> _Source:
        url = self.options["url"]
        if url is not None:
            return await _HttpSource.open(url)
        source = await _CommandSource.open(self._command(), self.env.folder)
        self._pid = source.pid
        return source

    def _command(self) -> list[str]:
        command: list[str] | None = self.options["command"]
        if command is not None:
            return command
        o = self.options
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "v4l2", "-input_format", "mjpeg",
            "-video_size", f"{o['width']}x{o['height']}", "-framerate", str(o["fps"]),
            "-i", o["device"],
            # The camera's own JPEGs, copied; mjpeg2jpeg adds the Huffman tables that many
            # webcams leave out (browsers need them), without re-encoding anything.
            "-c:v", "copy", "-bsf:v", "mjpeg2jpeg", "-f", "mjpeg", "-",
        ]  # fmt: skip

    def _offer(self, jpeg: bytes, now: float) -> None:
        """A picture from the source: on to the viewers, unless it comes faster than ``fps``."""
        fps = self.options["fps"]
        self._tokens = min(2.0, self._tokens + (now - self._refilled) * fps)
        self._refilled = now
        if self._tokens < 1.0:
            self._skipped += 1
            return
        self._tokens -= 1.0
        if self._status != "streaming":
            self._status = "streaming"
            if self._reported:
                self._reported = False
                self.env.log.info("camera %s: pictures again", self.name)
            self._problem = None
            self.env.on_problem(self.name, None)
        self._frames += 1
        self._times.append(now)
        self._publish(jpeg, now, signal=True)

    def _publish(self, jpeg: bytes, now: float, *, signal: bool) -> None:
        self._numbers += 1
        self._latest = Frame(jpeg, self._numbers, now, signal)
        for viewer in list(self._waiting):
            viewer._wake()

    def _down(self, problem: str) -> None:
        self._status = "no signal"
        self._problem = problem
        self._times.clear()
        self._publish(NO_SIGNAL, asyncio.get_running_loop().time(), signal=False)
        if not self._reported:  # once per outage, however many retries fail
            self._reported = True
            self.env.on_problem(self.name, f"no signal: {problem}")

    async def _no_signal_while_down(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(NO_SIGNAL_EVERY)
            if self._status == "no signal":
                self._publish(NO_SIGNAL, loop.time(), signal=False)

    def _source_name(self) -> str:
        if self.options["url"] is not None:
            return f"url {self.options['url']}"
        if self.options["device"] is not None:
            return f"device {self.options['device']}"
        return f"command {self.options['command'][0]}"


class _CommandSource:
    """A program writing MJPEG to its stdout. Its stderr is kept (the last lines) to say why
    it stopped; it runs in a session of its own, so a Ctrl-C meant for labrt reaches labrt,
    which stops it. Should labrt die, the program's next write fails (a broken pipe) and it
    ends."""

    def __init__(self, process: asyncio.subprocess.Process, program: str) -> None:
        self._process = process
        self._program = program
        self._errors: deque[str] = deque(maxlen=3)
        self._stderr = asyncio.get_running_loop().create_task(self._read_errors())
        self.pid = process.pid

    @classmethod
    async def open(cls, command: Sequence[str], folder: Path) -> _CommandSource:
        program = _find(command[0], folder)
        if program is None:
            raise DriverError(f"{command[0]} is not installed (or not on PATH)")
        process = await asyncio.create_subprocess_exec(
            program,
            *command[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=folder,
            start_new_session=True,
        )
        return cls(process, Path(command[0]).name)

    async def read(self) -> bytes:
        assert self._process.stdout is not None
        return await self._process.stdout.read(CHUNK)

    async def ended(self) -> str:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_WAIT):
                await self._stderr
        code = self._process.returncode
        how = f"was killed by {_signal_name(-code)}" if code and code < 0 else f"exited ({code})"
        said = f": {self._errors[-1]}" if self._errors else ""
        return f"{self._program} {how}{said}"

    async def close(self) -> None:
        process = self._process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(EXIT_WAIT):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._stderr.cancel()
        await asyncio.gather(self._stderr, return_exceptions=True)

    async def _read_errors(self) -> None:
        assert self._process.stderr is not None
        async for line in self._process.stderr:
            said = line.decode(errors="replace").strip()
            if said:
                self._errors.append(said[:300])
        await self._process.wait()


class _HttpSource:
    """An MJPEG stream served over HTTP (µStreamer, mjpg-streamer, another labrt): its
    multipart body goes through the splitter as it is, boundaries and all."""

    def __init__(self, session: Any, response: Any, url: str) -> None:
        self._session = session
        self._response = response
        self._url = url

    @classmethod
    async def open(cls, url: str) -> _HttpSource:
        import aiohttp  # the client side, only for a camera that needs it

        timeout = aiohttp.ClientTimeout(total=None, connect=STALL, sock_read=STALL)
        session = aiohttp.ClientSession(timeout=timeout)
        try:
            response = await session.get(url)
            if response.status != 200:
                response.release()
                raise DriverError(f"{url} answered HTTP {response.status}")
        except aiohttp.ClientError as exc:
            await session.close()
            raise DriverError(f"{url}: {exc or type(exc).__name__}") from exc
        except BaseException:
            await session.close()
            raise
        return cls(session, response, url)

    async def read(self) -> bytes:
        import aiohttp

        try:
            data: bytes = await self._response.content.readany()
        except aiohttp.ClientError as exc:
            raise DriverError(f"{self._url}: {exc or type(exc).__name__}") from exc
        return data

    async def ended(self) -> str:
        return f"{self._url} ended the stream"

    async def close(self) -> None:
        self._response.release()
        await self._session.close()


def _program(options: Mapping[str, Any]) -> str | None:
    """The program a camera runs: its command's, ffmpeg for a device, none for a URL."""
    if options["command"] is not None:
        return str(options["command"][0])
    return "ffmpeg" if options["device"] is not None else None


def _find(program: str, folder: Path) -> str | None:
    """The program's path: relative to lab.toml's folder when it has a slash, else on PATH."""
    if "/" in program:
        path = folder / program
        return str(path) if path.is_file() else None
    return shutil.which(program)


def _describe(exc: BaseException) -> str:
    text_ = str(exc)
    return text_ if isinstance(exc, DriverError) else f"{type(exc).__name__}: {text_}"


def _signal_name(number_: int) -> str:
    try:
        return signal.Signals(number_).name
    except ValueError:
        return f"signal {number_}"
