"""Task latency and throughput: submit → done for an empty task, and tasks per second.

Runs the real runtime in this process (real clock, a SQLite store in a temporary directory,
the store's durability settings unchanged), admits one student, then submits empty tasks
through the author's API, as a route handler would:

    python bench/tasks.py [--repeats 5] [--tasks 500]

Prints medians over the repeats with the min..max spread. Machines here are noisy: compare
ratios and medians, not single runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from report import percentile, print_medians

from labrt import Lab
from labrt._engine.context import bind, unbind
from labrt.config import load_config
from labrt.model import Dialect, StartRequest
from labrt.runtime import Runtime

CONFIG = """
[lab]
name = "bench"
module = "{module}"
[rlms]
username = "bench"
password = "a-bench-password"
[store]
path = "{store}"
"""


def make_lab() -> Lab:
    lab = Lab()

    @lab.task
    async def empty_async():
        return None

    @lab.task
    def empty_thread():
        return None

    return lab


async def one_repeat(workdir: Path, tasks: int) -> dict[str, tuple[float, float, float]]:
    """Latency median and p99 (ms) and throughput (tasks/s) for each kind of task."""
    module = workdir / "lab.py"
    module.write_text("import labrt\nlab = labrt.Lab()\n")
    store = workdir / f"store-{time.monotonic_ns()}.sqlite"
    path = workdir / "lab.toml"
    path.write_text(CONFIG.format(module=module, store=store))
    lab = make_lab()
    runtime = Runtime(load_config(path), lab)
    await runtime.start()
    try:
        now = time.time()
        session = await runtime.sessions.start(
            StartRequest(
                dialect=Dialect.NEW,
                username="student",
                username_unique="student@bench",
                full_name=None,
                locale="en",
                back="http://localhost/",
                experiment_name="bench",
                category_name=None,
                experiment_id="bench",
                client_data={},
                server_data={},
                start_date=now,
                max_date=now + 3600,
            )
        )
        token = bind(runtime.sessions, session)
        results = {}
        try:
            for kind in ("empty_async", "empty_thread"):
                fn = lab.task_functions[kind]
                for _ in range(20):  # warm-up
                    await (await fn.delay()).join()
                latencies = []
                for _ in range(tasks):
                    began = time.perf_counter()
                    task = await fn.delay()
                    await task.join()
                    latencies.append(time.perf_counter() - began)
                    assert task.done
                began = time.perf_counter()
                submitted = await asyncio.gather(*(fn.delay() for _ in range(tasks)))
                await asyncio.gather(*(t.join() for t in submitted))
                throughput = tasks / (time.perf_counter() - began)
                latencies.sort()
                results[kind] = (
                    statistics.median(latencies) * 1000,
                    percentile(latencies, 0.99) * 1000,
                    throughput,
                )
        finally:
            unbind(token)
    finally:
        await runtime.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            runs.append(asyncio.run(one_repeat(Path(scratch), args.tasks)))
    print_medians(["task", "submit→done p50 ms", "p99 ms", "tasks/s"], runs)


if __name__ == "__main__":
    main()
