"""The shape of the code: the public surface, and the layering rules of design.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import labrt

ROOT = Path(__file__).resolve().parent.parent


def test_public_api_is_curated():
    assert sorted(labrt.__all__) == sorted(
        [
            "AlreadyRunning",
            "ConfigError",
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
