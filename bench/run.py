"""labrt against weblablib, side by side, on this machine, in one run (issue 8).

Sets up a reference lab on weblablib 0.5.9 in its documented production forms (gunicorn sync
workers ``-w 5`` with Redis; gunicorn's gevent worker with Flask-SocketIO for push) in venvs
cached under ~/.cache/labrt-bench, the same lab on labrt (``labrt run`` in its own process) and
a bare aiohttp hello-world as the ceiling; drives them all with the same load generators (wrk,
an aiohttp client) over loopback sockets; prints one table of medians (min..max) over repeated
runs with the ratio labrt/weblablib, and writes it to bench/results/ as JSON and Markdown.

    .venv/bin/python bench/run.py [--repeats 5]
    .venv/bin/python bench/run.py --smoke     # labrt only, < 1 minute, non-zero on failure
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compare import env, load, metrics, procs, table
from compare.load import SessionLost
from compare.metrics import SMOKE, Sizes
from compare.targets import Hello, Labrt, Redis, Weblablib

RESULTS = Path(__file__).resolve().parent / "results"
PAST_LEVELS = {"10": 10, "10k": 10_000, "100k": 100_000}
Target = Labrt | Weblablib | Hello


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean nothing without it."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def main_suite(target: Target, wrk: str, sizes: Sizes, settle: float) -> dict[str, float]:
    """On a fresh server: cold start, idle memory, session starts, status polls, the active
    view (with memory under load) and tasks."""
    target.prepare(0)
    out = {"cold_start_s": target.start()}
    try:
        time.sleep(settle)  # every gunicorn worker booted, nothing running
        idle = metrics.rss(target)
        out |= {"rss_idle_mb": idle["rss_mb"], "pss_idle_mb": idle["pss_mb"]}
        if isinstance(target, Hello):
            return out | metrics.hello(wrk, target.url, sizes)
        out |= asyncio.run(metrics.session_starts(target.url, sizes))
        students = asyncio.run(load.students(target.url, sizes.live_sessions))
        out |= metrics.status_polls(wrk, target.url, [s.sid for s in students], sizes)
        out |= metrics.active_view(wrk, target, students[: sizes.users], sizes)
        out |= asyncio.run(metrics.tasks(target.url, students[: sizes.users], sizes))
        asyncio.run(load.check_alive(target.url, [s.sid for s in students]))
        return out
    finally:
        target.stop()


def push_suite(target: Labrt | Weblablib, sizes: Sizes) -> dict[str, float]:
    target.prepare(0)
    target.start()
    try:
        kind = "labrt" if isinstance(target, Labrt) else "socketio"
        students = asyncio.run(load.students(target.url, sizes.push_users))
        one = metrics.push(target.url, students[:1], kind, sizes.push_messages)
        out = asyncio.run(one)
        every = metrics.push(target.url, students, kind, sizes.push_users_messages, "push_users")
        out.update(asyncio.run(every))
        return out
    finally:
        target.stop()


def past_suite(target: Labrt | Weblablib, levels: dict[str, int], sizes: Sizes) -> dict[str, float]:
    """Status latency of one live session with 10, 10k, 100k past sessions stored."""
    out = {}
    for label, count in levels.items():
        target.prepare(count)
        cold = target.start()
        try:
            if label == "100k":
                out["cold_start_100k_s"] = cold

            async def chain() -> tuple[float, float]:
                async with load.client(1) as http:
                    sid, _ = await load.start_session(http, target.url)
                return await metrics.status_latency(target.url, sid, sizes)

            p50, p99 = asyncio.run(chain())
            out[f"past_{label}_p50_ms"], out[f"past_{label}_p99_ms"] = p50, p99
        finally:
            target.stop()
    return out


def attempt(name: str, suite: Callable[[], dict[str, float]], tries: int = 3) -> dict[str, float]:
    """Run ``suite``; a repetition in which a session died is run again, not reported."""
    for n in range(1, tries + 1):
        try:
            return suite()
        except SessionLost as exc:
            say(f"{name}: {exc}; running this repetition again ({n}/{tries})")
    raise SystemExit(f"{name}: sessions kept dying; no valid repetition")


def run(args: argparse.Namespace, workdir: Path) -> int:
    sizes = SMOKE if args.smoke else Sizes(seconds=args.seconds)
    wrk = env.debian_tool("wrk", "wrk")
    if wrk is None:
        raise SystemExit("wrk is missing and could not be installed (apt-get install wrk)")
    with_weblablib = not (args.smoke or args.labrt_only)

    # The smoke run drives the tree as it is; a measured run, labrt as a user installs it.
    labrt = Labrt(workdir) if args.smoke else Labrt(workdir, python=env.labrt_venv() / "bin/python")
    hello = Hello(workdir)
    weblablib: Weblablib | None = None
    socketio: Weblablib | None = None
    redis: Redis | None = None
    if with_weblablib:
        venvs = env.weblablib_venvs()
        redis_binary = env.debian_tool("redis-server", "redis-server")
        if redis_binary is None:
            raise SystemExit("redis-server is missing and could not be installed")
        redis = Redis(redis_binary, workdir)
        redis.start()
        weblablib = Weblablib(workdir, venvs["weblablib"], redis)
        socketio = Weblablib(workdir, venvs["weblablib-gevent"], redis, push=True)

    runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    levels = {"10": 10, "10k": 10_000} if args.smoke else PAST_LEVELS
    settle = 0.3 if args.smoke else 2.0
    began = time.monotonic()
    try:
        for rep in range(args.repeats):
            targets: list[Target] = [labrt, hello] + ([weblablib] if weblablib else [])
            if rep % 2:
                targets.reverse()  # alternate, so that drift on the machine hits both
            for target in targets:
                say(f"repeat {rep + 1}/{args.repeats}: {target.name}")
                found = attempt(target.name, lambda t=target: main_suite(t, wrk, sizes, settle))
                for key, value in found.items():
                    runs[target.name][key].append(value)
            for target in [labrt] + ([socketio] if socketio else []):
                say(f"repeat {rep + 1}/{args.repeats}: push, {target.name}")
                for key, value in attempt(
                    target.name, lambda t=target: push_suite(t, sizes)
                ).items():
                    runs[target.name][key].append(value)
            for target in [labrt] + ([weblablib] if weblablib else []):
                say(f"repeat {rep + 1}/{args.repeats}: past sessions, {target.name}")
                found = attempt(target.name, lambda t=target: past_suite(t, levels, sizes))
                for key, value in found.items():
                    runs[target.name][key].append(value)
    finally:
        if redis is not None:
            redis.stop()

    plain = {name: dict(m) for name, m in runs.items()}
    if weblablib is not None:
        plain[table.WEBLABLIB] = plain.pop(weblablib.name)
    print(table.markdown(plain))
    info = machine()
    machine_text = (
        f"{info['cpus']} cores ({info['cpu']}), {info['memory_gib']} GiB, Linux "
        f"{info['kernel']}, Python {info['python']}; load average at start "
        f"{info['load_average_at_start'][0]:.2f}. {args.repeats} repeats, medians (min..max)."
    )
    command = "python bench/run.py" + (" --smoke" if args.smoke else f" --repeats {args.repeats}")
    meta = {
        "title": "labrt against weblablib" + (" (smoke)" if args.smoke else ""),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": info,
        "machine_text": machine_text,
        "repeats": args.repeats,
        "seconds": round(time.monotonic() - began, 1),
        "sizes": vars(sizes),
    }
    if not (args.no_write or args.smoke):  # a smoke run proves labrt can be driven, no more
        for path in table.write(RESULTS, "latest", plain, meta):
            say(f"wrote {path}")
    say(f"done in {time.monotonic() - began:.0f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (smoke: 1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument("--smoke", action="store_true", help="labrt only, small, < 1 minute")
    parser.add_argument("--labrt-only", action="store_true", help="skip weblablib")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke: always)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 5

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="labrt-bench-") as scratch:
        try:
            return run(args, Path(scratch))
        except KeyboardInterrupt:
            say("interrupted; stopping every server")
            return 130
        except Exception:
            traceback.print_exc()
            return 1
        finally:
            procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
