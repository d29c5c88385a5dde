"""`python3 bootstrap.py dist`: the wheel, the sdist and one executable file per target, each
run by the system's python3 alone (docs/deployment.md#the-single-file).

One slow test: it builds everything in a copy of the repository, with its own venv (pex's
downloads are cached in ~/.cache/labrt/pex, so a second run is quick, and a first one works
from nothing), runs the x86_64 file with an empty environment and a read-only HOME on the
example lab, completes a fake session through it, and looks into the two ARM files for their
platform's compiled modules.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import (
    copy_of_the_repository,
    fake_student_sees_the_example,
    listening_url,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian 12's, 3.11: what the files are built for
TARGETS = ("linux-aarch64", "linux-armv7l", "linux-x86_64")


def version() -> str:
    found = re.search(r'__version__ = "([^"]+)"', (ROOT / "labrt" / "__init__.py").read_text())
    assert found
    return found.group(1)


def compiled(pyz: Path) -> dict[str, list[str]]:
    """The compiled modules' file names in a pex, by the project whose wheel brought them."""
    found: dict[str, list[str]] = {}
    with zipfile.ZipFile(pyz) as archive:
        for name in archive.namelist():
            if name.startswith(".deps/") and name.endswith(".so"):
                wheel, _, module = name.removeprefix(".deps/").partition("/")
                found.setdefault(wheel.split("-")[0], []).append(module.rsplit("/", 1)[-1])
    return found


def wheels(pyz: Path) -> list[str]:
    with zipfile.ZipFile(pyz) as archive:
        return sorted({n.split("/")[1] for n in archive.namelist() if n.startswith(".deps/")})


def system_python_is_311() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    answer = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
        capture_output=True,
        text=True,
    )
    return answer.stdout.strip() == "True"


@pytest.mark.slow
def test_dist_builds_files_that_run_on_the_system_python_alone(tmp_path):
    if not system_python_is_311():
        pytest.skip("the files are built for Debian 12's /usr/bin/python3 (3.11): not here")
    clone = tmp_path / "labrt"
    copy_of_the_repository(clone)
    built = subprocess.run(
        [sys.executable, "bootstrap.py", "dist"],
        cwd=clone,
        env={**os.environ, "LABRT_VENV": str(tmp_path / "venv")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    dist = clone / "dist"
    v = version()
    files = [f"labrt-{v}-py3-none-any.whl", f"labrt-{v}.tar.gz"]
    files += [f"labrt-{v}-{target}.pyz" for target in TARGETS]
    assert sorted(p.name for p in dist.iterdir()) == sorted(
        [*files, *(f + ".sha256" for f in files)]
    )
    for name in files:  # each checksum as `sha256sum -c` reads it
        digest = hashlib.sha256((dist / name).read_bytes()).hexdigest()
        assert (dist / f"{name}.sha256").read_text() == f"{digest}  {name}\n"

    # The ARM files carry their platform's compiled modules (PyPI has the wheels), and lgpio.
    aarch64 = compiled(dist / f"labrt-{v}-linux-aarch64.pyz")
    for package in ("aiohttp", "multidict", "yarl", "frozenlist", "propcache", "lgpio"):
        assert package in aarch64, (package, aarch64)
    assert any(
        m.startswith("_http_parser.cpython-311-aarch64-linux-gnu") for m in aarch64["aiohttp"]
    )
    assert aarch64["lgpio"] == ["_lgpio.cpython-311-aarch64-linux-gnu.so"]
    armv7l = compiled(dist / f"labrt-{v}-linux-armv7l.pyz")
    for package in ("aiohttp", "multidict", "yarl", "frozenlist", "lgpio"):
        assert package in armv7l, (package, armv7l)
    assert any(
        m.startswith("_http_parser.cpython-311-arm-linux-gnueabihf") for m in armv7l["aiohttp"]
    )
    # propcache publishes no manylinux armv7l wheel: its pure-Python wheel stands in, and its
    # pure mode is what runs there (docs/deployment.md#the-single-file says so).
    assert "propcache" not in armv7l
    assert any(
        w.startswith("propcache-") and w.endswith("-py3-none-any.whl")
        for w in wheels(dist / f"labrt-{v}-linux-armv7l.pyz")
    )
    x86_64 = compiled(dist / f"labrt-{v}-linux-x86_64.pyz")
    assert "lgpio" not in x86_64 and "aiohttp" in x86_64

    # The x86_64 file, as on a bench: no venv, no environment, a HOME nobody may write to,
    # PEX_ROOT where the unit puts it (its cache directory).
    pyz = dist / f"labrt-{v}-linux-x86_64.pyz"
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    bare = {"HOME": str(home), "PEX_ROOT": str(tmp_path / "cache" / "labrt")}

    def labrt(*args: str) -> list[str]:
        return ["env", "-i", *(f"{k}={v}" for k, v in bare.items()), *args]

    log_path = tmp_path / "run.log"
    log = log_path.open("w+b")
    # `./labrt-….pyz`: its own #!/usr/bin/python3 is the system's python3.
    process = subprocess.Popen(
        labrt(str(pyz), "run", "lab.example.toml", "--dev", "--port", "0"),
        cwd=clone,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = listening_url(process, log_path, 120)
        # `python3 labrt-….pyz`: the same file, as the RLMS's stand-in.
        fake_new = labrt(
            str(SYSTEM_PYTHON), str(pyz), "fake", "new", "lab.example.toml", "--url", url
        )
        fake_student_sees_the_example(fake_new, clone)
    finally:
        try:
            status = stop_process(process)
        finally:
            log.close()
    assert status == 0, log_path.read_text()
    assert list(home.iterdir()) == []  # nothing went into HOME
    assert (tmp_path / "cache" / "labrt").is_dir()  # pex unpacked itself into PEX_ROOT

    # `labrt systemd`, run from the file, writes a unit that starts that file, with PEX_ROOT
    # in the service's cache directory (ProtectHome= hides HOME from it).
    unit = subprocess.run(
        labrt(str(pyz), "systemd", "lab.example.toml"),
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unit.returncode == 0, unit.stderr
    lines = unit.stdout.splitlines()
    assert f"ExecStart={pyz.resolve()} run {clone / 'lab.example.toml'}" in lines
    assert "CacheDirectory=labrt" in lines
    assert "Environment=PEX_ROOT=%C/labrt" in lines
    assert "ProtectHome=yes" in lines or "ProtectHome=read-only" in lines
