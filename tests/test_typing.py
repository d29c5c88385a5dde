"""What a lab author's type checker and editor see: labrt's hints reach them (py.typed), and
they are precise enough to catch a mistake before the lab runs.

Each case is a small lab checked by ``mypy --strict`` as an author would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # mypy takes seconds per run

GOOD = """\
from aiohttp import web

from drivers import Output, SerialPort
from labrt import Devices, Lab, Task, current_task, requires_active, user


class Hardware(Devices):
    light: Output
    board: SerialPort


lab = Lab(Hardware)


@lab.task
def program(firmware: bytes, *, verify: bool = True) -> int:
    if current_task.stopping:
        return 0
    lab.hardware.light.off()
    return len(firmware)


@lab.route("POST", "/api/light")
@requires_active
async def switch(request: web.Request) -> dict[str, object]:
    lab.hardware.light.on()
    await lab.hardware.board.write_line("on")
    sent: int = await lab.push("light", lab.hardware.light.is_active)
    name: str | None = user.full_name
    task: Task = await program.delay(b"\\x00", verify=False)
    return {"pages": sent, "name": name, "task": task.task_id, "left": user.time_left}


@lab.route("GET", "/api/hello")
async def hello(request: web.Request) -> dict[str, str]:
    if user.is_anonymous:
        return {"hello": "nobody", "language": user.locale or "en"}
    return {"hello": user.username.upper()}
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    lab = tmp_path / "lab.py"
    lab.write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--no-incremental"),
            # labrt's own modules are checked by labrt's CI, not in the author's run.
            "--follow-imports=silent",
            str(lab),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        # As an author's checker finds an installed labrt; the tests run from the source tree.
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )


def test_a_typed_lab_checks_clean(tmp_path):
    run = _mypy(tmp_path, GOOD)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # A method the device does not have: the editor would not have offered it.
        ("light.on()", "light.spin()", '"Output" has no attribute "spin"'),
        # lab.push gives the number of pages reached.
        ("sent: int", "sent: str", 'expression has type "int", variable has type "str"'),
        # A task's delay() takes the task function's own arguments.
        ('delay(b"\\x00"', 'delay("text"', 'Argument 1 to "delay" of "TaskFunction"'),
        # user.full_name is text, or None when the RLMS did not say.
        ("name: str | None", "name: int", 'expression has type "str | None"'),
        # Nobody's username is None: test user.is_anonymous first (which narrows user).
        ("if user.is_anonymous:", "if False:", 'Item "None" of "str | None" has no attribute'),
    ],
)
def test_mistakes_are_caught(tmp_path, old, new, complaint):
    assert old in GOOD
    run = _mypy(tmp_path, GOOD.replace(old, new))
    assert run.returncode == 1, run.stdout
    assert complaint in run.stdout, run.stdout
