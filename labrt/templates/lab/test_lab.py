"""Tests of the {name} lab. Run them in this folder with `pytest` (once: pip install pytest
pytest-asyncio).

run_lab serves the lab as `labrt run lab.toml` would, inside the test: on gpiozero's mock pins
(never the real ones, even on the Pi), with a store of its own and a clock that moves only
when the test says, so a whole slot passes in no time. labrt's docs/testing.md has the rest.
"""

from pathlib import Path

import pytest

from labrt.testing import run_lab

LAB = Path(__file__).with_name("lab.toml")

# pytest-asyncio runs these async tests; the mark also works without asyncio_mode = "auto".
pytestmark = pytest.mark.asyncio


async def test_the_student_switches_the_light_and_it_is_off_after_the_slot():
    async with run_lab(LAB) as lab:
        student = await lab.new_student(seconds=60)  # handed over as the RLMS would
        assert (await student.get("/api/state")).json()["light"] is False

        async with student.websocket() as page:  # the page, as labrt.js opens it
            await page.send("toggle")  # labrt.send("toggle") on the page
            assert await page.expect("light") is True  # what lab.push sent back
        assert lab.hardware["light"].is_active

        await lab.advance(61)  # the slot is over: on_dispose, then the safe state
        assert not lab.hardware["light"].is_active
        assert (await student.get("/api/state")).status == 401
