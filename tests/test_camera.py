"""The camera, end to end: Debian's real ffmpeg as a ``command`` source, served by the real
server over real sockets to the students, spectators and strangers of issue 15's access
matrix. Rates are checked loosely (these machines are noisy); what is asserted is behaviour:
valid pictures, who may see them, when the stream ends, that a stalled viewer costs the
others nothing, and that the capture stops, fails and recovers as it should."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from helpers import AUTH, Harness, serve_lab

from drivers.camera import NO_SIGNAL
from labrt.cli import main as cli_main

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (.ci/run installs it)"
)


def ffmpeg(rate: int = 15, size: str = "320x240", quality: int = 7) -> list[str]:
    """ffmpeg's test picture as MJPEG on stdout, in real time, as a camera would send it."""
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
        "-q:v", str(quality), "-f", "mjpeg", "-",
    ]  # fmt: skip


def camera(command: list[str] | None = None, **options: object) -> str:
    lines = [f"command = {json.dumps(command or ffmpeg())}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    return '\n[drivers.cam]\nkind = "camera"\n' + "\n".join(lines) + "\n"


@asynccontextmanager
async def student(lab: Harness, length: float = 300) -> AsyncIterator[aiohttp.ClientSession]:
    browser = lab.browser()
    try:
        await lab.visit(browser, await lab.start(length=length))
        yield browser
    finally:
        await browser.close()


class Stream:
    """The parts of a multipart/x-mixed-replace answer, read as a browser does."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        boundary = response.headers["Content-Type"].split("boundary=")[1]
        self.boundary = f"--{boundary}".encode()

    async def part(self) -> tuple[dict[str, str], bytes] | None:
        """The next picture and its headers; None when the stream ended."""
        content = self.response.content
        line = await content.readline()
        while line in (b"\r\n", b"\n"):
            line = await content.readline()
        if not line or line.strip() == self.boundary + b"--":
            return None
        assert line.strip() == self.boundary, line
        headers = {}
        while (line := await content.readline()).strip():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await content.readexactly(int(headers["content-length"]))
        return headers, body


@asynccontextmanager
async def watching(
    http: aiohttp.ClientSession, url: str, **kwargs: object
) -> AsyncIterator[Stream]:
    async with http.get(url, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        yield Stream(response)


def decodes(pictures: list[bytes]) -> int:
    """How many of ``pictures`` ffmpeg decodes without a single error."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "image2pipe", "-c:v", "mjpeg", "-i", "-",
         "-f", "null", "-"],
        input=b"".join(pictures), capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr, done.stderr
    return len(pictures)


async def pictures_for(stream: Stream, seconds: float) -> list[bytes]:
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        part = await stream.part()
        assert part is not None
        if "labrt-camera" not in part[0]:
            got.append(part[1])
    return got


async def test_the_student_sees_valid_pictures_at_the_source_rate(tmp_path):
    async with serve_lab(tmp_path, camera(ffmpeg(rate=15))) as lab, student(lab) as browser:
        async with watching(browser, lab.url("/labrt/camera/cam")) as stream:
            first = await stream.part()
            assert first is not None and first[0]["content-type"] == "image/jpeg"
            pictures = await pictures_for(stream, 3.0)
        # 15 per second for 3 s; loose bounds, but a stream that stalls or repeats fails.
        assert 30 <= len(pictures) <= 55, len(pictures)
        assert len(set(pictures)) == len(pictures)  # each a new picture (the clock moves)
        assert decodes(pictures) == len(pictures)
        async with browser.get(lab.url("/labrt/camera/cam.jpg")) as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert r.headers["Cache-Control"] == "no-store"
            assert decodes([await r.read()]) == 1


async def test_pictures_pass_through_untouched(tmp_path):
    """What the viewer gets is byte for byte what the program wrote."""
    source = tmp_path / "source.mjpeg"
    written = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc=size=320x240:rate=30", "-frames:v", "20", "-q:v", "5", "-f", "mjpeg", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    source.write_bytes(written)
    # The same pictures again and again, a few per second, as a program would write them.
    replay = [sys.executable, "-c", REPLAY, str(source)]
    async with (
        serve_lab(tmp_path, camera(replay, fps=120)) as lab,
        student(lab) as browser,
        watching(browser, lab.url("/labrt/camera/cam")) as stream,
    ):
        got = await pictures_for(stream, 1.0)
    assert got and all(picture in written for picture in got)
    assert all(picture.startswith(b"\xff\xd8") and picture.endswith(b"\xff\xd9") for picture in got)


REPLAY = """
import sys, time
data = open(sys.argv[1], "rb").read()
while True:
    for i in range(0, len(data), 4000):  # in pieces, as a pipe delivers them
        sys.stdout.buffer.write(data[i:i + 4000])
        sys.stdout.buffer.flush()
        time.sleep(0.002)
"""


@pytest.mark.parametrize("path", ["/labrt/camera/cam", "/labrt/camera/cam.jpg"])
async def test_who_may_watch(tmp_path, path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with serve_lab(tmp_path / "a", camera()) as lab:
        async with aiohttp.ClientSession() as stranger, stranger.get(lab.url(path)) as r:
            assert r.status == 403
            assert "link of your booking" in (await r.json())["message"]
        # Another lab's student, with that lab's (valid there) cookie.
        async with (
            serve_lab(tmp_path / "b", camera()) as other,
            student(other) as theirs,
        ):
            cookies = {c.key: c.value for c in theirs.cookie_jar}
            async with (
                aiohttp.ClientSession(cookies=cookies) as forger,
                forger.get(lab.url(path)) as r,
            ):
                assert r.status == 403, await r.text()
        # A student whose slot is over is sent back, as on any guarded route.
        async with student(lab, length=30) as browser:
            async with browser.get(lab.url(path)) as r:
                assert r.status == 200
                await r.content.read(100)
            await lab.advance(31)
            async with browser.get(lab.url(path)) as r:
                assert r.status == 401
                assert (await r.json())["back"] == "https://lde.example/back"
        async with aiohttp.ClientSession() as http, http.get(lab.url("/labrt/camera/nope")) as r:
            assert r.status == 404 and "cam" in (await r.json())["message"]


async def test_spectators_watch_only_when_the_lab_allows_them(tmp_path):
    keys = "spectators = true"
    extra = camera() + "\n[push]\nmax_spectators = 1\n"
    async with (
        serve_lab(tmp_path, extra, lab_keys=keys) as lab,
        aiohttp.ClientSession() as one,
        aiohttp.ClientSession() as two,
        watching(one, lab.url("/labrt/camera/cam")) as stream,
    ):
        assert await stream.part() is not None
        async with two.get(lab.url("/labrt/camera/cam")) as r:
            assert r.status == 503 and "spectators" in (await r.json())["message"]
        # The student is never turned away by spectators.
        async with student(lab) as browser, watching(browser, lab.url("/labrt/camera/cam")) as mine:
            assert await mine.part() is not None


async def test_the_stream_ends_with_the_slot(tmp_path):
    async with serve_lab(tmp_path, camera()) as lab, student(lab, length=60) as browser:
        async with watching(browser, lab.url("/labrt/camera/cam")) as stream:
            assert await stream.part() is not None
            await lab.advance(61)
            async with asyncio.timeout(5):
                while await stream.part() is not None:
                    pass
        assert lab.runtime.cameras.viewers("cam")["student"] == 0


async def test_a_viewer_that_does_not_read_neither_slows_the_others_nor_outlives_its_slot(
    tmp_path,
):
    # Big pictures (about 60 kB) fill a stalled connection's buffers within a second.
    source = ffmpeg(rate=25, size="640x480", quality=2)
    async with serve_lab(tmp_path, camera(source)) as lab, student(lab, length=60) as browser:
        cookie = "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((lab.server.host, lab.server.port))
        stalled.sendall(
            f"GET /labrt/camera/cam HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode()
        )
        try:
            async with watching(browser, lab.url("/labrt/camera/cam")) as stream:
                await stream.part()
                got = await pictures_for(stream, 3.0)
                assert len(got) >= 50, len(got)  # 25 per second, stalled neighbour or not
                assert lab.runtime.cameras.viewers("cam")["student"] == 2
                await lab.advance(61)
                # The reading viewer ends at once; the stalled one is cut after the grace.
                async with asyncio.timeout(5):
                    while lab.runtime.cameras.viewers("cam")["student"]:
                        await asyncio.sleep(0.05)
        finally:
            stalled.close()


async def test_no_signal_when_the_program_dies_then_pictures_again(tmp_path):
    async with serve_lab(tmp_path, camera()) as lab, student(lab) as browser:
        cam = lab.runtime.hardware.devices["cam"]
        async with watching(browser, lab.url("/labrt/camera/cam")) as stream:
            assert await stream.part() is not None
            pid = cam.state()["pid"]
            os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(5):
                while "labrt-camera" not in (part := await stream.part())[0]:
                    pass
            assert part[0]["labrt-camera"] == "no signal" and part[1] == NO_SIGNAL
            state = (await hardware(lab))["cam"]
            assert state["state"]["state"] == "no signal"
            assert "killed by SIGKILL" in state["problem"]
            async with asyncio.timeout(10):
                while "labrt-camera" in (await stream.part())[0]:
                    pass
            assert cam.state()["state"] == "streaming" and cam.state()["pid"] != pid
            assert (await hardware(lab))["cam"]["problem"] is None


async def hardware(lab: Harness) -> dict[str, dict[str, object]]:
    status, body = await lab.call("GET", "/labrt/hardware", auth=AUTH)
    assert status == 200, body
    return body["devices"]


async def test_a_source_that_never_works_shows_no_signal_and_the_lab_keeps_serving(tmp_path):
    async with serve_lab(tmp_path, camera(["false"])) as lab, student(lab) as browser:
        async with browser.get(lab.url("/labrt/camera/cam.jpg")) as r:
            assert r.status == 503 and await r.read() == NO_SIGNAL
            assert r.headers["Labrt-Camera"] == "no signal"
        status, health = await lab.call("GET", "/healthz")
        assert status == 200, health  # a camera fault does not stop the lab
        assert "false exited (1)" in health["hardware"]["faults"]["cam"]
        async with browser.get(lab.url("/labrt/status")) as r:
            assert r.status == 200


async def test_the_capture_runs_only_while_someone_watches(tmp_path):
    async with serve_lab(tmp_path, camera(linger=0.3)) as lab, student(lab) as browser:
        cam = lab.runtime.hardware.devices["cam"]
        assert cam.state()["state"] == "idle" and cam.state()["pid"] is None
        async with watching(browser, lab.url("/labrt/camera/cam")) as stream:
            assert await stream.part() is not None
            async with watching(browser, lab.url("/labrt/camera/cam")) as second:
                assert await second.part() is not None
            pid = cam.state()["pid"]
            assert cam.starts == 1  # one capture, shared
        async with asyncio.timeout(5):
            while cam.state()["state"] != "idle":
                await asyncio.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        text = await metrics(lab)
        assert 'labrt_camera_viewers{camera="cam"} 0' in text


async def metrics(lab: Harness) -> str:
    status, text = await lab.call("GET", "/metrics")
    assert status == 200
    return text


async def test_health_and_metrics_show_the_camera(tmp_path):
    async with (
        serve_lab(tmp_path, camera(ffmpeg(rate=15))) as lab,
        student(lab) as browser,
        watching(browser, lab.url("/labrt/camera/cam")) as stream,
    ):
        await pictures_for(stream, 2.5)
        status, health = await lab.call("GET", "/healthz")
        assert status == 200
        seen = health["cameras"]["cam"]
        assert seen["state"] == "streaming" and 10 <= seen["fps"] <= 20, seen
        text = await metrics(lab)
        assert 'labrt_camera_viewers{camera="cam"} 1' in text
        assert 'labrt_camera_streaming{camera="cam"} 1' in text
        fps = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('labrt_camera_fps{camera="cam"}')
        )
        assert 10 <= fps <= 20


async def test_stopping_the_lab_stops_the_program(tmp_path):
    async with (
        serve_lab(tmp_path, camera()) as lab,
        student(lab) as browser,
        watching(browser, lab.url("/labrt/camera/cam")) as stream,
    ):
        assert await stream.part() is not None
        pid = lab.runtime.hardware.devices["cam"].state()["pid"]
        await lab.server.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    ("options", "key", "says"),
    [
        ("", "[drivers.cam]", "exactly one source"),
        ('device = "/dev/video0"\nurl = "http://x/"', "[drivers.cam] url", "exactly one"),
        ('command = "ffmpeg -i x"', "[drivers.cam] command", "a list of strings"),
        ("command = []", "[drivers.cam] command", "a list of strings"),
        ('device = "video0"', "[drivers.cam] device", "/dev/video0"),
        ('url = "rtsp://cam/"', "[drivers.cam] url", "http://"),
        ('command = ["x"]\nwidth = 640', "[drivers.cam] width", "only for a device"),
        ('device = "/dev/video0"\nwidth = 8', "[drivers.cam] width", "16 to 8192"),
        ('device = "/dev/video0"\nfps = 0', "[drivers.cam] fps", "more than 0"),
        ('device = "/dev/video0"\nfps = true', "[drivers.cam] fps", "true"),
        ('device = "/dev/video0"\nlinger = -1', "[drivers.cam] linger", "0 or more"),
        ('device = "/dev/video0"\nframerate = 30', "[drivers.cam] framerate", "unknown"),
    ],
)
def test_a_camera_mistake_is_named_before_anything_starts(tmp_path, options, key, says):
    from helpers import write_config

    path = write_config(tmp_path, f'[drivers.cam]\nkind = "camera"\n{options}\n')
    done = subprocess.run(
        [sys.executable, "-m", "labrt", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert key in done.stderr and says in done.stderr, done.stderr


def test_check_warns_of_a_program_or_device_that_is_not_there(tmp_path):
    from click.testing import CliRunner
    from helpers import write_config

    path = write_config(
        tmp_path,
        '[drivers.cam]\nkind = "camera"\ncommand = ["no-such-camera-program"]\n'
        '[drivers.usb]\nkind = "camera"\ndevice = "/dev/video-not-plugged"\n',
    )
    result = CliRunner().invoke(cli_main, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "[drivers.cam] no-such-camera-program is not installed" in result.stderr
    assert "[drivers.usb] /dev/video-not-plugged is not there now" in result.stderr
