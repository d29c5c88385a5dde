"""Fixtures shared by labrt's own tests: labs served with labrt.testing, the kit lab authors
use, so that labrt's tests exercise it as authors do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from labrt.testing import LabUnderTest, run_lab

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "lab.example.toml"


@pytest.fixture
async def example_lab() -> AsyncIterator[LabUnderTest]:
    """The example lab of README (lab.example.toml: ten lights, a button, a simulated board),
    on mock pins with a fake clock and a store of its own."""
    async with run_lab(EXAMPLE) as lab:
        yield lab
