"""The example lab's camera in a real headless Chromium: labrt.js's ``labrt.camera`` shows
ffmpeg's test picture (a running clock) on the student's page, the dev page previews it, the
page says "no signal" while the camera's program restarts, reconnects after its connection
froze, and stops for good when the slot ends or when it may not watch.

Needs Debian's chromium and ffmpeg (the example's camera is ffmpeg's test source). Screenshots
land in test-artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from helpers import Spawned, new_body
from test_browser import (
    ARTIFACTS,
    CHROMIUM_FLAGS,
    ROOT,
    chromium,
    example_config,
    http_json,
    on_a_loop_of_its_own,
)

from labrt.client import basic_auth
from labrt.config import EXAMPLE_PASSWORD

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("ffmpeg") is None,
        reason="no ffmpeg on this machine: apt-get install ffmpeg (.ci/run does)",
    ),
]

SILENCE = 5  # seconds: labrt.js's camera gives a connection up after this long without a byte

# Every data-camera-state the example page's camera took, in order, in window.cameraStates.
RECORD_STATES = """
window.cameraStates = [];
document.addEventListener("DOMContentLoaded", () => {
  const img = document.getElementById("camera");
  if (!img) return;
  new MutationObserver(() => {
    const state = img.getAttribute("data-camera-state");
    if (window.cameraStates[window.cameraStates.length - 1] !== state) {
      window.cameraStates.push(state);
    }
  }).observe(img, { attributes: true, attributeFilter: ["data-camera-state"] });
});
"""


def book(url: str, seconds: float) -> str:
    """The management system books a student for ``seconds``: the student's link."""
    body = new_body(time.time(), seconds)
    started = http_json(f"{url}/ldl/sessions/", body, basic_auth("rlms", EXAMPLE_PASSWORD))
    return started["url"]


def camera_state(url: str) -> dict:
    """The camera's state as the operator sees it (loopback: allowed without credentials)."""
    return http_json(f"{url}/labrt/hardware")["devices"]["cam"]["state"]


def camera_requests(page) -> list[str]:
    """The URLs of the page's requests for the camera's stream, as they are made."""
    seen: list[str] = []
    page.on("request", lambda r: "/labrt/camera/" in r.url and seen.append(r.url))
    return seen


def states_went(page, *states: str, timeout: float) -> None:
    """Wait until the camera's recorded states include ``states`` in this order (each may
    have others between)."""
    page.wait_for_function(
        """(wanted) => {
            let i = 0;
            for (const s of window.cameraStates) if (s === wanted[i]) i++;
            return i === wanted.length;
        }""",
        arg=list(states),
        timeout=timeout * 1000,
    )


def two_pictures(locator, expect) -> tuple[bytes, bytes]:
    """Screenshots of an <img> a second apart."""
    expect(locator).to_have_js_property("complete", True)
    first = locator.screenshot()
    time.sleep(1)
    return first, locator.screenshot()


def save(name: str, png: bytes) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.png").write_bytes(png)


def test_the_example_page_shows_the_live_camera_until_the_slot_ends(tmp_path):
    executable = chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    expect = playwright.expect
    slot = 20
    lab = Spawned(example_config(tmp_path), {"PYTHONPATH": str(ROOT)}, "--dev")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                # Without a session (the example allows no spectators): refused, so the
                # helper stops at once, after one request, and says so.
                stranger = browser.new_page()
                asked = camera_requests(stranger)
                stranger.goto(f"{lab.url}/")
                expect(stranger.locator("#anonymous")).to_be_visible()
                stranger.evaluate(
                    """() => {
                        const img = document.createElement("img");
                        img.id = "stranger";
                        document.body.append(img);
                        labrt.camera(img, "cam");
                    }"""
                )
                expect(stranger.locator("#stranger")).to_have_attribute(
                    "data-camera-state", "ended"
                )
                time.sleep(1.5)  # more than the first wait before a retry
                assert asked == [f"{lab.url}/labrt/camera/cam"]
                stranger.close()

                link = book(lab.url, slot)
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                page.add_init_script(RECORD_STATES)
                requests = camera_requests(page)
                page.goto(link)
                img = page.locator("#camera")
                expect(img).to_have_attribute("data-camera-state", "streaming", timeout=15_000)
                expect(page.locator("#camera-state")).to_have_text("Live.")
                # The state changes as the picture is handed to the <img>; it is drawn a moment
                # later, once decoded.
                page.wait_for_function("document.getElementById('camera').naturalWidth > 0")
                assert img.evaluate("(i) => [i.naturalWidth, i.naturalHeight]") == [640, 480]
                assert img.evaluate("(i) => i.src").startswith("blob:")

                # The picture moves (testsrc's clock runs), and it is the camera's, not the
                # "no signal" picture: the state stayed "streaming" throughout.
                first, second = two_pictures(img, expect)
                save("camera-1", first)
                save("camera-2", second)
                assert first != second
                assert page.evaluate("window.cameraStates") == ["streaming"]
                assert camera_state(lab.url)["state"] == "streaming"

                # The dev page previews the camera too, without a session.
                panel = browser.new_page(viewport={"width": 1100, "height": 800})
                panel.goto(f"{lab.url}/labrt/dev")
                preview = panel.locator('figure[data-camera="cam"]')
                expect(preview.locator("figcaption")).to_contain_text("streaming")
                shown = preview.locator("img")
                expect(shown).to_have_attribute("src", "/labrt/dev/camera/cam")
                panel.wait_for_function(
                    "document.querySelector('figure[data-camera=cam] img').naturalWidth === 640"
                )
                first, second = two_pictures(shown, expect)
                assert first != second
                save("camera-dev", first)
                expect(preview.locator("figcaption")).to_contain_text("2 viewers")
                panel.close()

                # The slot ends: the lab ends the stream, the page's camera stops for good.
                expect(img).to_have_attribute("data-camera-state", "ended", timeout=slot * 1000)
                expect(page.locator("#ended")).to_be_visible()
                asked = len(requests)
                time.sleep(2)
                assert len(requests) == asked == 1, requests
                assert camera_state(lab.url)["viewers"] == 0
            finally:
                browser.close()
    finally:
        assert lab.stop() == 0


# -- a connection that freezes --------------------------------------------------------------


@dataclass(eq=False)
class Connection:
    camera: bool = False  # the browser asked it for a camera's stream
    frozen: bool = False
    done: bool = False


class FreezingProxy:
    """A TCP forwarder between the browser and the lab that can freeze the camera's
    connections: no byte passes any more, yet they stay open, as when a Wi-Fi link drops
    under an open connection. Neither end notices: only the page's own watch can."""

    def __init__(self) -> None:
        self.upstream = 0  # the lab's port, set once it listens
        self.port = 0
        self.connections: list[Connection] = []

    def freeze(self) -> int:
        """Freeze the camera connections open now; how many."""
        frozen = [c for c in self.connections if c.camera and not c.done]
        for connection in frozen:
            connection.frozen = True
        return len(frozen)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection()
        self.connections.append(connection)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, connection, asking=True),
            self._pipe(up_reader, writer, connection, asking=False),
        )

    async def _pipe(self, reader, writer, connection: Connection, *, asking: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if asking and b"/labrt/camera/" in data:
                    connection.camera = True
                while connection.frozen and not connection.done:
                    await asyncio.sleep(0.05)
                if connection.done:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            connection.done = True
            writer.close()


@contextlib.contextmanager
def proxy_in_thread() -> Iterator[FreezingProxy]:
    proxy = FreezingProxy()

    @contextlib.asynccontextmanager
    async def listening() -> AsyncIterator[None]:
        server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        async with server:
            yield

    with on_a_loop_of_its_own(listening):
        yield proxy


def test_the_page_shows_no_signal_then_reconnects_after_its_connection_froze(tmp_path):
    """The camera's program dies: the page says "no signal" (over the same connection) until
    labrt has restarted it. The connection freezes: after SILENCE seconds without a byte the
    page gives it up, says "reconnecting", and streams again over a new connection."""
    executable = chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    expect = playwright.expect
    with proxy_in_thread() as proxy:
        config = example_config(tmp_path)
        public = f"http://127.0.0.1:{proxy.port}"
        text = config.read_text().replace("port = 8080", f'port = 8080\npublic_url = "{public}"')
        config.write_text(text)
        lab = Spawned(config, {"PYTHONPATH": str(ROOT)}, "--dev")
        proxy.upstream = int(lab.url.rsplit(":", 1)[1])
        try:
            link = book(lab.url, 120)
            assert link.startswith(public)
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
                try:
                    page = browser.new_page()
                    page.add_init_script(RECORD_STATES)
                    requests = camera_requests(page)
                    page.goto(link)
                    img = page.locator("#camera")
                    expect(img).to_have_attribute("data-camera-state", "streaming", timeout=15_000)

                    # ffmpeg dies: "no signal" over the same stream, then pictures again.
                    pid = camera_state(lab.url)["pid"]
                    assert pid
                    os.kill(pid, signal.SIGKILL)
                    states_went(page, "streaming", "no signal", "streaming", timeout=15)
                    expect(page.locator("#camera-state")).to_have_text("Live.")
                    assert camera_state(lab.url)["pid"] not in (None, pid)
                    assert len(requests) == 1, requests

                    # The stream's connection freezes: nothing tells the browser, so the
                    # page itself notices the silence, and connects again.
                    assert proxy.freeze() == 1
                    frozen = time.monotonic()
                    expect(img).to_have_attribute(
                        "data-camera-state", "reconnecting", timeout=(SILENCE + 5) * 1000
                    )
                    assert time.monotonic() - frozen > SILENCE - 1  # not before the silence
                    expect(page.locator("#camera-state")).to_have_text(
                        "Reconnecting to the camera…"
                    )
                    expect(img).to_have_attribute("data-camera-state", "streaming", timeout=10_000)
                    assert len(requests) == 2, requests
                    assert all(url == f"{public}/labrt/camera/cam" for url in requests)
                    first, second = two_pictures(img, expect)
                    assert first != second
                    assert page.evaluate("window.cameraStates")[-2:] == [
                        "reconnecting",
                        "streaming",
                    ]

                    # stop(): the page's own way to end it.
                    page.evaluate(
                        """() => {
                            const img = document.createElement("img");
                            img.id = "second";
                            document.body.append(img);
                            window.second = labrt.camera(img, "cam");
                        }"""
                    )
                    second_img = page.locator("#second")
                    expect(second_img).to_have_attribute("data-camera-state", "streaming")
                    page.evaluate("window.second.stop()")
                    expect(second_img).to_have_attribute("data-camera-state", "ended")
                    expect(img).to_have_attribute("data-camera-state", "streaming")
                finally:
                    browser.close()
        finally:
            assert lab.stop() == 0
