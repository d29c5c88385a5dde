"""Cold start of the single file against a venv: seconds from exec to "listening on" for
`labrt run lab.example.toml --dev --port 0`, median of N starts (docs/performance.md).

    python3 bootstrap.py dist
    python3 -m venv /tmp/v && /tmp/v/bin/pip install dist/labrt-*-py3-none-any.whl
    python3 bench/single_file.py 7 /tmp/v/bin/labrt dist/labrt-*-linux-x86_64.pyz

Each command runs with an empty environment, HOME read-only and PEX_ROOT in a fresh temporary
directory, as under the systemd unit; the file's first start (when it unpacks itself) is shown
apart from the later ones.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    process = subprocess.Popen(
        [*command, "run", "lab.example.toml", "--dev", "--port", "0"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "listening on" in line:
            break
    took = time.perf_counter() - began
    process.terminate()
    process.wait(30)
    return took


def main(repeats: int, venv_labrt: str, pyz: str) -> None:
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as root:
        Path(home).chmod(0o555)
        env = {"HOME": home, "PEX_ROOT": root}
        first = start([pyz], env)
        for name, command in (("venv", [venv_labrt]), ("single file", [pyz])):
            times = sorted(start(command, env) for _ in range(repeats))
            print(
                f"{name}: median {statistics.median(times):.3f} s "
                f"({times[0]:.3f}..{times[-1]:.3f}, {repeats} starts)"
            )
        print(f"single file, first start (unpacking): {first:.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
