#!/usr/bin/env python3
"""Install labrt into a virtual environment and run the example lab or the tests.

Needs only python3 (3.11 or newer). On Debian without the python3-venv package, the virtual
environment is made without pip and pip is fetched from PyPI, so nothing else is required.

    python3 bootstrap.py example [labrt run options]   # e.g. --port 8081
    python3 bootstrap.py test [pytest options]         # e.g. -x -k expiry

The environment is ``.venv`` next to this file, or ``$LABRT_VENV``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LABRT_VENV", ROOT / ".venv")).resolve()
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def _say(message: str) -> None:
    print(f"bootstrap: {message}", file=sys.stderr, flush=True)


def _run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True)


def _fetch_pip(target: Path) -> Path:
    """Download pip's wheel from PyPI (a wheel runs as a zip: ``python pip.whl/pip``)."""
    with urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60) as answer:
        release = json.load(answer)
    wheel = next(f for f in release["urls"] if f["filename"].endswith(".whl"))
    path = target / wheel["filename"]
    with urllib.request.urlopen(wheel["url"], timeout=120) as answer:
        path.write_bytes(answer.read())
    return path


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (bootstrap may run on an older python3)
        sys.exit("bootstrap: labrt needs Python 3.11 or newer")
    if (
        PYTHON.exists()
        and subprocess.run([PYTHON, "-m", "pip", "--version"], capture_output=True).returncode == 0
    ):
        return
    _say(f"creating a virtual environment in {VENV}")
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], capture_output=True)
    if made.returncode != 0:
        # Debian ships ensurepip separately (python3-venv); do without it.
        _say("no ensurepip here; fetching pip from PyPI")
        _run(sys.executable, "-m", "venv", "--clear", "--without-pip", VENV)
        with tempfile.TemporaryDirectory() as scratch:
            wheel = _fetch_pip(Path(scratch))
            _run(PYTHON, f"{wheel}/pip", "install", "--quiet", wheel)


def install(extras: str) -> None:
    _say(f"installing labrt{extras} into {VENV}")
    _run(
        PYTHON,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--editable",
        f"{ROOT}{extras}",
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("example", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    what, rest = argv[0], argv[1:]
    ensure_venv()
    os.chdir(ROOT)
    if what == "example":
        install("")
        _say("starting the example lab; stop it with Ctrl-C")
        command = [BIN / "labrt", "run", "lab.example.toml", "--dev", *rest]
    else:
        install("[test]")
        _run(BIN / "ruff", "check", ".")
        _run(BIN / "ruff", "format", "--check", ".")
        _run(PYTHON, "-m", "mypy")  # labrt and drivers, as [tool.mypy] in pyproject.toml says
        command = [PYTHON, "-m", "pytest", *rest]
    os.execv(command[0], [str(c) for c in command])
    return 0  # not reached


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode or 1)
