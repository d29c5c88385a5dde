"""What the benchmark needs beyond labrt's own venv, installed from the package registries only:
labrt as a user installs it (its wheel, built from this tree, in a venv of its own), weblablib's
two production venvs (PyPI), Redis and wrk (Debian), cached between runs.

The venvs live under ``~/.cache/labrt-bench`` (``LABRT_BENCH_CACHE`` moves it), one directory per
requirement set, named by a hash of it, so that changing a pin builds a new one instead of
patching an old one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

CACHE = Path(os.environ.get("LABRT_BENCH_CACHE", Path.home() / ".cache" / "labrt-bench"))

# weblablib 0.5.9 imports flask.Markup, which Flask 3 removed: Flask and Werkzeug stay on 2.3.
_WEBLABLIB = [
    "weblablib==0.5.9",
    "Flask==2.3.3",
    "Werkzeug==2.3.8",
    "gunicorn==27.0.1",
    "redis==8.1.0",
]
# The Flask-SocketIO form. gevent's gunicorn worker needs ``packaging``; gevent-websocket and
# eventlet must stay out (the first breaks plain ``-k gevent``, the second would be picked by
# Flask-SocketIO instead of gevent).
_WEBLABLIB_GEVENT = [*_WEBLABLIB, "gevent==26.9.0", "packaging", "Flask-SocketIO==5.7.0"]
VENVS: dict[str, list[str]] = {"weblablib": _WEBLABLIB, "weblablib-gevent": _WEBLABLIB_GEVENT}
PROFILER = ["py-spy==0.4.3"]


def _say(message: str) -> None:
    print(f"[setup] {message}", file=sys.stderr, flush=True)


def venv(name: str, requirements: list[str]) -> Path:
    """A venv with exactly ``requirements``, built once and reused; returns its directory."""
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:10]
    path = CACHE / f"{name}-{digest}"
    done = path / ".installed"
    if done.exists():
        return path
    _say(f"building {path} ({', '.join(requirements)})")
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["python3", "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *requirements],
        check=True,
    )
    done.write_text("\n".join(requirements) + "\n")
    return path


def labrt_venv() -> Path:
    """A venv with labrt installed from the wheel of this tree, as ``pip install`` does for a
    user: its modules compiled to bytecode at install, no editable-install finder on the import
    path. Measured from the development tree instead, a cold start would also time compiling
    labrt's source wherever ``PYTHONDONTWRITEBYTECODE`` is set; weblablib never pays that.

    The dependencies' venv is cached (by labrt's requirements); labrt itself is reinstalled
    from a freshly built wheel on every run."""
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    path = venv("labrt", sorted(project["dependencies"]))
    with tempfile.TemporaryDirectory(prefix="labrt-wheel-") as scratch:
        _say("building labrt's wheel from this tree")
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", scratch, str(root)],
            check=True,
        )
        (wheel,) = Path(scratch).glob("labrt-*.whl")
        subprocess.run(
            [
                str(path / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--force-reinstall",
                str(wheel),
            ],
            check=True,
        )
    return path


def weblablib_venvs() -> dict[str, Path]:
    return {name: venv(name, reqs) for name, reqs in VENVS.items()}


def profiler() -> Path:
    """py-spy's binary, from PyPI into a venv of its own (it profiles other processes)."""
    return venv("tools", PROFILER) / "bin" / "py-spy"


def debian_tool(command: str, package: str) -> str | None:
    """The path of ``command``, installing Debian's ``package`` if it is missing and we may
    (root, or passwordless sudo); None if it cannot be had."""
    found = shutil.which(command)
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        return None
    _say(f"installing Debian's {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [*sudo, "apt-get", "update", "-qq"],
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            return None
    return shutil.which(command)
