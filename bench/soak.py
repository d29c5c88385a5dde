"""Soak: weeks of a lab's slots compressed into minutes, watching the server for leaks.

    python bench/soak.py [--minutes 10] [--students 4] [--interval 5] [--seed N]

Starts a real ``labrt run`` (tests/labs/chaos_lab.py, a mock LED) and drives it with the crash
loop's students (bench/chaos.py), never killing it: several students at a time, one slot
after another, each with RLMS polls, page polls, WebSocket pings answered by pushes, tasks
and the LED, ending by the RLMS, by logging out or by walking away. A real lab sees a dozen
slots an hour; this sees several a second. The retention timers are compressed with it
(ended users are remembered, and task results kept, 20 s instead of an hour), so that the
run reaches the steady state a lab reaches after its first hour.

Every ``--interval`` seconds it samples the server process: resident memory (VmRSS), open file
descriptors (/proc/PID/fd), threads, and the store's size (the SQLite file plus its WAL). It
prints the samples, then the growth of each from the first window after the warm-up to the
last window (medians of 15% of the run each; the first 25% is warm-up). Memory must grow
less than 5%; the store is expected to grow, since labrt keeps every session and its events
(tasks are pruned after ``[tasks] keep_results``), and the bytes per slot are printed so its
growth over a semester can be estimated.

Exit status 1 if memory grew 5% or more, or if a client saw a protocol answer it should not
have (the crash loop's checks, without the kills).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from chaos import Chaos, Spawned

SETTINGS = """
[session]
timeout = 3
poll_interval = 1
dispose_timeout = 5
expired_users_timeout = 20

[tasks]
threads = 2
keep_results = 20

[hardware]
pins = "mock"

[drivers.led]
kind = "kinds:Recorded"
pin = 17
"""
WARM_UP = 0.25  # of the run, not compared
WINDOW = 0.15  # of the run: the first window after the warm-up, and the last
MEMORY_LIMIT = 5.0  # percent
COLUMNS = ("rss_kb", "fds", "threads", "store_kb")


def sample(pid: int, store: Path) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
    assert rss is not None and threads is not None
    sizes = [p.stat().st_size for p in (store, store.with_name(store.name + "-wal")) if p.exists()]
    return {
        "rss_kb": int(rss.group(1)),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(threads.group(1)),
        "store_kb": sum(sizes) / 1024,
    }


def rows(store: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sessions", "events", "tasks")
        }
    finally:
        db.close()


async def soak(workdir: Path, seconds: float, students: int, interval: float, seed: int) -> Any:
    chaos = Chaos(workdir, seed, settings=SETTINGS)
    del chaos.env["LABRT_TEST_RECORD"]  # no hook records: nothing here counts them
    store = workdir / "labrt.sqlite"
    server = await asyncio.to_thread(Spawned, chaos.config, chaos.env)
    samples: list[dict[str, float]] = []
    workers: list[asyncio.Future[None]] = []
    try:
        async with aiohttp.ClientSession() as http:
            rng = random.Random(seed)
            workers = [
                asyncio.ensure_future(chaos.student(server.url, random.Random(rng.random())))
                for _ in range(students)
            ]
            workers.append(asyncio.ensure_future(chaos.rlms_loop(http, server.url)))
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < seconds:
                done, _ = await asyncio.wait(workers, timeout=interval)
                for failed in done:
                    chaos.check(False, f"a client failed: {failed.exception()!r}")
                    workers.remove(failed)
                point = {"t": time.monotonic() - began, "slots": chaos.stats.sessions}
                samples.append({**point, **sample(server.process.pid, store)})
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            elapsed = time.monotonic() - began
    finally:
        for worker in workers:
            worker.cancel()
        status = await asyncio.to_thread(server.stop)
    chaos.check(status == 0, f"labrt run exited with {status} on SIGTERM")
    return chaos, samples, elapsed, rows(store)


def growth(samples: list[dict[str, float]], seconds: float) -> dict[str, tuple[float, float]]:
    """Per column: the medians of the first window after the warm-up and of the last."""
    start, width = WARM_UP * seconds, WINDOW * seconds
    first = [s for s in samples if start <= s["t"] < start + width]
    last = [s for s in samples if s["t"] >= seconds - width]
    return {
        column: (
            statistics.median(s[column] for s in first),
            statistics.median(s[column] for s in last),
        )
        for column in (*COLUMNS, "slots")
    }


def report(chaos: Any, samples: list[dict[str, float]], seconds: float, counts: dict) -> bool:
    header = ("t s", "slots", "RSS MB", "fds", "threads", "store KB")
    print("  ".join(f"{h:>9}" for h in header))
    step = max(1, len(samples) // 20)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        cells = (
            f"{s['t']:.0f}",
            f"{s['slots']:.0f}",
            f"{s['rss_kb'] / 1024:.1f}",
            f"{s['fds']:.0f}",
            f"{s['threads']:.0f}",
            f"{s['store_kb']:.0f}",
        )
        print("  ".join(f"{c:>9}" for c in cells))
    medians = growth(samples, seconds)
    print("\ngrowth, median of the first window after warm-up → median of the last window:")
    for column in COLUMNS:
        before, after = medians[column]
        print(
            f"  {column:9} {before:10.0f} → {after:10.0f}  {100 * (after - before) / before:+.1f}%"
        )
    slots = medians["slots"][1] - medians["slots"][0]
    store = 1024 * (medians["store_kb"][1] - medians["store_kb"][0])
    per_slot = store / slots if slots else 0
    s = chaos.stats
    print(
        f"\n{s.sessions} slots in {seconds / 60:.1f} min ({s.sessions / seconds:.1f}/s; at 12 "
        f"slots an hour, {s.sessions / 12:.0f} hours of a lab), {s.tasks} tasks, "
        f"{s.pongs} pushes answered, {s.rlms_disposes} RLMS disposes, {s.logouts} logouts"
    )
    print(
        f"store rows at the end: {counts['sessions']} sessions, {counts['events']} events, "
        f"{counts['tasks']} tasks; ~{per_slot:.0f} bytes per slot kept for good"
    )
    print(f"protocol checks: {s.checks} run, {len(chaos.violations)} failed")
    for violation in chaos.violations:
        print(f"FAILED: {violation}")
    before, after = medians["rss_kb"]
    memory = 100 * (after - before) / before
    ok = memory < MEMORY_LIMIT and not chaos.violations
    print(f"memory growth {memory:+.1f}% (limit {MEMORY_LIMIT:g}%): {'ok' if ok else 'FAILED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    print(f"seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="labrt-soak-") as scratch:
        chaos, samples, seconds, counts = asyncio.run(
            soak(Path(scratch), args.minutes * 60, args.students, args.interval, seed)
        )
    raise SystemExit(0 if report(chaos, samples, seconds, counts) else 1)


if __name__ == "__main__":
    main()
