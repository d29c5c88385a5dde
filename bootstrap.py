#!/usr/bin/env python3
"""Install labrt into a virtual environment and run the example lab or the tests.

Needs only python3 (3.11 or newer). On Debian without the python3-venv package, the virtual
environment is made without pip and pip is fetched from PyPI, so nothing else is required.

    python3 bootstrap.py example [labrt run options]   # e.g. --port 8081
    python3 bootstrap.py test [pytest options]         # e.g. -x -k expiry
    python3 bootstrap.py dist                          # dist/: wheel, sdist, one file per target

The environment is ``.venv`` next to this file, or ``$LABRT_VENV``. ``dist`` builds the wheel
and sdist, then with pex (the ``dist`` extra) one executable file per target in TARGETS: the
wheels each target needs, from PyPI, packed with labrt for Debian 12's python3 (3.11). pex's
downloads are cached in ``~/.cache/labrt/pex`` (or ``$XDG_CACHE_HOME/labrt/pex``).
"""

from __future__ import annotations

import hashlib
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
DIST = ROOT / "dist"
# Target: (complete platform, what it needs beyond labrt's own dependencies). Each platform
# file is what `pex3 interpreter inspect --markers --tags` says of Debian 12's /usr/bin/python3
# (3.11, glibc 2.36), see platforms/README.md. lgpio is the pin library of a Raspberry Pi 5.
TARGETS = {
    "linux-aarch64": ("platforms/linux-aarch64-cp311.json", ["lgpio"]),
    "linux-armv7l": ("platforms/linux-armv7l-cp311.json", ["lgpio"]),
    "linux-x86_64": ("platforms/linux-x86_64-cp311.json", []),
}


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


def _version() -> str:
    for line in (ROOT / "labrt" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__ = "):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise SystemExit("bootstrap: no __version__ in labrt/__init__.py")


def _write_checksum(path: Path) -> None:
    """``FILE.sha256`` next to FILE, as ``sha256sum FILE`` prints it: ``sha256sum -c`` checks."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def dist() -> None:
    """dist/: the wheel, the sdist, and one pex file per target (see TARGETS)."""
    version = _version()
    DIST.mkdir(exist_ok=True)
    for old in DIST.glob("labrt-*"):
        old.unlink()
    _say("building the wheel and the sdist")
    _run(PYTHON, "-m", "build", "--outdir", DIST, ROOT)
    wheel = DIST / f"labrt-{version}-py3-none-any.whl"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labrt" / "pex"
    for target, (platform, extra) in TARGETS.items():
        output = DIST / f"labrt-{version}-{target}.pyz"
        _say(f"building {output.name}")
        _run(
            BIN / "pex",
            wheel,
            *extra,
            "--complete-platform",
            ROOT / platform,
            "--console-script",
            "labrt",
            # `./labrt-….pyz` runs it with the system's python3 (`python3 labrt-….pyz` too).
            # Not `/usr/bin/env python3`: with no PATH, python3 knows no sys.executable, and
            # pex's --venv mode needs it to start its venv's python.
            "--python-shebang",
            "/usr/bin/python3",
            # Installed on first run into a virtual environment in PEX_ROOT (~/.pex, or the
            # unit's cache directory): later starts are nearly as fast as a venv's.
            "--venv",
            # Only the targets' published wheels: never an sdist built for this machine.
            "--no-build",
            "--pex-root",
            cache,
            "--output-file",
            output,
        )
    for built in sorted(DIST.glob(f"labrt-{version}*")):
        if built.suffix != ".sha256":
            _write_checksum(built)
    _say(f"built in {DIST}: " + ", ".join(p.name for p in sorted(DIST.glob("labrt-*"))))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("example", "test", "dist"):
        print(__doc__, file=sys.stderr)
        return 2
    what, rest = argv[0], argv[1:]
    ensure_venv()
    os.chdir(ROOT)
    if what == "dist":
        install("[dist]")
        dist()
        return 0
    if what == "example":
        install("")
        _say("starting the example lab; stop it with Ctrl-C")
        command = [BIN / "labrt", "run", "lab.example.toml", "--dev", *rest]
    else:
        install("[test]")
        _run(BIN / "ruff", "check", ".")
        _run(BIN / "ruff", "format", "--check", ".")
        _run(PYTHON, "-m", "mypy")  # labrt and drivers, as [tool.mypy] in pyproject.toml says
        # The tests start `labrt run` in processes of their own a few hundred times. Compiled
        # once here, labrt is not compiled again in each of them where PYTHONDONTWRITEBYTECODE
        # is set (an editable install is not byte-compiled by pip).
        _run(PYTHON, "-m", "compileall", "-q", "labrt", "drivers")
        command = [PYTHON, "-m", "pytest", *rest]
    os.execv(command[0], [str(c) for c in command])
    return 0  # not reached


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode or 1)
