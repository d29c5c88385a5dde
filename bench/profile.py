"""Where labrt spends its time on the two hottest paths: the RLMS's status poll and a
student's ``@requires_active`` JSON view, each under wrk's load, sampled by py-spy attached to a
real ``labrt run``.

    .venv/bin/python bench/profile.py [--seconds 10] [--top 25]

Prints, per path, the functions with the most samples (inclusive: the function or anything it
called; self: the function's own code) and writes py-spy's raw collapsed stacks next to the
results (bench/results/profile-*.txt) for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from compare import env, load, procs
from compare.load import AUTH, SESSIONS
from compare.targets import Labrt

RESULTS = Path(__file__).resolve().parent / "results"


def summarise(raw: Path, top: int) -> str:
    """Inclusive and self sample counts per function, over the event loop's busy samples.

    Only stacks of the loop's thread count (the store's aiosqlite thread waits on its queue
    and would show as busy), and the loop waiting in ``select`` is idle time, reported apart.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        if not any(f.startswith("BaseEventLoop.run_forever") for f in frames):
            continue
        if frames[-1].startswith("EpollSelector.select"):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [
        f"event loop: {busy} busy samples, {idle} idle in select "
        f"({100 * busy / max(1, busy + idle):.0f}% busy); percentages of busy samples",
        f"{'incl %':>7} {'self %':>7}  function (file:line)",
    ]
    for frame, count in inclusive.most_common(top):
        lines.append(f"{100 * count / busy:7.1f} {100 * own[frame] / busy:7.1f}  {frame}")
    lines += ["", "most self time:"]
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / busy:7.1f}  {frame}")
    return "\n".join(lines)


def profile(
    py_spy: Path, wrk: str, pid: int, url: str, requests: list, connections: int, args: object
) -> Path:
    raw = Path(tempfile.mkstemp(suffix=".txt")[1])
    seconds = int(args.seconds)  # type: ignore[attr-defined]
    spy = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "-d",
            str(seconds + 1),
            "-r",
            "250",
            "--format",
            "raw",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = threading.Thread(
        target=load.wrk,
        args=(wrk, url, requests),
        kwargs={"connections": connections, "seconds": seconds + 2},
    )
    driver.start()
    spy.wait()
    driver.join()
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = env.profiler()
    wrk = env.debian_tool("wrk", "wrk")
    if wrk is None:
        raise SystemExit("wrk is missing")
    with tempfile.TemporaryDirectory(prefix="labrt-profile-") as scratch:
        target = Labrt(Path(scratch))
        target.prepare(0)
        target.start()
        try:
            students = asyncio.run(load.students(target.url, 100))
            paths = {
                "status": (
                    [("GET", f"{SESSIONS}/{s.sid}/status", AUTH, None) for s in students],
                    20,
                ),
                "active": (
                    [
                        (
                            "GET",
                            "/bench/active",
                            {"Cookie": s.cookie, "Accept": "application/json"},
                            None,
                        )
                        for s in students[:50]
                    ],
                    50,
                ),
            }
            RESULTS.mkdir(exist_ok=True)
            for name, (requests, connections) in paths.items():
                raw = profile(
                    py_spy, wrk, target.main_pid(), target.url, requests, connections, args
                )
                kept = RESULTS / f"profile-{name}.txt"
                kept.write_text(raw.read_text())
                raw.unlink()
                print(f"== {name} ({kept.name})")
                print(summarise(kept, args.top))
                print()
            asyncio.run(load.check_alive(target.url, [s.sid for s in students]))
        finally:
            target.stop()
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
