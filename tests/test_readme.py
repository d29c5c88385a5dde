"""README's two commands are the front door: they must work as written, on a fresh venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    copy_of_the_repository,
    fake_student_sees_the_example,
    listening_url,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def the_command(word: str) -> str:
    found = [c for c in readme_commands() if c.startswith("python3 bootstrap.py " + word)]
    assert len(found) == 1, f"README must show one `python3 bootstrap.py {word}` command"
    return found[0]


def test_ci_runs_exactly_the_readme_test_command():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert the_command("test") in ci


@pytest.mark.slow
def test_the_example_command_installs_and_serves_the_example_lab(tmp_path):
    clone = tmp_path / "labrt"
    copy_of_the_repository(clone)
    venv = tmp_path / "venv"
    python3 = shutil.which("python3") or sys.executable
    command = the_command("example").split()
    assert command[0] == "python3"
    log = (tmp_path / "example.log").open("w+b")
    process = subprocess.Popen(
        [python3, *command[1:], "--port", "0"],
        cwd=clone,
        env={**os.environ, "LABRT_VENV": str(venv)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = listening_url(process, tmp_path / "example.log", 240)
        fake_new = [venv / "bin" / "labrt", "fake", "new", "lab.example.toml", "--url", url]
        fake_student_sees_the_example(fake_new, clone)
    finally:
        try:
            status = stop_process(process)
        finally:
            log.close()
    assert status == 0, (tmp_path / "example.log").read_text()
