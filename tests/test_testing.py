"""labrt.testing, the kit lab authors test their labs with: it must serve the lab for real
(its routes, its hooks, its WebSocket), never touch real pins or the lab's own store, move
time only when told, and leave nothing running, also when the test fails."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from helpers import LABS

import drivers.pins
from labrt.config import load_config
from labrt.testing import LabUnderTest, NotAdmitted, run_lab

DOCS = Path(__file__).resolve().parent.parent / "docs"
LIGHT_LAB = LABS / "light"
LIGHT_TOML = LIGHT_LAB / "lab.toml"


def light_toml(directory: Path, *, lab: str = "", session: str = "", server: str = "") -> Path:
    """A lab.toml in ``directory`` for the light lab, with extra keys in its sections."""
    path = directory / "lab.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [lab]
            name = "light"
            module = "{LIGHT_LAB / "lab.py"}"
            {lab}

            [server]
            {server}

            [rlms]
            username = "rlms"
            password = "a-real-secret-for-tests"

            [session]
            {session}

            [store]
            path = "{directory / "lab-store.sqlite"}"

            [drivers.light]
            kind = "gpio.output"
            pin = 17
            safe = "off"
            """
        )
    )
    return path


def records(path: Path) -> list[dict[str, object]]:
    """What the light lab's on_dispose wrote (one line per dispose)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_light_is_safe_after_the_slot():
    # docs/testing.md's example, as written there but for the path.
    async with run_lab(LIGHT_TOML) as lab:  # in-process, mock pins, fake clock
        student = await lab.new_student(seconds=60)  # handed over as the RLMS would
        r = await student.post("/api/light", json={"on": True})
        assert r.status == 200
        assert lab.hardware["light"].is_active
        await lab.advance(61)  # the slot ends: on_dispose, safe state
        assert not lab.hardware["light"].is_active
        assert (await student.get("/api/light")).status in (401, 403)


async def test_the_example_of_the_docs_runs_as_written(monkeypatch):
    block = re.search(r"```python\n(.*?)```", (DOCS / "testing.md").read_text(), re.S)
    assert block and 'run_lab("lab.toml")' in block.group(1)
    monkeypatch.chdir(LIGHT_LAB)  # where its "lab.toml" is the light lab's
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "docs/testing.md", "exec"), namespace)
    test = namespace["test_light_is_safe_after_the_slot"]
    assert callable(test)
    await test()


async def test_responses_are_read_and_answer_like_aiohttp():
    async with run_lab(LIGHT_TOML) as lab:
        student = await lab.new_student()
        r = await student.post("/api/light", json={"on": True})
        assert r.json() == {"on": True}
        assert json.loads(r.text) == {"on": True}
        assert r.content_type == "application/json"
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.url == lab.url("/api/light")
        bad = await student.post("/api/light", json={"on": "yes"})
        assert bad.status == 400 and "expected" in bad.json()["message"]


async def test_time_moves_only_when_told_and_exactly_as_far(tmp_path):
    # No poll timeout: only the slot's end can end the session here.
    config = light_toml(tmp_path, session="timeout = 0")
    async with run_lab(config, start=1_900_000_000.0) as lab:
        assert lab.clock.now() == 1_900_000_000.0
        student = await lab.new_student(seconds=60)
        await lab.advance(59.5)
        status = await student.status()
        assert status["state"] == "active" and status["time_left"] == pytest.approx(0.5)
        assert (await student.get("/api/light")).status == 200
        await lab.advance(1)
        status = await student.status()
        assert (status["state"], status["reason"]) == ("expired", "expired")
        assert (await student.get("/api/light")).status == 401


async def test_a_student_who_sends_nothing_leaves_after_the_poll_timeout(tmp_path):
    async with run_lab(light_toml(tmp_path, session="timeout = 15")) as lab:
        student = await lab.new_student(seconds=600)
        await lab.advance(10)
        assert (await student.status())["state"] == "active"  # this request is a poll
        await lab.advance(14)
        assert (await student.get("/api/light")).status == 200
        await lab.advance(16)
        status = await student.status()
        assert (status["state"], status["reason"]) == ("expired", "timed-out")


@pytest.mark.parametrize("dialect", ["ldl", "weblab"])
async def test_students_are_handed_over_in_either_dialect_with_their_client_data(tmp_path, dialect):
    record = tmp_path / "record.jsonl"
    async with run_lab(LIGHT_TOML, dialect=dialect) as lab:
        first = await lab.new_student(seconds=120, record=str(record))
        second = await lab.new_student(seconds=120, record=str(record))
        assert first.session_id != second.session_id
        assert (first.username, second.username) == ("student1", "student2")
        session = lab.sessions.get(first.session_id)
        assert session is not None and session.request.dialect.value == dialect
        assert session.request.max_date - session.request.start_date == pytest.approx(120)
        await first.post("/api/light", json={"on": True})
        await lab.dispose(first)  # the RLMS ends the slot early
        assert records(record) == [{"light": True, "username": "student1"}]
        assert (await first.status())["reason"] == "disposed-by-rlms"
        # Someone is still in the lab: its hardware is left as it is.
        assert lab.hardware["light"].is_active
        assert (await second.get("/api/light")).json() == {"on": True}
        await lab.dispose(second)
        assert records(record)[1:] == [{"light": True, "username": "student2"}]
        assert not lab.hardware["light"].is_active  # the lab is empty: safe


async def test_a_student_the_lab_refuses_raises_not_admitted(tmp_path):
    async with run_lab(light_toml(tmp_path, lab="max_concurrent_sessions = 1")) as lab:
        await lab.new_student()
        with pytest.raises(NotAdmitted) as refused:
            await lab.new_student()
        assert refused.value.status >= 400
        assert "not admit" in str(refused.value)


async def test_requests_carry_the_pages_origin_and_another_sites_is_refused():
    async with run_lab(LIGHT_TOML) as lab:
        student = await lab.new_student()
        assert lab.origin == lab.url("/").rstrip("/")
        evil = {"Origin": "https://evil.example"}
        refused = await student.post("/api/light", json={"on": True}, headers=evil)
        assert refused.status == 403
        assert not lab.hardware["light"].is_active
        assert (await student.post("/api/light", json={"on": True})).status == 200


async def test_a_lab_toml_made_for_production_behind_a_proxy_still_works(tmp_path):
    # Secure cookie scoped to the proxy's path, and pages on the public origin.
    server = 'public_url = "https://lab.example.org/lamp"\ncookie_path = "/lamp"'
    async with run_lab(light_toml(tmp_path, server=server)) as lab:
        assert lab.origin == "https://lab.example.org"
        student = await lab.new_student()
        assert (await student.post("/api/light", json={"on": True})).status == 200
        async with student.websocket() as page:
            assert (await page.expect("session"))["state"] == "active"


async def test_pushes_reach_the_page_and_its_messages_reach_the_lab():
    async with run_lab(LIGHT_TOML) as lab:
        student = await lab.new_student(seconds=60)
        async with student.websocket() as page:
            first = await page.receive()
            assert first.event == "session" and first.data["state"] == "active"
            await student.post("/api/light", json={"on": True})
            assert await page.expect("light") is True
            await page.send("toggle")  # as labrt.send("toggle") on the page
            assert await page.expect("light") is False
            assert not lab.hardware["light"].is_active
            await lab.advance(61)
            assert (await page.expect("ended"))["reason"] in ("expired", "timed-out")
            assert await page.wait_closed() == 4000
        # A page opened after the end (a reload) is told so at once, then closed.
        async with student.websocket() as late:
            assert (await late.expect("session"))["state"] == "expired"
            assert (await late.expect("ended"))["reason"] in ("expired", "timed-out")
            assert await late.wait_closed() == 4000


async def test_a_page_waiting_for_a_push_that_never_comes_fails_instead_of_hanging():
    async with run_lab(LIGHT_TOML) as lab:
        student = await lab.new_student()
        async with student.websocket(timeout=0.2) as page:
            with pytest.raises(TimeoutError):
                await page.expect("never-sent")


async def test_real_pins_are_never_used(monkeypatch):
    assert load_config(LIGHT_TOML).hardware.pins == "native"  # lab.toml asks for real pins
    asked: list[str] = []

    def real_factory(name: str) -> object:
        asked.append(name)
        raise AssertionError(f"a test asked for the real pin factory {name!r}")

    monkeypatch.setattr(drivers.pins, "_real", real_factory)
    async with run_lab(LIGHT_TOML) as lab:
        hardware = lab.runtime.hardware
        assert hardware.mock
        assert type(hardware.pin_factory).__name__ == "MockFactory"
        assert lab.config.hardware.pins == "mock"
        student = await lab.new_student()
        await student.post("/api/light", json={"on": True})
        assert hardware.pin_factory.pin(17).state == 1  # the mock pin moved
    assert asked == []


async def test_the_store_is_a_temporary_one_never_the_lab_tomls(tmp_path):
    config = light_toml(tmp_path)
    assert load_config(config).store.path == tmp_path / "lab-store.sqlite"
    async with run_lab(config) as lab:
        student = await lab.new_student()
        await lab.dispose(student)  # written to the store
        used = lab.config.store.path
        assert used.exists() and not used.is_relative_to(tmp_path)
        assert used.parent.name.startswith("labrt-test-")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.toml"]
    assert not used.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.toml"]
    assert not (LIGHT_LAB / "labrt.sqlite").exists()


async def test_an_exception_inside_the_block_still_stops_everything(tmp_path):
    record = tmp_path / "record.jsonl"
    with pytest.raises(RuntimeError, match="the lab's test failed"):
        async with run_lab(LIGHT_TOML) as lab:
            student = await lab.new_student(seconds=600, record=str(record))
            await student.post("/api/light", json={"on": True})
            pin = lab.runtime.hardware.pin_factory.pin(17)
            assert pin.state == 1
            status_url = lab.url("/labrt/status")
            store = lab.config.store.path
            raise RuntimeError("the lab's test failed")
    # The session was disposed with the light on, then the light was made safe.
    assert records(record) == [{"light": True, "username": "student1"}]
    assert pin.state == 0
    assert lab.runtime.hardware.devices == {}  # drivers closed
    assert student.http.closed
    assert not store.parent.exists()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(status_url)


async def test_the_conftest_fixture_serves_the_example_lab(example_lab: LabUnderTest):
    lab = example_lab
    assert len([name for name in lab.hardware if name.startswith("light")]) == 10
    student = await lab.new_student(seconds=300)
    async with student.websocket() as page:
        await page.send("light", {"n": 3})  # the example page's own message
        lights = await page.expect("lights")
        assert lights == [n == 3 for n in range(10)]
        assert lab.hardware["light3"].is_active
        lab.hardware["button"].set("press")  # a mock pin: the bench's button, pressed
        assert await page.expect("button") == {"pressed": True}
    state = (await student.get("/api/state")).json()
    assert state["lights"][3] is True and state["name"] == "Student 1"
    await lab.dispose(student)
    assert not any(lab.hardware[f"light{n}"].is_active for n in range(10))


@pytest.mark.slow
def test_labrt_init_writes_a_first_test_that_passes(tmp_path):
    made = subprocess.run(
        [sys.executable, "-m", "labrt", "init", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    demo = tmp_path / "demo"
    assert "test_lab.py" in made.stdout
    assert "run_lab" in (demo / "test_lab.py").read_text()
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],  # as docs/cli.md
        cwd=demo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert " passed" in ran.stdout and "failed" not in ran.stdout, ran.stdout
    # The generated lab's store was never created: the kit used a temporary one.
    assert not (demo / "labrt.sqlite").exists()
