"""The example lab end to end in a real headless Chromium, driven by Playwright.

A fake RLMS books a student; the browser follows the link, switches a light (the mock pin
changes), sees a virtual button press from the dev panel, programs the simulated board
(progress, then done) and stays until the slot ends (the end screen, with the way back).
Screenshots land in test-artifacts/browser/ (and in docs/img/ with LABRT_DOC_IMAGES=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Spawned, new_body
from proxy import PrefixProxy

from labrt.client import basic_auth
from labrt.config import EXAMPLE_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DOC_IMAGES = ROOT / "docs" / "img"
SLOT = 25  # seconds: long enough for every step, short enough to wait for its end
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


def chromium() -> str:
    found = os.environ.get("LABRT_CHROMIUM") or shutil.which("chromium")
    if found is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (.ci/run does)")
    return found


def example_config(directory: Path) -> Path:
    """lab.example.toml as README runs it, with its store in ``directory``."""
    text = (ROOT / "lab.example.toml").read_text()
    text = text.replace('"examples/', f'"{ROOT}/examples/')
    text = text.replace('path = "labrt.sqlite"', f'path = "{directory / "labrt.sqlite"}"')
    config = directory / "lab.toml"
    config.write_text(text)
    return config


def http_json(url: str, body: object = None, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if os.environ.get("LABRT_DOC_IMAGES"):
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOC_IMAGES / f"{name}.png"), full_page=True)


def light_value(url: str, n: int) -> int:
    devices = http_json(f"{url}/labrt/hardware")["devices"]  # loopback: the operator's view
    return devices[f"light{n}"]["state"]["value"]


def test_a_student_uses_the_example_lab_in_chromium(tmp_path):
    executable = chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    lab = Spawned(
        example_config(tmp_path), {"PYTHONPATH": str(ROOT)}, "--dev"
    )  # the example's board module is found from the repository's root
    try:
        # The management system books a student (Spanish) for SLOT seconds.
        back = "https://lde.example/back"
        body = new_body(time.time(), SLOT)
        body["request"]["locale"] = "es"
        body["request"]["backUrl"] = back
        started = http_json(f"{lab.url}/ldl/sessions/", body, basic_auth("rlms", EXAMPLE_PASSWORD))
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                page.goto(started["url"])
                expect = playwright.expect
                expect(page.locator("#lab")).to_be_visible()
                expect(page.locator("#time-left")).not_to_have_text("")

                # A light: the page says so, and the (mock) pin is high.
                light = page.locator('#lights button[data-light="3"]')
                assert light_value(lab.url, 3) == 0
                light.click()
                expect(light).to_have_attribute("aria-pressed", "true")
                assert light_value(lab.url, 3) == 1
                shoot(page, "example-lab")

                # The dev panel presses the virtual button: the page shows it within a second.
                panel = browser.new_page(viewport={"width": 1100, "height": 800})
                panel.goto(f"{lab.url}/labrt/dev")
                press = panel.locator('button[data-action="press"][data-device="button"]')
                expect(press).to_be_visible()
                state = page.locator("#button-state")
                expect(state).to_have_attribute("data-pressed", "false")
                press.click()
                expect(state).to_have_attribute("data-pressed", "true", timeout=1000)
                shoot(panel, "dev-panel")
                panel.close()

                # Programming the board: progress, then done.
                page.locator("#program").click()
                status = page.locator("#program-status")
                expect(status).to_have_attribute("data-status", "running")
                page.wait_for_function(
                    "document.querySelector('#progress').value > 0", timeout=10_000
                )
                expect(status).to_have_attribute("data-status", "done", timeout=15_000)

                # The slot ends: the end screen, with the way back to the RLMS.
                expect(page.locator("#ended")).to_be_visible(timeout=(SLOT + 10) * 1000)
                expect(page.locator("#lab")).to_be_hidden()
                expect(page.locator("a#back")).to_have_attribute("href", back)
                shoot(page, "end-screen")
            finally:
                browser.close()
        assert light_value(lab.url, 3) == 0  # safe again once the slot ended
    finally:
        assert lab.stop() == 0


@contextlib.contextmanager
def proxy_in_thread(prefix: str) -> Iterator[PrefixProxy]:
    proxy = PrefixProxy(prefix)
    with on_a_loop_of_its_own(proxy.running):
        yield proxy


@contextlib.contextmanager
def on_a_loop_of_its_own(
    serve: Callable[[], contextlib.AbstractAsyncContextManager[object]],
) -> Iterator[None]:
    """``async with serve()`` (a proxy listening) on an event loop in a thread of its own, for
    the length of the block: Playwright's sync API owns this thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        async with serve():
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the proxy did not start"
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_the_example_lab_behind_a_proxy_under_a_path_prefix(tmp_path):
    """nginx's `location /lamp/ { proxy_pass http://127.0.0.1:PORT/; }`: with
    `public_url = ".../lamp"`, the student's link, the redirect into the lab, labrt.js's status
    and WebSocket, and the page's own requests all stay under /lamp/."""
    executable = chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    with proxy_in_thread("/lamp") as proxy:
        config = example_config(tmp_path)
        public = f"http://127.0.0.1:{proxy.port}/lamp"
        text = config.read_text().replace("port = 8080", f'port = 8080\npublic_url = "{public}"')
        config.write_text(text)
        lab = Spawned(config, {"PYTHONPATH": str(ROOT)}, "--dev")
        proxy.upstream = lab.url
        try:
            body = new_body(time.time(), 60)
            started = http_json(
                f"{lab.url}/ldl/sessions/", body, basic_auth("rlms", EXAMPLE_PASSWORD)
            )
            assert started["url"].startswith(f"{public}/callback/")
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
                try:
                    page = browser.new_page()
                    page.goto(started["url"])
                    assert page.url == f"{public}/"  # redirected into the lab, under /lamp/
                    expect = playwright.expect
                    expect(page.locator("#lab")).to_be_visible()  # status and socket went through
                    light = page.locator('#lights button[data-light="2"]')
                    light.click()  # a WebSocket message, through the proxy
                    expect(light).to_have_attribute("aria-pressed", "true")
                    assert light_value(lab.url, 2) == 1
                finally:
                    browser.close()
        finally:
            assert lab.stop() == 0
