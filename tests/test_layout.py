"""The shape of the code: the public surface, and the layering rules of design.md."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import types
import urllib.request
from pathlib import Path

import pytest
from helpers import Spawned, copy_of_the_repository

import labrt

ROOT = Path(__file__).resolve().parent.parent


def test_public_api_is_curated():
    assert sorted(labrt.__all__) == sorted(
        [
            "AlreadyRunning",
            "ConfigError",
            "Devices",
            "Lab",
            "Task",
            "TooManyTasks",
            "__version__",
            "current_task",
            "logout",
            "requires_active",
            "requires_login",
            "user",
        ]
    )
    for name in labrt.__all__:
        assert getattr(labrt, name) is not None


def test_every_public_name_is_exported_and_documented():
    """The httpx rule: what ``labrt`` offers without an underscore is in ``__all__`` (modules
    aside), and each name of ``__all__`` has its row in the reference of docs/author-api.md."""
    offered = {
        name
        for name, value in vars(labrt).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert offered == set(labrt.__all__) - {"__version__"}
    reference = (ROOT / "docs" / "author-api.md").read_text().partition("## Reference")[2]
    rows = set(re.findall(r"^\| `(\w+)` \|", reference, re.M))
    assert rows == set(labrt.__all__)
    # The shadowing of old: the name ``user`` is the proxy, no module hides behind it.
    assert not isinstance(labrt.user, types.ModuleType)
    assert "labrt.user" not in sys.modules


def test_drivers_import_nothing_from_labrt():
    check = "import sys, drivers; assert not [m for m in sys.modules if m.startswith('labrt')]"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=ROOT)
    for path in (ROOT / "drivers").rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+labrt", path.read_text(), re.M), path


def test_only_the_store_speaks_sql():
    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b")
    offenders = [
        p.relative_to(ROOT)
        for p in (ROOT / "labrt").rglob("*.py")
        if p.name != "store.py" and sql.search(p.read_text())
    ]
    assert offenders == []


def test_python_m_labrt_is_the_cli():
    run = subprocess.run(
        [sys.executable, "-m", "labrt", "--version"], capture_output=True, text=True, check=True
    )
    assert labrt.__version__ in run.stdout


PIP = (sys.executable, "-m", "pip", "--disable-pip-version-check")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clean clone of the repository, and the wheel built from it: (source, wheel)."""
    top = tmp_path_factory.mktemp("wheel")
    source = top / "source"
    copy_of_the_repository(source)
    subprocess.run(
        [*PIP, "wheel", "--quiet", "--no-deps", "--wheel-dir", top / "dist", source], check=True
    )
    (wheel,) = (top / "dist").glob("labrt-*.whl")
    return source, wheel


@pytest.mark.slow
def test_the_installed_wheel_ships_the_typing_markers(tmp_path, built):
    """PEP 561: py.typed tells a lab author's type checker to read labrt's and drivers' hints."""
    _, wheel = built
    installed = tmp_path / "installed"
    subprocess.run(
        [*PIP, "install", "--quiet", "--no-deps", "--target", installed, wheel], check=True
    )
    assert (installed / "labrt" / "py.typed").is_file()
    assert (installed / "drivers" / "py.typed").is_file()


@pytest.mark.slow
def test_a_pip_installed_labrt_inits_checks_and_runs_a_lab(tmp_path, built):
    """As after ``pip install labrt`` (not editable, so pip byte-compiled every .py it
    installed, the lab template's included): ``labrt init``, ``labrt check``, ``labrt run``."""
    source, wheel = built
    venv = tmp_path / "venv"
    # --without-pip: Debian's python3 may lack ensurepip; this pip installs into the venv.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*PIP, "--python", python, "install", "--quiet", "--no-deps", wheel], check=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    templates = Path(site) / "labrt" / "templates" / "lab"
    assert list(templates.rglob("*.pyc")), "pip byte-compiles what it installs"
    # The dependencies without a network: this interpreter's, after the venv's own packages
    # (a .pth only appends; the editable labrt here is a finder its .pth files would install,
    # and those are not read from a directory a .pth names).
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "labrt-test-dependencies.pth").write_text("\n".join(sorted(outer)) + "\n")
    where = subprocess.run(
        [python, "-c", "import labrt; print(labrt.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not this repository, which `python -c` would put first on sys.path
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where

    labrt = venv / "bin" / "labrt"
    work = tmp_path / "work"
    work.mkdir()
    init = subprocess.run([labrt, "init", "mylab"], cwd=work, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    written = sorted(str(p.relative_to(work / "mylab")) for p in (work / "mylab").rglob("*"))
    assert written == [
        "lab.py",
        "lab.toml",
        "rlms.password",
        "static",
        "static/index.html",
        "test_lab.py",
    ]
    check = subprocess.run(
        [labrt, "check", "mylab/lab.toml"], cwd=work, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    for config, args in (
        (work / "mylab" / "lab.toml", ()),
        (source / "lab.example.toml", ("--dev",)),
    ):
        served = Spawned(config, None, *args, labrt=(labrt,))
        with urllib.request.urlopen(served.url + "/healthz", timeout=10) as answer:
            assert answer.status == 200
        assert served.stop() == 0, served.log.read_text()
