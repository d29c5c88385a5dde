"""The shape of the code: the public surface, and the layering rules of design.md."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers import copy_of_the_repository

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


@pytest.mark.slow
def test_the_installed_wheel_ships_the_typing_markers(tmp_path):
    """PEP 561: py.typed tells a lab author's type checker to read labrt's and drivers' hints."""
    source = tmp_path / "source"
    copy_of_the_repository(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "dist", source],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("labrt-*.whl")
    installed = tmp_path / "installed"
    subprocess.run(
        [*pip, "install", "--quiet", "--no-deps", "--target", installed, wheel], check=True
    )
    assert (installed / "labrt" / "py.typed").is_file()
    assert (installed / "drivers" / "py.typed").is_file()
