"""Where labrt spends its time on its hottest paths, sampled by py-spy attached to a real
``labrt run``: the RLMS's status poll and a student's ``@requires_active`` JSON view, each under
wrk's load, and session starts, 20 at a time, as bench/run.py makes them (each round of 100
starts is then disposed, so the lab does not fill up; the disposes are in the profile too).
And the imports a cold start waits for, from ``python -X importtime``, and what a restart asks
of the store, timed call by call, with an empty history and with 100k past sessions.

    .venv/bin/python bench/profile.py [--seconds 10] [--top 25]
                                      [--only status|active|starts|imports|restart]

Prints, per path, the functions with the most samples (inclusive: the function or anything it
called; self: the function's own code) and writes py-spy's raw collapsed stacks next to the
results (bench/results/profile-*.txt) for a flame graph. labrt runs as a user installs it
(its wheel in a venv: env.labrt_venv).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

from compare import env, load, procs
from compare.load import AUTH, SESSIONS
from compare.targets import TESTS, Labrt

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


def starts(url: str, seconds: float) -> None:
    """Rounds of 100 session starts, 20 at a time, each round then disposed, for ``seconds``."""

    async def drive() -> None:
        gate = asyncio.Semaphore(20)
        async with load.client(20) as http:

            async def one() -> str:
                async with gate:
                    sid, _ = await load.start_session(http, url)
                return sid

            async def dispose(sid: str) -> None:
                async with gate, http.delete(f"{url}{SESSIONS}/{sid}", headers=AUTH) as r:
                    await r.read()

            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sids = await asyncio.gather(*(one() for _ in range(100)))
                await asyncio.gather(*(dispose(sid) for sid in sids))

    asyncio.run(drive())


def profile(py_spy: Path, pid: int, drive: Callable[[float], object], seconds: int) -> Path:
    raw = Path(tempfile.mkstemp(suffix=".txt")[1])
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
    driver = threading.Thread(target=drive, args=(seconds + 2,))
    driver.start()
    spy.wait()
    driver.join()
    return raw


IMPORT_RUNS = 9
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def imports(python: Path, top: int) -> str:
    """What ``labrt run`` imports before it can answer, by ``python -X importtime``, run
    IMPORT_RUNS times in a fresh interpreter; each module's smallest self and cumulative time
    over the runs (the least disturbed by the machine's neighbours), in ms."""
    own: dict[str, int] = {}
    cumulative: dict[str, int] = {}
    for _ in range(IMPORT_RUNS):
        done = subprocess.run(
            [str(python), "-X", "importtime", "-c", "import labrt.cli, labrt.runtime"],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),  # not a directory holding a labrt source tree
        )
        for line in done.stderr.splitlines():
            found = _IMPORT_LINE.match(line)
            if found:
                name = found.group(4)
                own[name] = min(own.get(name, 1 << 62), int(found.group(1)))
                cumulative[name] = min(cumulative.get(name, 1 << 62), int(found.group(2)))
    total = sum(own.values())
    packages: Counter[str] = Counter()
    for name, us in own.items():
        packages[name.split(".")[0]] += us
    lines = [
        f"python -X importtime -c 'import labrt.cli, labrt.runtime' ({python}), "
        f"{IMPORT_RUNS} runs; per module the smallest over the runs, in ms",
        f"sum of self times: {total / 1000:.1f} ms",
        "",
        "self ms by top-level package:",
    ]
    lines += [f"{us / 1000:8.1f}  {name}" for name, us in packages.most_common(top)]
    lines += ["", "   self ms  cumulative ms  module (largest self time first)"]
    for name, us in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{us / 1000:10.1f} {cumulative[name] / 1000:14.1f}  {name}")
    return "\n".join(lines)


# Run by the venv's python: the store's calls of Runtime.start, in its order, each timed (ms,
# median of 7 opens) on a store with ``count`` past sessions (tests/history.py fills it).
RESTART = """
import asyncio, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from history import fill_labrt_store
from labrt.store import Store

async def once(path, now):
    took, began = {}, time.perf_counter()
    def lap(name):
        nonlocal began
        took[name] = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
    store = await Store.open(path); lap("open")
    await store.secret("cookie-secret"); lap("secret")
    await store.interrupt_tasks(now); lap("interrupt_tasks")
    await store.prune_tasks(now - 3600); lap("prune_tasks")
    await store.tasks_finished_since(now - 3600); lap("tasks_finished_since")
    await store.unfinished_sessions(); lap("unfinished_sessions")
    await store.prune_sessions(ended_before=now - 30 * 86400); lap("prune_sessions")
    await store.close(); lap("close")
    return took

async def main(count):
    now = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "labrt.sqlite"
        if count:
            await fill_labrt_store(path, count, now)
        else:
            await (await Store.open(path)).close()
        runs = [await once(path, now) for _ in range(7)]
    for name in runs[0]:
        print(f"{count:>8} {statistics.median(r[name] for r in runs):9.2f}  {name}")

asyncio.run(main(int(sys.argv[2])))
"""


def restart(python: Path) -> str:
    lines = ["past sessions   ms (median of 7)  store call, as Runtime.start makes them"]
    for count in (0, 100_000):
        done = subprocess.run(
            [str(python), "-c", RESTART, str(TESTS), str(count)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
        )
        lines += done.stdout.splitlines()
    return "\n".join(lines)


def under_wrk(wrk: str, url: str, requests: list, connections: int, seconds: float) -> None:
    load.wrk(wrk, url, requests, connections=connections, seconds=seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--only", choices=("status", "active", "starts", "imports", "restart"))
    args = parser.parse_args()
    python = env.labrt_venv() / "bin/python"
    RESULTS.mkdir(exist_ok=True)
    offline = {"imports": partial(imports, python, args.top), "restart": partial(restart, python)}
    for name, measure in offline.items():
        if args.only in (None, name):
            text = measure()
            (RESULTS / f"profile-{name}.txt").write_text(text + "\n")
            print(f"== {name} (profile-{name}.txt)\n{text}\n")
    if args.only in offline:
        return 0
    py_spy = env.profiler()
    wrk = env.debian_tool("wrk", "wrk")
    if wrk is None:
        raise SystemExit("wrk is missing")
    with tempfile.TemporaryDirectory(prefix="labrt-profile-") as scratch:
        target = Labrt(Path(scratch), python=python)
        target.prepare(0)
        target.start()
        try:
            students = asyncio.run(load.students(target.url, 100))
            status = [("GET", f"{SESSIONS}/{s.sid}/status", AUTH, None) for s in students]
            active = [
                ("GET", "/bench/active", {"Cookie": s.cookie, "Accept": "application/json"}, None)
                for s in students[:50]
            ]
            paths: dict[str, Callable[[float], object]] = {
                "status": partial(under_wrk, wrk, target.url, status, 20),
                "active": partial(under_wrk, wrk, target.url, active, 50),
                "starts": partial(starts, target.url),
            }
            for name, drive in paths.items():
                if args.only not in (None, name):
                    continue
                raw = profile(py_spy, target.main_pid(), drive, int(args.seconds))
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
